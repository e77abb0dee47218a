//! Stage 2, distribution backtracking (the paper's Algorithm 2):
//!
//! ```text
//! s_φ ← s'_θN                                  (it already fits G⁰)
//! for i = N−1 … 0:                             (targets; node 0 = teacher)
//!     load every weight of s'_θi               (strict: all names, shapes)
//!     until the schedule leaves node i:
//!         x_0 = G_η(z);  x_t = x_0 + σ ε
//!         update η along (D_φ(x_t) − D_θi(x_t))      (score distillation)
//!         update s_φ by denoising score matching on fresh G_η samples
//! ```
//!
//! The Diff-Instruct baseline is the same loop on a path of one node, the
//! teacher. The backtracker does the maths and the switches; the engine
//! keeps the clock, the files and the measurements.

use super::loss::{finite, fit_to_generator, generator_loss};
use super::schedule::{BacktrackSchedule, Decision};
use super::student::Student;
use crate::config::{DistillConfig, SigmaDistribution};
use crate::diffusion::{NoiseSchedule, karras_index_sigmas};
use crate::model::Denoiser;
use crate::optim::Adam;
use crate::rng::normal_tensor;
use anyhow::{Context, Result, ensure};
use rand::Rng;

/// Where the path's nodes come from. `load_node` puts every weight of node
/// `index` into `model`, strictly (all names, all shapes), or changes
/// nothing and fails.
pub trait NodeSource {
    fn load_node(&self, index: usize, model: &Denoiser) -> Result<()>;
}

/// The baseline's path: the teacher alone, node 0.
impl NodeSource for Denoiser {
    fn load_node(&self, index: usize, model: &Denoiser) -> Result<()> {
        ensure!(
            index == 0,
            "the baseline's only node is the teacher, not node {index}"
        );
        model.params().copy_from(self.params())
    }
}

pub struct Backtracker {
    /// s_φ: tracks the generator's distribution.
    pub fake_score: Denoiser,
    pub fake_opt: Adam,
    /// s'_θi, the current target (the teacher when i = 0).
    pub target: Denoiser,
    pub schedule: BacktrackSchedule,
    settings: DistillConfig,
    /// The 1000-step Karras grid of the generator loss's σ.
    karras: Vec<f64>,
}

/// What one backtracking iteration did.
#[derive(Debug, Clone, PartialEq)]
pub struct BacktrackStep {
    pub loss_generator: f64,
    /// Mean ‖D_φ − D_target‖ over the batch (drives the `auto` schedule).
    pub gap: f64,
    /// The denoising loss of each s_φ update.
    pub loss_fake: Vec<f64>,
    /// Stay, a switch already made, or the end of the budget.
    pub decision: Decision,
}

impl Backtracker {
    /// s_φ starts as `fake_start`; the target is the schedule's first node.
    pub fn new(
        fake_start: Denoiser,
        schedule: BacktrackSchedule,
        settings: &DistillConfig,
        noise: &NoiseSchedule,
        nodes: &dyn NodeSource,
    ) -> Result<Self> {
        let target = fake_start.deep_clone()?;
        load(nodes, schedule.target(), &target)?;
        Ok(Self {
            fake_opt: Adam::new(fake_start.params(), settings.fake_lr)?,
            fake_score: fake_start,
            target,
            schedule,
            settings: settings.clone(),
            karras: noise.karras(1000),
        })
    }

    /// One generator update toward the target, then
    /// `fake_steps_per_generator_step` updates of s_φ; moves to the next
    /// target when the schedule says so.
    pub fn step(
        &mut self,
        student: &mut Student,
        noise: &NoiseSchedule,
        rng: &mut impl Rng,
        nodes: &dyn NodeSource,
    ) -> Result<BacktrackStep> {
        let d = &self.settings;
        let x0 = student.generate(d.batch, rng)?;
        let sigmas = self.loss_sigmas(noise, rng);
        let eps = normal_tensor(rng, x0.dims(), x0.device())?;
        let levels = self.target.levels(sigmas, x0.device())?;
        let g = generator_loss(&x0, &self.target, &self.fake_score, &levels, &eps, d.weighting)?;
        let loss_generator = finite(&g.loss, "generator")?;
        student.update(&g.loss)?;
        let loss_fake = (0..d.fake_steps_per_generator_step)
            .map(|_| {
                // s_φ is trained at the noise levels the generator loss
                // queries it at (as DMD2 does), where its accuracy counts.
                let sigmas = self.loss_sigmas(noise, rng);
                let (model, opt) = (&self.fake_score, &mut self.fake_opt);
                fit_to_generator(model, opt, &student.generator, sigmas, rng, "fake-score")
            })
            .collect::<Result<Vec<_>>>()?;
        let decision = self.schedule.record_step(g.gap);
        if let Decision::Switch { to, .. } = decision {
            load(nodes, to, &self.target)?;
        }
        Ok(BacktrackStep {
            loss_generator,
            gap: g.gap,
            loss_fake,
            decision,
        })
    }

    /// Noise levels of one batch of the generator loss.
    fn loss_sigmas(&self, noise: &NoiseSchedule, rng: &mut impl Rng) -> Vec<f32> {
        let d = &self.settings;
        match d.sigma {
            SigmaDistribution::Karras => {
                karras_index_sigmas(rng, d.batch, &self.karras, d.karras_min_index, d.karras_max_index)
            }
            SigmaDistribution::LogNormal => noise.training(rng, d.batch),
        }
    }

    /// Moves to the next target now (the lab's skip); `None` on the teacher.
    pub fn skip(&mut self, nodes: &dyn NodeSource) -> Result<Option<Decision>> {
        let decision = self.schedule.skip();
        if let Some(Decision::Switch { to, .. }) = decision {
            load(nodes, to, &self.target)?;
        }
        Ok(decision)
    }
}

fn load(nodes: &dyn NodeSource, index: usize, target: &Denoiser) -> Result<()> {
    nodes
        .load_node(index, target)
        .with_context(|| format!("switching to node {index}"))
}
