//! Finished results waiting for the coordinator's acknowledgement.
//!
//! A result is written to the outbox before it is sent, and forgotten only once the coordinator
//! has accepted or refused it: a crash or a coordinator outage never loses finished work, and a
//! restarted worker sends what the previous run could not.
//!
//! Results of long units get a file each, `<state>/outbox/<task_id>.json`, fsynced. Results of
//! short units are appended to a journal, `journal-<id>.jsonl` (one JSON line each, not
//! fsynced): a file per result would cost short units more in directory updates than their
//! computation, and a power cut only costs a recomputation (the coordinator resends tasks the
//! worker no longer names). A journal is deleted once all of its results are acknowledged.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sparecycles_protocol::TaskResult;
use uuid::Uuid;

use crate::atomic::{TMP_SUFFIX, create_private_dir, write_atomic_with};

const EXTENSION: &str = "json";
/// Suffix given to files that cannot be read back, so they are kept for a human but not retried.
const CORRUPT_SUFFIX: &str = ".corrupt";
const JOURNAL_PREFIX: &str = "journal-";
const JOURNAL_SUFFIX: &str = ".jsonl";
/// Results appended to one journal before the next one is started, so that a journal with
/// one unacknowledged result does not grow without end.
const JOURNAL_ENTRIES: usize = 1000;

/// The outbox directory.
#[derive(Debug, Clone)]
pub struct Outbox {
    dir: PathBuf,
    journals: Arc<Mutex<Journals>>,
}

/// A journal line recording acknowledged results (the others are results).
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Acked {
    acked: Vec<Uuid>,
}

/// What the outbox holds, kept in memory so that the lease loop can name the held tasks
/// without reading the directory each time: which tasks have a file of their own, and which
/// unacknowledged results live in which journal.
#[derive(Debug, Default)]
struct Journals {
    /// Tasks whose result has a file of its own.
    files: HashSet<Uuid>,
    /// The journal being appended to: its name, file, and how many results it got.
    current: Option<(String, File, usize)>,
    /// Unacknowledged task ids by journal name.
    open: HashMap<String, HashSet<Uuid>>,
    /// The journal of each unacknowledged task id.
    by_task: HashMap<Uuid, String>,
}

impl Journals {
    fn add(&mut self, journal: &str, task_id: Uuid) {
        if let Some(previous) = self.by_task.insert(task_id, journal.to_owned())
            && previous != journal
            && let Some(ids) = self.open.get_mut(&previous)
        {
            ids.remove(&task_id);
        }
        self.open
            .entry(journal.to_owned())
            .or_default()
            .insert(task_id);
    }
}

impl Outbox {
    /// Opens the outbox at `dir`, creating it if needed, and indexes the journals in it.
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Outbox> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        let outbox = Outbox {
            dir,
            journals: Default::default(),
        };
        outbox.journal_results()?;
        let files = outbox.scan_files()?;
        outbox.lock().files = files;
        Ok(outbox)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, task_id: Uuid) -> PathBuf {
        self.dir.join(format!("{task_id}.{EXTENSION}"))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journals> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.journals.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many results are stored.
    pub fn len(&self) -> usize {
        let index = self.lock();
        index.files.len() + index.by_task.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a result durably (fsynced); a result for the same task replaces the previous one.
    pub fn write(&self, result: &TaskResult) -> io::Result<()> {
        self.write_with(result, true)
    }

    /// Stores a result: in a file of its own, fsynced, when `durable`; else appended to the
    /// journal. Every result survives a crash of the worker; a journaled one may be lost to a
    /// power cut, and is then computed again.
    pub fn write_with(&self, result: &TaskResult, durable: bool) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(result).map_err(io::Error::other)?;
        if durable {
            write_atomic_with(&self.path_of(result.task_id), &bytes, 0o600, true)?;
            self.lock().files.insert(result.task_id);
            return Ok(());
        }
        bytes.push(b'\n');
        let mut journals = self.lock();
        if journals
            .current
            .as_ref()
            .is_none_or(|(_, _, entries)| *entries >= JOURNAL_ENTRIES)
        {
            let name = format!("{JOURNAL_PREFIX}{}{JOURNAL_SUFFIX}", Uuid::now_v7());
            let file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .mode(0o600)
                .open(self.dir.join(&name))?;
            journals.current = Some((name, file, 0));
        }
        let (name, file, entries) = journals.current.as_mut().expect("just opened");
        file.write_all(&bytes)?;
        *entries += 1;
        let name = name.clone();
        journals.add(&name, result.task_id);
        Ok(())
    }

    /// The results in the journals that are not acknowledged yet; indexes them on the way.
    /// Torn lines (a crash mid-append) are skipped.
    fn journal_results(&self) -> io::Result<Vec<TaskResult>> {
        let mut results = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !(name.starts_with(JOURNAL_PREFIX) && name.ends_with(JOURNAL_SUFFIX)) {
                continue;
            }
            let text = fs::read(&path)?;
            let mut journals = self.lock();
            let known = journals.open.contains_key(name);
            let mut found: HashMap<Uuid, TaskResult> = HashMap::new();
            for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                if let Ok(result) = serde_json::from_slice::<TaskResult>(line) {
                    found.insert(result.task_id, result);
                } else if let Ok(acked) = serde_json::from_slice::<Acked>(line) {
                    acked.acked.iter().for_each(|id| {
                        found.remove(id);
                    });
                } else {
                    tracing::warn!(journal = %path.display(), "skipping a torn journal line");
                }
            }
            for (id, result) in found {
                let pending = journals.by_task.get(&id).is_some_and(|j| j == name);
                if !known || pending {
                    journals.add(name, id);
                    results.push(result);
                }
            }
            let empty = journals.open.get(name).is_none_or(HashSet::is_empty);
            let current = journals.current.as_ref().is_some_and(|(c, _, _)| c == name);
            if empty && !current {
                journals.open.remove(name);
                let _ = fs::remove_file(&path);
            }
        }
        Ok(results)
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
        let in_files: HashSet<Uuid> = results.iter().map(|r| r.task_id).collect();
        // Files set aside above are no longer held.
        self.lock().files = in_files.clone();
        results.extend(
            self.journal_results()?
                .into_iter()
                .filter(|r| !in_files.contains(&r.task_id)),
        );
        results.sort_by_key(|r| r.task_id);
        results.dedup_by_key(|r| r.task_id);
        Ok(results)
    }

    /// The tasks whose results are stored.
    pub fn task_ids(&self) -> Vec<Uuid> {
        let index = self.lock();
        index
            .files
            .iter()
            .chain(index.by_task.keys())
            .copied()
            .collect()
    }

    /// The tasks with a result file of their own (file names only; nothing is parsed).
    fn scan_files(&self) -> io::Result<HashSet<Uuid>> {
        let suffix = format!(".{EXTENSION}");
        let mut ids = HashSet::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(&suffix))
                .and_then(|stem| stem.parse().ok())
            {
                ids.insert(id);
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
        let (mut emptied, mut files) = (Vec::new(), Vec::new());
        let mut acked: HashMap<String, Vec<Uuid>> = HashMap::new();
        {
            let mut journals = self.lock();
            for &id in task_ids {
                let Some(journal) = journals.by_task.remove(&id) else {
                    if journals.files.remove(&id) {
                        files.push(id);
                    }
                    continue;
                };
                if let Some(ids) = journals.open.get_mut(&journal) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        journals.open.remove(&journal);
                        if journals
                            .current
                            .as_ref()
                            .is_some_and(|(c, _, _)| *c == journal)
                        {
                            journals.current = None;
                        }
                        acked.remove(&journal);
                        emptied.push(journal);
                    } else {
                        acked.entry(journal).or_default().push(id);
                    }
                }
            }
            // Journals that keep results note the acknowledged ones, so a restart does not
            // send them again.
            for (journal, ids) in acked {
                let mut line =
                    serde_json::to_vec(&Acked { acked: ids }).map_err(io::Error::other)?;
                line.push(b'\n');
                match journals.current.as_mut() {
                    Some((name, file, _)) if *name == journal => file.write_all(&line)?,
                    _ => OpenOptions::new()
                        .append(true)
                        .open(self.dir.join(&journal))?
                        .write_all(&line)?,
                }
            }
        }
        for journal in emptied {
            match fs::remove_file(self.dir.join(journal)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        for id in files {
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
    fn journaled_results_survive_restart_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let results: Vec<_> = (0..5)
            .map(|i| TaskResult::success(Uuid::now_v7(), json!({"count": i})))
            .collect();
        for r in &results {
            outbox.write_with(r, false).unwrap();
        }
        let durable = TaskResult::success(Uuid::now_v7(), json!("long"));
        outbox.write(&durable).unwrap();
        assert_eq!(outbox.len(), 6);
        outbox
            .remove(&[results[0].task_id, results[1].task_id])
            .unwrap();
        let mut ids = outbox.task_ids();
        ids.sort();
        let mut expected: Vec<Uuid> = results[2..].iter().map(|r| r.task_id).collect();
        expected.push(durable.task_id);
        assert_eq!(ids, expected);

        // A crash mid-append leaves a torn last line; a restart skips it and keeps the rest.
        let journal = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(JOURNAL_SUFFIX))
            .unwrap();
        OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap()
            .write_all(b"{\"task_id\":")
            .unwrap();
        let reopened = Outbox::open(dir.path()).unwrap();
        let mut expected_results = results[2..].to_vec();
        expected_results.push(durable.clone());
        expected_results.sort_by_key(|r| r.task_id);
        assert_eq!(reopened.list().unwrap(), expected_results);
        assert_eq!(reopened.len(), 4);

        // Acknowledging the rest deletes the journal.
        let rest: Vec<Uuid> = expected_results.iter().map(|r| r.task_id).collect();
        reopened.remove(&rest).unwrap();
        assert!(!journal.exists());
        assert!(Outbox::open(dir.path()).unwrap().list().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn journals_rotate_and_go_when_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(dir.path()).unwrap();
        let ids: Vec<Uuid> = (0..JOURNAL_ENTRIES + 1).map(|_| Uuid::now_v7()).collect();
        for &id in &ids {
            outbox
                .write_with(&TaskResult::success(id, json!(1)), false)
                .unwrap();
        }
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
        outbox.remove(&ids[..JOURNAL_ENTRIES]).unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "the full journal is gone"
        );
        outbox.remove(&ids[JOURNAL_ENTRIES..]).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        // The next result starts a new journal.
        outbox
            .write_with(&TaskResult::success(Uuid::now_v7(), json!(2)), false)
            .unwrap();
        assert_eq!(outbox.len(), 1);
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
