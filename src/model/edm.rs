//! EDM preconditioning (Karras et al. 2022): the denoiser
//! `D(x; σ) = c_skip x + c_out F(c_in x, c_noise)` around a [`ScoreNet`],
//! kept apart from the network and from the loss as in EDM's own code.

use super::nets::ScoreNet;
use crate::config::{Prediction, VpSchedule};
use crate::transfer::upload;
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

/// One σ per sample: drawn on the host (the CPU path, and fixed grids), or
/// already on the device as a (B, 1) column (the GPU path's draws).
#[derive(Debug, Clone)]
pub enum Sigmas {
    Host(Vec<f32>),
    Device(Tensor),
}

impl From<Vec<f32>> for Sigmas {
    fn from(values: Vec<f32>) -> Self {
        Sigmas::Host(values)
    }
}

/// A batch of noise levels with everything the denoiser needs, computed
/// once and shared by every denoiser evaluated at the same σ (the target
/// and the fake score in a generator step): in f64 on the host for host
/// σ, by tensor operations on the device for device σ.
#[derive(Debug)]
pub struct NoiseLevels {
    pub sigma_data: f64,
    /// (B, 1) columns, reshaped to a batch's rank where they are used.
    sigma: Tensor,
    c_skip: Tensor,
    c_out: Tensor,
    c_in: Tensor,
    /// The EDM loss weight λ(σ).
    weight: Tensor,
    /// (B, emb_dim): sin and cos of c_noise at each frequency.
    emb: Tensor,
}

impl NoiseLevels {
    /// `frequencies`: the embedding's row for device σ (see
    /// [`frequency_row`]), made once by the caller.
    pub fn new(
        sigmas: impl Into<Sigmas>,
        sigma_data: f64,
        emb_dim: usize,
        device: &Device,
        frequencies: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Self> {
        match sigmas.into() {
            Sigmas::Host(values) => Self::on_host(values, sigma_data, emb_dim, device),
            Sigmas::Device(column) => Self::on_device(column, sigma_data, &frequencies()?),
        }
    }

    fn on_host(sigmas: Vec<f32>, sigma_data: f64, emb_dim: usize, device: &Device) -> Result<Self> {
        let b = sigmas.len();
        let half = emb_dim / 2;
        let (mut c_skip, mut c_out, mut c_in) = (vec![0f32; b], vec![0f32; b], vec![0f32; b]);
        let mut emb = vec![0f32; b * emb_dim];
        let weight: Vec<f32> = sigmas
            .iter()
            .map(|&s| loss_weight(s as f64, sigma_data) as f32)
            .collect();
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
        let emb = upload(emb, (b, emb_dim), device)?;
        Self::from_host_columns(sigmas, [c_skip, c_out, c_in, weight], emb, sigma_data, device)
    }

    /// Levels from host columns of B values each (σ, then c_skip, c_out,
    /// c_in and the loss weight), uploaded as (B, 1) tensors.
    fn from_host_columns(
        sigma: Vec<f32>,
        [c_skip, c_out, c_in, weight]: [Vec<f32>; 4],
        emb: Tensor,
        sigma_data: f64,
        device: &Device,
    ) -> Result<Self> {
        let b = sigma.len();
        let column = |v: Vec<f32>| upload(v, (b, 1), device);
        Ok(Self {
            sigma: column(sigma)?,
            c_skip: column(c_skip)?,
            c_out: column(c_out)?,
            c_in: column(c_in)?,
            weight: column(weight)?,
            emb,
            sigma_data,
        })
    }

    /// The same quantities from a (B, 1) column of σ on its device, with
    /// nothing copied to or from the host.
    fn on_device(sigma: Tensor, sigma_data: f64, frequencies: &Tensor) -> Result<Self> {
        let d2 = sigma_data * sigma_data;
        let s2 = sigma.sqr()?;
        let total = (&s2 + d2)?;
        let root = total.sqrt()?;
        let c_skip = total.recip()?.affine(d2, 0.0)?;
        let c_out = sigma.broadcast_div(&root)?.affine(sigma_data, 0.0)?;
        let c_in = root.recip()?;
        let weight = total.broadcast_div(&s2)?.affine(1.0 / d2, 0.0)?;
        let c_noise = sigma.log()?.affine(0.25, 0.0)?;
        let angle = c_noise.broadcast_mul(frequencies)?;
        let emb = Tensor::cat(&[angle.sin()?, angle.cos()?], 1)?;
        Ok(Self {
            sigma,
            c_skip,
            c_out,
            c_in,
            weight,
            emb,
            sigma_data,
        })
    }

    /// The levels of a VP model (see [`VpTable`]): its preconditioning,
    /// and its timesteps as the network's noise input.
    fn vp(sigmas: Sigmas, table: &VpTable, sigma_data: f64, device: &Device) -> Result<Self> {
        let values: Vec<f32> = match sigmas {
            Sigmas::Host(values) => values,
            Sigmas::Device(column) => return Self::vp_on_device(column, table, sigma_data),
        };
        let b = values.len();
        let mut columns = [
            vec![0f32; b],
            vec![0f32; b],
            vec![0f32; b],
            vec![0f32; b],
            vec![0f32; b],
        ];
        for (i, &s) in values.iter().enumerate() {
            let (c_skip, c_out, c_in) = table.precond(s as f64);
            let row = [
                c_skip,
                c_out,
                c_in,
                1.0 / (c_out * c_out),
                table.timestep(s as f64) as f64,
            ];
            for (column, v) in columns.iter_mut().zip(row) {
                column[i] = v as f32;
            }
        }
        let [c_skip, c_out, c_in, weight, timesteps] = columns;
        let emb = upload(timesteps, (b, 1), device)?;
        Self::from_host_columns(values, [c_skip, c_out, c_in, weight], emb, sigma_data, device)
    }

    /// The same from a (B, 1) column of σ on its device: the nearest
    /// timestep by an arg-min against the table, nothing read back.
    fn vp_on_device(sigma: Tensor, table: &VpTable, sigma_data: f64) -> Result<Self> {
        let device = sigma.device();
        let row = match table.row.get() {
            Some(row) => row.clone(),
            None => {
                let values: Vec<f32> = table.sigmas.iter().map(|&s| s as f32).collect();
                let row = upload(values, (1, table.sigmas.len()), device)?;
                table.row.get_or_init(|| row).clone()
            }
        };
        let timesteps = sigma
            .broadcast_sub(&row)?
            .abs()?
            .argmin_keepdim(1)?
            .to_dtype(candle_core::DType::F32)?;
        let c_in = (sigma.sqr()? + 1.0)?.sqrt()?.recip()?;
        let (c_skip, c_out) = match table.prediction {
            Prediction::Epsilon => (sigma.ones_like()?, sigma.neg()?),
            Prediction::V => (c_in.sqr()?, (&sigma * &c_in)?.neg()?),
            Prediction::Sample => (sigma.zeros_like()?, sigma.ones_like()?),
        };
        let weight = c_out.sqr()?.recip()?;
        Ok(Self {
            sigma,
            c_skip,
            c_out,
            c_in,
            weight,
            emb: timesteps,
            sigma_data,
        })
    }

    /// The loss weight λ(σ) per sample, shaped like [`Self::sigma_for`].
    pub fn weight_for(&self, x: &Tensor) -> Result<Tensor> {
        per_sample(&self.weight, x)
    }
}

impl NoiseLevels {
    /// σ per sample, shaped to scale a batch like `x`: (B, 1) for points,
    /// (B, 1, 1, 1) for images.
    pub fn sigma_for(&self, x: &Tensor) -> Result<Tensor> {
        per_sample(&self.sigma, x)
    }
}

/// The embedding's frequencies as a (1, emb_dim / 2) row on `device`.
pub fn frequency_row(emb_dim: usize, device: &Device) -> Result<Tensor> {
    let half = emb_dim / 2;
    let row = (0..half).map(|k| embedding_frequency(k, half) as f32).collect();
    upload(row, (1, half), device)
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
    /// The embedding's frequency row on the device, made on first use by
    /// device σ and kept (so no training step uploads it).
    pub(super) frequencies: std::sync::OnceLock<Tensor>,
    /// A pretrained VP model's noise table: its preconditioning is the VP
    /// one (EDM's treatment of DDPM models), not EDM's own.
    pub(super) vp: Option<std::sync::Arc<VpTable>>,
}

/// A VP model's discrete noise levels and what it predicts: how it becomes
/// an EDM denoiser (Karras et al. 2022, appendix C.3):
/// `D(x; σ) = c_skip x + c_out F(x / √(1 + σ²), t(σ))`, with t(σ) the
/// training timestep of the nearest σ_t = √((1 − ᾱ_t) / ᾱ_t), and per
/// prediction type
/// - ε: c_skip = 1, c_out = −σ;
/// - v: c_skip = 1 / (1 + σ²), c_out = −σ / √(1 + σ²);
/// - x₀: c_skip = 0, c_out = 1;
///
/// and the loss weight 1 / c_out² (the model's own training loss).
#[derive(Debug)]
pub struct VpTable {
    sigmas: Vec<f64>,
    prediction: Prediction,
    /// The table as a (1, T) row on the device, for device σ.
    row: std::sync::OnceLock<Tensor>,
}

impl VpTable {
    pub fn new(schedule: &VpSchedule) -> Self {
        Self {
            sigmas: schedule.sigmas(),
            prediction: schedule.prediction,
            row: Default::default(),
        }
    }

    /// The σ range the model was trained on.
    pub fn range(&self) -> (f64, f64) {
        (self.sigmas[0], self.sigmas[self.sigmas.len() - 1])
    }

    /// The timestep of the table's σ nearest `sigma`.
    pub fn timestep(&self, sigma: f64) -> usize {
        let i = self.sigmas.partition_point(|&s| s < sigma);
        match i {
            0 => 0,
            i if i == self.sigmas.len() => i - 1,
            i if sigma - self.sigmas[i - 1] <= self.sigmas[i] - sigma => i - 1,
            i => i,
        }
    }

    /// (c_skip, c_out, c_in) at σ.
    pub fn precond(&self, sigma: f64) -> (f64, f64, f64) {
        let c_in = 1.0 / (1.0 + sigma * sigma).sqrt();
        match self.prediction {
            Prediction::Epsilon => (1.0, -sigma, c_in),
            Prediction::V => (c_in * c_in, -sigma * c_in, c_in),
            Prediction::Sample => (0.0, 1.0, c_in),
        }
    }
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
    pub fn levels(&self, sigmas: impl Into<Sigmas>, device: &Device) -> Result<NoiseLevels> {
        if let Some(table) = &self.vp {
            return NoiseLevels::vp(sigmas.into(), table, self.sigma_data, device);
        }
        let emb_dim = self.net.emb_dim();
        NoiseLevels::new(sigmas, self.sigma_data, emb_dim, device, || {
            if let Some(row) = self.frequencies.get() {
                return Ok(row.clone());
            }
            let row = frequency_row(emb_dim, device)?;
            Ok(self.frequencies.get_or_init(|| row).clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The device path's tensor arithmetic gives the host path's f64
    /// values (to f32 rounding), over the whole σ range.
    #[test]
    fn levels_computed_on_the_device_equal_the_hosts() {
        let sigmas = vec![0.002f32, 0.05, 0.5, 1.0, 3.7, 80.0];
        let device = Device::Cpu;
        let row = || frequency_row(16, &device);
        let host = NoiseLevels::new(sigmas.clone(), 0.5, 16, &device, row).unwrap();
        let column = Tensor::from_vec(sigmas, (6, 1), &device).unwrap();
        let on_device = NoiseLevels::new(Sigmas::Device(column), 0.5, 16, &device, row).unwrap();
        let pairs = [
            (&host.c_skip, &on_device.c_skip),
            (&host.c_out, &on_device.c_out),
            (&host.c_in, &on_device.c_in),
            (&host.weight, &on_device.weight),
            (&host.emb, &on_device.emb),
        ];
        for (name, (a, b)) in ["c_skip", "c_out", "c_in", "weight", "emb"].iter().zip(pairs) {
            let (a, b): (Vec<f32>, Vec<f32>) = (
                a.flatten_all().unwrap().to_vec1().unwrap(),
                b.flatten_all().unwrap().to_vec1().unwrap(),
            );
            for (x, y) in a.iter().zip(&b) {
                assert!(
                    (x - y).abs() <= 2e-5 * x.abs().max(1.0),
                    "{name}: {x} against {y}"
                );
            }
        }
    }

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
