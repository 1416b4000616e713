//! The volunteer's preferences: when and how hard this machine may compute.
//!
//! One [`Settings`] struct is both the `[worker run]` flags and the TOML config file, every field
//! optional: a flag wins over the file, the file over the defaults. [`Policy`] is the checked
//! form the runner uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::modules::ModulePolicy;

/// Default minutes without user input before computing starts.
pub const DEFAULT_IDLE_MINUTES: f64 = 3.0;
/// Most entries of `allow_modules` (each is declared to the coordinator, which takes 64 apps).
pub const MAX_ALLOWED_MODULES: usize = 50;
/// Default seconds between checkpoints of a running unit.
pub const DEFAULT_CHECKPOINT_SECS: u64 = 60;

/// Everything `worker run` can be told, from flags or from the config file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Base URL of the coordinator, e.g. http://coordinator.example:8080
    #[arg(long, env = "SPARECYCLES_COORDINATOR", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
    /// Where credentials, checkpoints and undelivered results are kept
    /// [default: $XDG_STATE_HOME/sparecycles-worker or ~/.local/state/sparecycles-worker]
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Name shown on the dashboard [default: the host name]
    #[arg(long, value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Your account name; machines with the same owner are credited together
    #[arg(long, value_name = "OWNER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Threads to compute with [default: all cores]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=4096))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cores: Option<u32>,
    /// Compute only after this many minutes without keyboard or mouse input; 0 computes while
    /// the PC is in use too [default: 3]
    #[arg(long, value_name = "MINUTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_minutes: Option<f64>,
    /// Percentage of the time to compute (a duty cycle, to keep fans quiet) [default: 100]
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u8).range(1..=100))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<u8>,
    /// Pause while the machine runs on battery [default: true]
    #[arg(long, value_name = "BOOL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_on_battery: Option<bool>,
    /// Pause while other programs use more than this percentage of all CPUs [default: off]
    #[arg(long, value_name = "PCT", value_parser = clap::value_parser!(u8).range(1..=100))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_other_cpu_percent: Option<u8>,
    /// Pause while the worker's memory (resident set) is above this many MiB [default: off]
    #[arg(long, value_name = "MIB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u64>,
    /// Compute only in these time windows (local time), e.g. "mon-fri 18:00-08:00" or
    /// "sat,sun 00:00-24:00"; repeat for more [default: any time]
    #[arg(long = "window", value_name = "DAYS HH:MM-HH:MM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub windows: Option<Vec<String>>,
    /// Seconds between checkpoints of a running unit [default: 60]
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=86400))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_secs: Option<u64>,
    /// Port of the local status page on 127.0.0.1 (0: any free port) [default: no page]
    #[arg(long, value_name = "PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_port: Option<u16>,
    /// Where "is the user here?" comes from: auto (logind, then input devices, then
    /// terminals), or file:PATH (a file saying "active" or "idle"; for tests and custom setups)
    #[arg(long, value_name = "SOURCE", hide = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_source: Option<String>,
    /// Run built-in apps only, never WebAssembly modules sent with jobs (modules run in a
    /// sandbox without access to files or network) [default: false]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub no_modules: Option<bool>,
    /// Run only the modules with this SHA-256; repeat for more [default: any module]
    #[arg(long = "allow-module", value_name = "SHA256")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_modules: Option<Vec<String>>,
    /// The project's enrollment key, when its coordinator requires one
    #[arg(
        long,
        env = "SPARECYCLES_ENROLL_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enroll_key: Option<String>,
    /// Also trust this CA certificate (PEM) for an https:// coordinator, e.g. a self-signed one
    #[arg(long, value_name = "PEM")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Allow plain http:// to a coordinator that is not on this machine (tokens and results
    /// then cross the network unencrypted) [default: refused]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
}

/// Why the preferences are refused.
#[derive(Debug, thiserror::Error)]
pub enum PrefsError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Settings {
    /// Reads the config file; a missing file is an empty one.
    pub fn load(path: &Path) -> Result<Settings, PrefsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Settings::default()),
            Err(source) => {
                return Err(PrefsError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|source| PrefsError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// These settings, with the gaps filled from `file`.
    pub fn or(self, file: Settings) -> Settings {
        Settings {
            coordinator: self.coordinator.or(file.coordinator),
            state_dir: self.state_dir.or(file.state_dir),
            name: self.name.or(file.name),
            owner: self.owner.or(file.owner),
            cores: self.cores.or(file.cores),
            idle_minutes: self.idle_minutes.or(file.idle_minutes),
            cpu_percent: self.cpu_percent.or(file.cpu_percent),
            pause_on_battery: self.pause_on_battery.or(file.pause_on_battery),
            max_other_cpu_percent: self.max_other_cpu_percent.or(file.max_other_cpu_percent),
            max_memory_mb: self.max_memory_mb.or(file.max_memory_mb),
            windows: self.windows.or(file.windows),
            checkpoint_secs: self.checkpoint_secs.or(file.checkpoint_secs),
            status_port: self.status_port.or(file.status_port),
            idle_source: self.idle_source.or(file.idle_source),
            no_modules: self.no_modules.or(file.no_modules),
            allow_modules: self.allow_modules.or(file.allow_modules),
            enroll_key: self.enroll_key.or(file.enroll_key),
            ca_cert: self.ca_cert.or(file.ca_cert),
            insecure: self.insecure.or(file.insecure),
        }
    }

    /// As TOML, for `worker config` and `worker install`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// Which modules to run: none with `no_modules`, only `allow_modules` when given, else any.
    pub fn module_policy(&self) -> Result<ModulePolicy, PrefsError> {
        if self.no_modules == Some(true) {
            return Ok(ModulePolicy::Refuse);
        }
        let Some(hashes) = &self.allow_modules else {
            return Ok(ModulePolicy::Any);
        };
        if hashes.len() > MAX_ALLOWED_MODULES {
            return Err(PrefsError::Invalid(format!(
                "allow_modules lists {} modules; at most {MAX_ALLOWED_MODULES} are accepted",
                hashes.len()
            )));
        }
        if let Some(bad) = hashes
            .iter()
            .find(|h| !sparecycles_protocol::is_sha256_hex(h))
        {
            return Err(PrefsError::Invalid(format!(
                "allow_modules: {bad:?} is not a SHA-256 in hex (64 lowercase hex digits)"
            )));
        }
        Ok(ModulePolicy::Only(hashes.iter().cloned().collect()))
    }

    /// The checked policy, with defaults for what is not set.
    pub fn policy(&self) -> Result<Policy, PrefsError> {
        let idle_minutes = self.idle_minutes.unwrap_or(DEFAULT_IDLE_MINUTES);
        if !(0.0..=10_080.0).contains(&idle_minutes) {
            return Err(PrefsError::Invalid(format!(
                "idle_minutes must be between 0 and 10080, got {idle_minutes}"
            )));
        }
        let percent = |field: &str, v: Option<u8>| match v {
            Some(p) if !(1..=100).contains(&p) => Err(PrefsError::Invalid(format!(
                "{field} must be between 1 and 100, got {p}"
            ))),
            _ => Ok(v),
        };
        let windows = self
            .windows
            .iter()
            .flatten()
            .map(|w| Window::parse(w))
            .collect::<Result<_, _>>()?;
        let checkpoint_secs = self.checkpoint_secs.unwrap_or(DEFAULT_CHECKPOINT_SECS);
        if checkpoint_secs == 0 {
            return Err(PrefsError::Invalid(
                "checkpoint_secs must be at least 1".into(),
            ));
        }
        Ok(Policy {
            idle_after: Duration::from_secs_f64(idle_minutes * 60.0),
            cpu_percent: percent("cpu_percent", self.cpu_percent)?.unwrap_or(100),
            pause_on_battery: self.pause_on_battery.unwrap_or(true),
            max_other_cpu_percent: percent("max_other_cpu_percent", self.max_other_cpu_percent)?,
            max_memory_bytes: self.max_memory_mb.map(|mb| mb.saturating_mul(1 << 20)),
            windows,
            checkpoint_interval: Duration::from_secs(checkpoint_secs),
        })
    }
}

/// When computing is allowed, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// No user input for this long before computing (zero: compute while in use too).
    pub idle_after: Duration,
    /// Share of the time to compute, 1 to 100.
    pub cpu_percent: u8,
    pub pause_on_battery: bool,
    /// Pause while other programs use more than this share of all CPUs.
    pub max_other_cpu_percent: Option<u8>,
    /// Pause while the worker's resident memory is above this.
    pub max_memory_bytes: Option<u64>,
    /// Compute only within one of these (none: any time).
    pub windows: Vec<Window>,
    pub checkpoint_interval: Duration,
}

impl Policy {
    /// Compute whenever there is work: what a library user (and the tests) get by default.
    pub fn always() -> Policy {
        Policy {
            idle_after: Duration::ZERO,
            cpu_percent: 100,
            pause_on_battery: false,
            max_other_cpu_percent: None,
            max_memory_bytes: None,
            windows: Vec::new(),
            checkpoint_interval: Duration::from_secs(DEFAULT_CHECKPOINT_SECS),
        }
    }
}

/// Days of the week (bit 0 = Monday) and a time span within a day, in minutes since midnight.
/// A span that ends before it starts runs past midnight into the next day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    days: u8,
    from: u16,
    to: u16,
}

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Window {
    /// Parses `"DAYS HH:MM-HH:MM"`: DAYS is `all`, a day (`mon`), a range (`mon-fri`) or a
    /// comma-separated list of those; without DAYS, every day.
    pub fn parse(s: &str) -> Result<Window, PrefsError> {
        let bad = |why: &str| {
            PrefsError::Invalid(format!(
                "time window {s:?}: {why} (expected e.g. \"mon-fri 18:00-08:00\")"
            ))
        };
        let (days, span) = match s.trim().rsplit_once(char::is_whitespace) {
            Some((days, span)) => (days.trim(), span),
            None => ("all", s.trim()),
        };
        let mut mask = 0u8;
        for part in days.split(',').map(str::trim) {
            let day = |d: &str| {
                DAYS.iter()
                    .position(|n| d.eq_ignore_ascii_case(n))
                    .ok_or_else(|| bad(&format!("unknown day {d:?}")))
            };
            if part.eq_ignore_ascii_case("all") || part == "*" {
                mask = 0x7f;
            } else if let Some((a, b)) = part.split_once('-') {
                let (a, b) = (day(a.trim())?, day(b.trim())?);
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            } else {
                mask |= 1 << day(part)?;
            }
        }
        let (from, to) = span.split_once('-').ok_or_else(|| bad("no time span"))?;
        let minutes = |t: &str| -> Result<u16, PrefsError> {
            let (h, m) = t.split_once(':').ok_or_else(|| bad("times are HH:MM"))?;
            let (h, m): (u16, u16) = (
                h.parse().map_err(|_| bad("bad hour"))?,
                m.parse().map_err(|_| bad("bad minute"))?,
            );
            if m >= 60 || h * 60 + m > 24 * 60 {
                return Err(bad("time out of range"));
            }
            Ok(h * 60 + m)
        };
        Ok(Window {
            days: mask,
            from: minutes(from)?,
            to: minutes(to)?,
        })
    }

    /// Whether `minute` (since midnight) of `weekday` (0 = Monday) is inside this window.
    pub fn contains(&self, weekday: u8, minute: u16) -> bool {
        let on = |d: u8| self.days & (1 << (d % 7)) != 0;
        if self.from <= self.to {
            on(weekday) && (self.from..self.to).contains(&minute)
        } else {
            // Past midnight: the evening part belongs to the day it starts on.
            (on(weekday) && minute >= self.from) || (on((weekday + 6) % 7) && minute < self.to)
        }
    }
}

/// `$XDG_CONFIG_HOME/sparecycles-worker/config.toml`, else `~/.config/...`; for root,
/// `/etc/sparecycles-worker/config.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    if is_root() {
        return Some(PathBuf::from("/etc/sparecycles-worker/config.toml"));
    }
    let non_empty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    std::env::var_os("XDG_CONFIG_HOME")
        .and_then(non_empty)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(non_empty)
                .map(|h| h.join(".config"))
        })
        .map(|base| base.join("sparecycles-worker").join("config.toml"))
}

/// Whether this process runs as root (the owner of `/proc/self` is uid 0).
pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_defaults_fill_the_rest() {
        let file: Settings = toml::from_str(
            "coordinator = \"http://c:8080\"\ncores = 2\nidle_minutes = 5\n\
             windows = [\"mon-fri 18:00-08:00\"]\npause_on_battery = false\n",
        )
        .unwrap();
        let flags = Settings {
            cores: Some(4),
            ..Settings::default()
        };
        let merged = flags.or(file);
        assert_eq!(merged.cores, Some(4));
        assert_eq!(merged.coordinator.as_deref(), Some("http://c:8080"));
        let policy = merged.policy().unwrap();
        assert_eq!(policy.idle_after, Duration::from_secs(300));
        assert!(!policy.pause_on_battery);
        assert_eq!(policy.cpu_percent, 100);
        assert_eq!(policy.checkpoint_interval, Duration::from_secs(60));
        let defaults = Settings::default().policy().unwrap();
        assert_eq!(defaults.idle_after, Duration::from_secs(180));
        // What `worker config` prints reads back the same.
        let again: Settings = toml::from_str(&merged.to_toml()).unwrap();
        assert_eq!(again, merged);
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        assert!(toml::from_str::<Settings>("nope = 1").is_err());
        let bad = Settings {
            idle_minutes: Some(-1.0),
            ..Settings::default()
        };
        assert!(
            bad.policy()
                .unwrap_err()
                .to_string()
                .contains("idle_minutes")
        );
        for w in [
            "mon-fri",
            "xyz 10:00-11:00",
            "mon 25:00-26:00",
            "mon 10:61-11:00",
        ] {
            assert!(Window::parse(w).is_err(), "{w}");
        }
    }

    #[test]
    fn windows_cover_days_and_midnight() {
        let nights = Window::parse("mon-fri 22:00-06:00").unwrap();
        assert!(nights.contains(0, 23 * 60)); // Monday 23:00
        assert!(nights.contains(1, 5 * 60)); // Tuesday 05:00, Monday's night
        assert!(!nights.contains(0, 5 * 60)); // Monday 05:00 belongs to Sunday's night
        assert!(nights.contains(5, 60)); // Saturday 01:00, Friday's night
        assert!(!nights.contains(5, 23 * 60)); // Saturday 23:00
        assert!(!nights.contains(2, 12 * 60));
        let weekend = Window::parse("sat,sun 00:00-24:00").unwrap();
        assert!(weekend.contains(6, 0) && weekend.contains(5, 1439) && !weekend.contains(4, 600));
        let wrap = Window::parse("fri-mon 09:00-10:00").unwrap();
        assert!(wrap.contains(6, 570) && wrap.contains(0, 570) && !wrap.contains(1, 570));
        let every = Window::parse("12:00-13:00").unwrap();
        assert!((0..7).all(|d| every.contains(d, 750)));
    }

    #[test]
    fn module_preferences() {
        let h = "ab".repeat(32);
        let file: Settings = toml::from_str(&format!("allow_modules = [\"{h}\"]")).unwrap();
        assert_eq!(
            Settings::default()
                .or(file.clone())
                .module_policy()
                .unwrap(),
            ModulePolicy::Only([h.clone()].into())
        );
        let refuse = Settings {
            no_modules: Some(true),
            ..Default::default()
        };
        assert_eq!(
            refuse.or(file).module_policy().unwrap(),
            ModulePolicy::Refuse
        );
        assert_eq!(
            Settings::default().module_policy().unwrap(),
            ModulePolicy::Any
        );
        let bad = Settings {
            allow_modules: Some(vec!["xyz".into()]),
            ..Default::default()
        };
        assert!(bad.module_policy().unwrap_err().to_string().contains("xyz"));
    }
}
