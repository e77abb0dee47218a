//! Group normalisation on the CPU as one op, forward and backward.
//!
//! Why by hand: candle-nn's `GroupNorm` is built from about ten tensor ops
//! (mean, subtract, square, mean, square root, divide, reshape, scale,
//! shift), each a pass over the activations with a fresh allocation, twice
//! as many in its backward, and the gradient of its per-channel scale is a
//! sum over the batch, which candle runs on its slow strided path. The U-Net
//! has two norms per residual block. Here the forward is two passes per
//! group (statistics, then normalise, scale and shift) and the backward
//! three, with the textbook gradient:
//!
//! ```text
//! x̂ = (x − μ) / s,  s = √(var + ε),  y = γ x̂ + β          (per group: μ, var)
//! dβ_c = Σ dy,  dγ_c = Σ dy · x̂                          (over batch and pixels)
//! dx = (γ dy − mean(γ dy) − x̂ · mean(γ dy · x̂)) / s      (means over the group)
//! ```
//!
//! Other devices keep candle-nn's `GroupNorm`.

use super::host::{f32_values, host_values};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// (B, C, …) with C split into `groups` groups of adjacent channels.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Groups {
    batch: usize,
    channels: usize,
    /// Values per channel (the product of the trailing dimensions).
    pixels: usize,
    groups: usize,
    eps: f64,
}

impl Groups {
    fn channels_per_group(&self) -> usize {
        self.channels / self.groups
    }

    /// Values in one (image, group) block, which is contiguous.
    fn block(&self) -> usize {
        self.channels_per_group() * self.pixels
    }
}

#[derive(Debug, Clone, Copy)]
struct CpuGroupNorm(Groups);

/// Mean and 1/√(var + ε) of one block, in f64 for the sums.
fn statistics(block: &[f32], eps: f64) -> (f32, f32) {
    let n = block.len() as f64;
    let mean = block.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = block.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
}

impl CustomOp3 for CpuGroupNorm {
    fn name(&self) -> &'static str {
        "cpu-group-norm"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        bias: &CpuStorage,
        bias_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let values = f32_values(
            x,
            x_layout,
            g.batch * g.channels * g.pixels,
            "group norm",
            "input",
        )?;
        let weight = f32_values(weight, weight_layout, g.channels, "group norm", "weight")?;
        let bias = f32_values(bias, bias_layout, g.channels, "group norm", "bias")?;
        let cg = g.channels_per_group();
        let mut out = vec![0f32; values.len()];
        out.par_chunks_mut(g.block())
            .zip(values.par_chunks(g.block()))
            .enumerate()
            .for_each(|(i, (out, block))| {
                let (mean, rstd) = statistics(block, g.eps);
                let first = (i % g.groups) * cg;
                for (c, (out, channel)) in out
                    .chunks_exact_mut(g.pixels)
                    .zip(block.chunks_exact(g.pixels))
                    .enumerate()
                {
                    let (scale, shift) = (
                        weight[first + c] * rstd,
                        bias[first + c] - weight[first + c] * rstd * mean,
                    );
                    out.iter_mut()
                        .zip(channel)
                        .for_each(|(y, &v)| *y = v * scale + shift);
                }
            });
        Ok((CpuStorage::F32(out), x_layout.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        _output: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let g = self.0;
        let (values, gamma, dy) = (host_values(x)?, host_values(weight)?, host_values(grad)?);
        let cg = g.channels_per_group();
        let mut dx = vec![0f32; values.len()];
        // Per (image, channel): Σ dy and Σ dy·x̂, summed over images below.
        let mut sums = vec![(0f32, 0f32); g.batch * g.channels];
        dx.par_chunks_mut(g.block())
            .zip(sums.par_chunks_mut(cg))
            .zip(values.par_chunks(g.block()).zip(dy.par_chunks(g.block())))
            .enumerate()
            .for_each(|(i, ((dx, sums), (block, dy)))| {
                let (mean, rstd) = statistics(block, g.eps);
                let first = (i % g.groups) * cg;
                let n = block.len() as f32;
                // mean(γ dy) and mean(γ dy · x̂) over the group.
                let (mut a, mut b) = (0f32, 0f32);
                for (c, (channel, dy)) in block
                    .chunks_exact(g.pixels)
                    .zip(dy.chunks_exact(g.pixels))
                    .enumerate()
                {
                    let (mut sum_dy, mut sum_dy_xhat) = (0f32, 0f32);
                    for (&v, &d) in channel.iter().zip(dy) {
                        let xhat = (v - mean) * rstd;
                        sum_dy += d;
                        sum_dy_xhat += d * xhat;
                    }
                    sums[c] = (sum_dy, sum_dy_xhat);
                    a += gamma[first + c] * sum_dy;
                    b += gamma[first + c] * sum_dy_xhat;
                }
                let (a, b) = (a / n, b / n);
                for (c, ((dx, channel), dy)) in dx
                    .chunks_exact_mut(g.pixels)
                    .zip(block.chunks_exact(g.pixels))
                    .zip(dy.chunks_exact(g.pixels))
                    .enumerate()
                {
                    let gamma = gamma[first + c];
                    for ((dx, &v), &d) in dx.iter_mut().zip(channel).zip(dy) {
                        let xhat = (v - mean) * rstd;
                        *dx = (gamma * d - a - xhat * b) * rstd;
                    }
                }
            });
        let (mut d_bias, mut d_weight) = (vec![0f32; g.channels], vec![0f32; g.channels]);
        for image in sums.chunks_exact(g.channels) {
            for (c, &(sum_dy, sum_dy_xhat)) in image.iter().enumerate() {
                d_bias[c] += sum_dy;
                d_weight[c] += sum_dy_xhat;
            }
        }
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(d_weight, weight.shape(), device)?),
            Some(Tensor::from_vec(d_bias, bias.shape(), device)?),
        ))
    }
}

/// `x` (B, C, …) normalised over each of `groups` groups of channels, then
/// scaled by `weight` (C) and shifted by `bias` (C): candle-nn's
/// `GroupNorm` in one op.
pub fn group_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, groups: usize, eps: f64) -> Result<Tensor> {
    let dims = x.dims();
    if dims.len() < 2 {
        bail!("group norm: expected (B, C, …), got {dims:?}")
    }
    let (batch, channels) = (dims[0], dims[1]);
    if groups == 0
        || !channels.is_multiple_of(groups)
        || weight.elem_count() != channels
        || bias.elem_count() != channels
    {
        bail!(
            "group norm: {channels} channels in {groups} groups with weight {:?} and bias {:?}",
            weight.dims(),
            bias.dims()
        )
    }
    let g = Groups {
        batch,
        channels,
        pixels: dims[2..].iter().product(),
        groups,
        eps,
    };
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, CpuGroupNorm(g))
}

#[cfg(test)]
mod tests {
    use super::super::checks::{assert_same_op, random};
    use super::*;
    use candle_core::Module;

    /// Values and the three gradients against candle-nn's GroupNorm, with
    /// an offset in the input (so the mean matters) and uneven scales.
    #[test]
    fn fused_group_norm_equals_candle_nns_in_values_and_gradients() {
        for (i, &(b, c, h, w, groups)) in [(3, 8, 4, 4, 4), (2, 6, 3, 5, 3), (4, 4, 2, 2, 1), (2, 8, 1, 1, 8)]
            .iter()
            .enumerate()
        {
            let seed = 10 * i as u64;
            let x = random(&[b, c, h, w], seed, 0.7);
            let weight = random(&[c], seed + 1, 1.0);
            let bias = random(&[c], seed + 2, 0.0);
            let ours = group_norm(&x, &weight, &bias, groups, 1e-5).unwrap();
            let reference = candle_nn::GroupNorm::new(
                weight.as_tensor().clone(),
                bias.as_tensor().clone(),
                c,
                groups,
                1e-5,
            )
            .unwrap();
            let theirs = reference.forward(&x).unwrap();
            let inputs = [("input", &x), ("weight", &weight), ("bias", &bias)];
            assert_same_op(&ours, &theirs, inputs, 1e-4, &format!("case {i}"));
        }
    }

    #[test]
    fn channels_that_do_not_split_into_the_groups_are_refused() {
        let x = random(&[1, 6, 2, 2], 1, 0.0);
        let (weight, bias) = (random(&[6], 2, 0.0), random(&[6], 3, 0.0));
        let error = group_norm(&x, &weight, &bias, 4, 1e-5).unwrap_err().to_string();
        assert!(error.contains("6 channels in 4 groups"), "{error}");
    }
}
