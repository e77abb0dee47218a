//! `disback compare`: DisBack against Diff-Instruct over several seeds.

use super::ConfigArgs;
use crate::engine::RunDir;
use crate::engine::compare::{CompareJob, plan, run_jobs};
use crate::files::atomic_write;
use crate::report::{Comparison, RunOutcome, compare_runs, plot_comparison};
use crate::runtime::configure_threads;
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The comparison's result file in its folder.
pub const RESULT: &str = "compare.json";

#[derive(Args, Debug)]
pub struct CompareArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Seeds per method: the config's seed and the next K − 1.
    #[arg(long, default_value_t = 5)]
    pub seeds: usize,
    /// Output folder (default: runs/compare-<config name>-<time stamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overwrite the output folder if it exists.
    #[arg(long)]
    pub force: bool,
    /// Runs at once (default: one per core, each on `threads` threads).
    #[arg(long)]
    pub jobs: Option<usize>,
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
    let (out, jobs) = plan(&config, args.seeds.max(1), &out, args.force)?;
    eprintln!("running {} runs into {}", jobs.len(), out.display());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = args.jobs.unwrap_or((cores / config.threads.max(1)).max(1));
    run_jobs(&jobs, workers, |job: &CompareJob, session| {
        let energy = session.latest_eval().map_or(f64::NAN, |e| e.energy);
        eprintln!(
            "  {} seed {}: done at {:.0} s, final energy distance {energy:.4}",
            job.arm,
            job.seed,
            started.elapsed().as_secs_f64()
        );
    })?;
    let runs = jobs
        .iter()
        .map(|j| RunOutcome::read(j.arm, j.seed, &j.run_dir))
        .collect::<Result<Vec<_>>>()?;
    let updates = config.schedule.steps.iter().sum();
    let comparison = compare_runs(config.run_name(), runs, updates, config.record.iterations)?;
    let table = comparison.table();
    println!("{table}");
    atomic_write(&out.join("compare.txt"), table.as_bytes())?;
    atomic_write(
        &out.join(RESULT),
        serde_json::to_string_pretty(&comparison)?.as_bytes(),
    )?;
    for file in plot_comparison(&out.join("plots"), &comparison)? {
        eprintln!("wrote {}", file.display());
    }
    eprintln!(
        "finished in {:.0} s: {}",
        started.elapsed().as_secs_f64(),
        out.display()
    );
    Ok(())
}

/// Redraws a comparison's figures from its result file.
pub fn replot(dir: &Path) -> Result<Vec<PathBuf>> {
    let file = dir.join(RESULT);
    let text = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let comparison: Comparison =
        serde_json::from_str(&text).with_context(|| format!("{} is not a comparison", file.display()))?;
    plot_comparison(&dir.join("plots"), &comparison)
}
