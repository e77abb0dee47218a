//! The generator's score-distillation loss (spec §1 and §3).
//!
//! The KL gradient with respect to a generated point is
//! `s_fake(x_t) − s_target(x_t) = (D_fake − D_target) / σ²`. Both weightings
//! follow that direction in x_0 space through a surrogate
//! `½ ‖x_0 − stopgrad(x_0 − g)‖²`, whose gradient in x_0 is exactly `g`
//! (divided by the element count):
//! - `dmd`: `g = (D_fake − D_target) / mean_d |x_0 − D_target|` per sample
//!   (DMD's normaliser: each sample's step is relative to how far the target
//!   would move it);
//! - `raw`: `g = D_fake − D_target`, the σ²-weighted score difference of
//!   Diff-Instruct.

use crate::config::Weighting;
use crate::model::{Denoiser, NoiseLevels};
use anyhow::Result;
use candle_core::{D, Tensor};

pub struct GeneratorLoss {
    /// The surrogate loss, differentiable in the generator's parameters.
    pub loss: Tensor,
    /// Mean over the batch of ‖D_fake − D_target‖: how far the generator's
    /// distribution still is from the target's, as the two score models
    /// see it. Drives the `auto` schedule.
    pub gap: f64,
}

/// `x0`: generator output with gradient; `noise`: ε of the same shape;
/// `levels`: the σ of each sample.
pub fn generator_loss(
    x0: &Tensor,
    target: &Denoiser,
    fake: &Denoiser,
    levels: &NoiseLevels,
    noise: &Tensor,
    weighting: Weighting,
) -> Result<GeneratorLoss> {
    let x0_fixed = x0.detach();
    let xt = (&x0_fixed + noise.broadcast_mul(&levels.sigma)?)?;
    let d_target = target.denoise(&xt, levels)?.detach();
    let d_fake = fake.denoise(&xt, levels)?.detach();
    let diff = (d_fake - &d_target)?;
    let gap = diff
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .mean_all()?
        .to_scalar::<f32>()? as f64;
    let g = match weighting {
        Weighting::Dmd => {
            // The floor keeps a sample that sits exactly on the target's
            // denoised point from dividing by zero.
            let scale = (&x0_fixed - &d_target)?
                .abs()?
                .mean_keepdim(D::Minus1)?
                .clamp(1e-6, f64::MAX)?;
            diff.broadcast_div(&scale)?
        }
        Weighting::Raw => diff,
    };
    let goal = (&x0_fixed - g)?.detach();
    let loss = ((x0 - goal)?.sqr()?.mean_all()? * 0.5)?;
    Ok(GeneratorLoss { loss, gap })
}
