//! The session's teacher: a pretrained `diffusers` model, loaded from a
//! file, taken from the cache, or pretrained with the EDM loss on data
//! (cosine-decayed learning rate), then cached.

use super::losses::LossKind;
use super::phase::Phase;
use super::protocol::Event;
use super::session::Session;
use super::teacher::{load_pretrained, teacher_cache_key};
use crate::diffusion::denoising_loss;
use crate::rng::Draws;
use anyhow::{Context, Result};
use std::path::PathBuf;

impl Session {
    pub(super) fn prepare_teacher(&mut self) -> Result<()> {
        if let Some(dir) = self.config.teacher.pretrained.clone() {
            load_pretrained(&self.teacher, &dir)?;
            let source = format!(
                "pretrained: diffusers model {} ({} parameters)",
                dir.display(),
                self.teacher.params().count()
            );
            return self.teacher_ready(source);
        }
        if let Some(file) = self.config.teacher.file.clone() {
            self.teacher.load(&file).context("loading teacher.file")?;
            return self.teacher_ready(format!("loaded from {}", file.display()));
        }
        // Rank 0 decides whether the cache serves (another run may be
        // writing it); the other ranks then load the same file.
        let cached = self.teacher_cache_file();
        let mut from_cache = false;
        if self.leads() && cached.exists() {
            match self.teacher.load(&cached) {
                Ok(()) => from_cache = true,
                Err(e) => self.pending.push(Event::Warning(format!(
                    "ignoring the teacher cache: {e:#}; training a new teacher"
                ))),
            }
        }
        if self.team.from_leader(from_cache)? {
            if !self.leads() {
                self.teacher
                    .load(&cached)
                    .context("loading the teacher rank 0 took from the cache")?;
            }
            return self.teacher_ready(format!("cached in {}", cached.display()));
        }
        self.announce_stage();
        self.seed_device_draws(self.phase.stage())
    }

    pub fn teacher_cache_file(&self) -> PathBuf {
        self.config
            .teacher
            .cache_dir
            .join(format!("teacher-{}.safetensors", teacher_cache_key(&self.config)))
    }

    pub(super) fn pretrain_step(&mut self) -> Result<()> {
        let t = self.config.teacher.clone();
        let Phase::Pretrain { training: p, .. } = &mut self.phase else {
            anyhow::bail!("a teacher step outside pretraining");
        };
        // The data batch is drawn on the host on every path (the data live
        // there); noise and σ where the other training draws are. Each rank
        // keeps its share of the global batch (see `Draws`).
        let (shard, local) = (self.team.shard(), t.batch / self.team.world());
        let x0 = self
            .data
            .sample(t.batch, &mut p.rng)
            .shard(shard, local)
            .to_tensor(&self.device)?;
        let mut draws = Draws::new(self.device_draws, &mut p.rng, shard);
        let sigmas = draws.sigmas(self.noise.training_law(), local, &self.device)?;
        let loss = denoising_loss(&self.teacher, &x0, sigmas, &mut draws)?;
        // Cosine decay to 5% of the rate: a sharper teacher at the same cost.
        let progress = self.clock.stage_step as f64 / t.steps as f64;
        p.opt.lr = t.lr * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        p.opt.step(&loss.backward()?)?;
        let iteration = self.clock.iteration + 1;
        self.losses.push(LossKind::Teacher, "teacher", iteration, &loss)?;
        self.advance_clock(false)?;
        if self.clock.stage_step >= t.steps {
            self.finish_pretraining()?;
        }
        Ok(())
    }

    /// Ends pretraining: at its full length, the teacher goes into the
    /// cache; cut short (a skip), it is used for this run only, so the cache
    /// never hands out a teacher that is less than its key promises.
    pub(super) fn finish_pretraining(&mut self) -> Result<()> {
        self.log_line(None)?;
        let steps = self.config.teacher.steps;
        if self.clock.stage_step < steps {
            let source = format!(
                "trained for {} of {steps} steps (cut short, not cached)",
                self.clock.stage_step
            );
            return self.teacher_ready(source);
        }
        let cached = self.teacher_cache_file();
        self.settle()?;
        if self.leads() {
            self.teacher.save(&cached)?;
        }
        self.teacher_ready(format!("trained, cached in {}", cached.display()))
    }
}
