//! Stage 1, degradation recording (the paper's Algorithm 1):
//!
//! ```text
//! s'_θ ← s_θ                                   (a copy of the teacher)
//! for k = 1 … K:
//!     x_0 = G⁰(z), z ~ N(0, I)                 (G⁰ frozen)
//!     update s'_θ by denoising score matching on x_0
//!     after the node iterations: save s'_θ as the next node
//! ```
//!
//! The paper saves a node every K/N iterations; `record.placement` also
//! places them geometrically (most near the teacher) or where listed.
//!
//! The recorder does the maths and says when a node is due; the engine
//! stores the nodes (node 0, the teacher, is stored before the first step).

use super::loss::fit_to_generator;
use crate::config::RecordConfig;
use crate::diffusion::SigmaLaw;
use crate::model::{Denoiser, Generator};
use crate::optim::Adam;
use crate::parallel::Collective;
use crate::rng::Draws;
use crate::transfer::Pending;
use anyhow::Result;
use candle_core::Tensor;
use serde::{Deserialize, Serialize};

pub struct DegradationRecorder {
    /// s'_θ: the teacher's copy, fitted to G⁰'s samples.
    pub degrading: Denoiser,
    pub opt: Adam,
    pub progress: RecordProgress,
    settings: RecordConfig,
    /// The recording iterations after which nodes are due, increasing.
    node_iterations: Vec<usize>,
    /// Losses since they were last added to `progress`, on the device.
    losses: Pending,
}

/// The recorder's counters, saved in checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordProgress {
    /// Recording iterations done.
    pub iteration: usize,
    /// Iteration of the last node saved (0: the teacher).
    pub last_node: usize,
    /// Sum and count of the losses since the last node.
    loss_sum: f64,
    loss_count: usize,
}

/// What one recording iteration did.
#[derive(Debug, Clone)]
pub struct RecordStep {
    /// The denoising loss, a scalar on the device.
    pub loss: Tensor,
    /// A node is due now: save `degrading` as the next one.
    pub node: Option<NodeDue>,
    /// Recording is over: backtracking starts next.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeDue {
    /// Recording iterations behind the node.
    pub iteration: usize,
    /// Mean denoising loss over the iterations since the previous node.
    pub mean_loss: Option<f64>,
}

impl DegradationRecorder {
    /// Starts from a copy of the teacher. `settings.batch` is this rank's
    /// share of the batch; `team` the ranks whose gradients it averages.
    pub fn new(teacher: &Denoiser, settings: &RecordConfig, team: &Collective) -> Result<Self> {
        let degrading = teacher.deep_clone()?;
        Ok(Self {
            opt: Adam::new(degrading.params(), settings.lr)?.averaged_over(team),
            degrading,
            progress: RecordProgress::default(),
            node_iterations: settings.node_iterations(),
            settings: settings.clone(),
            losses: Pending::default(),
        })
    }

    /// One DSM update of s'_θ on a fresh batch of G⁰'s samples, at noise
    /// levels drawn from `law` (`record.sigma`). `nodes` says whether nodes
    /// are recorded (DisBack) or s'_θ is only fitted (the baseline's `fit`
    /// start of s_φ).
    pub fn step(
        &mut self,
        g0: &Generator,
        law: SigmaLaw<'_>,
        draws: &mut Draws<'_>,
        nodes: bool,
    ) -> Result<RecordStep> {
        let batch = self.settings.batch;
        let sigmas = draws.sigmas(law, batch, &g0.device())?;
        let loss = fit_to_generator(&self.degrading, &mut self.opt, g0, sigmas, draws)?;
        self.losses.push(&loss)?;
        self.progress.iteration += 1;
        let node_due = nodes && self.node_iterations.contains(&self.progress.iteration);
        Ok(RecordStep {
            loss,
            node: if node_due { Some(self.take_node()?) } else { None },
            done: self.progress.iteration >= self.settings.iterations,
        })
    }

    /// Adds the losses held on the device to `progress` (one read): before
    /// a node's mean is taken and before a checkpoint saves `progress`.
    pub fn flush(&mut self) -> Result<()> {
        let p = &mut self.progress;
        for loss in self.losses.take()? {
            p.loss_sum += loss;
            p.loss_count += 1;
        }
        Ok(())
    }

    /// Ends recording early (the lab's skip): the current s'_θ becomes the
    /// last node, unless it was just saved or nothing was trained since the
    /// teacher (a copy of the teacher is no degraded node).
    pub fn finish_early(&mut self) -> Result<Option<NodeDue>> {
        if self.progress.iteration > self.progress.last_node {
            Ok(Some(self.take_node()?))
        } else {
            Ok(None)
        }
    }

    fn take_node(&mut self) -> Result<NodeDue> {
        self.flush()?;
        let p = &mut self.progress;
        let mean_loss = (p.loss_count > 0).then(|| p.loss_sum / p.loss_count as f64);
        p.last_node = p.iteration;
        p.loss_sum = 0.0;
        p.loss_count = 0;
        Ok(NodeDue {
            iteration: p.iteration,
            mean_loss,
        })
    }
}
