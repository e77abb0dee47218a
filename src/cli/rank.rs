//! A rank other than 0 of a launched team (torchrun, srun, or rank 0
//! starting the ranks of its own box): the same command line as rank 0's,
//! but no lab and no files. It opens its session on rank 0's run
//! directory and does what rank 0 orders until rank 0 ends.

use super::RunArgs;
use crate::config::{Config, ParallelBackend};
use crate::engine::Session;
use crate::engine::team_run_dir;
use crate::parallel::{LaunchedRank, launched_rank};
use crate::rundir::RunDir;
use crate::runtime::{Ended, configure_threads};
use anyhow::{Context, Result};
use std::time::Duration;

/// This process's place as a rank other than 0, where its config trains
/// on NCCL ranks and a launcher started it as one; `None` for rank 0 and
/// for every other run (solo and `threads` runs never read the launcher's
/// environment here: inside any Slurm allocation a solo run is solo).
pub fn launched_follower(args: &RunArgs) -> Result<Option<LaunchedRank>> {
    let config = match &args.resume {
        Some(dir) => {
            RunDir::open(dir).and_then(|run| Config::load_run_on(&run.config(), &args.config.overrides))
        }
        None => args.config.load(),
    };
    // A config that cannot be read is said by the command itself, as on
    // any one process.
    if !config.is_ok_and(|c| c.parallel.backend == ParallelBackend::Nccl) {
        return Ok(None);
    }
    Ok(launched_rank()?.filter(|l| l.rank > 0))
}

pub fn follow(args: &RunArgs, launched: &LaunchedRank) -> Result<Ended> {
    let dir = team_run_dir()
        .or_else(|| args.resume.clone())
        .or_else(|| args.out.clone())
        .with_context(|| {
            format!(
                "rank {} of {}: every rank must name the same run directory: pass --out DIR (or --resume DIR)",
                launched.rank, launched.world
            )
        })?;
    let run = RunDir::written_by_another(&dir);
    let config = match &args.resume {
        Some(_) => Config::load_run_on(&run.config(), &args.config.overrides)?,
        None => args.config.load()?,
    };
    configure_threads(config.threads);
    crate::parallel::outlast_signals(launched.rank, Duration::from_secs_f64(config.parallel.timeout_s))?;
    let session = match &args.resume {
        Some(_) => {
            let parallel = (!args.config.overrides.is_empty()).then_some(config.parallel);
            Session::resume_on(run, parallel)?
        }
        None => Session::start(config, run)?,
    };
    session.follow()?;
    Ok(Ended::Finished)
}
