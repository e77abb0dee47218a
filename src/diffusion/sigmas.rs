//! Noise-level distributions.

use crate::config::{DiffusionConfig, edm_to_data_units};
use crate::model::Sigmas;
use crate::rng::{DrawSource, Draws, index_in};
use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use rand::{Rng, RngExt};
use rand_distr::StandardNormal;

/// How a training batch's σ are drawn.
#[derive(Debug, Clone, Copy)]
pub enum SigmaLaw<'a> {
    /// ln σ ~ N(mean, std²): EDM's denoising loss.
    LogNormal { mean: f64, std: f64 },
    /// σ at uniformly drawn indices `min_index..=max_index` of a Karras
    /// grid: DMD2's generator-loss noise.
    KarrasIndex {
        grid: &'a KarrasGrid,
        min_index: usize,
        max_index: usize,
    },
}

/// A Karras grid's σ, with a copy on the device for device draws (made
/// once, so no draw uploads it).
#[derive(Debug, Clone)]
pub struct KarrasGrid {
    pub values: Vec<f64>,
    on_device: Tensor,
}

impl KarrasGrid {
    pub fn new(values: Vec<f64>, device: &Device) -> Result<Self> {
        let f32s = values.iter().map(|&v| v as f32).collect::<Vec<_>>();
        let on_device = crate::transfer::upload(f32s, values.len(), device)?;
        Ok(Self { values, on_device })
    }
}

impl Draws<'_> {
    /// `n` noise levels from `law` (this rank's, of the global batch's):
    /// on the host (then uploaded with the levels) or as a (n, 1) column
    /// drawn on `device`.
    pub fn sigmas(&mut self, law: SigmaLaw<'_>, n: usize, device: &Device) -> Result<Sigmas> {
        let (shard, all) = (self.shard, self.shard.global(n));
        let rng = match &mut self.source {
            DrawSource::Host(rng) => rng,
            DrawSource::Device => {
                return Ok(Sigmas::Device(shard.rows(device_sigmas(law, all, device)?, n)?));
            }
        };
        let values = match law {
            SigmaLaw::LogNormal { mean, std } => log_normal_sigmas(*rng, all, mean, std),
            SigmaLaw::KarrasIndex {
                grid,
                min_index,
                max_index,
            } => karras_index_sigmas(*rng, all, &grid.values, min_index, max_index),
        };
        Ok(Sigmas::Host(shard.take(values, n, 1)))
    }
}

fn device_sigmas(law: SigmaLaw<'_>, n: usize, device: &Device) -> Result<Tensor> {
    Ok(match law {
        SigmaLaw::LogNormal { mean, std } => Tensor::randn(0f32, 1f32, (n, 1), device)?
            .affine(std, mean)?
            .exp()?,
        SigmaLaw::KarrasIndex {
            grid,
            min_index,
            max_index,
        } => {
            // min + ⌊u (max − min + 1)⌋ for u ~ U[0, 1): u < 1 − 2⁻²⁴, so
            // the product stays below the count for any grid under 2²⁴.
            let count = (max_index - min_index + 1) as f64;
            let index = Tensor::rand(0f32, 1f32, n, device)?
                .affine(count, 0.0)?
                .floor()?
                .affine(1.0, min_index as f64)?
                .to_dtype(DType::U32)?;
            grid.on_device.index_select(&index, 0)?.reshape((n, 1))?
        }
    })
}

/// The noise levels of one problem. The config's settings (p_mean, p_std,
/// sigma_min, sigma_max) are in EDM's units and are scaled by
/// σ_data / 0.5 here: the same as standardising the data to EDM's scale
/// (spec §3), so the defaults mean the same for a ring of radius 2.5 as for
/// images. (Measured on the 6-mode unequal mixture, 3 seeds: the lightest
/// mode's share 0.10–0.25 unscaled, 0.51–0.79 scaled.)
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseSchedule {
    scale: f64,
    p_mean: f64,
    p_std: f64,
    sigma_min: f64,
    sigma_max: f64,
    rho: f64,
}

impl NoiseSchedule {
    pub fn new(config: &DiffusionConfig, sigma_data: f64) -> Self {
        Self {
            scale: edm_to_data_units(1.0, sigma_data),
            p_mean: config.p_mean,
            p_std: config.p_std,
            sigma_min: config.sigma_min,
            sigma_max: config.sigma_max,
            rho: config.rho,
        }
    }

    /// `n` training noise levels (log-normal), in data units.
    pub fn training(&self, rng: &mut impl Rng, n: usize) -> Vec<f32> {
        log_normal_sigmas(rng, n, self.training_mean(), self.p_std)
    }

    /// The denoising loss's law of σ, for [`Draws::sigmas`].
    pub fn training_law(&self) -> SigmaLaw<'static> {
        SigmaLaw::LogNormal {
            mean: self.training_mean(),
            std: self.p_std,
        }
    }

    /// The mean of ln σ in data units: EDM's `p_mean` shifted by the scale.
    fn training_mean(&self) -> f64 {
        self.p_mean + self.scale.ln()
    }

    /// The n-step Karras grid from σ_max down to σ_min, in data units.
    pub fn karras(&self, n: usize) -> Vec<f64> {
        karras_grid(
            n,
            self.sigma_min * self.scale,
            self.sigma_max * self.scale,
            self.rho,
        )
    }
}

/// `n` draws of σ with ln σ ~ N(p_mean, p_std²) (EDM training).
pub fn log_normal_sigmas(rng: &mut impl Rng, n: usize, p_mean: f64, p_std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let e: f64 = rng.sample(StandardNormal);
            (p_mean + p_std * e).exp() as f32
        })
        .collect()
}

/// The Karras et al. grid `σ_i = (σ_max^{1/ρ} + i/(n−1) (σ_min^{1/ρ} −
/// σ_max^{1/ρ}))^ρ`, i = 0..n, from σ_max down to σ_min (no trailing 0).
pub fn karras_grid(n: usize, sigma_min: f64, sigma_max: f64, rho: f64) -> Vec<f64> {
    let (hi, lo) = (sigma_max.powf(1.0 / rho), sigma_min.powf(1.0 / rho));
    (0..n)
        .map(|i| {
            let frac = if n == 1 { 0.0 } else { i as f64 / (n - 1) as f64 };
            (hi + frac * (lo - hi)).powf(rho)
        })
        .collect()
}

/// `n` draws of σ at uniformly drawn indices `min_index..=max_index` of a
/// 1000-step Karras grid (DMD2's generator-loss noise). Index 0 is σ_max.
pub fn karras_index_sigmas(
    rng: &mut impl Rng,
    n: usize,
    grid: &[f64],
    min_index: usize,
    max_index: usize,
) -> Vec<f32> {
    (0..n)
        .map(|_| grid[index_in(rng, min_index, max_index)] as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn karras_grid_ends_and_is_decreasing() {
        let g = karras_grid(18, 0.002, 80.0, 7.0);
        assert!((g[0] - 80.0).abs() < 1e-9 && (g[17] - 0.002).abs() < 1e-12);
        assert!(g.windows(2).all(|w| w[0] > w[1]));
        // Midpoint by hand: ((80^{1/7} + 0.002^{1/7}) / 2)^7.
        let g3 = karras_grid(3, 0.002, 80.0, 7.0);
        let mid = ((80f64.powf(1.0 / 7.0) + 0.002f64.powf(1.0 / 7.0)) / 2.0).powi(7);
        assert!((g3[1] - mid).abs() < 1e-9);
        // DMD2's bounds: indices 20 and 980 of 1000 span ≈0.003…72.
        let g = karras_grid(1000, 0.002, 80.0, 7.0);
        assert!((g[20] - 72.0).abs() < 1.0, "{}", g[20]);
        assert!((g[980] - 0.0029).abs() < 0.0005, "{}", g[980]);
    }

    #[test]
    fn log_normal_sigmas_have_the_right_moments() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let s = log_normal_sigmas(&mut rng, 50_000, -1.2, 1.2);
        let logs: Vec<f64> = s.iter().map(|&x| (x as f64).ln()).collect();
        let mean = logs.iter().sum::<f64>() / logs.len() as f64;
        let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / logs.len() as f64;
        assert!((mean + 1.2).abs() < 0.02, "{mean}");
        assert!((var.sqrt() - 1.2).abs() < 0.02, "{}", var.sqrt());
    }
}
