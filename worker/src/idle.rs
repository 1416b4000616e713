//! "Is the user at this PC?": how long since the last keyboard or mouse input.
//!
//! Each way of knowing is an [`IdleSource`], so that other systems (Windows' last input info,
//! macOS' HID idle time) can be added beside the Linux ones here: logind's idle hint (set by
//! X11 and Wayland sessions alike), input devices where this user may read them, terminal
//! access times, and a file (tests, custom setups). Every source takes its readings through an
//! injectable seam, so each is tested without a desktop.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One way of telling how long the user has been away.
pub trait IdleSource: Send {
    /// Short name, for logs and the status page.
    fn name(&self) -> &'static str;
    /// Time since the user's last input, or `None` when this source cannot tell (right now).
    fn idle_for(&mut self, now: SystemTime) -> Option<Duration>;
}

/// Builds the source named by `--idle-source`: `auto` (or nothing) or `file:PATH`.
pub fn from_spec(spec: Option<&str>) -> Result<Box<dyn IdleSource>, String> {
    match spec.map(str::trim) {
        None | Some("" | "auto") => Ok(Box::new(Auto::system())),
        Some(s) => match s.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Ok(Box::new(FileSource::new(path))),
            _ => Err(format!(
                "idle source {s:?}: expected \"auto\" or \"file:PATH\""
            )),
        },
    }
}

fn since(now: SystemTime, then: SystemTime) -> Duration {
    now.duration_since(then).unwrap_or(Duration::ZERO)
}

/// A file holding `active`, `idle`, or the idle time in seconds. A missing or unreadable file
/// tells nothing.
#[derive(Debug)]
pub struct FileSource {
    path: PathBuf,
}

impl FileSource {
    pub fn new(path: impl Into<PathBuf>) -> FileSource {
        FileSource { path: path.into() }
    }
}

impl IdleSource for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    fn idle_for(&mut self, _now: SystemTime) -> Option<Duration> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        match text.trim() {
            "active" => Some(Duration::ZERO),
            "idle" => Some(Duration::MAX),
            secs => secs
                .parse::<f64>()
                .ok()
                .and_then(|s| Duration::try_from_secs_f64(s).ok()),
        }
    }
}

/// How long a logind answer is trusted before asking again (each question starts `busctl`).
const LOGIND_REFRESH: Duration = Duration::from_secs(5);
/// How long to wait before asking again after logind could not be asked.
const LOGIND_RETRY: Duration = Duration::from_secs(60);

/// logind's `IdleHint`/`IdleSinceHint` of the whole seat: true only when every session is idle.
pub struct Logind {
    query: Box<dyn FnMut() -> Option<String> + Send>,
    cached: Option<(Instant, Option<(bool, u64)>)>,
}

impl Logind {
    /// Asks the system's logind through `busctl`.
    pub fn system() -> Logind {
        Logind::with_query(|| {
            let out = std::process::Command::new("busctl")
                .args([
                    "--system",
                    "get-property",
                    "org.freedesktop.login1",
                    "/org/freedesktop/login1",
                    "org.freedesktop.login1.Manager",
                    "IdleHint",
                    "IdleSinceHint",
                ])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        })
    }

    /// Reads `busctl get-property ... IdleHint IdleSinceHint` output from `query`.
    pub fn with_query(query: impl FnMut() -> Option<String> + Send + 'static) -> Logind {
        Logind {
            query: Box::new(query),
            cached: None,
        }
    }
}

/// Parses `b true\nt 1700000000000000\n` into (idle, since in µs after the epoch).
fn parse_busctl(out: &str) -> Option<(bool, u64)> {
    let mut lines = out.lines().map(str::trim).filter(|l| !l.is_empty());
    let hint = match lines.next()?.strip_prefix("b ")? {
        "true" => true,
        "false" => false,
        _ => return None,
    };
    let since = lines.next()?.strip_prefix("t ")?.parse().ok()?;
    Some((hint, since))
}

impl IdleSource for Logind {
    fn name(&self) -> &'static str {
        "logind"
    }

    fn idle_for(&mut self, now: SystemTime) -> Option<Duration> {
        let fresh = match self.cached {
            Some((at, Some(_))) => at.elapsed() < LOGIND_REFRESH,
            Some((at, None)) => at.elapsed() < LOGIND_RETRY,
            None => false,
        };
        if !fresh {
            let answer = (self.query)().as_deref().and_then(parse_busctl);
            self.cached = Some((Instant::now(), answer));
        }
        let (idle, since_us) = self.cached.and_then(|(_, answer)| answer)?;
        if !idle {
            return Some(Duration::ZERO);
        }
        Some(since(now, UNIX_EPOCH + Duration::from_micros(since_us)))
    }
}

/// Input devices (`/dev/input/event*`) this user may read: one thread per device blocks on it
/// and notes the time of each event. Not available without read access (the `input` group).
#[derive(Debug)]
pub struct InputDevices {
    /// Milliseconds after the epoch of the last event (or of the start).
    last: Arc<AtomicU64>,
    devices: usize,
}

fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl InputDevices {
    /// Opens every readable event device under `/dev/input`.
    pub fn system() -> InputDevices {
        let readers = std::fs::read_dir("/dev/input")
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
            .filter_map(|e| std::fs::File::open(e.path()).ok())
            .map(|f| Box::new(f) as Box<dyn Read + Send>)
            .collect();
        InputDevices::from_readers(readers)
    }

    /// Watches the given event streams; any bytes read count as user input.
    pub fn from_readers(readers: Vec<Box<dyn Read + Send>>) -> InputDevices {
        let last = Arc::new(AtomicU64::new(epoch_ms(SystemTime::now())));
        let devices = readers.len();
        for (i, mut reader) in readers.into_iter().enumerate() {
            let last = last.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("input-{i}"))
                .spawn(move || {
                    let mut buf = [0u8; 256];
                    while let Ok(n) = reader.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        last.fetch_max(epoch_ms(SystemTime::now()), Ordering::Relaxed);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "cannot watch an input device");
            }
        }
        InputDevices { last, devices }
    }
}

impl IdleSource for InputDevices {
    fn name(&self) -> &'static str {
        "input devices"
    }

    fn idle_for(&mut self, now: SystemTime) -> Option<Duration> {
        if self.devices == 0 {
            return None;
        }
        let last = UNIX_EPOCH + Duration::from_millis(self.last.load(Ordering::Relaxed));
        Some(since(now, last))
    }
}

/// Terminals' access times: the kernel touches a terminal's atime when it is read, that is
/// when someone types into it (text consoles, SSH sessions, terminal emulators).
#[derive(Debug)]
pub struct Terminals {
    dirs: Vec<PathBuf>,
}

impl Terminals {
    /// `/dev/pts/*` and the text consoles `/dev/tty1`... (but not `/dev/tty` or `/dev/ptmx`).
    pub fn system() -> Terminals {
        Terminals::in_dirs(vec![PathBuf::from("/dev/pts"), PathBuf::from("/dev")])
    }

    pub fn in_dirs(dirs: Vec<PathBuf>) -> Terminals {
        Terminals { dirs }
    }

    fn is_terminal(dir: &Path, name: &str) -> bool {
        if dir.ends_with("pts") {
            return name.bytes().all(|b| b.is_ascii_digit());
        }
        name.strip_prefix("tty")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    }
}

impl IdleSource for Terminals {
    fn name(&self) -> &'static str {
        "terminals"
    }

    fn idle_for(&mut self, now: SystemTime) -> Option<Duration> {
        let mut latest: Option<SystemTime> = None;
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !Terminals::is_terminal(dir, &name.to_string_lossy()) {
                    continue;
                }
                if let Ok(accessed) = entry.metadata().and_then(|m| m.accessed()) {
                    latest = Some(latest.map_or(accessed, |l| l.max(accessed)));
                }
            }
        }
        latest.map(|t| since(now, t))
    }
}

/// logind when it answers; else the most recent input seen by the other sources. When none
/// can tell, nobody is known to be at the machine (a headless server): `None`.
pub struct Auto {
    first: Box<dyn IdleSource>,
    fallbacks: Vec<Box<dyn IdleSource>>,
}

impl Auto {
    pub fn system() -> Auto {
        Auto::new(
            Box::new(Logind::system()),
            vec![
                Box::new(InputDevices::system()),
                Box::new(Terminals::system()),
            ],
        )
    }

    pub fn new(first: Box<dyn IdleSource>, fallbacks: Vec<Box<dyn IdleSource>>) -> Auto {
        Auto { first, fallbacks }
    }
}

impl IdleSource for Auto {
    fn name(&self) -> &'static str {
        "auto"
    }

    fn idle_for(&mut self, now: SystemTime) -> Option<Duration> {
        if let Some(idle) = self.first.idle_for(now) {
            return Some(idle);
        }
        self.fallbacks
            .iter_mut()
            .filter_map(|s| s.idle_for(now))
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const T0: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn file_source_reads_active_idle_and_seconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idle");
        let mut source = FileSource::new(&path);
        assert_eq!(source.idle_for(at(T0)), None);
        std::fs::write(&path, "active\n").unwrap();
        assert_eq!(source.idle_for(at(T0)), Some(Duration::ZERO));
        std::fs::write(&path, "idle").unwrap();
        assert_eq!(source.idle_for(at(T0)), Some(Duration::MAX));
        std::fs::write(&path, "90").unwrap();
        assert_eq!(source.idle_for(at(T0)), Some(Duration::from_secs(90)));
        std::fs::write(&path, "what").unwrap();
        assert_eq!(source.idle_for(at(T0)), None);
    }

    #[test]
    fn logind_hint_is_parsed_and_cached() {
        let answers = Arc::new(std::sync::Mutex::new(vec![
            None,
            Some(format!("b true\nt {}\n", (T0 - 300) * 1_000_000)),
        ]));
        let calls = Arc::new(AtomicU64::new(0));
        let (a, c) = (answers.clone(), calls.clone());
        let mut logind = Logind::with_query(move || {
            c.fetch_add(1, Ordering::Relaxed);
            a.lock().unwrap().pop().flatten()
        });
        assert_eq!(logind.idle_for(at(T0)), Some(Duration::from_secs(300)));
        // Cached: asking again within seconds does not start busctl again.
        assert_eq!(logind.idle_for(at(T0 + 1)), Some(Duration::from_secs(301)));
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(parse_busctl("b false\nt 0\n"), Some((false, 0)));
        assert_eq!(parse_busctl("garbage"), None);
        let mut active = Logind::with_query(|| Some("b false\nt 1\n".into()));
        assert_eq!(active.idle_for(at(T0)), Some(Duration::ZERO));
        let mut absent = Logind::with_query(|| None);
        assert_eq!(absent.idle_for(at(T0)), None);
    }

    #[test]
    fn input_devices_note_each_event() {
        let (reader, mut writer) = std::io::pipe().unwrap();
        let mut input = InputDevices::from_readers(vec![Box::new(reader)]);
        std::thread::sleep(Duration::from_millis(50));
        let before = input.idle_for(SystemTime::now()).unwrap();
        assert!(before >= Duration::from_millis(40), "{before:?}");
        writer.write_all(&[0u8; 24]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while input.idle_for(SystemTime::now()).unwrap() >= Duration::from_millis(40) {
            assert!(Instant::now() < deadline, "the event was not noticed");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(
            InputDevices::from_readers(Vec::new()).idle_for(at(T0)),
            None
        );
    }

    #[test]
    fn terminals_use_the_latest_access_time() {
        let dir = tempfile::tempdir().unwrap();
        let pts = dir.path().join("pts");
        std::fs::create_dir(&pts).unwrap();
        let touch = |path: PathBuf, secs: u64| {
            let f = std::fs::File::create(path).unwrap();
            f.set_times(std::fs::FileTimes::new().set_accessed(at(secs)))
                .unwrap();
        };
        let mut terms = Terminals::in_dirs(vec![pts.clone(), dir.path().to_owned()]);
        assert_eq!(terms.idle_for(at(T0)), None);
        touch(pts.join("0"), T0 - 100);
        touch(pts.join("ptmx"), T0); // not a terminal someone types into
        touch(dir.path().join("tty2"), T0 - 40);
        touch(dir.path().join("tty"), T0);
        assert_eq!(terms.idle_for(at(T0)), Some(Duration::from_secs(40)));
    }

    struct Fixed(Option<Duration>);

    impl IdleSource for Fixed {
        fn name(&self) -> &'static str {
            "fixed"
        }
        fn idle_for(&mut self, _now: SystemTime) -> Option<Duration> {
            self.0
        }
    }

    #[test]
    fn auto_prefers_logind_then_the_most_recent_fallback() {
        let secs = |s| Some(Duration::from_secs(s));
        let mut auto = Auto::new(Box::new(Fixed(secs(5))), vec![Box::new(Fixed(secs(1)))]);
        assert_eq!(auto.idle_for(at(T0)), secs(5));
        let mut auto = Auto::new(
            Box::new(Fixed(None)),
            vec![
                Box::new(Fixed(secs(70))),
                Box::new(Fixed(None)),
                Box::new(Fixed(secs(9))),
            ],
        );
        assert_eq!(auto.idle_for(at(T0)), secs(9));
        let mut nobody = Auto::new(Box::new(Fixed(None)), vec![Box::new(Fixed(None))]);
        assert_eq!(nobody.idle_for(at(T0)), None);
        assert!(from_spec(Some("file:")).is_err());
        assert_eq!(from_spec(Some("file:/x")).unwrap().name(), "file");
    }
}
