//! The deterministic Heun sampler (EDM Algorithm 1), on host points so that
//! the same code runs the network denoiser and the exact mixture denoiser.

use crate::data::Point;
use crate::model::{Denoiser, points_to_tensor, tensor_to_points};
use anyhow::Result;

/// Integrates the probability-flow ODE from `x` (already scaled by
/// `sigmas[0]`) down the decreasing grid `sigmas`, then to σ = 0: an Euler
/// step `d = (x − D(x; σ)) / σ` with a Heun correction, except on the last
/// step to σ = 0.
pub fn heun_sample(
    mut denoise: impl FnMut(&[Point], f32) -> Result<Vec<Point>>,
    mut x: Vec<Point>,
    sigmas: &[f64],
) -> Result<Vec<Point>> {
    let slope = |x: &[Point], d: &[Point], sigma: f64| -> Vec<[f64; 2]> {
        x.iter()
            .zip(d)
            .map(|(x, d)| {
                [
                    (x[0] as f64 - d[0] as f64) / sigma,
                    (x[1] as f64 - d[1] as f64) / sigma,
                ]
            })
            .collect()
    };
    for (i, &sigma) in sigmas.iter().enumerate() {
        let next = sigmas.get(i + 1).copied().unwrap_or(0.0);
        let h = next - sigma;
        let d = slope(&x, &denoise(&x, sigma as f32)?, sigma);
        let euler: Vec<Point> = x
            .iter()
            .zip(&d)
            .map(|(x, d)| [(x[0] as f64 + h * d[0]) as f32, (x[1] as f64 + h * d[1]) as f32])
            .collect();
        if next == 0.0 {
            x = euler;
            continue;
        }
        let d2 = slope(&euler, &denoise(&euler, next as f32)?, next);
        x = x
            .iter()
            .zip(d.iter().zip(&d2))
            .map(|(x, (a, b))| {
                [
                    (x[0] as f64 + h * 0.5 * (a[0] + b[0])) as f32,
                    (x[1] as f64 + h * 0.5 * (a[1] + b[1])) as f32,
                ]
            })
            .collect();
    }
    Ok(x)
}

/// A network denoiser as the sampler's `denoise` callback.
pub fn model_denoise_fn(model: &Denoiser) -> impl FnMut(&[Point], f32) -> Result<Vec<Point>> + '_ {
    let device = model.device();
    move |x: &[Point], sigma: f32| {
        let levels = model.levels(vec![sigma; x.len()], &device)?;
        let d = model.denoise(&points_to_tensor(x, &device)?, &levels)?.detach();
        tensor_to_points(&d)
    }
}
