//! The resumable state of a session, in `state/` of the run directory.
//!
//! Each checkpoint is a fresh folder `state/ckpt-<iteration>/` holding the
//! trained models, their optimiser moments and `session.json` (counters,
//! RNG states, schedule). `state/latest.json` names the newest complete
//! one and is written last, atomically: a run killed while checkpointing
//! resumes from the previous checkpoint. A resumed run continues the exact
//! same random streams, so it writes the same metrics as an uninterrupted
//! one.

use super::losses::LossWindow;
use super::path::DegradationPath;
use super::phase::{Clock, Phase, Pretraining};
use super::protocol::Event;
use super::session::{Session, node_source};
use crate::config::{Config, Method};
use crate::distill::{BacktrackSchedule, Backtracker, DegradationRecorder, RecordProgress};
use crate::files::{read_json, read_tensors, write_json, write_tensors, write_toml};
use crate::metrics::Evaluation;
use crate::model::Denoiser;
use crate::optim::Adam;
use crate::parallel::Collective;
use crate::rng::HostRng;
use crate::rundir::{MetricsLog, MetricsRecord, RunDir, Stage};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Version 2: models named by role (degrading / fake-score), the recorder's
/// progress, the generator's moving average. Version 3: every file
/// carries a checksum.
const FORMAT: u32 = 3;

#[derive(Serialize, Deserialize)]
struct Latest {
    dir: String,
}

/// The clock as a checkpoint stores it: the counters and the stage.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct SavedClock {
    stage: Stage,
    stage_step: usize,
    iteration: usize,
    cost: usize,
    /// Absent in checkpoints written before passes were counted.
    #[serde(default)]
    passes: f64,
}

#[derive(Serialize, Deserialize)]
struct SavedState {
    format: u32,
    clock: SavedClock,
    rng: HostRng,
    pretrain_rng: Option<HostRng>,
    /// Stage 1's counters, while recording.
    record: Option<RecordProgress>,
    /// Stage 2's schedule, from backtracking on.
    schedule: Option<BacktrackSchedule>,
    /// The plan (it carries the manual toggle before stage 2; from stage 2
    /// on, the config's plan).
    plan: BacktrackSchedule,
    window: LossWindow,
    metrics_lines: usize,
    /// Path nodes recorded at the time (later ones are recorded again).
    path_nodes: usize,
    latest: Option<MetricsRecord>,
    latest_eval: Option<Evaluation>,
    /// Each optimiser's step count, by model (sorted, so that a seed's
    /// checkpoint is the same bytes in every process).
    adam_steps: BTreeMap<String, u64>,
}

/// Saves a model and its optimiser's moments as `<name>.safetensors` and
/// `<name>-adam.safetensors`.
fn save_trained(
    dir: &Path,
    name: &str,
    model: &Denoiser,
    opt: &Adam,
    steps: &mut BTreeMap<String, u64>,
) -> Result<()> {
    model.save(&dir.join(format!("{name}.safetensors")))?;
    save_adam(dir, name, opt, steps)
}

fn save_adam(dir: &Path, name: &str, opt: &Adam, steps: &mut BTreeMap<String, u64>) -> Result<()> {
    steps.insert(name.to_string(), opt.t);
    write_tensors(
        &dir.join(format!("{name}-adam.safetensors")),
        &opt.state_tensors()?,
        HashMap::new(),
    )
}

/// Loads what [`save_trained`] wrote.
fn load_trained(
    dir: &Path,
    name: &str,
    model: &Denoiser,
    opt: &mut Adam,
    steps: &BTreeMap<String, u64>,
) -> Result<()> {
    model.load(&dir.join(format!("{name}.safetensors")))?;
    load_adam(dir, name, opt, steps)
}

fn load_adam(dir: &Path, name: &str, opt: &mut Adam, steps: &BTreeMap<String, u64>) -> Result<()> {
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
        // Everything held on the device is read first: a non-finite loss
        // stops here, and the counters saved below are complete.
        self.settle()?;
        match &mut self.phase {
            Phase::Record { recorder, .. } => recorder.flush()?,
            Phase::Backtrack(b) | Phase::Done(b) => b.flush_gaps()?,
            Phase::Pretrain { .. } => {}
        }
        let student = &self.student;
        let mut models = vec![
            student.generator.params(),
            student.average.params(),
            self.teacher.params(),
        ];
        models.extend(self.phase.recorder().map(|r| r.degrading.params()));
        models.extend(self.phase.backtracker().map(|b| b.fake_score.params()));
        for params in models {
            if !params.all_finite()? {
                bail!("the weights are no longer finite; keeping the previous checkpoint");
            }
        }
        let dir = match self.leads() {
            true => self.write_checkpoint()?,
            // Rank 0 writes the team's checkpoint.
            false => self.run.state_dir(),
        };
        self.last_checkpoint = Some(self.clock.iteration);
        // The device's generator restarts from this position, as a run
        // resumed from this checkpoint will: from a scheduled checkpoint the
        // two draw the same numbers.
        self.seed_device_draws(self.phase.stage())?;
        self.pending.push(Event::Checkpointed {
            iteration: self.clock.iteration,
            dir,
        });
        Ok(())
    }

    /// Writes the checkpoint's folder and names it the latest; returns it.
    fn write_checkpoint(&self) -> Result<std::path::PathBuf> {
        let state_dir = self.run.state_dir();
        let name = format!("ckpt-{:08}", self.clock.iteration);
        let dir = state_dir.join(&name);
        let adam_steps = self.save_models(&dir)?;
        let (pretrain_rng, plan) = match &self.phase {
            Phase::Pretrain { training, plan } => (Some(training.rng.clone()), plan.clone()),
            Phase::Record { plan, .. } => (None, plan.clone()),
            Phase::Backtrack(_) | Phase::Done(_) => (
                None,
                BacktrackSchedule::new(self.config.planned_nodes(), &self.config.schedule),
            ),
        };
        let state = SavedState {
            format: FORMAT,
            clock: SavedClock {
                stage: self.phase.stage(),
                stage_step: self.clock.stage_step,
                iteration: self.clock.iteration,
                cost: self.clock.cost,
                passes: self.clock.passes,
            },
            rng: self.rng.clone(),
            pretrain_rng,
            record: self.phase.recorder().map(|r| r.progress.clone()),
            schedule: self.phase.backtracker().map(|b| b.schedule.clone()),
            plan,
            window: self.window.clone(),
            metrics_lines: self.log.lines(),
            path_nodes: self.path.len(),
            latest: self.latest.clone(),
            latest_eval: self.latest_eval.clone(),
            adam_steps,
        };
        write_json(&dir.join("session.json"), &state)?;
        write_json(&state_dir.join("latest.json"), &Latest { dir: name.clone() })?;
        // Older checkpoints are superseded now that the new one is named.
        for entry in std::fs::read_dir(&state_dir)?.flatten() {
            let n = entry.file_name().to_string_lossy().into_owned();
            if n.starts_with("ckpt-") && n != name {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(dir)
    }

    /// Every model the current stage trains, with its optimiser's moments;
    /// returns the optimisers' step counts.
    fn save_models(&self, dir: &Path) -> Result<BTreeMap<String, u64>> {
        let mut adam_steps = BTreeMap::new();
        let student = &self.student;
        student.generator.save(&dir.join("generator.safetensors"))?;
        save_adam(dir, "generator", &student.opt, &mut adam_steps)?;
        student.average.save(&dir.join("generator-average.safetensors"))?;
        match &self.phase {
            Phase::Pretrain { training, .. } => {
                save_trained(dir, "teacher", &self.teacher, &training.opt, &mut adam_steps)?
            }
            Phase::Record { recorder: r, .. } => {
                save_trained(dir, "degrading", &r.degrading, &r.opt, &mut adam_steps)?
            }
            Phase::Backtrack(b) | Phase::Done(b) => {
                save_trained(dir, "fake-score", &b.fake_score, &b.fake_opt, &mut adam_steps)?
            }
        }
        Ok(adam_steps)
    }

    /// Rank 0 continues a run from its last checkpoint. Log lines written
    /// after that checkpoint are dropped and will be written again,
    /// identically.
    pub(super) fn resume_leading(config: Config, run: RunDir, team: Collective) -> Result<Self> {
        let run = run.locked()?;
        // Resumed on other ranks: the run's config says so from now on.
        if Config::load_run(&run.config())? != config {
            write_toml(&run.config(), &config.to_toml()?)?;
        }
        let (dir, saved) = read_checkpoint(&run)?;
        let log = MetricsLog::resume(&run.metrics(), saved.latest.as_ref(), saved.metrics_lines)?;
        let mut session = Session::build(config, run, log, team)?;
        session.open_board()?;
        session.restore(&dir, saved)
    }

    /// Another rank continues from the same checkpoint, writing nothing.
    pub(super) fn resume_following(config: Config, run: RunDir, team: Collective) -> Result<Self> {
        let (dir, saved) = read_checkpoint(&run)?;
        let log = MetricsLog::silent(saved.metrics_lines);
        Session::build(config, run, log, team)?.restore(&dir, saved)
    }

    /// Loads the checkpoint's models, optimisers, counters and streams.
    fn restore(mut self, dir: &Path, saved: SavedState) -> Result<Self> {
        let s = &mut self;
        let student = &mut s.student;
        student.generator.load(&dir.join("generator.safetensors"))?;
        load_adam(dir, "generator", &mut student.opt, &saved.adam_steps)?;
        student.average.load(&dir.join("generator-average.safetensors"))?;
        let stage = saved.clock.stage;
        if stage != Stage::Pretrain {
            s.teacher.load(&s.run.teacher())?;
        }
        s.path = DegradationPath::open(&s.run.path_dir(), s.leads())?;
        s.path.truncate(saved.path_nodes)?;
        if s.config.method == Method::Disback && stage != Stage::Pretrain && s.path.is_empty() {
            bail!("{}: the degradation path is missing", s.run.path_dir().display());
        }
        s.phase = s.saved_phase(dir, &saved)?;
        s.clock = Clock {
            stage_step: saved.clock.stage_step,
            iteration: saved.clock.iteration,
            cost: saved.clock.cost,
            passes: saved.clock.passes,
            seconds: 0.0,
            // The teacher's stand-in samples were measured when it opened.
            measuring: s.clock.measuring,
        };
        s.rng = saved.rng;
        s.window = saved.window;
        s.latest = saved.latest;
        s.latest_eval = saved.latest_eval;
        s.last_checkpoint = Some(saved.clock.iteration);
        s.seed_device_draws(stage)?;
        Ok(self)
    }

    /// The phase a checkpoint was taken in, with its models and optimiser
    /// moments read back.
    fn saved_phase(&self, dir: &Path, saved: &SavedState) -> Result<Phase> {
        let steps = &saved.adam_steps;
        let missing = |what: &str| format!("a checkpoint in {} without its {what}", saved.clock.stage);
        Ok(match saved.clock.stage {
            Stage::Pretrain => {
                let mut opt =
                    Adam::new(self.teacher.params(), self.config.teacher.lr)?.averaged_over(&self.team);
                load_trained(dir, "teacher", &self.teacher, &mut opt, steps)?;
                let rng = saved.pretrain_rng.clone().with_context(|| missing("RNG state"))?;
                let plan = saved.plan.clone();
                Phase::Pretrain {
                    training: Pretraining { opt, rng },
                    plan,
                }
            }
            Stage::Record => {
                let mut recorder =
                    DegradationRecorder::new(&self.teacher, &self.record_settings(), &self.team)?;
                load_trained(dir, "degrading", &recorder.degrading, &mut recorder.opt, steps)?;
                recorder.progress = saved
                    .record
                    .clone()
                    .with_context(|| missing("recording progress"))?;
                let plan = saved.plan.clone();
                Phase::Record { recorder, plan }
            }
            Stage::Backtrack | Stage::Done => {
                let schedule = saved.schedule.clone().with_context(|| missing("schedule"))?;
                let fake = self.teacher.deep_clone()?;
                let source = node_source(self.config.method, &self.path, &self.teacher);
                let settings = self.distill_settings();
                let mut b = Backtracker::new(fake, schedule, &settings, source, &self.team)?;
                load_trained(dir, "fake-score", &b.fake_score, &mut b.fake_opt, steps)?;
                match saved.clock.stage {
                    Stage::Done => Phase::Done(b),
                    _ => Phase::Backtrack(b),
                }
            }
        })
    }
}

/// The iteration of a run's newest checkpoint, if it has a readable one.
pub fn checkpoint_iteration(run: &RunDir) -> Option<usize> {
    read_checkpoint(run).ok().map(|(_, saved)| saved.clock.iteration)
}

/// The stage and iteration of a run's newest checkpoint, or why it has no
/// readable one: whether the run finished, or from where it continues.
pub fn checkpoint_stage(run: &RunDir) -> Result<(Stage, usize)> {
    read_checkpoint(run).map(|(_, saved)| (saved.clock.stage, saved.clock.iteration))
}

/// The newest complete checkpoint of a run: its folder and its state.
fn read_checkpoint(run: &RunDir) -> Result<(std::path::PathBuf, SavedState)> {
    let state_dir = run.state_dir();
    let latest_file = state_dir.join("latest.json");
    if !latest_file.exists() {
        bail!(
            "{} has no checkpoint to resume from (no {})",
            run.root().display(),
            latest_file.display()
        );
    }
    let latest: Latest = read_json(&latest_file)?;
    let dir = state_dir.join(&latest.dir);
    let session_file = dir.join("session.json");
    let state: serde_json::Value = read_json(&session_file)?;
    let format = state.get("format").and_then(|f| f.as_u64());
    if format != Some(FORMAT as u64) {
        bail!(
            "{}: checkpoint format {} is not supported by this version (it reads format {FORMAT}); \
             start the run again",
            session_file.display(),
            format.map_or("unknown".into(), |f| f.to_string())
        );
    }
    let saved: SavedState = serde_json::from_value(state)
        .with_context(|| format!("{}: unexpected content", session_file.display()))?;
    Ok((dir, saved))
}
