//! The steppable session: one type owns every model of a run and advances
//! it one iteration per call, through a small state machine
//! `Pretrain → Record → Backtrack → Done`. Drivers (the headless runner,
//! the terminal lab's training thread) only call it; it knows nothing of
//! terminals, and it writes the run directory itself, so every driver
//! leaves the same files.

use super::log::{LossKind, LossWindow, MetricsLog, MetricsRecord, Stage};
use super::rundir::{RunDir, write_points_csv};
use crate::config::{Config, Method, SchedulePolicy, SigmaDistribution};
use crate::data::{Bounds, Dataset, Point};
use crate::diffusion::{NoiseSchedule, denoising_loss, karras_index_sigmas};
use crate::distill::{BacktrackSchedule, Decision, DegradationPath, generator_loss};
use crate::files::atomic_write;
use crate::metrics::{Evaluation, Evaluator};
use crate::model::{Denoiser, Generator};
use crate::optim::Adam;
use crate::rng::{HostRng, host_rng, normal_tensor, streams};
use crate::runtime::select_device;
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// What happened during a call, for drivers to show or print.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    StageStarted(Stage),
    /// The teacher is ready: trained now, or loaded from `source`.
    TeacherReady {
        source: String,
    },
    NodeRecorded {
        index: usize,
        iteration: usize,
        file: PathBuf,
    },
    /// A new backtracking target was loaded (`from` is None for the first).
    TargetSwitched {
        from: Option<usize>,
        to: usize,
    },
    Logged(Box<MetricsRecord>),
    Checkpointed {
        iteration: usize,
        dir: PathBuf,
    },
    Saved(PathBuf),
    /// Something a user should know that did not stop the run.
    Warning(String),
    Finished,
}

/// The models of a session, for [`Session::save_model`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Generator,
    /// s_φ.
    Fake,
    /// The current backtracking target.
    Target,
    Teacher,
}

/// Teacher pretraining state, present only during [`Stage::Pretrain`].
pub(super) struct Pretraining {
    pub opt: Adam,
    pub rng: HostRng,
}

pub struct Session {
    pub(super) config: Config,
    pub(super) device: Device,
    pub(super) device_name: String,
    pub(super) data: Dataset,
    pub(super) run: RunDir,
    pub(super) log: MetricsLog,
    pub(super) evaluator: Evaluator,
    /// The region previews and plots show.
    pub(super) bounds: Bounds,
    pub(super) teacher: Denoiser,
    pub(super) pretrain: Option<Pretraining>,
    /// The generator being trained.
    pub(super) generator: Generator,
    /// The moving average of its weights (`distill.generator_ema`): what is
    /// sampled, measured, previewed and saved.
    pub(super) generator_ema: Generator,
    pub(super) gen_opt: Adam,
    /// s_φ. While recording it is the degrading copy of the teacher, so at
    /// the end of stage 1 it already equals the last node.
    pub(super) fake: Denoiser,
    pub(super) fake_opt: Adam,
    pub(super) target: Denoiser,
    pub(super) path: DegradationPath,
    pub(super) schedule: BacktrackSchedule,
    pub(super) stage: Stage,
    pub(super) stage_step: usize,
    /// Iterations of every stage so far (checkpoint clock).
    pub(super) iteration: usize,
    /// Distillation iterations so far (recording + generator steps).
    pub(super) cost: usize,
    pub(super) rng: HostRng,
    pub(super) noise: NoiseSchedule,
    /// The 1000-step Karras grid of the generator loss.
    pub(super) karras: Vec<f64>,
    pub(super) window: LossWindow,
    pub(super) latest: Option<MetricsRecord>,
    pub(super) latest_eval: Option<Evaluation>,
    pub(super) last_checkpoint: Option<usize>,
    pub(super) failure: Option<String>,
    pub(super) pending: Vec<Event>,
}

impl Session {
    /// Starts a new run in `run` (created by the caller).
    pub fn start(config: Config, run: RunDir) -> Result<Self> {
        let config = config.resolved();
        config.validate()?;
        atomic_write(&run.config(), config.to_toml()?.as_bytes())?;
        let log = MetricsLog::open(&run.metrics(), 0)?;
        let mut session = Self::build(config, run, log)?;
        session.prepare_teacher()?;
        Ok(session)
    }

    /// Creates every model with its initial weights; stage-specific state
    /// is set by the caller.
    pub(super) fn build(config: Config, run: RunDir, log: MetricsLog) -> Result<Self> {
        let (device, device_name) = select_device(config.device)?;
        let data = Dataset::new(&config.data);
        let sigma_data = config.sigma_data();
        let generator = Generator::new(
            &config,
            &device,
            &mut host_rng(config.seed, streams::GENERATOR_INIT),
        )?;
        let teacher = Denoiser::new(
            &config.score_net,
            sigma_data,
            &device,
            &mut host_rng(config.teacher.seed, streams::TEACHER_INIT),
        )?;
        let fake = teacher.deep_clone()?;
        let target = teacher.deep_clone()?;
        let m = &config.metrics;
        let evaluator = Evaluator::new(&data, &m.mismatch_sigmas, m.samples, || {
            data.sample(
                m.stf_reference,
                &mut host_rng(config.seed, streams::STF_REFERENCE),
            )
        });
        let noise = NoiseSchedule::new(&config.diffusion, sigma_data);
        let bounds = Bounds::around(&data.sample(2000, &mut host_rng(config.seed, streams::BOUNDS)));
        Ok(Self {
            bounds,
            gen_opt: Adam::new(generator.params(), config.generator.lr)?,
            generator_ema: generator.deep_clone()?,
            fake_opt: Adam::new(fake.params(), config.distill.fake_lr)?,
            path: DegradationPath::new(&run.path_dir()),
            schedule: BacktrackSchedule::new(config.planned_nodes(), &config.schedule),
            karras: noise.karras(1000),
            noise,
            rng: host_rng(config.seed, streams::TRAIN),
            device,
            device_name,
            data,
            run,
            log,
            evaluator,
            teacher,
            pretrain: None,
            generator,
            fake,
            target,
            stage: Stage::Pretrain,
            stage_step: 0,
            iteration: 0,
            cost: 0,
            window: LossWindow::default(),
            latest: None,
            latest_eval: None,
            last_checkpoint: None,
            failure: None,
            pending: Vec::new(),
            config,
        })
    }

    // ---- the state machine ------------------------------------------------

    /// Advances one iteration of the current stage. Returns what happened;
    /// does nothing once the run is done. After an error (a non-finite loss)
    /// every later call returns the same error: the weights are those of
    /// the last good step and the last checkpoint is untouched.
    pub fn step(&mut self) -> Result<Vec<Event>> {
        if let Some(f) = &self.failure {
            bail!("{f}");
        }
        let result = match self.stage {
            Stage::Pretrain => self.pretrain_step(),
            Stage::Record => self.record_step(),
            Stage::Backtrack => self.backtrack_step(),
            Stage::Done => Ok(()),
        }
        .and_then(|()| {
            // Checkpoints are taken after stage transitions, so a resumed
            // run never finds a stage that should already have ended.
            let due = self.iteration.is_multiple_of(self.config.log.checkpoint_every);
            if due && self.last_checkpoint != Some(self.iteration) {
                self.checkpoint()?;
            }
            Ok(())
        });
        if let Err(e) = result {
            let message = format!("{e:#}");
            self.failure = Some(message.clone());
            bail!(message);
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// Skips to the next checkpoint of the current stage: during
    /// pretraining, keep the teacher as it is now; during recording, make
    /// the current state the last node; during backtracking, move to the
    /// next target (a no-op, with a warning, on the teacher).
    pub fn skip(&mut self) -> Result<Vec<Event>> {
        if let Some(f) = &self.failure {
            bail!("{f}");
        }
        match self.stage {
            Stage::Pretrain => self.finish_pretraining()?,
            Stage::Record => self.finish_recording()?,
            Stage::Backtrack => match self.schedule.skip() {
                Some(Decision::Switch { from, to }) => self.switch_target(from, to)?,
                _ => self.pending.push(Event::Warning(
                    "already on the teacher (node 0): nothing to skip to".into(),
                )),
            },
            Stage::Done => {}
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// Manual mode: no automatic switches until it is turned off again.
    pub fn set_manual(&mut self, on: bool) {
        self.schedule.set_manual(on);
    }

    fn prepare_teacher(&mut self) -> Result<()> {
        if let Some(file) = self.config.teacher.file.clone() {
            self.teacher.load(&file).context("loading teacher.file")?;
            return self.teacher_ready(format!("loaded from {}", file.display()));
        }
        let cached = self.teacher_cache_file();
        if cached.exists() {
            match self.teacher.load(&cached) {
                Ok(()) => return self.teacher_ready(format!("cached in {}", cached.display())),
                Err(e) => self.pending.push(Event::Warning(format!(
                    "ignoring the teacher cache: {e:#}; training a new teacher"
                ))),
            }
        }
        self.enter(Stage::Pretrain);
        self.pretrain = Some(Pretraining {
            opt: Adam::new(self.teacher.params(), self.config.teacher.lr)?,
            rng: host_rng(self.config.teacher.seed, streams::TEACHER_TRAIN),
        });
        Ok(())
    }

    pub fn teacher_cache_file(&self) -> PathBuf {
        self.config
            .teacher
            .cache_dir
            .join(format!("teacher-{}.safetensors", self.config.teacher_cache_key()))
    }

    fn enter(&mut self, stage: Stage) {
        self.stage = stage;
        self.stage_step = 0;
        self.window.clear();
        self.pending.push(Event::StageStarted(stage));
    }

    fn pretrain_step(&mut self) -> Result<()> {
        let t = self.config.teacher.clone();
        let p = self
            .pretrain
            .as_mut()
            .expect("pretraining state exists in its stage");
        let x0 = crate::model::points_to_tensor(&self.data.sample(t.batch, &mut p.rng), &self.device)?;
        let sigmas = self.noise.training(&mut p.rng, t.batch);
        let loss = denoising_loss(&self.teacher, &x0, sigmas, &mut p.rng)?;
        let value = finite(&loss, "teacher")?;
        // Cosine decay to 5% of the rate: a sharper teacher at the same cost.
        let progress = self.stage_step as f64 / t.steps as f64;
        p.opt.lr = t.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        p.opt.step(&loss.backward()?)?;
        self.window.add(LossKind::Teacher, value);
        self.advance_clock(false)?;
        if self.stage_step >= t.steps {
            self.finish_pretraining()?;
        }
        Ok(())
    }

    /// Ends pretraining: at its full length, the teacher goes into the
    /// cache; cut short (a skip), it is used for this run only, so the cache
    /// never hands out a teacher that is less than its key promises.
    fn finish_pretraining(&mut self) -> Result<()> {
        self.log_line(None)?;
        self.pretrain = None;
        let steps = self.config.teacher.steps;
        if self.stage_step < steps {
            let source = format!(
                "trained for {} of {steps} steps (cut short, not cached)",
                self.stage_step
            );
            return self.teacher_ready(source);
        }
        let cached = self.teacher_cache_file();
        self.teacher.save(&cached)?;
        self.teacher_ready(format!("trained, cached in {}", cached.display()))
    }

    fn teacher_ready(&mut self, source: String) -> Result<()> {
        self.teacher.save(&self.run.teacher())?;
        self.pending.push(Event::TeacherReady { source });
        self.fake.params().copy_from(self.teacher.params())?;
        // A teacher-initialised G⁰ is the teacher at σ_g; it must be set
        // before recording, which fits the path's end to G⁰'s samples.
        self.generator.copy_teacher(&self.teacher)?;
        self.generator_ema.params().copy_from(self.generator.params())?;
        if self.config.method == Method::Disback {
            self.record_node(None)?;
        }
        if self.config.records_path() {
            self.enter(Stage::Record);
            self.fake_opt = Adam::new(self.fake.params(), self.config.record.lr)?;
            Ok(())
        } else {
            self.start_backtracking()
        }
    }

    /// One DSM step of s_φ (the teacher's copy) on samples of the frozen G⁰.
    fn record_step(&mut self) -> Result<()> {
        let loss = self.fake_dsm_step(self.config.record.batch)?;
        self.window.add(LossKind::Fake, loss);
        self.cost += 1;
        self.advance_clock(false)?;
        let r = self.config.record.clone();
        if self.config.method == Method::Disback && self.stage_step.is_multiple_of(r.node_every) {
            self.record_node(Some(loss))?;
        }
        if self.stage_step >= r.iterations {
            self.start_backtracking()?;
        }
        Ok(())
    }

    fn record_node(&mut self, loss: Option<f64>) -> Result<()> {
        let node = self.path.record(&self.fake, self.stage_step, loss)?.clone();
        self.pending.push(Event::NodeRecorded {
            index: node.index,
            iteration: node.iteration,
            file: self.path.file(node.index),
        });
        Ok(())
    }

    fn finish_recording(&mut self) -> Result<()> {
        let last = self.path.nodes().last().map(|n| n.iteration);
        if self.config.method == Method::Disback && last != Some(self.stage_step) {
            let loss = self.window.mean(LossKind::Fake);
            self.record_node(loss)?;
        }
        self.start_backtracking()
    }

    fn start_backtracking(&mut self) -> Result<()> {
        self.log_line(None)?;
        let nodes = match self.config.method {
            Method::Disback => self.path.len() - 1,
            Method::DiffInstruct => 0,
        };
        if self.config.method == Method::Disback {
            // s_φ starts from the most degraded node. It already holds those
            // weights (it was the degrading copy); loading the node's file
            // makes the start as checked as every later switch.
            self.fake
                .load(&self.path.file(nodes))
                .context("loading the last node into s_φ")?;
        }
        // Keep the user's manual toggle from the earlier stages.
        let manual = self.schedule.policy() == SchedulePolicy::Manual;
        self.schedule = BacktrackSchedule::new(nodes, &self.config.schedule);
        self.schedule.set_manual(manual);
        self.fake_opt = Adam::new(self.fake.params(), self.config.distill.fake_lr)?;
        self.enter(Stage::Backtrack);
        self.load_target(self.schedule.target())?;
        self.pending.push(Event::TargetSwitched {
            from: None,
            to: self.schedule.target(),
        });
        self.write_snapshot("initial")?;
        self.write_fields("initial")?;
        // The initial generator's measurement anchors the curves; with the
        // data's own mismatch degree, the floor a generator can reach.
        let mut eval = self.evaluate()?;
        eval.mismatch_data = self
            .evaluator
            .mismatch_on_data(&self.teacher, &mut self.eval_rng())?;
        self.log_line(Some(eval))
    }

    /// Loads every weight of node `index` into the target: from the node's
    /// file for DisBack (strictly: all names, all shapes), from the teacher
    /// for the baseline.
    pub(super) fn load_target(&mut self, index: usize) -> Result<()> {
        match self.config.method {
            Method::Disback => self
                .target
                .load(&self.path.file(index))
                .with_context(|| format!("switching to node {index}")),
            Method::DiffInstruct => self.target.params().copy_from(self.teacher.params()),
        }
    }

    fn switch_target(&mut self, from: usize, to: usize) -> Result<()> {
        let snapshot = self
            .run
            .generator_dir()
            .join(format!("at-node-{from}.safetensors"));
        self.generator_ema.save(&snapshot)?;
        self.write_snapshot(&format!("at-node-{from}"))?;
        self.load_target(to)?;
        self.pending.push(Event::TargetSwitched { from: Some(from), to });
        Ok(())
    }

    /// One generator update toward the current target, then
    /// `fake_steps_per_generator_step` DSM updates of s_φ on fresh samples.
    fn backtrack_step(&mut self) -> Result<()> {
        let d = self.config.distill.clone();
        let z = self.generator.latents(d.batch, &mut self.rng)?;
        let x0 = self.generator.forward(&z)?;
        let sigmas = match d.sigma {
            SigmaDistribution::Karras => karras_index_sigmas(
                &mut self.rng,
                d.batch,
                &self.karras,
                d.karras_min_index,
                d.karras_max_index,
            ),
            SigmaDistribution::LogNormal => self.noise.training(&mut self.rng, d.batch),
        };
        let noise = normal_tensor(&mut self.rng, (d.batch, 2), &self.device)?;
        let levels = self.target.levels(sigmas, &self.device)?;
        let g = generator_loss(&x0, &self.target, &self.fake, &levels, &noise, d.weighting)?;
        let loss_g = finite(&g.loss, "generator")?;
        self.gen_opt.step(&g.loss.backward()?)?;
        self.generator_ema
            .params()
            .average_toward(self.generator.params(), d.generator_ema)?;
        for _ in 0..d.fake_steps_per_generator_step {
            let loss = self.fake_dsm_step(d.batch)?;
            self.window.add(LossKind::Fake, loss);
        }
        self.window.add(LossKind::Generator, loss_g);
        self.window.add(LossKind::Gap, g.gap);
        self.cost += 1;
        let decision = self.schedule.record_step(g.gap);
        // The final measurement is taken by `finish`.
        self.advance_clock(decision != Decision::Finish)?;
        match decision {
            Decision::Stay => {}
            Decision::Switch { from, to } => self.switch_target(from, to)?,
            Decision::Finish => self.finish()?,
        }
        Ok(())
    }

    /// One denoising step of s_φ on a fresh batch of generator samples.
    fn fake_dsm_step(&mut self, batch: usize) -> Result<f64> {
        let z = self.generator.latents(batch, &mut self.rng)?;
        let x0 = self.generator.forward(&z)?.detach();
        let sigmas = self.noise.training(&mut self.rng, batch);
        let loss = denoising_loss(&self.fake, &x0, sigmas, &mut self.rng)?;
        let value = finite(&loss, "fake-score")?;
        self.fake_opt.step(&loss.backward()?)?;
        Ok(value)
    }

    /// Counts one iteration and writes its log line (with a measurement
    /// during backtracking, every `metrics.every` steps) when due. Runs after
    /// the update and before any stage transition it causes.
    fn advance_clock(&mut self, may_evaluate: bool) -> Result<()> {
        self.stage_step += 1;
        self.iteration += 1;
        let every = self.config.metrics.every;
        let due = self.stage == Stage::Backtrack && every > 0 && self.stage_step.is_multiple_of(every);
        let eval = if may_evaluate && due {
            Some(self.evaluate()?)
        } else {
            None
        };
        if eval.is_some() || self.stage_step.is_multiple_of(self.config.log.every) {
            self.log_line(eval)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        let n = self.config.log.final_samples;
        let samples = self
            .generator_ema
            .sample(n, &mut host_rng(self.config.seed, streams::FINAL_SAMPLES))?;
        write_points_csv(&self.run.samples(), &samples)?;
        // The final measurement uses those samples: mode shares from all of
        // them, so the numbers a user reads at the end are not noisy.
        let mut eval = self.measure(&samples, &mut self.eval_rng())?;
        eval.mismatch_data = self
            .evaluator
            .mismatch_on_data(&self.teacher, &mut self.eval_rng())?;
        self.log_line(Some(eval))?;
        self.write_fields("final")?;
        let final_file = self.run.generator_dir().join("final.safetensors");
        self.generator_ema.save(&final_file)?;
        self.pending.push(Event::Saved(final_file));
        self.enter(Stage::Done);
        self.checkpoint()?;
        // Figures are a convenience: failing to draw one loses no result.
        match crate::report::plot_run(self.run.root()) {
            Ok(_) => {}
            Err(e) => self.pending.push(Event::Warning(format!("plots: {e:#}"))),
        }
        self.pending.push(Event::Finished);
        Ok(())
    }

    /// Generator samples at a moment of the run (`samples/<name>.csv`), for
    /// the snapshot plots.
    fn write_snapshot(&self, name: &str) -> Result<()> {
        let mut rng = host_rng(self.config.seed, streams::SNAPSHOTS);
        let samples = self.generator_ema.sample(self.evaluator.samples(), &mut rng)?;
        write_points_csv(&self.run.snapshot(name), &samples)
    }

    /// The teacher's and s_φ's score fields (`fields/<name>.json`).
    fn write_fields(&self, name: &str) -> Result<()> {
        let field = self.score_field("teacher".into(), &self.teacher, self.default_field_sigma())?;
        atomic_write(&self.run.field(name), serde_json::to_string(&field)?.as_bytes())
    }

    /// Writes a log line from the window (skipped when nothing happened
    /// since the last one, unless there is a measurement to record).
    fn log_line(&mut self, eval: Option<Evaluation>) -> Result<()> {
        let w = &self.window;
        if eval.is_none() && w.mean(LossKind::Teacher).or(w.mean(LossKind::Fake)).is_none() {
            return Ok(());
        }
        let record = MetricsRecord {
            stage: self.stage,
            step: self.stage_step,
            cost: self.cost,
            target_node: (self.stage == Stage::Backtrack).then(|| self.schedule.target()),
            loss_g: w.mean(LossKind::Generator),
            loss_fake: w.mean(LossKind::Fake),
            loss_teacher: w.mean(LossKind::Teacher),
            gap: w.mean(LossKind::Gap),
            eval,
        };
        self.log.append(&record)?;
        if let Some(e) = &record.eval {
            self.latest_eval = Some(e.clone());
        }
        self.latest = Some(record.clone());
        self.window.clear();
        self.pending.push(Event::Logged(Box::new(record)));
        Ok(())
    }

    /// Measures the generator now, on `metrics.samples` fresh samples.
    pub fn evaluate(&self) -> Result<Evaluation> {
        let mut rng = self.eval_rng();
        let samples = self.generator_ema.sample(self.evaluator.samples(), &mut rng)?;
        self.measure(&samples, &mut rng)
    }

    /// Measurements draw from their own stream, seeded by the run's seed
    /// and the cost, so measuring never changes training.
    pub(super) fn eval_rng(&self) -> HostRng {
        host_rng(
            self.config.seed ^ (self.cost as u64).rotate_left(32),
            streams::EVAL,
        )
    }

    /// Distances and mode statistics of `samples`, and the mismatch degree
    /// of the target and the teacher at (at most `metrics.samples` of) them.
    fn measure(&self, samples: &[Point], rng: &mut HostRng) -> Result<Evaluation> {
        let mut eval = self.evaluator.distribution(samples, rng);
        let samples = &samples[..samples.len().min(self.evaluator.samples())];
        if matches!(self.stage, Stage::Backtrack | Stage::Done) {
            let on_teacher = self.schedule.target() == 0;
            let models: Vec<&Denoiser> = if on_teacher {
                vec![&self.teacher]
            } else {
                vec![&self.target, &self.teacher]
            };
            let mut rows = self.evaluator.mismatch(samples, &models, rng)?;
            eval.mismatch_teacher = rows.pop().expect("one row per model");
            eval.mismatch_target = rows.pop().unwrap_or_else(|| eval.mismatch_teacher.clone());
        }
        Ok(eval)
    }

    // ---- saving -------------------------------------------------------------

    /// Writes a resumable checkpoint now (for a driver that is stopping).
    pub fn save_state(&mut self) -> Result<()> {
        self.checkpoint()
    }

    /// Saves the generator; without a path, to
    /// `generator/saved-<cost>.safetensors` in the run directory.
    pub fn save_generator(&self, path: Option<&Path>) -> Result<PathBuf> {
        let file = match path {
            Some(p) => p.to_path_buf(),
            None => self
                .run
                .generator_dir()
                .join(format!("saved-{}.safetensors", self.cost)),
        };
        self.save_model(ModelKind::Generator, &file)?;
        Ok(file)
    }

    /// Saves any of the session's models to `path` (atomically). Score
    /// models load back with `Denoiser::load`, the generator with
    /// `Generator::load` (or `disback sample`).
    pub fn save_model(&self, kind: ModelKind, path: &Path) -> Result<()> {
        match kind {
            ModelKind::Generator => self.generator_ema.save(path),
            ModelKind::Fake => self.fake.save(path),
            ModelKind::Target => self.target.save(path),
            ModelKind::Teacher => self.teacher.save(path),
        }
    }

    // ---- read access --------------------------------------------------------

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn stage(&self) -> Stage {
        self.stage
    }
    pub fn is_done(&self) -> bool {
        self.stage == Stage::Done
    }
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }
    pub fn run_dir(&self) -> &RunDir {
        &self.run
    }
    pub fn device_name(&self) -> &str {
        &self.device_name
    }
    pub fn data(&self) -> &Dataset {
        &self.data
    }
    pub fn noise(&self) -> &NoiseSchedule {
        &self.noise
    }
    pub fn bounds(&self) -> Bounds {
        self.bounds
    }
    pub fn teacher(&self) -> &Denoiser {
        &self.teacher
    }
    pub fn target(&self) -> &Denoiser {
        &self.target
    }
    pub fn fake(&self) -> &Denoiser {
        &self.fake
    }
    /// The generator as sampled and saved (the moving average of its weights).
    pub fn generator(&self) -> &Generator {
        &self.generator_ema
    }
    pub fn path(&self) -> &DegradationPath {
        &self.path
    }
    pub fn schedule(&self) -> &BacktrackSchedule {
        &self.schedule
    }
    pub fn latest(&self) -> Option<&MetricsRecord> {
        self.latest.as_ref()
    }
    pub fn latest_eval(&self) -> Option<&Evaluation> {
        self.latest_eval.as_ref()
    }
    pub fn stage_step(&self) -> usize {
        self.stage_step
    }
    pub fn iteration(&self) -> usize {
        self.iteration
    }
    pub fn cost(&self) -> usize {
        self.cost
    }

    /// Generator samples for a preview, from the caller's RNG (so previews
    /// never touch the training stream).
    pub fn generator_samples(&self, n: usize, rng: &mut HostRng) -> Result<Vec<Point>> {
        self.generator_ema.sample(n, rng)
    }
}

/// The loss as a number; a NaN or infinity is an error that stops training
/// before the update is applied.
fn finite(loss: &Tensor, what: &str) -> Result<f64> {
    let v = loss.to_scalar::<f32>()? as f64;
    if !v.is_finite() {
        bail!(
            "the {what} loss is {v}: training stopped before applying this update, so the \
             weights are those of the last good step; the last checkpoint (state/) can be resumed"
        );
    }
    Ok(v)
}
