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

use super::loss::{fit_to_generator, generator_loss};
use super::schedule::{BacktrackSchedule, Decision};
use super::student::Student;
use crate::config::DistillConfig;
use crate::diffusion::SigmaLaw;
use crate::model::Denoiser;
use crate::optim::Adam;
use crate::parallel::Collective;
use crate::rng::Draws;
use crate::transfer::Pending;
use anyhow::{Context, Result, ensure};
use candle_core::Tensor;

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
    /// Gaps of the steps since the `auto` rule last read them, on the
    /// device until its window needs them.
    gaps: Pending,
    /// The ranks training together: their gaps are averaged before the
    /// `auto` rule reads them, so every rank decides the same switch.
    team: Collective,
}

/// What one backtracking iteration did. The numbers are scalar tensors on
/// the device, for the engine to read back once per log interval.
#[derive(Debug, Clone)]
pub struct BacktrackStep {
    pub loss_generator: Tensor,
    /// Mean ‖D_φ − D_target‖ over the batch (drives the `auto` schedule).
    pub gap: Tensor,
    /// The denoising loss of each s_φ update.
    pub loss_fake: Vec<Tensor>,
    /// Stay, a switch already made, or the end of the budget.
    pub decision: Decision,
}

impl Backtracker {
    /// s_φ starts as `fake_start`; the target is the schedule's first node.
    /// `settings.batch` is this rank's share of the batch; `team` the ranks
    /// whose gradients and gaps it averages.
    pub fn new(
        fake_start: Denoiser,
        schedule: BacktrackSchedule,
        settings: &DistillConfig,
        nodes: &dyn NodeSource,
        team: &Collective,
    ) -> Result<Self> {
        let target = fake_start.deep_clone()?;
        load(nodes, schedule.target(), &target)?;
        Ok(Self {
            fake_opt: Adam::new(fake_start.params(), settings.fake_lr)?.averaged_over(team),
            fake_score: fake_start,
            target,
            schedule,
            settings: settings.clone(),
            gaps: Pending::default(),
            team: team.clone(),
        })
    }

    /// One generator update toward the target, then
    /// `fake_steps_per_generator_step` updates of s_φ, all at noise levels
    /// from `law` (`distill.sigma`); moves to the next target when the
    /// schedule says so. Nothing is read back from the device unless the
    /// `auto` rule's window closes.
    pub fn step(
        &mut self,
        student: &mut Student,
        law: SigmaLaw<'_>,
        draws: &mut Draws<'_>,
        nodes: &dyn NodeSource,
    ) -> Result<BacktrackStep> {
        let d = &self.settings;
        let device = student.generator.device();
        let (loss_generator, gap) = self.update_generator(student, law, draws)?;
        let loss_fake = (0..d.fake_steps_per_generator_step)
            .map(|_| {
                // s_φ is trained at the noise levels the generator loss
                // queries it at (as DMD2 does), where its accuracy counts.
                let sigmas = draws.sigmas(law, d.batch, &device)?;
                fit_to_generator(
                    &self.fake_score,
                    &mut self.fake_opt,
                    &student.generator,
                    sigmas,
                    draws,
                )
            })
            .collect::<Result<Vec<_>>>()?;
        self.hand_over_gap(&gap)?;
        let decision = self.schedule.record_step();
        if let Decision::Switch { to, .. } = decision {
            self.gaps.clear();
            load(nodes, to, &self.target)?;
        }
        Ok(BacktrackStep {
            loss_generator,
            gap,
            loss_fake,
            decision,
        })
    }

    /// One generator update; returns its loss, detached, and the gap. The
    /// generator's graph ends here, before s_φ's updates build theirs: at
    /// batch 4,096 holding both was most of a distillation step's memory.
    fn update_generator(
        &self,
        student: &mut Student,
        law: SigmaLaw<'_>,
        draws: &mut Draws<'_>,
    ) -> Result<(Tensor, Tensor)> {
        let d = &self.settings;
        let x0 = student.generate(d.batch, draws)?;
        let device = x0.device().clone();
        let sigmas = draws.sigmas(law, d.batch, &device)?;
        let eps = draws.normal(x0.dims(), &device)?;
        let levels = self.target.levels(sigmas, &device)?;
        let g = generator_loss(&x0, &self.target, &self.fake_score, &levels, &eps, d.weighting)?;
        student.update(&g.loss)?;
        Ok((g.loss.detach(), g.gap))
    }

    /// Holds this step's gap for the `auto` rule, and reads the held gaps
    /// back (one transfer) when its window needs them.
    fn hand_over_gap(&mut self, gap: &Tensor) -> Result<()> {
        match self.schedule.gaps_needed() {
            Some(needed) => {
                self.gaps.push(gap)?;
                if self.gaps.len() >= needed {
                    self.flush_gaps()?;
                }
            }
            // Manual mode turned on mid-window: the held gaps still count.
            None if !self.gaps.is_empty() => self.flush_gaps()?,
            None => {}
        }
        Ok(())
    }

    /// Gives the held gaps to the schedule (before a checkpoint saves it,
    /// so a resumed run decides as an uninterrupted one).
    pub fn flush_gaps(&mut self) -> Result<()> {
        let gaps = self.team.average_values(self.gaps.take()?)?;
        self.schedule.observe_gaps(&gaps);
        Ok(())
    }

    /// Moves to the next target now (the lab's skip); `None` on the teacher.
    pub fn skip(&mut self, nodes: &dyn NodeSource) -> Result<Option<Decision>> {
        let decision = self.schedule.skip();
        if let Some(Decision::Switch { to, .. }) = decision {
            self.gaps.clear();
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
