//! Finished results waiting for the coordinator's acknowledgement, one file each.
//!
//! A result is written (fsynced) to `<state>/outbox/<task_id>.json` before it is sent, and removed
//! only once the coordinator has accepted or refused it: a crash or a coordinator outage never
//! loses finished work, and a restarted worker sends what the previous run could not.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sparecycles_protocol::TaskResult;
use uuid::Uuid;

use crate::atomic::{TMP_SUFFIX, create_private_dir, write_atomic_with};

const EXTENSION: &str = "json";
/// Suffix given to files that cannot be read back, so they are kept for a human but not retried.
const CORRUPT_SUFFIX: &str = ".corrupt";

/// The outbox directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    /// Opens the outbox at `dir`, creating it if needed.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Outbox> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(Outbox { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, task_id: Uuid) -> PathBuf {
        self.dir.join(format!("{task_id}.{EXTENSION}"))
    }

    /// How many results are stored (a cheap count of files, for the status).
    pub fn len(&self) -> usize {
        fs::read_dir(&self.dir).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
                .count()
        })
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a result durably (fsynced); a result for the same task replaces the previous one.
    pub fn write(&self, result: &TaskResult) -> io::Result<()> {
        self.write_with(result, true)
    }

    /// Stores a result; fsynced only when `durable`. Every result survives a crash of the
    /// worker; one not fsynced may be lost to a power cut, and is then computed again (the
    /// coordinator resends a task the worker no longer names). Two fsyncs cost more than a
    /// short unit's whole computation, so only results worth more than that are synced.
    pub fn write_with(&self, result: &TaskResult, durable: bool) -> io::Result<()> {
        let bytes = serde_json::to_vec(result).map_err(io::Error::other)?;
        write_atomic_with(&self.path_of(result.task_id), &bytes, 0o600, durable)
    }

    /// Every stored result, oldest task id first (v7 ids sort by time). Unreadable files are
    /// renamed aside with a warning; leftovers of interrupted writes are deleted.
    pub fn list(&self) -> io::Result<Vec<TaskResult>> {
        let mut results = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if name.ends_with(TMP_SUFFIX) {
                let _ = fs::remove_file(&path);
                continue;
            }
            let Some(stem) = name.strip_suffix(&format!(".{EXTENSION}")) else {
                continue;
            };
            match read_result(&path, stem) {
                Ok(result) => results.push(result),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "unreadable outbox entry set aside");
                    let aside = path.with_file_name(format!("{name}{CORRUPT_SUFFIX}"));
                    let _ = fs::rename(&path, aside);
                }
            }
        }
        results.sort_by_key(|r| r.task_id);
        Ok(results)
    }

    /// The tasks whose results are stored (file names only; nothing is parsed).
    pub fn task_ids(&self) -> io::Result<Vec<Uuid>> {
        let suffix = format!(".{EXTENSION}");
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(&suffix))
                .and_then(|stem| stem.parse().ok())
            {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Forgets the results of these tasks (acknowledged by the coordinator). Missing files are
    /// not an error: removal is idempotent.
    pub fn remove(&self, task_ids: &[Uuid]) -> io::Result<()> {
        if task_ids.is_empty() {
            return Ok(());
        }
        for &id in task_ids {
            match fs::remove_file(self.path_of(id)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        // Not fsynced: a removal undone by a power cut only re-sends a result the coordinator
        // already has, which it refuses as already reported.
        Ok(())
    }
}

fn read_result(path: &Path, stem: &str) -> io::Result<TaskResult> {
    let id: Uuid = stem
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("file name: {e}")))?;
    let result: TaskResult = serde_json::from_slice(&fs::read(path)?)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    if result.task_id != id {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("holds the result of task {}", result.task_id),
        ));
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trip_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path().join("outbox")).unwrap();
        assert!(outbox.list().unwrap().is_empty());

        let a = TaskResult::success(Uuid::now_v7(), json!({"count": 25}));
        let b = TaskResult::failure(Uuid::now_v7(), "overflow");
        outbox.write(&a).unwrap();
        outbox.write(&b).unwrap();
        assert_eq!(outbox.list().unwrap(), vec![a.clone(), b.clone()]);

        // "Restart": a new Outbox on the same directory sees the same results.
        let reopened = Outbox::open(dir.path().join("outbox")).unwrap();
        assert_eq!(reopened.list().unwrap(), vec![a.clone(), b.clone()]);

        reopened.remove(&[a.task_id]).unwrap();
        reopened.remove(&[a.task_id]).unwrap(); // idempotent
        assert_eq!(reopened.list().unwrap(), vec![b.clone()]);
        reopened.remove(&[b.task_id]).unwrap();
        assert!(
            Outbox::open(outbox.dir())
                .unwrap()
                .list()
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn junk_is_set_aside_and_tmp_files_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let good = TaskResult::success(Uuid::now_v7(), json!(1));
        outbox.write(&good).unwrap();
        let bad = dir.path().join(format!("{}.json", Uuid::now_v7()));
        fs::write(&bad, b"{truncated").unwrap();
        fs::write(dir.path().join(".x.json.1234.tmp"), b"partial").unwrap();

        assert_eq!(outbox.list().unwrap(), vec![good]);
        assert!(!bad.exists());
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().any(|n| n.ends_with(CORRUPT_SUFFIX)));
    }
}
