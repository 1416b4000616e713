//! Whether to compute right now: the volunteer's [`Policy`] against what the machine says
//! (user input, power, other programs' CPU use, our memory, the clock).
//!
//! [`decide`] is pure; the readers of `/proc` and `/sys` parse text handed to them, so both are
//! tested with injected readings.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::prefs::Policy;

/// What the machine says, sampled together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Readings {
    /// Time since the last user input; `None`: nobody can be detected (a headless machine).
    pub idle_for: Option<Duration>,
    pub on_battery: bool,
    /// Share of all CPUs used by other programs since the last sample.
    pub other_cpu_percent: Option<f64>,
    /// This process's resident memory.
    pub own_rss_bytes: Option<u64>,
    /// Local day of the week (0 = Monday) and minute of the day.
    pub weekday: u8,
    pub minute: u16,
}

/// Why the worker does not compute now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum PauseReason {
    /// Paused from the status page (or by a signal).
    Manual,
    UserActive {
        idle_secs: u64,
        needed_secs: u64,
    },
    OutsideTimeWindow,
    OnBattery,
    OtherPrograms {
        cpu_percent: u8,
        limit: u8,
    },
    MemoryCap {
        rss_mib: u64,
        limit_mib: u64,
    },
}

impl fmt::Display for PauseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PauseReason::Manual => write!(f, "paused by the user"),
            PauseReason::UserActive {
                idle_secs,
                needed_secs,
            } => write!(
                f,
                "the computer is in use (idle {idle_secs} s of the {needed_secs} s required)"
            ),
            PauseReason::OutsideTimeWindow => write!(f, "outside the allowed time windows"),
            PauseReason::OnBattery => write!(f, "running on battery"),
            PauseReason::OtherPrograms { cpu_percent, limit } => write!(
                f,
                "other programs use {cpu_percent}% of the CPUs (limit {limit}%)"
            ),
            PauseReason::MemoryCap { rss_mib, limit_mib } => write!(
                f,
                "the worker uses {rss_mib} MiB of memory (limit {limit_mib} MiB)"
            ),
        }
    }
}

/// The first reason not to compute, or `None` to compute.
pub fn decide(policy: &Policy, r: &Readings) -> Option<PauseReason> {
    if let Some(idle) = r.idle_for
        && idle < policy.idle_after
    {
        return Some(PauseReason::UserActive {
            idle_secs: idle.as_secs(),
            needed_secs: policy.idle_after.as_secs(),
        });
    }
    if !policy.windows.is_empty()
        && !policy
            .windows
            .iter()
            .any(|w| w.contains(r.weekday, r.minute))
    {
        return Some(PauseReason::OutsideTimeWindow);
    }
    if policy.pause_on_battery && r.on_battery {
        return Some(PauseReason::OnBattery);
    }
    if let (Some(limit), Some(used)) = (policy.max_other_cpu_percent, r.other_cpu_percent)
        && used > f64::from(limit)
    {
        return Some(PauseReason::OtherPrograms {
            cpu_percent: used.round().min(100.0) as u8,
            limit,
        });
    }
    if let (Some(limit), Some(rss)) = (policy.max_memory_bytes, r.own_rss_bytes)
        && rss > limit
    {
        return Some(PauseReason::MemoryCap {
            rss_mib: rss >> 20,
            limit_mib: limit >> 20,
        });
    }
    None
}

/// Whether the machine runs on battery: a battery discharges and no mains supply is online.
/// `dir` is `/sys/class/power_supply`; no supplies at all means mains (a desktop, a server).
pub fn on_battery(dir: &Path) -> bool {
    let read = |p: &Path, f: &str| {
        std::fs::read_to_string(p.join(f))
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    };
    let mut discharging = false;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        match read(&path, "type").as_str() {
            "Mains" | "USB" if read(&path, "online") == "1" => return false,
            "Battery" if read(&path, "status") == "Discharging" => discharging = true,
            _ => {}
        }
    }
    discharging
}

/// Resident memory from `/proc/self/status` text (`VmRSS:  1234 kB`).
pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// This process's resident memory.
pub fn own_rss() -> Option<u64> {
    parse_rss(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// CPU time counters: all CPUs' total and busy ticks (`/proc/stat`), and ours
/// (`/proc/self/stat`), all in clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub total: u64,
    pub busy: u64,
    pub own: u64,
}

impl CpuTimes {
    /// Parses the `cpu` line of `/proc/stat` and the utime/stime fields of `/proc/self/stat`.
    pub fn parse(proc_stat: &str, self_stat: &str) -> Option<CpuTimes> {
        let cpu = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
        let fields: Vec<u64> = cpu
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        // The command name may hold spaces and parentheses: count fields after the last ')'.
        let after = &self_stat[self_stat.rfind(')')? + 1..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // After ')': state is field 3, utime field 14, stime field 15 (1-based in proc(5)).
        let own = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
        Some(CpuTimes {
            total,
            busy: total.saturating_sub(idle),
            own,
        })
    }

    pub fn read() -> Option<CpuTimes> {
        CpuTimes::parse(
            &std::fs::read_to_string("/proc/stat").ok()?,
            &std::fs::read_to_string("/proc/self/stat").ok()?,
        )
    }

    /// Share of all CPUs that others used between `earlier` and `self`.
    pub fn other_percent_since(&self, earlier: &CpuTimes) -> Option<f64> {
        let total = self.total.checked_sub(earlier.total)?;
        if total == 0 {
            return None;
        }
        let busy = self.busy.saturating_sub(earlier.busy);
        let own = self.own.saturating_sub(earlier.own);
        Some(busy.saturating_sub(own) as f64 * 100.0 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefs::{Settings, Window};

    fn policy() -> Policy {
        Settings {
            idle_minutes: Some(3.0),
            max_other_cpu_percent: Some(50),
            max_memory_mb: Some(100),
            ..Settings::default()
        }
        .policy()
        .unwrap()
    }

    #[test]
    fn each_condition_pauses_and_all_clear_computes() {
        let p = policy();
        let idle = Readings {
            idle_for: Some(Duration::from_secs(600)),
            weekday: 2,
            minute: 600,
            ..Readings::default()
        };
        assert_eq!(decide(&p, &idle), None);
        let busy = Readings {
            idle_for: Some(Duration::from_secs(10)),
            ..idle.clone()
        };
        assert_eq!(
            decide(&p, &busy),
            Some(PauseReason::UserActive {
                idle_secs: 10,
                needed_secs: 180
            })
        );
        // Nobody detectable counts as idle.
        let headless = Readings {
            idle_for: None,
            ..idle.clone()
        };
        assert_eq!(decide(&p, &headless), None);
        let battery = Readings {
            on_battery: true,
            ..idle.clone()
        };
        assert_eq!(decide(&p, &battery), Some(PauseReason::OnBattery));
        let loaded = Readings {
            other_cpu_percent: Some(75.4),
            ..idle.clone()
        };
        assert_eq!(
            decide(&p, &loaded),
            Some(PauseReason::OtherPrograms {
                cpu_percent: 75,
                limit: 50
            })
        );
        let fat = Readings {
            own_rss_bytes: Some(200 << 20),
            ..idle.clone()
        };
        assert!(matches!(
            decide(&p, &fat),
            Some(PauseReason::MemoryCap { .. })
        ));
        let mut nights = p.clone();
        nights.windows = vec![Window::parse("all 22:00-06:00").unwrap()];
        assert_eq!(decide(&nights, &idle), Some(PauseReason::OutsideTimeWindow));
        assert_eq!(decide(&Policy::always(), &busy), None);
    }

    #[test]
    fn battery_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let supply = |name: &str, files: &[(&str, &str)]| {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            for (f, v) in files {
                std::fs::write(d.join(f), format!("{v}\n")).unwrap();
            }
        };
        assert!(!on_battery(dir.path()), "no supplies: a desktop");
        supply("BAT0", &[("type", "Battery"), ("status", "Discharging")]);
        assert!(on_battery(dir.path()));
        supply("AC", &[("type", "Mains"), ("online", "1")]);
        assert!(!on_battery(dir.path()));
    }

    #[test]
    fn cpu_use_of_others_excludes_ours() {
        let stat =
            |user: u64, idle: u64| format!("cpu  {user} 0 0 {idle} 0 0 0 0 0 0\ncpu0 1 2 3\n");
        let me = |ticks: u64| format!("42 (my (odd) name) S 1 1 1 0 -1 0 0 0 0 0 {ticks} 0 0 0");
        let a = CpuTimes::parse(&stat(100, 900), &me(50)).unwrap();
        assert_eq!(
            a,
            CpuTimes {
                total: 1000,
                busy: 100,
                own: 50
            }
        );
        // 200 more ticks pass: 150 busy, of which 50 are ours.
        let b = CpuTimes::parse(&stat(250, 950), &me(100)).unwrap();
        assert_eq!(b.other_percent_since(&a), Some(50.0));
        assert_eq!(a.other_percent_since(&a), None);
        assert_eq!(parse_rss("Name: w\nVmRSS:\t  2048 kB\n"), Some(2 << 20));
        assert!(CpuTimes::read().is_some());
        assert!(own_rss().is_some());
    }
}
