//! EDM preconditioning (Karras et al. 2022): the denoiser
//! `D(x; σ) = c_skip x + c_out F(c_in x, c_noise)` around a [`ScoreNet`],
//! kept apart from the network and from the loss as in EDM's own code.

use super::nets::ScoreNet;
use anyhow::Result;
use candle_core::{Device, Tensor};

/// The preconditioning coefficients for one σ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Precond {
    pub c_skip: f64,
    pub c_out: f64,
    pub c_in: f64,
    pub c_noise: f64,
}

impl Precond {
    pub fn new(sigma: f64, sigma_data: f64) -> Self {
        let s2 = sigma * sigma;
        let d2 = sigma_data * sigma_data;
        Self {
            c_skip: d2 / (s2 + d2),
            c_out: sigma * sigma_data / (s2 + d2).sqrt(),
            c_in: 1.0 / (s2 + d2).sqrt(),
            c_noise: sigma.ln() / 4.0,
        }
    }
}

/// The EDM loss weight `λ(σ) = (σ² + σ_d²) / (σ σ_d)²`; it equals
/// `1 / c_out²`, so every σ contributes a unit-scale target to F.
pub fn loss_weight(sigma: f64, sigma_data: f64) -> f64 {
    (sigma * sigma + sigma_data * sigma_data) / (sigma * sigma_data).powi(2)
}

/// Frequencies of the noise embedding: geometric from 1 to 32, enough to
/// resolve c_noise = ln(σ)/4 over σ ∈ [0.002, 80] (c_noise ∈ [−1.6, 1.1]).
fn embedding_frequency(k: usize, half: usize) -> f64 {
    if half == 1 {
        1.0
    } else {
        32f64.powf(k as f64 / (half - 1) as f64)
    }
}

/// A batch of noise levels with everything the denoiser needs, computed on
/// the host once and shared by every denoiser evaluated at the same σ
/// (the target and the fake score in a generator step).
#[derive(Debug)]
pub struct NoiseLevels {
    pub sigma_data: f64,
    /// (B, 1) columns, reshaped to a batch's rank where they are used.
    sigma: Tensor,
    c_skip: Tensor,
    c_out: Tensor,
    c_in: Tensor,
    /// (B, emb_dim): sin and cos of c_noise at each frequency.
    emb: Tensor,
}

impl NoiseLevels {
    pub fn new(sigmas: Vec<f32>, sigma_data: f64, emb_dim: usize, device: &Device) -> Result<Self> {
        let b = sigmas.len();
        let half = emb_dim / 2;
        let (mut c_skip, mut c_out, mut c_in) = (vec![0f32; b], vec![0f32; b], vec![0f32; b]);
        let mut emb = vec![0f32; b * emb_dim];
        for (i, &s) in sigmas.iter().enumerate() {
            let p = Precond::new(s as f64, sigma_data);
            c_skip[i] = p.c_skip as f32;
            c_out[i] = p.c_out as f32;
            c_in[i] = p.c_in as f32;
            for k in 0..half {
                let angle = p.c_noise * embedding_frequency(k, half);
                emb[i * emb_dim + k] = angle.sin() as f32;
                emb[i * emb_dim + half + k] = angle.cos() as f32;
            }
        }
        let column = |v: Vec<f32>| Tensor::from_vec(v, (b, 1), device);
        Ok(Self {
            sigma: column(sigmas)?,
            c_skip: column(c_skip)?,
            c_out: column(c_out)?,
            c_in: column(c_in)?,
            emb: Tensor::from_vec(emb, (b, emb_dim), device)?,
            sigma_data,
        })
    }
}

impl NoiseLevels {
    /// σ per sample, shaped to scale a batch like `x`: (B, 1) for points,
    /// (B, 1, 1, 1) for images.
    pub fn sigma_for(&self, x: &Tensor) -> Result<Tensor> {
        per_sample(&self.sigma, x)
    }
}

/// A (B, 1) column reshaped to broadcast over the rest of `x`'s dimensions.
fn per_sample(column: &Tensor, x: &Tensor) -> Result<Tensor> {
    let mut shape = vec![1; x.rank()];
    shape[0] = column.dim(0)?;
    Ok(column.reshape(shape)?)
}

/// A score model in EDM form.
#[derive(Debug)]
pub struct Denoiser {
    pub net: ScoreNet,
    pub sigma_data: f64,
}

impl Denoiser {
    /// `D(x; σ)` for a batch of points (B, 2) or images (B, C, H, W).
    pub fn denoise(&self, x: &Tensor, levels: &NoiseLevels) -> Result<Tensor> {
        debug_assert_eq!(
            levels.sigma_data, self.sigma_data,
            "noise levels for another σ_data"
        );
        let c_in = per_sample(&levels.c_in, x)?;
        let f = self.net.forward(&x.broadcast_mul(&c_in)?, &levels.emb)?;
        let (c_skip, c_out) = (per_sample(&levels.c_skip, x)?, per_sample(&levels.c_out, x)?);
        Ok((x.broadcast_mul(&c_skip)? + f.broadcast_mul(&c_out)?)?)
    }

    /// The score `(D(x; σ) − x) / σ²`.
    pub fn score(&self, x: &Tensor, levels: &NoiseLevels) -> Result<Tensor> {
        let d = self.denoise(x, levels)?;
        Ok((d - x)?.broadcast_div(&levels.sigma_for(x)?.sqr()?)?)
    }

    /// Noise levels matching this denoiser's σ_data and embedding.
    pub fn levels(&self, sigmas: Vec<f32>, device: &Device) -> Result<NoiseLevels> {
        NoiseLevels::new(sigmas, self.sigma_data, self.net.emb_dim(), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preconditioning_matches_hand_computed_values() {
        // σ = 1, σ_d = 0.5: σ²+σ_d² = 1.25.
        let p = Precond::new(1.0, 0.5);
        assert!((p.c_skip - 0.25 / 1.25).abs() < 1e-12);
        assert!((p.c_out - 0.5 / 1.25f64.sqrt()).abs() < 1e-12);
        assert!((p.c_in - 1.0 / 1.25f64.sqrt()).abs() < 1e-12);
        assert_eq!(p.c_noise, 0.0);
        assert!((loss_weight(1.0, 0.5) - 1.25 / 0.25).abs() < 1e-12);
        // σ = 2, σ_d = 1: c_skip 0.2, c_out 2/√5, c_in 1/√5, c_noise ln2/4.
        let p = Precond::new(2.0, 1.0);
        assert!((p.c_skip - 0.2).abs() < 1e-12);
        assert!((p.c_out - 2.0 / 5f64.sqrt()).abs() < 1e-12);
        assert!((p.c_in - 1.0 / 5f64.sqrt()).abs() < 1e-12);
        assert!((p.c_noise - 2f64.ln() / 4.0).abs() < 1e-12);
        assert!((loss_weight(2.0, 1.0) - 5.0 / 4.0).abs() < 1e-12);
    }

    #[test]
    fn preconditioning_identities_hold_for_every_sigma() {
        for &sd in &[0.5, 1.77] {
            for &s in &[0.002, 0.1, 1.0, 10.0, 80.0] {
                let p = Precond::new(s, sd);
                // λ c_out² = 1: the loss weight undoes the output scaling.
                assert!((loss_weight(s, sd) * p.c_out * p.c_out - 1.0).abs() < 1e-9);
                // F's effective target (x_0 − c_skip x_σ) / c_out has unit
                // variance: (1 − c_skip)² σ_d² + c_skip² σ² = c_out².
                let lhs = (1.0 - p.c_skip).powi(2) * sd * sd + p.c_skip.powi(2) * s * s;
                assert!((lhs - p.c_out * p.c_out).abs() < 1e-9 * (1.0 + lhs));
                // c_in normalises the noisy input to unit variance.
                assert!((p.c_in * p.c_in * (s * s + sd * sd) - 1.0).abs() < 1e-12);
            }
        }
    }
}
