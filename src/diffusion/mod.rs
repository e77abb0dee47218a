//! Diffusion training and sampling in EDM form: noise-level distributions,
//! the denoising loss, and the Heun sampler.

mod sampler;
mod sigmas;

pub use sampler::{heun_sample, model_denoise_fn};
pub use sigmas::{EDM_SIGMA_DATA, NoiseSchedule, karras_grid, karras_index_sigmas, log_normal_sigmas};

use crate::model::{Denoiser, loss_weight};
use crate::rng::normal_tensor;
use anyhow::Result;
use candle_core::Tensor;
use rand::Rng;

/// The EDM denoising loss `λ(σ) ‖D(x_0 + σ ε; σ) − x_0‖²`, averaged over
/// the batch and every coordinate, at the given σ per sample (ε is drawn
/// here). `x_0` must carry no gradient (data, or detached generator samples).
pub fn denoising_loss(model: &Denoiser, x0: &Tensor, sigmas: Vec<f32>, rng: &mut impl Rng) -> Result<Tensor> {
    let device = x0.device();
    let noise = normal_tensor(rng, x0.dims(), device)?;
    let weights: Vec<f32> = sigmas
        .iter()
        .map(|&s| loss_weight(s as f64, model.sigma_data) as f32)
        .collect();
    let mut column = vec![1; x0.rank()];
    column[0] = weights.len();
    let weights = Tensor::from_vec(weights, column, device)?;
    let levels = model.levels(sigmas, device)?;
    let xt = (x0 + noise.broadcast_mul(&levels.sigma_for(x0)?)?)?;
    let d = model.denoise(&xt, &levels)?;
    Ok((d - x0)?.sqr()?.broadcast_mul(&weights)?.mean_all()?)
}
