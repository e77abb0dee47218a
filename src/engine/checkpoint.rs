//! The resumable state of a session, in `state/` of the run directory.
//!
//! Each checkpoint is a fresh folder `state/ckpt-<iteration>/` holding the
//! trained models, their optimiser moments and `session.json` (counters,
//! RNG states, schedule). `state/latest.json` names the newest complete
//! one and is written last, atomically: a run killed while checkpointing
//! resumes from the previous checkpoint. A resumed run continues the exact
//! same random streams, so it writes the same metrics as an uninterrupted
//! one.

use super::log::{LossWindow, MetricsLog, MetricsRecord, Stage};
use super::rundir::RunDir;
use super::session::{Pretraining, Session};
use crate::config::{Config, Method};
use crate::distill::{BacktrackSchedule, DegradationPath};
use crate::files::{atomic_write, read_tensors, write_tensors};
use crate::metrics::Evaluation;
use crate::optim::Adam;
use crate::rng::HostRng;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

const FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Latest {
    dir: String,
}

#[derive(Serialize, Deserialize)]
struct SavedState {
    format: u32,
    stage: Stage,
    stage_step: usize,
    iteration: usize,
    cost: usize,
    rng: HostRng,
    pretrain_rng: Option<HostRng>,
    schedule: BacktrackSchedule,
    window: LossWindow,
    metrics_lines: usize,
    /// Path nodes recorded at the time (later ones are recorded again).
    path_nodes: usize,
    latest: Option<MetricsRecord>,
    latest_eval: Option<Evaluation>,
    adam_steps: HashMap<String, u64>,
}

fn save_adam(dir: &Path, name: &str, opt: &Adam, steps: &mut HashMap<String, u64>) -> Result<()> {
    steps.insert(name.to_string(), opt.t);
    write_tensors(
        &dir.join(format!("{name}-adam.safetensors")),
        &opt.state_tensors(),
        HashMap::new(),
    )
}

fn load_adam(dir: &Path, name: &str, opt: &mut Adam, steps: &HashMap<String, u64>) -> Result<()> {
    let file = dir.join(format!("{name}-adam.safetensors"));
    let saved = read_tensors(&file, &candle_core::Device::Cpu)?;
    let t = *steps
        .get(name)
        .with_context(|| format!("{}: no step count for the {name} optimiser", file.display()))?;
    opt.load_state(&saved.tensors, t, &file.display().to_string())
}

impl Session {
    /// Writes a checkpoint of the current state. Refuses to save weights
    /// that are not finite, so a checkpoint is always a good state.
    pub(super) fn checkpoint(&mut self) -> Result<()> {
        let models = [
            self.generator.params(),
            self.generator_ema.params(),
            self.fake.params(),
            self.teacher.params(),
        ];
        for params in models {
            if !params.all_finite()? {
                bail!("the weights are no longer finite; keeping the previous checkpoint");
            }
        }
        let state_dir = self.run.state_dir();
        let name = format!("ckpt-{:08}", self.iteration);
        let dir = state_dir.join(&name);
        let mut adam_steps = HashMap::new();
        self.generator.save(&dir.join("generator.safetensors"))?;
        save_adam(&dir, "generator", &self.gen_opt, &mut adam_steps)?;
        self.generator_ema.save(&dir.join("generator-ema.safetensors"))?;
        self.fake.save(&dir.join("fake.safetensors"))?;
        save_adam(&dir, "fake", &self.fake_opt, &mut adam_steps)?;
        if let Some(p) = &self.pretrain {
            self.teacher.save(&dir.join("teacher.safetensors"))?;
            save_adam(&dir, "teacher", &p.opt, &mut adam_steps)?;
        }
        let state = SavedState {
            format: FORMAT,
            stage: self.stage,
            stage_step: self.stage_step,
            iteration: self.iteration,
            cost: self.cost,
            rng: self.rng.clone(),
            pretrain_rng: self.pretrain.as_ref().map(|p| p.rng.clone()),
            schedule: self.schedule.clone(),
            window: self.window.clone(),
            metrics_lines: self.log.lines(),
            path_nodes: self.path.len(),
            latest: self.latest.clone(),
            latest_eval: self.latest_eval.clone(),
            adam_steps,
        };
        atomic_write(
            &dir.join("session.json"),
            serde_json::to_string(&state)?.as_bytes(),
        )?;
        let latest = serde_json::to_string(&Latest { dir: name.clone() })?;
        atomic_write(&state_dir.join("latest.json"), latest.as_bytes())?;
        // Older checkpoints are superseded now that the new one is named.
        for entry in std::fs::read_dir(&state_dir)?.flatten() {
            let n = entry.file_name().to_string_lossy().into_owned();
            if n.starts_with("ckpt-") && n != name {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        self.last_checkpoint = Some(self.iteration);
        self.pending.push(super::session::Event::Checkpointed {
            iteration: self.iteration,
            dir,
        });
        Ok(())
    }

    /// Continues a run from its last checkpoint. Log lines written after
    /// that checkpoint are dropped and will be written again, identically.
    pub fn resume(run: RunDir) -> Result<Self> {
        let config = Config::load(&run.config(), &[])?;
        let state_dir = run.state_dir();
        let latest_file = state_dir.join("latest.json");
        let latest: Latest =
            serde_json::from_str(&std::fs::read_to_string(&latest_file).with_context(|| {
                format!(
                    "{} has no checkpoint to resume from (no {})",
                    run.root().display(),
                    latest_file.display()
                )
            })?)
            .with_context(|| format!("{} is corrupt", latest_file.display()))?;
        let dir = state_dir.join(&latest.dir);
        let session_file = dir.join("session.json");
        let saved: SavedState = serde_json::from_str(
            &std::fs::read_to_string(&session_file)
                .with_context(|| format!("cannot read {}", session_file.display()))?,
        )
        .with_context(|| format!("{} is corrupt", session_file.display()))?;
        if saved.format != FORMAT {
            bail!(
                "{}: checkpoint format {} is not supported",
                session_file.display(),
                saved.format
            );
        }

        let log = MetricsLog::open(&run.metrics(), saved.metrics_lines)?;
        let mut s = Session::build(config, run, log)?;
        s.generator.load(&dir.join("generator.safetensors"))?;
        load_adam(&dir, "generator", &mut s.gen_opt, &saved.adam_steps)?;
        s.generator_ema.load(&dir.join("generator-ema.safetensors"))?;
        s.fake.load(&dir.join("fake.safetensors"))?;
        let fake_lr = match saved.stage {
            Stage::Record => s.config.record.lr,
            _ => s.config.distill.fake_lr,
        };
        s.fake_opt = Adam::new(s.fake.params(), fake_lr)?;
        load_adam(&dir, "fake", &mut s.fake_opt, &saved.adam_steps)?;
        if saved.stage == Stage::Pretrain {
            s.teacher.load(&dir.join("teacher.safetensors"))?;
            let mut opt = Adam::new(s.teacher.params(), s.config.teacher.lr)?;
            load_adam(&dir, "teacher", &mut opt, &saved.adam_steps)?;
            let rng = saved
                .pretrain_rng
                .context("checkpoint in pretraining without its RNG state")?;
            s.pretrain = Some(Pretraining { opt, rng });
        } else {
            s.teacher.load(&s.run.teacher())?;
        }
        s.path = DegradationPath::open(&s.run.path_dir())?;
        s.path.truncate(saved.path_nodes)?;
        s.stage = saved.stage;
        s.stage_step = saved.stage_step;
        s.iteration = saved.iteration;
        s.cost = saved.cost;
        s.rng = saved.rng;
        s.schedule = saved.schedule;
        s.window = saved.window;
        s.latest = saved.latest;
        s.latest_eval = saved.latest_eval;
        s.last_checkpoint = Some(saved.iteration);
        if matches!(s.stage, Stage::Backtrack | Stage::Done) {
            let target = s.schedule.target();
            s.load_target(target)?;
        }
        if s.config.method == Method::Disback && s.stage != Stage::Pretrain && s.path.is_empty() {
            bail!("{}: the degradation path is missing", s.run.path_dir().display());
        }
        Ok(s)
    }
}
