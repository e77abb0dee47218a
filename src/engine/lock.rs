//! One writer per run directory: an exclusive `flock` on `run.lock`, held
//! for the life of the process that writes the run. The kernel releases it
//! when the process ends however it ends (kill -9 included), so a lock is
//! never stale. The file names its holder, for the refusal message.

use anyhow::{Context, Result, bail};
use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The lock file's name inside a run directory.
pub const LOCK_FILE: &str = "run.lock";

/// A held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    path: PathBuf,
}

impl RunLock {
    /// Takes the lock of the folder `dir` (which must exist), or says who
    /// holds it.
    pub fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let holder = holder.trim();
                bail!(
                    "{} is in use by another process ({}); one process writes a run at a time: \
                     wait for it to end or stop it first",
                    dir.display(),
                    if holder.is_empty() {
                        "unknown holder"
                    } else {
                        holder
                    }
                );
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let command: Vec<String> = std::env::args().collect();
        let holder = format!("pid {}: {}\n", std::process::id(), command.join(" "));
        file.set_len(0)
            .and_then(|()| file.write_all(holder.as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_with_the_holder_named_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        let pid = format!("pid {}", std::process::id());
        assert!(err.contains("in use") && err.contains(&pid), "{err}");
        drop(first);
        RunLock::acquire(dir.path()).expect("free again once the holder is gone");
    }
}
