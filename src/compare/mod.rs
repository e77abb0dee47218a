//! Comparisons: DisBack and the Diff-Instruct baseline side by side on
//! the same problem, seeds, teacher, G⁰, networks and number of generator
//! updates. The baseline runs twice, once with s_φ starting as the teacher
//! and once with s_φ first fitted to G⁰ at DisBack's recording cost,
//! because DisBack's s_φ starts fitted to G⁰: the second baseline
//! separates what the path buys from what a fitted s_φ start buys. Runs go
//! to a pool of worker threads (one session each), so two cores finish in
//! half the time; `stats` reads them into levels, costs and speed-ups,
//! `table` and `figure` show them, and `sweep` runs a comparison at every
//! point of a grid of settings.

mod figure;
mod identity;
mod judge;
mod pool;
mod stats;
mod sweep;
mod table;

pub use figure::plot_comparison;
pub use judge::Judged;
pub use pool::{Ended, run_jobs};
pub use stats::{ArmSummary, Comparison, Level, RunOutcome, Speedup, Spread, Unit, compare_runs};
pub use sweep::{Grid, SWEEP_RESULT, Sweep, SweepRow, SweepRun, run_sweep};

use crate::config::{Config, FakeInit, Method};
use crate::engine::Session;
use crate::files::{atomic_write, write_json};
use crate::metrics::Evaluation;
use crate::rundir::{RunDir, Stage};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A comparison's result file in its folder.
pub const RESULT: &str = "compare.json";

/// Reads a comparison's result file, refusing one of another version by
/// name (its numbers are not comparable: rerun it).
pub fn read_comparison(file: &Path) -> Result<Comparison> {
    let value: serde_json::Value = crate::files::read_json(file)?;
    let format = value.get("format").and_then(|f| f.as_u64());
    if format != Some(stats::FORMAT as u64) {
        bail!(
            "{}: a comparison of format {} (this version reads format {}, which counts network \
             passes and several levels); run the comparison again",
            file.display(),
            format.map_or("1".to_string(), |f| f.to_string()),
            stats::FORMAT
        );
    }
    Ok(serde_json::from_value(value)?)
}

/// One arm of a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arm {
    Disback,
    /// Diff-Instruct, s_φ starting as the teacher.
    DiffInstruct,
    /// Diff-Instruct, s_φ first fitted to G⁰ for `record.iterations`.
    DiffInstructFit,
}

impl Arm {
    pub const ALL: [Arm; 3] = [Arm::Disback, Arm::DiffInstruct, Arm::DiffInstructFit];

    /// The folder-name tag of the arm's runs.
    fn tag(self) -> &'static str {
        match self {
            Arm::Disback => "disback",
            Arm::DiffInstruct => "diff-instruct",
            Arm::DiffInstructFit => "diff-instruct-fit",
        }
    }

    /// The arm's config, from the DisBack config: the same everything; for
    /// the baselines the teacher is the only target for all the generator
    /// updates.
    pub fn config(self, disback: &Config) -> Config {
        let mut c = disback.clone();
        if self != Arm::Disback {
            c.method = Method::DiffInstruct;
            c.schedule.steps = vec![disback.schedule.steps.iter().sum()];
            c.distill.baseline_fake_init = match self {
                Arm::DiffInstructFit => FakeInit::Fit,
                _ => FakeInit::Teacher,
            };
            c.name = Some(format!("{}-{}", disback.run_name(), self.tag()));
        }
        c
    }
}

impl fmt::Display for Arm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arm::Disback => "DisBack",
            Arm::DiffInstruct => "Diff-Instruct",
            Arm::DiffInstructFit => "Diff-Instruct, fitted s_φ",
        })
    }
}

/// One run of a comparison.
#[derive(Debug, Clone)]
pub struct CompareJob {
    pub arm: Arm,
    pub seed: u64,
    pub config: Config,
    pub run_dir: PathBuf,
}

/// The teacher every run will use: trained (or found in the cache) once,
/// and kept as `teacher.safetensors` in the comparison's folder, with its
/// own samples' measurement on a mixture (where the demo's bar applies:
/// sampling thousands of images would cost minutes and judge nothing). A
/// teacher found there was written whole once final (an interrupted sweep
/// point): it is used as it is, only measured.
fn shared_teacher(config: &Config, out: &Path) -> Result<(PathBuf, Option<Evaluation>)> {
    let folder = out.join("teacher");
    let saved = RunDir::written_by_another(&folder).teacher();
    let mut teacher_only = Arm::DiffInstruct.config(config);
    let dir = if saved.is_file() {
        teacher_only.teacher.file = Some(saved);
        RunDir::reopen(&folder)?
    } else {
        RunDir::create(&folder, true)?
    };
    let mut session = Session::start(teacher_only, dir)?;
    while session.stage() == Stage::Pretrain {
        session.step()?;
    }
    let judged = match session.data().mixture() {
        Some(_) => Some(session.teacher_evaluation()?),
        None => None,
    };
    Ok((session.run_dir().teacher(), judged))
}

/// Creates the comparison's folder `out` and plans the runs: for each
/// seed, DisBack then the two baselines, all with one shared teacher.
pub fn plan(config: &Config, seeds: usize, out: &Path, overwrite: bool) -> Result<Plan> {
    check_plan(config, seeds)?;
    if !overwrite {
        RunDir::check_free(out, None)?;
    }
    planned(config, seeds, RunDir::create(out, overwrite)?)
}

/// The same plan in a folder that may hold part of it (a sweep point
/// that was interrupted): nothing there is cleared; its teacher is used,
/// and its runs are kept or continued (see `pool`).
pub fn plan_continued(config: &Config, seeds: usize, out: &Path) -> Result<Plan> {
    check_plan(config, seeds)?;
    planned(config, seeds, RunDir::reopen(out)?)
}

fn check_plan(config: &Config, seeds: usize) -> Result<()> {
    if config.method != Method::Disback {
        bail!("compare takes a DisBack config (method = \"disback\"); the baseline is derived from it");
    }
    if seeds == 0 {
        bail!("--seeds 0: a comparison needs at least one seed");
    }
    Ok(())
}

/// The runs of a comparison in `folder` (held), with its shared teacher.
fn planned(config: &Config, seeds: usize, folder: RunDir) -> Result<Plan> {
    let out = folder.root().canonicalize()?;
    let out = out.as_path();
    let (teacher, teacher_eval) = shared_teacher(config, out)?;
    let mut jobs = Vec::new();
    for k in 0..seeds as u64 {
        let seed = config.seed + k;
        for arm in Arm::ALL {
            let mut c = arm.config(config);
            c.seed = seed;
            // A pretrained teacher is its own folder; one trained here is
            // the shared file.
            if c.teacher.pretrained.is_none() {
                c.teacher.file = Some(teacher.clone());
            }
            c.metrics.every = measurement_interval(config);
            jobs.push(CompareJob {
                arm,
                seed,
                run_dir: out.join(format!("{}-seed{seed}", arm.tag())),
                config: c,
            });
        }
    }
    Ok(Plan {
        out: out.to_path_buf(),
        jobs,
        teacher_eval,
        _folder: folder,
    })
}

/// Generator steps between a comparison's measurements: often enough that
/// a level reached early (Diff-Instruct's first hundred steps on the toys)
/// is resolved, about 80 measurements a run, and never rarer than the
/// config asks.
pub fn measurement_interval(config: &Config) -> usize {
    let budget: usize = config.schedule.steps.iter().sum();
    let asked = match config.metrics.every {
        0 => budget,
        n => n,
    };
    asked.min((budget / 80).max(5))
}

/// A planned comparison.
pub struct Plan {
    /// The folder's absolute path: every run's config names its teacher
    /// file by it, so they resolve from anywhere.
    pub out: PathBuf,
    pub jobs: Vec<CompareJob>,
    /// The shared teacher's own samples, measured (mixtures only).
    pub teacher_eval: Option<Evaluation>,
    /// The folder, locked for as long as the comparison runs.
    _folder: RunDir,
}

/// Runs a planned comparison on `workers` threads and writes its results
/// into its folder (`compare.txt`, `compare.json`, `plots/`); `say` hears of
/// each finished run. Returns the comparison.
pub fn run_comparison(
    config: &Config,
    plan: &Plan,
    workers: usize,
    say: &(dyn Fn(String) + Sync),
) -> Result<Comparison> {
    let started = std::time::Instant::now();
    let timelines = Mutex::new(HashMap::new());
    run_jobs(&plan.jobs, workers, say, |job: &CompareJob, ended| {
        let whole = matches!(ended, Ended::Ran(_) | Ended::Restarted(..));
        let (session, how) = match ended {
            Ended::Kept => {
                say(format!("  {} seed {}: finished before, kept", job.arm, job.seed));
                return;
            }
            Ended::Ran(session) => (session, String::new()),
            Ended::Restarted(session) => (session, " (run again from the start)".into()),
            Ended::Resumed(session, iteration) => {
                (session, format!(" (continued from iteration {iteration})"))
            }
        };
        let (value, measure) = session
            .latest_eval()
            .map_or((f64::NAN, "quality"), |e| e.quality());
        say(format!(
            "  {} seed {}: done at {:.0} s, final {measure} {value:.4}{how}",
            job.arm,
            job.seed,
            started.elapsed().as_secs_f64()
        ));
        // Seconds are compared only for runs made whole in this process.
        if whole {
            let mut timelines = timelines.lock().unwrap_or_else(|e| e.into_inner());
            timelines.insert(job.run_dir.clone(), session.timeline().to_vec());
        }
    })?;
    let timelines = timelines.into_inner().unwrap_or_else(|e| e.into_inner());
    let runs = plan
        .jobs
        .iter()
        .map(|j| {
            RunOutcome::read(
                j.arm,
                j.seed,
                &j.run_dir,
                timelines.get(&j.run_dir).map(Vec::as_slice),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let updates = config.schedule.steps.iter().sum();
    let mut comparison = compare_runs(config.run_name(), runs, updates, config.record.iterations)?;
    comparison.teacher = plan.teacher_eval.clone();
    atomic_write(&plan.out.join("compare.txt"), comparison.table().as_bytes())?;
    write_json(&plan.out.join(RESULT), &comparison)?;
    plot_comparison(&plan.out.join("plots"), &comparison)?;
    Ok(comparison)
}
