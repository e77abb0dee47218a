//! The teacher: loaded from a file, taken from the cache, or pretrained
//! with the EDM loss on data (cosine-decayed learning rate), then cached.

use super::losses::LossKind;
use super::phase::Phase;
use super::protocol::Event;
use super::session::Session;
use crate::config::Config;
use crate::diffusion::denoising_loss;
use crate::rng::Draws;
use anyhow::{Context, Result};
use std::path::PathBuf;

/// The name of a config's pretrained teacher in the cache: a hash of
/// everything that shapes it (data, diffusion, network, pretraining
/// settings and seed) and nothing that does not (the run's own seed,
/// paths, distillation settings), so runs of any seed share one teacher.
pub fn teacher_cache_key(config: &Config) -> String {
    use sha2::{Digest, Sha256};
    let resolved = crate::data::resolve(config.clone());
    let (t, d) = (&resolved.teacher, &resolved.diffusion);
    let shape = serde_json::json!({
        "format": 4,
        "data": resolved.data,
        "diffusion": [d.sigma_data, d.p_mean, d.p_std],
        "net": resolved.net_spec(),
        "teacher": [t.steps, t.batch, t.lr, t.seed],
    });
    let digest = Sha256::digest(shape.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Session {
    pub(super) fn prepare_teacher(&mut self) -> Result<()> {
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
        // there); noise and σ where the other training draws are.
        let x0 = self.data.batch(t.batch, &mut p.rng, &self.device)?;
        let mut draws = Draws::new(self.device_draws, &mut p.rng);
        let sigmas = draws.sigmas(self.noise.training_law(), t.batch, &self.device)?;
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
        self.teacher.save(&cached)?;
        self.teacher_ready(format!("trained, cached in {}", cached.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_teacher_cache_key_ignores_what_does_not_shape_the_teacher() {
        let base = Config::default();
        let other_seed = Config::parse("seed = 5\n[distill]\nbatch = 64\n", &[]).unwrap();
        assert_eq!(teacher_cache_key(&base), teacher_cache_key(&other_seed));
        let other_teacher = Config::parse("[teacher]\nsteps = 10\n", &[]).unwrap();
        assert_ne!(teacher_cache_key(&base), teacher_cache_key(&other_teacher));
        let other_data = Config::parse("[data]\nkind = \"ring\"\nmodes = 8\n", &[]).unwrap();
        assert_ne!(teacher_cache_key(&base), teacher_cache_key(&other_data));
    }
}
