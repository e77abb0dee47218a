//! Runs DisBack and the Diff-Instruct baseline side by side: the same
//! problem, seeds, teacher, networks and number of generator updates. Runs
//! go to a pool of worker threads (one session each), so two cores finish
//! a comparison in half the time.

use super::{RunDir, Session, Stage};
use crate::config::{Config, Method};
use anyhow::{Context, Result, bail};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One run of a comparison.
#[derive(Debug, Clone)]
pub struct CompareJob {
    pub method: Method,
    pub seed: u64,
    pub config: Config,
    pub run_dir: PathBuf,
}

/// The baseline's config for a DisBack config: the same everything, the
/// teacher as the only target for all the generator updates.
pub fn baseline_of(disback: &Config) -> Config {
    let mut c = disback.clone();
    c.method = Method::DiffInstruct;
    c.schedule.steps = vec![disback.schedule.steps.iter().sum()];
    c.name = Some(format!("{}-diffinstruct", disback.run_name()));
    c
}

/// The teacher every run will use: trained (or found in the cache) once,
/// and kept as `teacher.safetensors` in the comparison's folder.
fn shared_teacher(config: &Config, out: &Path) -> Result<PathBuf> {
    let mut session = Session::start(baseline_of(config), RunDir::create(&out.join("teacher"), false)?)?;
    while session.stage() == Stage::Pretrain {
        session.step()?;
    }
    Ok(session.run_dir().teacher())
}

/// Creates the comparison's folder `out` and plans the runs: for each
/// seed, DisBack then the baseline, all with one shared teacher. Returns
/// the folder's absolute path (every run's config names its teacher file
/// by it, so they resolve from anywhere) and the jobs.
pub fn plan(
    config: &Config,
    seeds: usize,
    out: &Path,
    overwrite: bool,
) -> Result<(PathBuf, Vec<CompareJob>)> {
    if config.method != Method::Disback {
        bail!("compare takes a DisBack config (method = \"disback\"); the baseline is derived from it");
    }
    RunDir::create(out, overwrite)?;
    let out = out.canonicalize()?;
    let out = out.as_path();
    let teacher = shared_teacher(config, out)?;
    let mut jobs = Vec::new();
    for k in 0..seeds as u64 {
        let seed = config.seed + k;
        for base in [config.clone(), baseline_of(config)] {
            let mut c = base;
            c.seed = seed;
            c.teacher.file = Some(teacher.clone());
            let tag = match c.method {
                Method::Disback => "disback",
                Method::DiffInstruct => "diff-instruct",
            };
            jobs.push(CompareJob {
                method: c.method,
                seed,
                run_dir: out.join(format!("{tag}-seed{seed}")),
                config: c,
            });
        }
    }
    Ok((out.to_path_buf(), jobs))
}

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
            .with_context(|| format!("{} seed {} ({})", job.method, job.seed, job.run_dir.display()))?;
    }
    Ok(session)
}
