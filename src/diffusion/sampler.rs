//! The deterministic Heun sampler (EDM Algorithm 1) on a batch tensor of
//! any shape: points (B, 2) or images (B, C, H, W), with a network
//! denoiser or an exact one.

use crate::model::Denoiser;
use anyhow::Result;
use candle_core::Tensor;

/// Integrates the probability-flow ODE from `x` (already scaled by
/// `sigmas[0]`) down the decreasing grid `sigmas`, then to σ = 0: an Euler
/// step along `d = (x − D(x; σ)) / σ` with a Heun correction, except on the
/// last step to σ = 0.
pub fn heun_sample(
    mut denoise: impl FnMut(&Tensor, f32) -> Result<Tensor>,
    mut x: Tensor,
    sigmas: &[f64],
) -> Result<Tensor> {
    let mut slope =
        |x: &Tensor, sigma: f64| -> Result<Tensor> { Ok(((x - denoise(x, sigma as f32)?)? / sigma)?) };
    for (i, &sigma) in sigmas.iter().enumerate() {
        let next = sigmas.get(i + 1).copied().unwrap_or(0.0);
        let h = next - sigma;
        let d = slope(&x, sigma)?;
        let euler = (&x + (&d * h)?)?;
        if next == 0.0 {
            x = euler;
            continue;
        }
        let d2 = slope(&euler, next)?;
        x = (&x + ((d + d2)? * (0.5 * h))?)?;
    }
    Ok(x)
}

/// A network denoiser as the sampler's `denoise` callback (no gradient).
pub fn model_denoise_fn(model: &Denoiser) -> impl FnMut(&Tensor, f32) -> Result<Tensor> + '_ {
    move |x: &Tensor, sigma: f32| {
        let levels = model.levels(vec![sigma; x.dim(0)?], &x.device().clone())?;
        crate::model::frozen(|| model.denoise(x, &levels))
    }
}
