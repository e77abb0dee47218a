//! Diffusion training and sampling in EDM form: noise-level distributions,
//! the denoising loss, and the Heun sampler.

mod sampler;
mod sigmas;

pub use sampler::{heun_sample, model_denoise_fn};
pub use sigmas::{KarrasGrid, NoiseSchedule, SigmaLaw};

use crate::model::{Denoiser, Sigmas};
use crate::rng::Draws;
use anyhow::Result;
use candle_core::Tensor;

/// The EDM denoising loss `λ(σ) ‖D(x_0 + σ ε; σ) − x_0‖²`, averaged over
/// the batch and every coordinate, at the given σ per sample (ε is drawn
/// here). `x_0` must carry no gradient (data, or detached generator samples).
pub fn denoising_loss(
    model: &Denoiser,
    x0: &Tensor,
    sigmas: impl Into<Sigmas>,
    draws: &mut Draws<'_>,
) -> Result<Tensor> {
    let device = x0.device();
    let noise = draws.normal(x0.dims(), device)?;
    let levels = model.levels(sigmas, device)?;
    let xt = (x0 + noise.broadcast_mul(&levels.sigma_for(x0)?)?)?;
    let d = model.denoise(&xt, &levels)?;
    Ok((d - x0)?
        .sqr()?
        .broadcast_mul(&levels.weight_for(x0)?)?
        .mean_all()?)
}
