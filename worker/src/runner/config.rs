//! What `worker run` is told: where the coordinator and the state are, and how hard to work.

use std::path::PathBuf;
use std::time::Duration;

use sparecycles_protocol::EnrollRequest;

use crate::client::Transport;
use crate::modules::ModulePolicy;
use crate::prefs::Policy;
use sparecycles_protocol::work::{MAX_LABEL_CHARS, MAX_LEASE_TASKS};

/// Settings of one worker run.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Base URL of the coordinator (`http://host:port`).
    pub coordinator: String,
    /// Where credentials and the outbox live.
    pub state_dir: PathBuf,
    /// Threads of the compute pool.
    pub cores: usize,
    /// Name shown on the dashboard.
    pub name: String,
    /// The volunteer's account name, shared by their machines.
    pub owner: Option<String>,
    /// Tasks to hold leased beyond the running one, so the cores never wait on the network.
    pub prefetch: usize,
    /// How often to report progress of held tasks.
    pub heartbeat_interval: Duration,
    /// How long to wait before asking again when a lease returned no task.
    pub idle_poll: Duration,
    /// Most tasks asked for in one lease call.
    pub max_tasks_per_lease: u32,
    /// When to compute (idle time, windows, battery…) and how often to checkpoint.
    pub policy: Policy,
    /// `--idle-source`: `auto` (default) or `file:PATH`.
    pub idle_source: Option<String>,
    /// Port of the local status page on 127.0.0.1 (0: any free port); `None`: no page.
    pub status_port: Option<u16>,
    /// Which module apps (WebAssembly sent with jobs) to run.
    pub modules: ModulePolicy,
    /// The project's enrollment key, sent when enrolling.
    pub enroll_key: Option<EnrollKey>,
    /// Extra TLS trust, and whether plain http may leave this machine.
    pub transport: Transport,
}

/// An enrollment key; `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct EnrollKey(pub String);

impl std::fmt::Debug for EnrollKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EnrollKey(<redacted>)")
    }
}

impl RunConfig {
    /// Defaults: every core, the host name, 2 prefetched tasks, heartbeat every 10 s, idle poll
    /// every second, compute whenever there is work ([`Policy::always`]: the `worker` binary
    /// applies the volunteer's preferences instead).
    pub fn new(coordinator: impl Into<String>, state_dir: impl Into<PathBuf>) -> RunConfig {
        RunConfig {
            coordinator: coordinator.into(),
            state_dir: state_dir.into(),
            cores: all_cores(),
            name: default_name(),
            owner: None,
            prefetch: 2,
            heartbeat_interval: Duration::from_secs(10),
            idle_poll: Duration::from_secs(1),
            max_tasks_per_lease: 100,
            policy: Policy::always(),
            idle_source: None,
            status_port: None,
            modules: ModulePolicy::Any,
            enroll_key: None,
            transport: Transport::default(),
        }
    }

    /// What this worker tells the coordinator about itself when enrolling.
    pub(crate) fn enroll_request(&self) -> EnrollRequest {
        EnrollRequest {
            name: clip(&self.name),
            cores: u32::try_from(self.cores.max(1)).unwrap_or(u32::MAX),
            os: clip(std::env::consts::OS),
            arch: clip(std::env::consts::ARCH),
            apps: self.apps(),
            owner: self.owner.as_deref().map(clip),
            enroll_key: self.enroll_key.as_ref().map(|k| k.0.clone()),
        }
    }

    /// The built-in apps, and the module apps the module policy takes.
    pub(crate) fn apps(&self) -> Vec<String> {
        let mut apps = sparecycles_apps::names();
        apps.extend(self.modules.declared_apps());
        apps
    }

    pub(crate) fn lease_size(&self, wanted: usize) -> u32 {
        let cap = self.max_tasks_per_lease.clamp(1, MAX_LEASE_TASKS);
        u32::try_from(wanted).unwrap_or(u32::MAX).clamp(1, cap)
    }
}

/// Every core the OS lets this process use.
pub fn all_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The host name from `/etc/hostname`, or `"worker"`.
pub fn default_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".to_owned())
}

/// `$XDG_STATE_HOME/sparecycles-worker`, else `~/.local/state/sparecycles-worker`.
pub fn default_state_dir() -> Option<PathBuf> {
    let non_empty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    std::env::var_os("XDG_STATE_HOME")
        .and_then(non_empty)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(non_empty)
                .map(|home| home.join(".local").join("state"))
        })
        .map(|base| base.join("sparecycles-worker"))
}

/// Labels longer than the coordinator accepts are cut rather than refused.
fn clip(s: &str) -> String {
    s.chars().take(MAX_LABEL_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enroll_request_is_within_limits() {
        let mut config = RunConfig::new("http://h", "/tmp/x");
        config.name = "n".repeat(500);
        config.cores = 3;
        let req = config.enroll_request();
        assert_eq!(req.name.chars().count(), MAX_LABEL_CHARS);
        assert_eq!(req.cores, 3);
        let mut builtin = sparecycles_apps::names();
        assert_eq!(req.apps[..builtin.len()], builtin[..]);
        assert_eq!(req.apps.last().map(String::as_str), Some("wasm:*"));
        config.modules = ModulePolicy::Refuse;
        assert_eq!(config.enroll_request().apps, builtin);
        config.modules = ModulePolicy::Only(["ab".repeat(32)].into());
        builtin.push(format!("wasm:{}", "ab".repeat(32)));
        assert_eq!(config.enroll_request().apps, builtin);
    }

    #[test]
    fn lease_size_is_bounded() {
        let mut config = RunConfig::new("http://h", "/tmp/x");
        config.max_tasks_per_lease = 4;
        assert_eq!(config.lease_size(3), 3);
        assert_eq!(config.lease_size(9), 4);
        assert_eq!(config.lease_size(0), 1);
    }
}
