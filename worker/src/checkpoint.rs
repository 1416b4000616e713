//! Checkpoints of running units, one file each in `<state>/checkpoints/<task_id>.json`: the
//! task as leased and the app's last saved progress. Written atomically (write, fsync, rename),
//! so a crash leaves the previous checkpoint or the new one; a restarted worker resumes the
//! tasks whose deadline has not passed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sparecycles_protocol::{Millis, TaskAssignment};
use uuid::Uuid;

use crate::atomic::{TMP_SUFFIX, create_private_dir, sync_dir, write_atomic};

/// A unit's saved progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    pub task: TaskAssignment,
    /// What the app handed to its `save` callback.
    pub checkpoint: Value,
    /// Fraction of the unit done when saved.
    pub progress: f64,
    pub saved_at: Millis,
}

/// The checkpoint directory.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
}

impl Checkpoints {
    pub fn open(dir: impl Into<PathBuf>) -> io::Result<Checkpoints> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(Checkpoints { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path_of(&self, task_id: Uuid) -> PathBuf {
        self.dir.join(format!("{task_id}.json"))
    }

    /// Replaces the task's checkpoint.
    pub fn save(&self, saved: &Saved) -> io::Result<()> {
        let bytes = serde_json::to_vec(saved).map_err(io::Error::other)?;
        write_atomic(&self.path_of(saved.task.task_id), &bytes, 0o600)
    }

    /// The task's checkpoint, if one was saved and can be read.
    pub fn load(&self, task_id: Uuid) -> Option<Saved> {
        let bytes = fs::read(self.path_of(task_id)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Forgets the task's checkpoint (the unit is done, aborted or handed back).
    pub fn remove(&self, task_id: Uuid) -> io::Result<()> {
        match fs::remove_file(self.path_of(task_id)) {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Checkpoints of tasks still due after `now`, oldest task first; the others (deadline
    /// passed, unreadable, leftovers of interrupted writes) are deleted.
    pub fn resumable(&self, now: Millis) -> io::Result<Vec<Saved>> {
        let mut live = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let saved = if name.ends_with(TMP_SUFFIX) {
                None
            } else {
                fs::read(&path)
                    .ok()
                    .and_then(|b| serde_json::from_slice::<Saved>(&b).ok())
            };
            match saved {
                Some(s) if s.task.deadline > now => live.push(s),
                Some(s) => {
                    tracing::info!(task = %s.task.task_id, "dropping a checkpoint past its deadline");
                    let _ = fs::remove_file(&path);
                }
                None => {
                    tracing::warn!(path = %path.display(), "dropping an unreadable checkpoint");
                    let _ = fs::remove_file(&path);
                }
            }
        }
        live.sort_by_key(|s| s.task.task_id);
        Ok(live)
    }

    /// How many checkpoints are stored.
    pub fn count(&self) -> usize {
        fs::read_dir(&self.dir).map_or(0, |d| d.flatten().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn saved(deadline: Millis) -> Saved {
        Saved {
            task: TaskAssignment {
                task_id: Uuid::now_v7(),
                job_id: Uuid::nil(),
                unit_id: Uuid::nil(),
                unit_seq: 3,
                app: "collatz".into(),
                params: json!({}),
                unit: json!({}),
                deadline,
            },
            checkpoint: json!({"next": 5, "partial": null}),
            progress: 0.5,
            saved_at: 1,
        }
    }

    #[test]
    fn save_load_expire_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cps = Checkpoints::open(dir.path().join("cp")).unwrap();
        let (live, old) = (saved(1000), saved(10));
        cps.save(&live).unwrap();
        cps.save(&old).unwrap();
        std::fs::write(cps.dir().join("junk.json"), b"{").unwrap();
        assert_eq!(cps.load(live.task.task_id), Some(live.clone()));
        assert_eq!(cps.resumable(500).unwrap(), vec![live.clone()]);
        assert_eq!(
            cps.count(),
            1,
            "expired and unreadable checkpoints are deleted"
        );
        cps.remove(live.task.task_id).unwrap();
        cps.remove(live.task.task_id).unwrap();
        assert_eq!(cps.load(live.task.task_id), None);
    }
}
