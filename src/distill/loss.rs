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
//!
//! Losses stay on the device as tensors: the engine reads them back once
//! per log interval (and stops on a non-finite one), so no step waits for
//! the host.

use crate::config::Weighting;
use crate::diffusion::denoising_loss;
use crate::model::{Denoiser, Generator, NoiseLevels, Sigmas, frozen};
use crate::optim::Adam;
use crate::rng::Draws;
use anyhow::Result;
use candle_core::{D, Tensor};

pub struct GeneratorLoss {
    /// The surrogate loss, differentiable in the generator's parameters.
    pub loss: Tensor,
    /// Mean over the batch of ‖D_fake − D_target‖ (a scalar tensor): how
    /// far the generator's distribution still is from the target's, as the
    /// two score models see it. Drives the `auto` schedule.
    pub gap: Tensor,
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
    let xt = (&x0_fixed + noise.broadcast_mul(&levels.sigma_for(x0)?)?)?;
    // Values only: no graph through either score net.
    let (d_target, d_fake) =
        frozen(|| -> Result<_> { Ok((target.denoise(&xt, levels)?, fake.denoise(&xt, levels)?)) })?;
    // Per-sample norms and means run over every coordinate of a sample
    // (both of a point, every pixel of an image): work on (B, n) rows.
    let rows = |t: &Tensor| t.flatten_from(1);
    let diff = (d_fake - &d_target)?;
    let gap = rows(&diff)?.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.mean_all()?;
    let g = match weighting {
        Weighting::Dmd => {
            // The floor keeps a sample that sits exactly on the target's
            // denoised point from dividing by zero. (A tensor made on the
            // device: candle's `clamp` with a number uploads it.)
            let mean = rows(&(&x0_fixed - &d_target)?)?.abs()?.mean_keepdim(D::Minus1)?;
            let floor = Tensor::full(1e-6f32, mean.shape(), mean.device())?.to_dtype(mean.dtype())?;
            let scale = mean.maximum(&floor)?;
            rows(&diff)?.broadcast_div(&scale)?.reshape(diff.shape())?
        }
        Weighting::Raw => diff,
    };
    let goal = (&x0_fixed - g)?.detach();
    let loss = ((x0 - goal)?.sqr()?.mean_all()? * 0.5)?;
    Ok(GeneratorLoss { loss, gap })
}

/// One denoising-score-matching update of `model` on a fresh batch of
/// `generator`'s samples (one per noise level in `sigmas`), which get no
/// gradient: how the teacher's copy degrades toward G⁰ in stage 1 and how
/// s_φ tracks G in stage 2. Returns the loss, detached, on the device.
pub fn fit_to_generator(
    model: &Denoiser,
    opt: &mut Adam,
    generator: &Generator,
    sigmas: Sigmas,
    draws: &mut Draws<'_>,
) -> Result<Tensor> {
    let batch = match &sigmas {
        Sigmas::Host(values) => values.len(),
        Sigmas::Device(column) => column.dim(0)?,
    };
    let latents = generator.draw_latents(batch, draws)?;
    let x0 = frozen(|| generator.forward(&latents))?;
    let loss = denoising_loss(model, &x0, sigmas, draws)?;
    opt.step(&loss.backward()?)?;
    Ok(loss.detach())
}
