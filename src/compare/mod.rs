//! Runs DisBack and the Diff-Instruct baseline side by side: the same
//! problem, seeds, teacher, networks and number of generator updates. The
//! baseline runs twice, once with s_φ starting as the teacher and once with
//! s_φ first fitted to G⁰ at DisBack's recording cost, because DisBack's
//! s_φ starts fitted to G⁰: the second baseline separates what the path
//! buys from what a fitted s_φ start buys. Runs go to a pool of worker
//! threads (one session each), so two cores finish in half the time.

mod figure;
mod pool;
mod stats;
mod table;

pub use figure::plot_comparison;
pub use pool::run_jobs;
pub use stats::{ArmSummary, Comparison, RunOutcome, Speedup, Spread, compare_runs};

use crate::config::{Config, FakeInit, Method};
use crate::engine::Session;
use crate::rundir::{RunDir, Stage};
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A comparison's result file in its folder.
pub const RESULT: &str = "compare.json";

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
/// and kept as `teacher.safetensors` in the comparison's folder.
fn shared_teacher(config: &Config, out: &Path) -> Result<PathBuf> {
    let teacher_only = Arm::DiffInstruct.config(config);
    let mut session = Session::start(teacher_only, RunDir::create(&out.join("teacher"), false)?)?;
    while session.stage() == Stage::Pretrain {
        session.step()?;
    }
    Ok(session.run_dir().teacher())
}

/// Creates the comparison's folder `out` and plans the runs: for each
/// seed, DisBack then the two baselines, all with one shared teacher.
pub fn plan(config: &Config, seeds: usize, out: &Path, overwrite: bool) -> Result<Plan> {
    if config.method != Method::Disback {
        bail!("compare takes a DisBack config (method = \"disback\"); the baseline is derived from it");
    }
    if seeds == 0 {
        bail!("--seeds 0: a comparison needs at least one seed");
    }
    if !overwrite {
        RunDir::check_free(out, None)?;
    }
    let folder = RunDir::create(out, overwrite)?;
    let out = out.canonicalize()?;
    let out = out.as_path();
    let teacher = shared_teacher(config, out)?;
    let mut jobs = Vec::new();
    for k in 0..seeds as u64 {
        let seed = config.seed + k;
        for arm in Arm::ALL {
            let mut c = arm.config(config);
            c.seed = seed;
            c.teacher.file = Some(teacher.clone());
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
        _folder: folder,
    })
}

/// A planned comparison.
pub struct Plan {
    /// The folder's absolute path: every run's config names its teacher
    /// file by it, so they resolve from anywhere.
    pub out: PathBuf,
    pub jobs: Vec<CompareJob>,
    /// The folder, locked for as long as the comparison runs.
    _folder: RunDir,
}
