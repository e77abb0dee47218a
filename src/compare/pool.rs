//! The job pool: a comparison's runs on worker threads, one session
//! each, so two cores finish in half the time. A job whose folder already
//! holds its run (a sweep point that was interrupted) is not started
//! again: a finished run is kept, one cut short continues from its
//! checkpoint, and only one that never wrote a checkpoint starts over. A
//! checkpoint that cannot be read (damaged, or written by another version
//! of disback) is named and the comparison refused: nothing is deleted,
//! since the files may be all there is of hours of training.

use super::CompareJob;
use crate::engine::{Session, checkpoint_stage};
use crate::rundir::{RunDir, Stage};
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::path::Path;
use std::sync::Mutex;

/// How a job's run came to its end.
pub enum Ended<'a> {
    /// Run here from its first step.
    Ran(&'a Session),
    /// Run here from its first step, over a run cut short before its first
    /// checkpoint.
    Restarted(&'a Session),
    /// Continued here from the checkpoint at this iteration: the seconds
    /// before it are not known.
    Resumed(&'a Session, usize),
    /// Finished before: its files are read as they are.
    Kept,
}

/// Runs every job to the end on `workers` threads; `done` hears of each
/// finished run (in completion order), `say` of a run started over.
pub fn run_jobs(
    jobs: &[CompareJob],
    workers: usize,
    say: &(dyn Fn(String) + Sync),
    done: impl Fn(&CompareJob, Ended) + Sync,
) -> Result<()> {
    let queue = Mutex::new(jobs.iter().collect::<VecDeque<_>>());
    let failure: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| {
                loop {
                    if failure.lock().expect("lock").is_some() {
                        return;
                    }
                    let Some(job) = queue.lock().expect("lock").pop_front() else {
                        return;
                    };
                    if let Err(e) = run_one(job, say, &done) {
                        *failure.lock().expect("lock") = Some(e);
                        return;
                    }
                }
            });
        }
    });
    match failure.into_inner().expect("lock") {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What a job's folder holds.
enum Found {
    Nothing,
    Finished,
    Checkpoint(usize),
    /// Files but no checkpoint at all: cut short before the first.
    NoCheckpoint,
}

fn found(dir: &Path) -> Result<Found> {
    let empty = dir.read_dir().map_or(true, |mut d| {
        d.all(|e| e.is_ok_and(|e| e.file_name() == "run.lock"))
    });
    if empty {
        return Ok(Found::Nothing);
    }
    let run = RunDir::written_by_another(dir);
    if !run.state_dir().join("latest.json").exists() {
        return Ok(Found::NoCheckpoint);
    }
    let refused = |e: anyhow::Error| {
        anyhow::anyhow!(
            "{e:#}\nthe run in {} has a checkpoint that cannot be read; nothing in it was deleted. \
             To run it again from the start, move {} away and run again",
            dir.display(),
            dir.display()
        )
    };
    // The last checkpoint of a run is written after its final files.
    Ok(match checkpoint_stage(&run).map_err(refused)? {
        (Stage::Done, _) => Found::Finished,
        (_, iteration) => Found::Checkpoint(iteration),
    })
}

fn run_one(job: &CompareJob, say: &dyn Fn(String), done: &impl Fn(&CompareJob, Ended)) -> Result<()> {
    let what = || format!("{} seed {} ({})", job.arm, job.seed, job.run_dir.display());
    let to_the_end = |mut session: Session| -> Result<Session> {
        while !session.is_done() {
            session.step().with_context(what)?;
        }
        Ok(session)
    };
    let fresh = |overwrite: bool| -> Result<Session> {
        let run = RunDir::create(&job.run_dir, overwrite)?;
        to_the_end(Session::start(job.config.clone(), run)?)
    };
    match found(&job.run_dir)? {
        Found::Nothing => done(job, Ended::Ran(&fresh(false)?)),
        Found::Finished => done(job, Ended::Kept),
        Found::Checkpoint(iteration) => {
            let run = RunDir::open(&job.run_dir)?.locked()?;
            let session = Session::resume(run).with_context(what)?;
            done(job, Ended::Resumed(&to_the_end(session)?, iteration));
        }
        Found::NoCheckpoint => {
            say(format!(
                "  {}: cut short before its first checkpoint; running it again from the start",
                what()
            ));
            done(job, Ended::Restarted(&fresh(true)?));
        }
    }
    Ok(())
}
