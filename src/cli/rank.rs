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
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::time::{Duration, Instant};

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
    wait_for_rank_0_on_signals(launched.rank, Duration::from_secs_f64(config.parallel.timeout_s))?;
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

/// A signal that stops a run (Ctrl-C, a launcher passing SIGTERM on,
/// scancel, Slurm's time limit) reaches every rank; rank 0 answers it by
/// checkpointing, which needs the team whole, and then ends the team. So
/// a follower does not die of it: it says so and goes on following, for
/// at most `limit` (rank 0 may be gone); a second signal ends it at once.
fn wait_for_rank_0_on_signals(rank: usize, limit: Duration) -> Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).context("handling signals")?;
    std::thread::Builder::new()
        .name("disback-rank-signals".into())
        .spawn(move || {
            let Some(first) = signals.forever().next() else {
                return;
            };
            eprintln!(
                "disback: rank {rank} got signal {first}: it follows on until rank 0 has checkpointed \
                 and ended the team (at most {} s; a second signal ends it now)",
                limit.as_secs_f64()
            );
            let deadline = Instant::now() + limit;
            let signal = loop {
                if let Some(second) = signals.pending().next() {
                    break second;
                }
                if Instant::now() >= deadline {
                    eprintln!("disback: rank {rank}: rank 0 did not end the team; ending");
                    break first;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            // SAFETY: _exit ends the process without running teardown that
            // could wait behind a collective call still in flight.
            unsafe { libc::_exit(128 + signal) }
        })
        .context("starting the signal watcher")?;
    Ok(())
}
