//! The job pool: a comparison's runs on worker threads, one session
//! each, so two cores finish in half the time.

use super::CompareJob;
use crate::engine::Session;
use crate::rundir::RunDir;
use anyhow::{Context, Result};
use std::collections::VecDeque;
use std::sync::Mutex;

/// Runs every job to the end on `workers` threads; `done` hears of each
/// finished run (in completion order).
pub fn run_jobs(
    jobs: &[CompareJob],
    workers: usize,
    done: impl Fn(&CompareJob, &Session) + Sync,
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
                    match run_one(job) {
                        Ok(session) => done(job, &session),
                        Err(e) => {
                            *failure.lock().expect("lock") = Some(e);
                            return;
                        }
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

fn run_one(job: &CompareJob) -> Result<Session> {
    let run = RunDir::create(&job.run_dir, false)?;
    let mut session = Session::start(job.config.clone(), run)?;
    while !session.is_done() {
        session
            .step()
            .with_context(|| format!("{} seed {} ({})", job.arm, job.seed, job.run_dir.display()))?;
    }
    Ok(session)
}
