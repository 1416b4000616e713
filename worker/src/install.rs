//! `worker install` / `worker uninstall`: a systemd service (system-wide, or `--user`) that runs
//! `worker run --config FILE` at boot (or login), with the config written beside it.

use std::path::{Path, PathBuf};

/// The unit's name.
pub const UNIT_NAME: &str = "sparecycles-worker.service";

/// Where the unit file goes: `/etc/systemd/system`, or the user's `~/.config/systemd/user`.
pub fn unit_path(user: bool) -> Option<PathBuf> {
    if !user {
        return Some(Path::new("/etc/systemd/system").join(UNIT_NAME));
    }
    let non_empty = |v: std::ffi::OsString| (!v.is_empty()).then(|| PathBuf::from(v));
    std::env::var_os("XDG_CONFIG_HOME")
        .and_then(non_empty)
        .or_else(|| {
            std::env::var_os("HOME")
                .and_then(non_empty)
                .map(|h| h.join(".config"))
        })
        .map(|c| c.join("systemd").join("user").join(UNIT_NAME))
}

/// Quotes a path for an `ExecStart=` line (systemd's rules are close to the shell's).
fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+:=@".contains(&b))
    {
        s.to_owned()
    } else {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    }
}

/// The unit file: runs `exe run --config config`, restarts after a crash, lowest priorities.
pub fn unit_file(exe: &Path, config: &Path, user: bool) -> String {
    let exec = format!(
        "{} run --config {}",
        quote(&exe.to_string_lossy()),
        quote(&config.to_string_lossy())
    );
    let (wanted_by, hardening) = if user {
        ("default.target", "")
    } else {
        (
            "multi-user.target",
            "DynamicUser=yes\nStateDirectory=sparecycles-worker\nProtectSystem=strict\n\
             ProtectHome=yes\nPrivateTmp=yes\nNoNewPrivileges=yes\n",
        )
    };
    format!(
        "[Unit]\n\
         Description=SpareCycles volunteer computing worker\n\
         Documentation=https://example.invalid/sparecycles\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         # SIGTERM makes the worker checkpoint, hand back its leases and flush its outbox.\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=30\n\
         Nice=19\n\
         CPUSchedulingPolicy=idle\n\
         IOSchedulingClass=idle\n\
         {hardening}\
         \n\
         [Install]\n\
         WantedBy={wanted_by}\n"
    )
}

/// The `systemctl` commands that enable (or disable) the unit.
pub fn systemctl_commands(user: bool, enable: bool) -> Vec<Vec<String>> {
    let scope = |args: &[&str]| {
        let mut cmd = vec!["systemctl".to_owned()];
        if user {
            cmd.push("--user".to_owned());
        }
        cmd.extend(args.iter().map(|s| (*s).to_owned()));
        cmd
    };
    if enable {
        vec![
            scope(&["daemon-reload"]),
            scope(&["enable", "--now", UNIT_NAME]),
        ]
    } else {
        vec![
            scope(&["disable", "--now", UNIT_NAME]),
            scope(&["daemon-reload"]),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_runs_the_worker_with_its_config() {
        let unit = unit_file(
            Path::new("/opt/sc/worker"),
            Path::new("/etc/my config.toml"),
            false,
        );
        assert!(unit.contains("ExecStart=/opt/sc/worker run --config \"/etc/my config.toml\"\n"));
        assert!(unit.contains("CPUSchedulingPolicy=idle"));
        assert!(unit.contains("WantedBy=multi-user.target"));
        let user = unit_file(Path::new("/w"), Path::new("/c.toml"), true);
        assert!(user.contains("WantedBy=default.target") && !user.contains("DynamicUser"));
        assert_eq!(
            systemctl_commands(true, true)[1],
            ["systemctl", "--user", "enable", "--now", UNIT_NAME]
        );
    }
}
