//! The steppable session: one type owns every model of a run and advances
//! it one iteration per call, through `Pretrain → Record → Backtrack →
//! Done`. The method's maths lives in `distill/` (the recorder, the
//! backtracker, the student); the session drives it: the clock, the run
//! directory, measurements, checkpoints and events. Drivers (the headless
//! runner, the terminal lab's training thread) only call it; it knows
//! nothing of terminals, and every driver leaves the same files.

use super::cost::PassCost;
use super::crew::{Crew, Opening, Order, join_team, start_crew};
use super::losses::{LossKind, LossWindow, PendingLosses};
use super::path::{DegradationPath, NodeInfo};
use super::phase::{Clock, Moment, Phase, Pretraining};
use super::probe::FunctionalProbe;
use super::protocol::Event;
use super::teacher::{heun_sampler, teacher_samples_as_data};
use crate::config::{
    Config, DataConfig, DistillConfig, GeneratorSpec, Method, ParallelConfig, RecordConfig, SchedulePolicy,
};
use crate::data::{Bounds, Dataset};
use crate::diffusion::NoiseSchedule;
use crate::distill::{
    BacktrackSchedule, Backtracker, Decision, DegradationRecorder, NodeDue, NodeSource, NoiseLaws, Student,
};
use crate::files::write_toml;
use crate::metrics::{Classifier, Evaluation, Evaluator};
use crate::model::{Denoiser, Generator};
use crate::optim::Adam;
use crate::parallel::Collective;
use crate::rng::{Draws, HostRng, host_rng, seed_device, streams};
use crate::rundir::{EventLog, MetricsLog, MetricsRecord, RunDir, Stage};
use crate::runtime::{cpu_threads, select_device};
use anyhow::{Context, Result, bail};
use candle_core::Device;
use std::time::Instant;

pub struct Session {
    pub(super) config: Config,
    pub(super) device: Device,
    pub(super) device_name: String,
    pub(super) data: Dataset,
    pub(super) run: RunDir,
    pub(super) log: MetricsLog,
    /// TensorBoard's event files (rank 0 with `log.tensorboard`).
    pub(super) board: Option<EventLog>,
    pub(super) evaluator: Evaluator,
    /// The region previews and plots show.
    pub(super) bounds: Bounds,
    pub(super) noise: NoiseSchedule,
    /// The noise levels stage 1 and stage 2 draw.
    pub(super) laws: NoiseLaws,
    pub(super) teacher: Denoiser,
    pub(super) student: Student,
    /// The stage, with what only it has.
    pub(super) phase: Phase,
    pub(super) path: DegradationPath,
    pub(super) clock: Clock,
    /// Network passes per iteration of each stage.
    pub(super) pass_cost: PassCost,
    /// Every measurement's position in cost, passes and seconds, in this
    /// process (the seconds are not in the files).
    pub(super) timeline: Vec<Moment>,
    /// The training stream (recording and distillation) on the CPU path.
    pub(super) rng: HostRng,
    /// Whether training draws its random numbers on the device (the GPU
    /// path) rather than from `rng`.
    pub(super) device_draws: bool,
    pub(super) window: LossWindow,
    /// Losses not yet read back from the device.
    pub(super) losses: PendingLosses,
    pub(super) latest: Option<MetricsRecord>,
    pub(super) latest_eval: Option<Evaluation>,
    pub(super) last_checkpoint: Option<usize>,
    pub(super) failure: Option<String>,
    pub(super) pending: Vec<Event>,
    /// This rank's place among the ranks that train together (solo: one).
    pub(super) team: Collective,
    /// Rank 0 of a `threads` team: the other ranks' threads.
    pub(super) crew: Option<Crew>,
    /// The path's functional probe (rank 0 of DisBack), drawn on first use.
    pub(super) probe: Option<FunctionalProbe>,
}

/// The path a backtracker walks: the recorded nodes, or for the baseline
/// the teacher alone.
pub(super) fn node_source<'a>(
    method: Method,
    path: &'a DegradationPath,
    teacher: &'a Denoiser,
) -> &'a dyn NodeSource {
    match method {
        Method::Disback => path,
        Method::DiffInstruct => teacher,
    }
}

impl Session {
    /// Starts a new run in `run` (created by the caller), on the ranks
    /// `config.parallel` asks for. Under a launcher (torchrun, srun) the
    /// session of a rank other than 0 is returned, to [`Session::follow`].
    pub fn start(config: Config, run: RunDir) -> Result<Self> {
        let config = crate::data::resolve(config)?;
        config.validate()?;
        Self::open(run, Opening::New(config))
    }

    /// Continues a run from its last checkpoint (see `checkpoint.rs`).
    pub fn resume(run: RunDir) -> Result<Self> {
        Self::resume_on(run, None)
    }

    /// Continues a run on other ranks than it ran on (`parallel`): every
    /// rank resumes the same checkpoint, whatever their number.
    pub fn resume_on(run: RunDir, parallel: Option<ParallelConfig>) -> Result<Self> {
        let mut config = Config::load_run(&run.config())?;
        if let Some(p) = parallel {
            config.parallel = p;
            config.validate()?;
        }
        Self::open(run, Opening::Resume(config))
    }

    /// Joins the team, starts its other ranks where this process holds
    /// them, and opens this rank's session. A failure to open is told to
    /// the other ranks, which then stop.
    fn open(run: RunDir, mut opening: Opening) -> Result<Self> {
        let (team, others) = join_team(opening.config_mut(), &run)?;
        if !team.leads() {
            let session = Self::open_as_follower(team.clone(), run, opening);
            if let Err(e) = &session {
                team.fail(&format!("{e:#}"));
            }
            return session;
        }
        let crew = start_crew(&team, others, &run, opening.clone(), Self::run_follower)?;
        let session = match opening {
            Opening::New(config) => Self::start_leading(config, run, team.clone()),
            Opening::Resume(config) => Self::resume_leading(config, run, team.clone()),
        };
        match session {
            Ok(mut session) => {
                session.crew = crew;
                Ok(session)
            }
            Err(e) => {
                team.fail(&format!("{e:#}"));
                Err(e)
            }
        }
    }

    /// A rank other than 0: the same session, writing nothing.
    pub(super) fn open_as_follower(team: Collective, run: RunDir, opening: Opening) -> Result<Self> {
        match opening {
            Opening::New(config) => {
                let mut session = Self::build(config, run, MetricsLog::silent(0), team)?;
                session.prepare_teacher()?;
                Ok(session)
            }
            Opening::Resume(config) => Self::resume_following(config, run, team),
        }
    }

    /// Rank 0 of a new run: it takes the run directory.
    pub(super) fn start_leading(config: Config, run: RunDir, team: Collective) -> Result<Self> {
        let run = run.locked()?;
        write_toml(&run.config(), &config.to_toml()?)?;
        let log = MetricsLog::create(&run.metrics())?;
        let mut session = Self::build(config, run, log, team)?;
        session.open_board()?;
        if let Some(problem) = session.evaluator.classifier_cache_problem() {
            session.pending.push(Event::Warning(problem.to_string()));
        }
        if let Some(accuracy) = session.evaluator.classifier_accuracy() {
            session.pending.push(Event::ClassifierReady { accuracy });
        }
        session.prepare_teacher()?;
        Ok(session)
    }

    /// Creates the teacher and the student with their initial weights;
    /// stage-specific state is set by the caller.
    pub(super) fn build(config: Config, run: RunDir, log: MetricsLog, team: Collective) -> Result<Self> {
        let (device, device_name) = select_device(config.device)?;
        let device_name = match team.world() {
            1 => device_name,
            n => format!("{n} × {device_name} ({})", team.kind()),
        };
        let device_name = match device.is_cpu() {
            true => format!("{device_name} · {} threads", cpu_threads()),
            false => device_name,
        };
        let sigma_data = config.sigma_data();
        let generator = Generator::new(
            &config.generator_spec(),
            &device,
            &mut host_rng(config.seed, streams::GENERATOR_INIT),
        )?;
        let teacher_rng = &mut host_rng(config.teacher.seed, streams::TEACHER_INIT);
        let teacher = Denoiser::new(&config.net_spec(), sigma_data, &device, teacher_rng)?;
        let noise = NoiseSchedule::new(&config.diffusion, sigma_data);
        let has_data = !matches!(config.data, DataConfig::None { .. });
        let started = Instant::now();
        let data = match has_data {
            true => Dataset::load(&config.data).context("loading the data")?,
            // Without data the teacher's own samples stand in for it.
            false => teacher_samples_as_data(&config, &teacher, &run, &noise)?,
        };
        let stand_in_seconds = if has_data {
            0.0
        } else {
            started.elapsed().as_secs_f64()
        };
        let m = &config.metrics;
        let mut evaluator = Evaluator::new(&data, &m.mismatch_sigmas, m.samples, || {
            data.sample(
                m.stf_reference,
                &mut host_rng(config.seed, streams::STF_REFERENCE),
            )
        });
        if !has_data {
            // The mismatch degree compares the teacher with the data's
            // score: there is none.
            let reference = format!(
                "the teacher's {} samples ({})",
                m.samples,
                heun_sampler(m.sampler_steps)
            );
            evaluator = evaluator.without_true_score().comparing_with(reference);
        }
        // Labelled images are also measured by a classifier, trained once
        // per data set and cached beside the teachers (by rank 0, the one
        // that measures).
        let (cache, key) = (&config.teacher.cache_dir, Classifier::cache_key(&config.data));
        if team.leads()
            && let Some(classifier) = Classifier::for_data(&data, cache, &key, &device)?
        {
            evaluator = evaluator.with_classifier(classifier);
        }
        let bounds = match data.plane() {
            Some(plane) => Bounds::around(&plane.sample(2000, &mut host_rng(config.seed, streams::BOUNDS))),
            None => Bounds::default(),
        };
        let generator_share = match config.generator_spec() {
            GeneratorSpec::Mlp(_) => generator.params().count() as f64 / teacher.params().count() as f64,
            GeneratorSpec::Denoiser { .. } => 1.0,
        };
        // Every session starts before its teacher is final; one whose
        // teacher is loaded leaves this phase before its first step.
        let phase = Phase::Pretrain {
            training: Pretraining {
                opt: Adam::new(teacher.params(), config.teacher.lr)?.averaged_over(&team),
                rng: host_rng(config.teacher.seed, streams::TEACHER_TRAIN),
            },
            plan: BacktrackSchedule::new(config.planned_nodes(), &config.schedule),
        };
        Ok(Self {
            bounds,
            student: Student::new(
                generator,
                config.generator.lr,
                config.distill.generator_ema,
                &team,
            )?,
            path: DegradationPath::new(&run.path_dir(), team.leads()),
            phase,
            laws: NoiseLaws::new(&noise, &config.distill, config.record.sigma, &device)?,
            noise,
            rng: host_rng(config.seed, streams::TRAIN),
            device_draws: !device.is_cpu(),
            clock: Clock {
                measuring: stand_in_seconds,
                ..Clock::default()
            },
            pass_cost: PassCost::new(&config, generator_share),
            timeline: Vec::new(),
            device,
            device_name,
            data,
            run,
            log,
            board: None,
            evaluator,
            teacher,
            window: LossWindow::default(),
            losses: PendingLosses::default(),
            latest: None,
            latest_eval: None,
            last_checkpoint: None,
            failure: None,
            pending: Vec::new(),
            team,
            crew: None,
            probe: None,
            config,
        })
    }

    /// Stage 1's settings with this rank's share of the batch.
    pub(super) fn record_settings(&self) -> RecordConfig {
        RecordConfig {
            batch: self.config.record.batch / self.team.world(),
            ..self.config.record.clone()
        }
    }

    /// Stage 2's settings with this rank's share of the batch.
    pub(super) fn distill_settings(&self) -> DistillConfig {
        DistillConfig {
            batch: self.config.distill.batch / self.team.world(),
            ..self.config.distill.clone()
        }
    }

    /// Whether this rank writes, measures and serves (rank 0).
    pub(super) fn leads(&self) -> bool {
        self.team.leads()
    }

    // ---- the state machine ------------------------------------------------

    /// Advances one iteration of the current stage. Returns what happened;
    /// does nothing once the run is done. After an error (a non-finite loss)
    /// every later call returns the same error: the weights are those of
    /// the last good step and the last checkpoint is untouched.
    pub fn step(&mut self) -> Result<Vec<Event>> {
        self.guarded(Order::Step, |s| {
            match s.phase.stage() {
                Stage::Pretrain => s.pretrain_step()?,
                Stage::Record => s.record_step()?,
                Stage::Backtrack => s.backtrack_step()?,
                Stage::Done => {}
            }
            // Checkpoints are taken after stage transitions, so a resumed
            // run never finds a stage that should already have ended.
            let due = s.clock.iteration.is_multiple_of(s.config.log.checkpoint_every);
            if due && s.last_checkpoint != Some(s.clock.iteration) {
                s.checkpoint()?;
            }
            Ok(())
        })
    }

    /// Skips to the next checkpoint of the current stage: during
    /// pretraining, keep the teacher as it is now; during recording, make
    /// the current state the last node; during backtracking, move to the
    /// next target (a no-op, with a warning, on the teacher).
    pub fn skip(&mut self) -> Result<Vec<Event>> {
        self.guarded(Order::Skip, |s| match s.phase.stage() {
            Stage::Pretrain => s.finish_pretraining(),
            Stage::Record => s.finish_recording(),
            Stage::Backtrack => s.skip_target(),
            Stage::Done => Ok(()),
        })
    }

    /// Runs `action` (after ordering the other ranks to do the same)
    /// unless the session failed before; a failure is kept, so every later
    /// call reports it, and told to the other ranks.
    fn guarded(&mut self, order: Order, action: impl FnOnce(&mut Self) -> Result<()>) -> Result<Vec<Event>> {
        if let Some(f) = &self.failure {
            bail!("{f}");
        }
        if let Err(e) = self.order(&order).and_then(|()| action(self)) {
            let resumable = match self.last_checkpoint {
                Some(i) => format!("; the checkpoint of iteration {i} (state/) can be resumed"),
                None => "; no checkpoint was written yet".into(),
            };
            let message = format!("{e:#}{}{resumable}", out_of_memory_hint(&e));
            self.team.fail(&format!("{e:#}"));
            self.failure = Some(message.clone());
            bail!(message);
        }
        Ok(std::mem::take(&mut self.pending))
    }

    /// Reads the losses held on the device into the log window; a
    /// non-finite one is an error (see [`PendingLosses::settle`]).
    pub(super) fn settle(&mut self) -> Result<()> {
        self.losses.settle(&mut self.window, &self.team)
    }

    /// Seeds the device's generator for `stage` at the current position
    /// (pretraining from the teacher's seed, so that runs which share a
    /// teacher share its draws; later stages from the run's seed). Nothing
    /// to do on the CPU path.
    pub(super) fn seed_device_draws(&self, stage: Stage) -> Result<()> {
        if !self.device_draws {
            return Ok(());
        }
        match stage {
            Stage::Pretrain => seed_device(
                &self.device,
                self.config.teacher.seed,
                streams::TEACHER_TRAIN,
                self.clock.stage_step,
            ),
            _ => seed_device(
                &self.device,
                self.config.seed,
                streams::TRAIN,
                self.clock.iteration,
            ),
        }
    }

    /// Draws the training's random numbers on the device even on the CPU
    /// (unseeded there): how tests and `bench --device-draws` run the GPU
    /// path without a GPU.
    pub fn draw_on_device(&mut self) {
        self.device_draws = true;
    }

    /// Waits until the device has run everything queued so far (on a GPU,
    /// steps return once queued): what a timing needs at its two ends.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.device.synchronize()?)
    }

    /// Manual mode: no automatic switches until it is turned off again.
    pub fn set_manual(&mut self, on: bool) -> Result<()> {
        self.order(&Order::SetManual(on))?;
        self.phase.schedule_mut().set_manual(on);
        Ok(())
    }

    /// The session moves to `phase` (already made, so that a stage's start
    /// that fails leaves the session where it was).
    pub(super) fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        self.announce_stage();
    }

    /// A stage starts: its counter from zero, its own log window.
    pub(super) fn announce_stage(&mut self) {
        self.clock.stage_step = 0;
        self.window.clear();
        self.pending.push(Event::StageStarted(self.phase.stage()));
    }

    /// The teacher is final: G⁰ is set (from the teacher when the generator
    /// is teacher-initialised), node 0 saved, and stage 1 or 2 begins.
    pub(super) fn teacher_ready(&mut self, source: String) -> Result<()> {
        self.settle()?;
        self.seed_device_draws(Stage::Record)?;
        if self.leads() {
            self.teacher.save(&self.run.teacher())?;
        }
        self.pending.push(Event::TeacherReady { source });
        self.student.generator.copy_teacher(&self.teacher)?;
        self.student.reset_average()?;
        if self.config.method == Method::Disback {
            let started = Instant::now();
            let spread = self.node_spread(&self.teacher)?;
            self.ready_probe()?;
            let gap = match &mut self.probe {
                Some(probe) => Some(probe.gap(0, &self.teacher, &self.teacher)?),
                None => None,
            };
            self.clock.measuring += started.elapsed().as_secs_f64();
            let node = self.path.record(&self.teacher, 0, None, spread, gap)?.clone();
            self.node_recorded(node)?;
        }
        if self.config.records_path() {
            let recorder = DegradationRecorder::new(&self.teacher, &self.record_settings(), &self.team)?;
            let plan = self.phase.schedule().clone();
            self.enter(Phase::Record { recorder, plan });
            Ok(())
        } else {
            self.start_backtracking()
        }
    }

    /// One iteration of stage 1 (or of the baseline's `fit` start of s_φ).
    fn record_step(&mut self) -> Result<()> {
        let Phase::Record { recorder, .. } = &mut self.phase else {
            bail!("a recording step outside stage 1");
        };
        let nodes = self.config.method == Method::Disback;
        let mut draws = Draws::new(self.device_draws, &mut self.rng, self.team.shard());
        let started = Instant::now();
        let step = recorder.step(&self.student.generator, self.laws.recording(), &mut draws, nodes)?;
        self.clock.seconds += started.elapsed().as_secs_f64();
        let iteration = self.clock.iteration + 1;
        self.losses
            .push(LossKind::Fake, "recording", iteration, &step.loss)?;
        self.clock.cost += 1;
        self.clock.passes += self.pass_cost.recording;
        self.advance_clock(false)?;
        if let Some(node) = step.node {
            self.save_node(node)?;
        }
        if step.done {
            self.start_backtracking()?;
        }
        Ok(())
    }

    fn save_node(&mut self, node: NodeDue) -> Result<()> {
        self.settle()?;
        self.ready_probe()?;
        let Some(recorder) = self.phase.recorder() else {
            bail!("a node to save outside stage 1");
        };
        let started = Instant::now();
        let spread = self.node_spread(&recorder.degrading)?;
        let gap = match &mut self.probe {
            Some(probe) => Some(probe.gap(self.path.len(), &self.teacher, &recorder.degrading)?),
            None => None,
        };
        self.clock.measuring += started.elapsed().as_secs_f64();
        let info = self
            .path
            .record(&recorder.degrading, node.iteration, node.mean_loss, spread, gap)?
            .clone();
        self.node_recorded(info)
    }

    /// A node is on the path. The other ranks wait here until rank 0 has
    /// written its file, which they load when they switch to it.
    fn node_recorded(&mut self, node: NodeInfo) -> Result<()> {
        self.team.barrier()?;
        self.pending.push(Event::NodeRecorded {
            index: node.index,
            iteration: node.iteration,
            file: self.path.file(node.index),
            spread: node.spread,
        });
        Ok(())
    }

    fn finish_recording(&mut self) -> Result<()> {
        if self.config.method == Method::Disback {
            let last = match &mut self.phase {
                Phase::Record { recorder, .. } => recorder.finish_early()?,
                _ => None,
            };
            match last {
                Some(node) => self.save_node(node)?,
                None if self.path.len() == 1 => self.pending.push(Event::Warning(
                    "recording skipped before its first iteration: the path is the teacher alone, \
                     so backtracking distils from the teacher directly"
                        .into(),
                )),
                None => {}
            }
        }
        self.start_backtracking()
    }

    /// Stage 2 begins: s_φ from the most degraded node (DisBack), from the
    /// teacher or the fitted copy (baseline), the target from the path.
    fn start_backtracking(&mut self) -> Result<()> {
        self.log_line(None)?;
        let (nodes, fake_start) = match self.config.method {
            Method::Disback => {
                // s_φ already equals the last node (the degrading copy);
                // loading the node's file makes the start as checked as
                // every later switch.
                let started = Instant::now();
                self.measure_path_ends()?;
                self.clock.measuring += started.elapsed().as_secs_f64();
                let last = self.path.len() - 1;
                let fake = self.teacher.deep_clone()?;
                self.path
                    .load_node(last, &fake)
                    .context("loading the last node into s_φ")?;
                (last, fake)
            }
            // The baseline's `fit` start: s_φ is the copy fitted to G⁰.
            Method::DiffInstruct => match self.phase.recorder() {
                Some(fitted) => (0, fitted.degrading.deep_clone()?),
                None => (0, self.teacher.deep_clone()?),
            },
        };
        let mut schedule = BacktrackSchedule::new(nodes, &self.config.schedule);
        schedule.set_manual(self.phase.schedule().policy() == SchedulePolicy::Manual);
        let source = node_source(self.config.method, &self.path, &self.teacher);
        let settings = self.distill_settings();
        let backtracker = Backtracker::new(fake_start, schedule, &settings, source, &self.team)?;
        let first = backtracker.schedule.target();
        self.enter(Phase::Backtrack(backtracker));
        self.pending.push(Event::TargetSwitched {
            from: None,
            to: first,
        });
        self.record_start()
    }

    /// One iteration of stage 2: a generator update toward the target and
    /// the s_φ updates, then a switch or the end when the schedule says so.
    fn backtrack_step(&mut self) -> Result<()> {
        let Phase::Backtrack(b) = &mut self.phase else {
            bail!("a backtracking step outside stage 2");
        };
        let trained_on = b.schedule.target();
        let source = node_source(self.config.method, &self.path, &self.teacher);
        let mut draws = Draws::new(self.device_draws, &mut self.rng, self.team.shard());
        let started = Instant::now();
        let step = b.step(&mut self.student, self.laws.distillation(), &mut draws, source)?;
        self.clock.seconds += started.elapsed().as_secs_f64();
        let (losses, iteration) = (&mut self.losses, self.clock.iteration + 1);
        for loss in &step.loss_fake {
            losses.push(LossKind::Fake, "fake-score", iteration, loss)?;
        }
        losses.push(LossKind::Generator, "generator", iteration, &step.loss_generator)?;
        losses.push(LossKind::Gap, "score gap", iteration, &step.gap)?;
        self.clock.cost += 1;
        self.clock.passes += self.pass_cost.generator;
        // The step's log line names the target it trained against; the
        // final measurement is taken by `finish`.
        self.advance_clock_on(Some(trained_on), step.decision != Decision::Finish)?;
        match step.decision {
            Decision::Stay => Ok(()),
            Decision::Switch { from, to } => self.target_switched(from, to),
            Decision::Finish => self.finish(),
        }
    }

    fn skip_target(&mut self) -> Result<()> {
        let Phase::Backtrack(b) = &mut self.phase else {
            bail!("a target to skip outside stage 2");
        };
        let source = node_source(self.config.method, &self.path, &self.teacher);
        match b.skip(source)? {
            Some(Decision::Switch { from, to }) => self.target_switched(from, to),
            _ => {
                self.pending.push(Event::Warning(
                    "already on the teacher (node 0): nothing to skip to".into(),
                ));
                Ok(())
            }
        }
    }
}

/// What to do about CUDA's out-of-memory error (its code is in the error's
/// text, from the driver through candle); nothing for other errors. The
/// host's memory is checked before a run starts, the GPU's is not.
fn out_of_memory_hint(e: &anyhow::Error) -> &'static str {
    match format!("{e:#}").contains("CUDA_ERROR_OUT_OF_MEMORY") {
        true => " (the GPU ran out of memory: lower teacher.batch, record.batch or distill.batch)",
        false => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gpu_s_out_of_memory_error_says_what_to_lower() {
        let oom = anyhow::anyhow!("DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")")
            .context("teacher step");
        assert!(out_of_memory_hint(&oom).contains("lower teacher.batch"));
        assert_eq!(out_of_memory_hint(&anyhow::anyhow!("loss is NaN")), "");
    }
}
