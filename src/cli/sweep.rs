//! `disback sweep`: a comparison at every point of a grid of settings.

use super::ConfigArgs;
use crate::compare::{Grid, SweepRun, run_sweep};
use crate::config::Config;
use crate::rundir::RunDir;
use crate::runtime::configure_threads;
use anyhow::Result;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// A key and its values, `KEY=V1,V2,…` (repeatable: every combination
    /// is a point). A list value keeps its commas: `schedule.steps=[20,200,200,1580],[250,250,250,1250]`.
    #[arg(long = "grid", value_name = "KEY=V1,V2,…", required = true)]
    pub grid: Vec<String>,
    /// Seeds per point: the config's seed and the next K − 1.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: u64,
    /// Runs at once (default: one per core, each on `threads` threads).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Output folder (default: runs/sweep-<config name>-<time stamp>).
    /// Run again with the same folder to continue a sweep; a config that
    /// changed since it began is refused, naming the keys that changed.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Start even if the memory the runs at once need looks larger than
    /// what is free.
    #[arg(long)]
    pub no_memory_check: bool,
}

pub fn sweep(args: SweepArgs) -> Result<()> {
    let grid = args
        .grid
        .iter()
        .map(|g| Grid::parse(g))
        .collect::<Result<Vec<_>>>()?;
    // The sweep's first point stands for it where one config is needed (its
    // name, threads and memory): the base config alone may not be valid
    // until a grid key is set (a schedule for another path length).
    let first: Vec<String> = grid
        .iter()
        .map(|g| format!("{}={}", g.key, g.values[0]))
        .collect();
    let base = {
        let mut with_first = args.config.clone();
        with_first.overrides.extend(first);
        with_first.load()?
    };
    configure_threads(base.threads);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| RunDir::default_path(Path::new("runs"), &format!("sweep-{}", base.run_name())));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // `threads = 0` takes every core for one run: one run at a time.
    let workers = args
        .jobs
        .unwrap_or((cores / crate::runtime::thread_count(base.threads, cores)).max(1));
    if !args.no_memory_check {
        crate::runtime::check_memory(&base, workers)?;
    }
    let load = |sets: &[String]| -> Result<Config> {
        let mut all = args.config.clone();
        all.overrides = sets.to_vec();
        all.load()
    };
    let started = Instant::now();
    let run = SweepRun {
        load: &load,
        config_name: base.run_name().to_string(),
        overrides: args.config.overrides.clone(),
        grid,
        seeds: args.seeds as usize,
        out: out.clone(),
        workers,
    };
    let say = |line: String| eprintln!("[{:>5.0} s] {line}", started.elapsed().as_secs_f64());
    let sweep = run_sweep(&run, &say)?;
    println!("{}", sweep.table());
    eprintln!(
        "finished in {:.0} s: {} (sweep.json, sweep.md, sweep.png)",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    eprintln!("{}", super::show::hint(&out));
    Ok(())
}
