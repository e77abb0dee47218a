//! The noise levels the method draws: stage 2's generator loss and s_φ's
//! updates share one law (`distill.sigma`), and stage 1 degrades either at
//! the teacher's own law or at stage 2's (`record.sigma`).

use crate::config::{DistillConfig, RecordSigma, SigmaDistribution};
use crate::diffusion::{KarrasGrid, NoiseSchedule, SigmaLaw};
use anyhow::Result;
use candle_core::Device;

pub struct NoiseLaws {
    schedule: NoiseSchedule,
    /// The 1000-step Karras grid DMD2 draws indices of.
    karras: KarrasGrid,
    distill: SigmaDistribution,
    karras_indices: (usize, usize),
    record: RecordSigma,
}

impl NoiseLaws {
    pub fn new(
        schedule: &NoiseSchedule,
        distill: &DistillConfig,
        record: RecordSigma,
        device: &Device,
    ) -> Result<Self> {
        Ok(Self {
            karras: KarrasGrid::new(schedule.karras(1000), device)?,
            schedule: schedule.clone(),
            distill: distill.sigma,
            karras_indices: (distill.karras_min_index, distill.karras_max_index),
            record,
        })
    }

    /// Stage 2's law: where the generator loss queries the target and
    /// s_φ, and so where s_φ is trained (as DMD2 trains its fake score).
    pub fn distillation(&self) -> SigmaLaw<'_> {
        match self.distill {
            SigmaDistribution::Karras => SigmaLaw::KarrasIndex {
                grid: &self.karras,
                min_index: self.karras_indices.0,
                max_index: self.karras_indices.1,
            },
            SigmaDistribution::LogNormal => self.schedule.training_law(),
        }
    }

    /// Stage 1's law (and the baseline's fit of s_φ to G⁰).
    pub fn recording(&self) -> SigmaLaw<'_> {
        match self.record {
            RecordSigma::Teacher => self.schedule.training_law(),
            RecordSigma::Distill => self.distillation(),
        }
    }
}
