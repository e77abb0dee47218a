//! What a session leaves and shows: snapshots, score fields, measurements,
//! the final samples, saved models, and read access for drivers.

use super::crew::Order;
use super::path::DegradationPath;
use super::phase::Moment;
use super::protocol::{Event, ModelKind};
use super::session::Session;
use crate::config::Config;
use crate::data::{Bounds, Dataset, Point, Samples};
use crate::diffusion::NoiseSchedule;
use crate::distill::BacktrackSchedule;
use crate::files::{write_json, write_tensors};
use crate::metrics::Evaluation;
use crate::model::{Denoiser, Generator};
use crate::rng::{HostRng, host_rng, streams};
use crate::rundir::{MetricsRecord, RunDir, Stage, write_points_csv};
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Images in a snapshot grid (8 × 8).
const SNAPSHOT_IMAGES: usize = 64;

impl Session {
    /// The start of stage 2: snapshots and the first measurement, with the
    /// data's own mismatch degree (the floor a generator can reach).
    pub(super) fn record_start(&mut self) -> Result<()> {
        if !self.leads() {
            return self.log_line(None);
        }
        self.write_snapshot("initial")?;
        self.write_fields("initial")?;
        let started = Instant::now();
        let mut eval = self.evaluate()?;
        eval.mismatch_data = self
            .evaluator
            .mismatch_on_data(&self.teacher, &mut self.eval_rng())?;
        self.clock.measuring += started.elapsed().as_secs_f64();
        self.log_line(Some(eval))
    }

    /// The generator as it leaves target `from`, kept as a file and a
    /// snapshot; the backtracker has already loaded node `to`.
    pub(super) fn target_switched(&mut self, from: usize, to: usize) -> Result<()> {
        self.settle()?;
        if self.leads() {
            let file = self
                .run
                .generator_dir()
                .join(format!("at-node-{from}.safetensors"));
            self.student.average.save(&file)?;
            self.write_snapshot(&format!("at-node-{from}"))?;
            self.board_switch(from, to)?;
        }
        self.pending.push(Event::TargetSwitched { from: Some(from), to });
        Ok(())
    }

    /// The end: 10,000 final samples, measured in full, the final
    /// generator, a last checkpoint and the figures.
    pub(super) fn finish(&mut self) -> Result<()> {
        self.settle()?;
        if !self.leads() {
            // Rank 0 measures and writes the end; the others keep step.
            self.log_line(None)?;
            replace_with::replace_with_or_abort(&mut self.phase, |phase| phase.finish());
            self.announce_stage();
            return self.checkpoint();
        }
        let n = self.config.log.final_samples;
        let mut rng = host_rng(self.config.seed, streams::FINAL_SAMPLES);
        let samples = Samples::from_tensor(&self.student.average.generate(n, &mut rng)?)?;
        self.write_final_samples(&samples)?;
        // The final measurement uses those samples: mode shares from all of
        // them, so the numbers a user reads at the end are not noisy.
        let started = Instant::now();
        let mut eval = self.measure(&samples, &mut self.eval_rng())?;
        eval.mismatch_data = self
            .evaluator
            .mismatch_on_data(&self.teacher, &mut self.eval_rng())?;
        self.clock.measuring += started.elapsed().as_secs_f64();
        self.log_line(Some(eval))?;
        self.write_fields("final")?;
        let final_file = self.run.generator_dir().join("final.safetensors");
        self.student.average.save(&final_file)?;
        self.pending.push(Event::Saved(final_file));
        replace_with::replace_with_or_abort(&mut self.phase, |phase| phase.finish());
        self.announce_stage();
        self.checkpoint()?;
        // Figures are a convenience: failing to draw one loses no result.
        if let Err(e) = crate::report::plot_run(self.run.root()) {
            self.pending.push(Event::Warning(format!("plots: {e:#}")));
        }
        self.pending.push(Event::Finished);
        Ok(())
    }

    /// Generator samples at a moment of the run, from the same latents
    /// every time: `samples/<name>.csv` (points, every coordinate; the
    /// snapshot plots project them onto the plane) or a grid of 64 images,
    /// `samples/<name>.png`.
    fn write_snapshot(&self, name: &str) -> Result<()> {
        let mut rng = host_rng(self.config.seed, streams::SNAPSHOTS);
        if self.data.images().is_some() {
            let samples = Samples::from_tensor(&self.student.average.generate(SNAPSHOT_IMAGES, &mut rng)?)?;
            return crate::report::write_image_grid(&self.run.snapshot_grid(name), &samples);
        }
        let samples = self.student.average.sample(self.evaluator.samples(), &mut rng)?;
        write_points_csv(&self.run.snapshot(name), &samples)
    }

    /// The final samples: `samples.csv` for points (all `dim` coordinates
    /// of each); for images the tensor
    /// `samples.safetensors` and the last snapshot grid, `samples/final.png`
    /// (from the snapshots' latents, so that it compares with them).
    fn write_final_samples(&self, samples: &Samples) -> Result<()> {
        match self.data.plane() {
            Some(_) => write_points_csv(&self.run.samples(), samples),
            None => {
                let tensor = samples.to_tensor(&candle_core::Device::Cpu)?;
                let meta = std::collections::HashMap::from([("format".into(), "disback-samples".into())]);
                write_tensors(&self.run.samples_tensor(), &[("samples".into(), tensor)], meta)?;
                self.write_snapshot("final")
            }
        }
    }

    /// The teacher's and s_φ's score fields (`fields/<name>.json`): a 2-D
    /// figure (paper Fig. 13), so image runs have none.
    fn write_fields(&self, name: &str) -> Result<()> {
        if self.data.images().is_some() {
            return Ok(());
        }
        let field = self.score_field("teacher".into(), &self.teacher, self.default_field_sigma())?;
        write_json(&self.run.field(name), &field)
    }

    /// [`Session::evaluate`], its seconds counted as measuring.
    pub(super) fn timed_evaluate(&mut self) -> Result<Evaluation> {
        let started = Instant::now();
        let eval = self.evaluate();
        self.clock.measuring += started.elapsed().as_secs_f64();
        eval
    }

    /// Measures the generator now, on `metrics.samples` fresh samples.
    pub fn evaluate(&self) -> Result<Evaluation> {
        let mut rng = self.eval_rng();
        let samples = self
            .student
            .average
            .generate(self.evaluator.samples(), &mut rng)?;
        self.measure(&Samples::from_tensor(&samples)?, &mut rng)
    }

    /// Measurements draw from their own stream, seeded by the run's seed
    /// and the cost, so measuring never changes training.
    pub(super) fn eval_rng(&self) -> HostRng {
        host_rng(
            self.config.seed ^ (self.clock.cost as u64).rotate_left(32),
            streams::EVAL,
        )
    }

    /// Distances and mode statistics of `samples`, and the mismatch degree
    /// of the target and the teacher at (at most `metrics.samples` of) them.
    fn measure(&self, samples: &Samples, rng: &mut HostRng) -> Result<Evaluation> {
        let mut eval = self.evaluator.distribution(samples, rng)?;
        let samples = &samples.head(self.evaluator.samples());
        if let Some(b) = self.phase.backtracker() {
            let models: Vec<&Denoiser> = if b.schedule.target() == 0 {
                vec![&self.teacher]
            } else {
                vec![&b.target, &self.teacher]
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
        self.order(&Order::SaveState)?;
        self.checkpoint()
    }

    /// Saves the generator; without a path, to
    /// `generator/saved-<cost>.safetensors` in the run directory.
    pub fn save_generator(&mut self, path: Option<&Path>) -> Result<PathBuf> {
        self.order(&Order::SaveGenerator(path.map(Path::to_path_buf)))?;
        let file = match path {
            Some(p) => p.to_path_buf(),
            None => self
                .run
                .generator_dir()
                .join(format!("saved-{}.safetensors", self.clock.cost)),
        };
        self.save_model_now(ModelKind::Generator, &file)?;
        Ok(file)
    }

    /// Saves any of the session's models to `path` (atomically). Score
    /// models load back with `Denoiser::load`, the generator with
    /// `Generator::load` (or `disback sample`). A model the current stage
    /// does not have is an error that says so, and so is a non-finite
    /// loss held since the last log line (the weights may be broken).
    pub fn save_model(&mut self, kind: ModelKind, path: &Path) -> Result<()> {
        self.order(&Order::SaveModel(kind, path.to_path_buf()))?;
        self.save_model_now(kind, path)
    }

    fn save_model_now(&mut self, kind: ModelKind, path: &Path) -> Result<()> {
        self.settle()?;
        if !self.leads() {
            return Ok(());
        }
        if kind == ModelKind::Generator {
            return self.student.average.save(path);
        }
        match self.score_model(kind) {
            Some(model) => model.save(path),
            None => anyhow::bail!("there is no {kind:?} model in the {} stage", self.phase.stage()),
        }
    }

    /// A score model of the session, when the current stage has it.
    pub fn score_model(&self, kind: ModelKind) -> Option<&Denoiser> {
        match kind {
            ModelKind::Teacher => Some(&self.teacher),
            ModelKind::Degrading => self.phase.recorder().map(|r| &r.degrading),
            ModelKind::FakeScore => self.phase.backtracker().map(|b| &b.fake_score),
            ModelKind::Target => self.phase.backtracker().map(|b| &b.target),
            ModelKind::Generator => None,
        }
    }

    /// The model that follows the generator now: s_φ while backtracking,
    /// s'_θ while recording, the teacher before either exists.
    pub fn tracking_model(&self) -> &Denoiser {
        self.score_model(ModelKind::FakeScore)
            .or(self.score_model(ModelKind::Degrading))
            .unwrap_or(&self.teacher)
    }

    // ---- read access --------------------------------------------------------

    pub fn config(&self) -> &Config {
        &self.config
    }
    pub fn stage(&self) -> Stage {
        self.phase.stage()
    }
    pub fn is_done(&self) -> bool {
        self.phase.stage() == Stage::Done
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
    /// The generator as sampled and saved (the moving average of its weights).
    pub fn sampled_generator(&self) -> &Generator {
        &self.student.average
    }
    pub fn path(&self) -> &DegradationPath {
        &self.path
    }
    /// The backtracking schedule (before stage 2: the plan).
    pub fn schedule(&self) -> &BacktrackSchedule {
        self.phase.schedule()
    }
    pub fn latest(&self) -> Option<&MetricsRecord> {
        self.latest.as_ref()
    }
    pub fn latest_eval(&self) -> Option<&Evaluation> {
        self.latest_eval.as_ref()
    }
    /// Steps taken in the current stage.
    pub fn stage_step(&self) -> usize {
        self.clock.stage_step
    }
    /// Iterations of every stage so far (see [`super::phase::Clock`]).
    pub fn iteration(&self) -> usize {
        self.clock.iteration
    }
    /// Every measurement so far in cost, network passes and this process's
    /// compute seconds (see [`super::phase::Clock`]).
    pub fn timeline(&self) -> &[Moment] {
        &self.timeline
    }
    /// Distillation iterations so far (see [`super::phase::Clock`]).
    pub fn cost(&self) -> usize {
        self.clock.cost
    }

    /// Generator samples for a preview, from the caller's RNG (so previews
    /// never touch the training stream), as points of the data's plane.
    pub fn generator_samples(&self, n: usize, rng: &mut HostRng) -> Result<Vec<Point>> {
        let samples = self.student.average.sample(n, rng)?;
        self.plane_points(&samples)
    }

    /// Samples of 2-D data (or of a mixture embedded in more dimensions)
    /// as points of the plane, where pictures show them.
    pub fn plane_points(&self, samples: &Samples) -> Result<Vec<Point>> {
        self.data
            .plane_points(samples)
            .context("image data has no plane to show points on")
    }
}
