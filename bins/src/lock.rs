//! The data folder's lock: one cycle (or apply) at a time.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::Error;

/// An exclusive `flock` on `_sync/lock`, held for the life of the value.
///
/// The kernel releases the lock when the holding process dies, however it
/// dies (SIGKILL included), so a lock left by a dead process is taken over
/// without any staleness heuristics; the file's text (pid, start time, run
/// id) is only informational.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

impl DataDirLock {
    /// Takes the lock or fails at once with [`Error::Locked`].
    pub fn acquire(path: &Path, note: &str) -> Result<DataDirLock, Error> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim().to_string();
                return Err(Error::Locked {
                    path: path.to_path_buf(),
                    holder: (!holder.is_empty()).then_some(holder),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
        let stale = {
            let mut s = String::new();
            let _ = file.read_to_string(&mut s);
            s.trim().to_string()
        };
        if !stale.is_empty() {
            tracing::info!(previous = %stale, "took over a lock left by a process that is gone");
        }
        file.set_len(0).map_err(|e| Error::io(path, e))?;
        file.rewind().map_err(|e| Error::io(path, e))?;
        writeln!(file, "pid {} {note}", std::process::id()).map_err(|e| Error::io(path, e))?;
        Ok(DataDirLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_and_released_lock_is_reusable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("_sync").join("lock");
        let a = DataDirLock::acquire(&p, "run A").expect("first");
        let err = DataDirLock::acquire(&p, "run B").expect_err("held");
        assert!(err.to_string().contains("run A"), "{err}");
        drop(a);
        DataDirLock::acquire(&p, "run C").expect("after release");
    }
}
