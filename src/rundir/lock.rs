//! One writer per run directory: an exclusive `flock` on `run.lock`, held
//! for the life of the process that writes the run. The kernel releases it
//! when the process ends however it ends (kill -9 included), so a lock is
//! never stale. The file names its holder, for the refusal message.

use anyhow::{Context, Result, bail};
use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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
        match try_lock_briefly(&file) {
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

/// How long a busy lock is retried before the directory is called in use.
const RELEASE_GRACE: Duration = Duration::from_millis(500);

/// `try_lock`, retried for [`RELEASE_GRACE`]. Why not once: a process that
/// spawns a child (a runner, a `python` worker, any `Command`) lends the
/// child a copy of every descriptor from `fork` until `exec` closes it, and
/// a `flock` lives as long as any copy does. A lock this process has just
/// dropped can so stay held for the few milliseconds another thread's child
/// takes to reach `exec`. A real second writer still holds it after the grace.
fn try_lock_briefly(file: &File) -> std::result::Result<(), TryLockError> {
    let deadline = Instant::now() + RELEASE_GRACE;
    loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
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

    /// The failure CI once met: another test spawned a child while this
    /// process held a lock, the child's copy of the descriptor outlived the
    /// drop, and the next acquire was refused. Here the child is made to
    /// linger between `fork` and `exec` for a tenth of a second.
    #[test]
    fn a_lock_just_dropped_is_taken_again_while_a_child_is_on_its_way_to_exec() {
        use std::io::Read;
        use std::os::unix::net::UnixStream;
        use std::os::unix::process::CommandExt;

        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let (mut forked, child_end) = UnixStream::pair().unwrap();
        let spawner = std::thread::spawn(move || {
            let mut command = std::process::Command::new("true");
            // SAFETY: write and nanosleep are async-signal-safe; nothing allocates.
            unsafe {
                command.pre_exec(move || {
                    (&child_end).write_all(&[1])?;
                    std::thread::sleep(Duration::from_millis(100));
                    Ok(())
                })
            };
            command.status().unwrap()
        });
        forked.read_exact(&mut [0]).unwrap();
        drop(first);
        RunLock::acquire(dir.path()).expect("the child's copy is gone once it execs");
        assert!(spawner.join().unwrap().success());
    }
}
