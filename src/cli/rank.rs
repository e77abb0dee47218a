//! A rank other than 0 of a launched team (torchrun, srun, or rank 0
//! starting the ranks of its own box): the same command line as rank 0's,
//! but no lab and no files. It opens its session on rank 0's run
//! directory and does what rank 0 orders until rank 0 ends.

use super::RunArgs;
use crate::config::Config;
use crate::engine::Session;
use crate::engine::team_run_dir;
use crate::parallel::LaunchedRank;
use crate::rundir::RunDir;
use crate::runtime::{Ended, configure_threads};
use anyhow::{Context, Result};

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
    let session = match &args.resume {
        Some(_) => {
            let config = Config::load_run_on(&run.config(), &args.config.overrides)?;
            configure_threads(config.threads);
            let parallel = (!args.config.overrides.is_empty()).then_some(config.parallel);
            Session::resume_on(run, parallel)?
        }
        None => {
            let config = args.config.load()?;
            configure_threads(config.threads);
            Session::start(config, run)?
        }
    };
    session.follow()?;
    Ok(Ended::Finished)
}
