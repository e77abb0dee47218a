//! `disback compare`: DisBack against Diff-Instruct over several seeds.

use super::ConfigArgs;
use crate::compare::{RESULT, plan, plot_comparison, run_comparison};
use crate::config::Config;
use crate::rundir::RunDir;
use crate::runtime::configure_threads;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Seeds per method: the config's seed and the next K − 1.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: u64,
    /// Output folder (default: runs/compare-<config name>-<time stamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overwrite the output folder if it exists.
    #[arg(long)]
    pub force: bool,
    /// Runs at once (default: one per core, each on `threads` threads).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Start even if the memory the runs at once need looks larger than
    /// what is free.
    #[arg(long)]
    pub no_memory_check: bool,
}

pub fn compare(args: CompareArgs) -> Result<()> {
    let config = args.config.load()?;
    configure_threads(config.threads);
    let out = args.out.clone().unwrap_or_else(|| {
        RunDir::default_path(Path::new("runs"), &format!("compare-{}", config.run_name()))
    });
    let started = Instant::now();
    eprintln!(
        "disback compare: {} seeds × 3 arms (DisBack, Diff-Instruct from the teacher, Diff-Instruct \
         with s_φ fitted to G⁰); preparing the shared teacher…",
        args.seeds
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // `threads = 0` takes every core for one run: one run at a time.
    let workers = args
        .jobs
        .unwrap_or((cores / crate::runtime::thread_count(config.threads, cores)).max(1));
    if !args.no_memory_check {
        crate::runtime::check_memory(&config, workers)?;
    }
    let plan = plan(&config, args.seeds as usize, &out, args.force)?;
    let (out, jobs) = (&plan.out, &plan.jobs);
    eprintln!(
        "running {} runs into {}: {}",
        jobs.len(),
        out.display(),
        spread(&config, workers.min(jobs.len()))?
    );
    let comparison = run_comparison(&config, &plan, workers, &|line| eprintln!("{line}"))?;
    println!("{}", comparison.table());
    eprintln!(
        "wrote {}, {} and {}",
        out.join("compare.txt").display(),
        out.join(RESULT).display(),
        out.join("plots").display()
    );
    eprintln!(
        "finished in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    eprintln!("{}", super::show::hint(out));
    Ok(())
}

/// How the runs share the machine, in words: on a GPU every run at once has
/// its own CUDA stream (candle's per-thread stream) on the one device, so
/// they overlap there; on the CPU each takes its threads on its own cores.
fn spread(config: &Config, at_once: usize) -> Result<String> {
    let (device, name) = crate::runtime::select_device(config.device)?;
    Ok(if device.is_cpu() {
        let threads = match config.threads {
            0 => "every core's threads".to_string(),
            1 => "1 thread".to_string(),
            n => format!("{n} threads"),
        };
        format!("{at_once} at a time on the {name}, {threads} each")
    } else {
        format!("{at_once} at a time on {name}, each on its own CUDA stream")
    })
}

/// Redraws a comparison's figures from its result file.
pub fn replot(dir: &Path) -> Result<Vec<PathBuf>> {
    let comparison = crate::compare::read_comparison(&dir.join(RESULT))?;
    plot_comparison(&dir.join("plots"), &comparison)
}
