//! Group normalisation on the CPU as one op, forward and backward.
//!
//! Why by hand: candle-nn's `GroupNorm` is built from about ten tensor ops
//! (mean, subtract, square, mean, square root, divide, reshape, scale,
//! shift), each a pass over the activations with a fresh allocation, twice
//! as many in its backward, and the gradient of its per-channel scale is a
//! sum over the batch, which candle runs on its slow strided path. The U-Net
//! has two norms per residual block. Here the forward is two passes per
//! group (statistics, then normalise, scale and shift) and the backward
//! two (the sums below, then dx; the statistics are the forward's), with
//! the textbook gradient:
//!
//! ```text
//! x̂ = (x − μ) / s,  s = √(var + ε),  y = γ x̂ + β          (per group: μ, var)
//! dβ_c = Σ dy,  dγ_c = Σ dy · x̂                          (over batch and pixels)
//! dx = (γ dy − mean(γ dy) − x̂ · mean(γ dy · x̂)) / s      (means over the group)
//! ```
//!
//! Other devices keep candle-nn's `GroupNorm`.

use super::host::{f32_values, vectorised, with_values};
use super::sums::{pair_sums, sum_of};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

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

/// The op of one call: its forward keeps each (image, group) block's mean
/// and 1/s for its backward, which would otherwise read the activations
/// twice more to recompute them (candle calls `bwd` on the same op value
/// as `cpu_fwd`).
#[derive(Debug)]
struct CpuGroupNorm {
    groups: Groups,
    statistics: OnceLock<Vec<(f32, f32)>>,
}

/// Mean and 1/√(var + ε) of one block, in two passes: the variance about
/// the mean, not E[v²] − E[v]², which cancels for values far from zero.
/// (One pass about a shift was slower: measured 0.37 against 0.23 ms on
/// 8 × 128 × 32 × 32 values.)
#[inline(always)]
fn statistics(block: &[f32], eps: f64) -> (f32, f32) {
    let n = block.len() as f64;
    let mean = sum_of(block, |v| v) / n;
    let centre = mean as f32;
    let var = sum_of(block, |v| (v - centre) * (v - centre)) / n;
    (centre, (1.0 / (var + eps).sqrt()) as f32)
}

/// (Σ dy, Σ dy · (v − μ)) over one channel.
#[inline(always)]
fn gradient_sums(values: &[f32], dy: &[f32], mean: f32) -> (f64, f64) {
    pair_sums(values, dy, |v, d| (d, d * (v - mean)))
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
        let g = self.groups;
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
        // Written once, so not zero-filled first (a pass of its own).
        let mut out = Vec::with_capacity(values.len());
        let mut block_statistics = vec![(0f32, 0f32); g.batch * g.groups];
        out.spare_capacity_mut()[..values.len()]
            .par_chunks_mut(g.block())
            .zip(values.par_chunks(g.block()))
            .zip(block_statistics.par_iter_mut())
            .enumerate()
            .for_each(|(i, ((out, block), kept))| {
                let first = (i % g.groups) * cg;
                let channels = first..first + cg;
                *kept = vectorised(
                    #[inline(always)]
                    || normalise_block(out, block, &weight[channels.clone()], &bias[channels], g),
                );
            });
        // SAFETY: the blocks together wrote all `values.len()` values.
        unsafe { out.set_len(values.len()) };
        // Set once: candle runs each op value's forward once.
        let _ = self.statistics.set(block_statistics);
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
        let g = self.groups;
        let Some(statistics) = self.statistics.get().filter(|s| s.len() == g.batch * g.groups) else {
            bail!("group norm: backward before its forward")
        };
        // Borrowed, not copied: two copies of the activations took longer
        // than the backward itself at the CIFAR-10 U-Net's sizes.
        let (dx, d_weight, d_bias) = with_values(x, |values| {
            with_values(weight, |gamma| {
                with_values(grad, |dy| backward(values, gamma, dy, statistics, g))
            })
        })???;
        let device = x.device();
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), device)?),
            Some(Tensor::from_vec(d_weight, weight.shape(), device)?),
            Some(Tensor::from_vec(d_bias, bias.shape(), device)?),
        ))
    }
}

/// One (image, group) block normalised into `out`, each channel then
/// scaled by its `weight` and shifted by its `bias` (a multiply and an
/// add a value); returns the block's mean and 1/s for the backward.
#[inline(always)]
fn normalise_block(
    out: &mut [MaybeUninit<f32>],
    block: &[f32],
    weight: &[f32],
    bias: &[f32],
    g: Groups,
) -> (f32, f32) {
    let (mean, rstd) = statistics(block, g.eps);
    let channels = out.chunks_exact_mut(g.pixels).zip(block.chunks_exact(g.pixels));
    for ((out, channel), (&gamma, &beta)) in channels.zip(weight.iter().zip(bias)) {
        let (scale, shift) = (gamma * rstd, beta - gamma * rstd * mean);
        for (y, &v) in out.iter_mut().zip(channel) {
            y.write(v * scale + shift);
        }
    }
    (mean, rstd)
}

/// dx, dγ and dβ of the group norm (see the module's formulas).
fn backward(
    values: &[f32],
    gamma: &[f32],
    dy: &[f32],
    statistics: &[(f32, f32)],
    g: Groups,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let cg = g.channels_per_group();
    // Every block below writes its whole part of dx: the zips must not
    // stop short.
    assert_eq!(
        dy.len(),
        values.len(),
        "group norm: gradient and input sizes differ"
    );
    // Written once, so not zero-filled first.
    let mut dx = Vec::with_capacity(values.len());
    // Per (image, channel): Σ dy and Σ dy·x̂, summed over images below.
    let mut sums = vec![(0f32, 0f32); g.batch * g.channels];
    dx.spare_capacity_mut()[..values.len()]
        .par_chunks_mut(g.block())
        .zip(sums.par_chunks_mut(cg))
        .zip(values.par_chunks(g.block()).zip(dy.par_chunks(g.block())))
        .enumerate()
        .for_each(|(i, ((dx, sums), (block, dy)))| {
            let first = (i % g.groups) * cg;
            let gamma = &gamma[first..first + cg];
            vectorised(
                #[inline(always)]
                || backward_block(dx, sums, block, dy, gamma, statistics[i], g.pixels),
            );
        });
    // SAFETY: the blocks together wrote all `values.len()` values.
    unsafe { dx.set_len(values.len()) };
    let (mut d_bias, mut d_weight) = (vec![0f32; g.channels], vec![0f32; g.channels]);
    for image in sums.chunks_exact(g.channels) {
        for (c, &(sum_dy, sum_dy_xhat)) in image.iter().enumerate() {
            d_bias[c] += sum_dy;
            d_weight[c] += sum_dy_xhat;
        }
    }
    (dx, d_weight, d_bias)
}

/// One (image, group) block's dx, and its channels' (Σ dy, Σ dy·x̂) into
/// `sums`. dx = (γ dy − a − x̂ b) / s with a = mean(γ dy), b = mean(γ dy ·
/// x̂) is, per channel, dy · γ/s + (v − μ) · (−b/s²) − a/s. (Centred
/// before the product: v · (−b/s²) + μ b/s² would cancel for values far
/// from zero. Plain products and sums: `mul_add` is a library call where
/// the CPU lacks FMA, and Rust does not fuse them by itself.)
#[inline(always)]
fn backward_block(
    dx: &mut [MaybeUninit<f32>],
    sums: &mut [(f32, f32)],
    block: &[f32],
    dy: &[f32],
    gamma: &[f32],
    (mean, rstd): (f32, f32),
    pixels: usize,
) {
    let n = block.len() as f32;
    let (mut a, mut b) = (0f32, 0f32);
    let channels = block.chunks_exact(pixels).zip(dy.chunks_exact(pixels));
    for ((channel, dy), (sums, &gamma)) in channels.zip(sums.iter_mut().zip(gamma)) {
        let (sum_dy, sum_dy_centred) = gradient_sums(channel, dy, mean);
        *sums = (sum_dy as f32, (sum_dy_centred * rstd as f64) as f32);
        a += gamma * sums.0;
        b += gamma * sums.1;
    }
    let (a, b) = (a / n, b / n);
    let (of_centred, constant) = (-b * rstd * rstd, -a * rstd);
    let channels = dx.chunks_exact_mut(pixels).zip(block.chunks_exact(pixels));
    for ((dx, channel), (dy, &gamma)) in channels.zip(dy.chunks_exact(pixels).zip(gamma)) {
        let of_dy = gamma * rstd;
        for ((dx, &v), &d) in dx.iter_mut().zip(channel).zip(dy) {
            dx.write(d * of_dy + (v - mean) * of_centred + constant);
        }
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
    let op = CpuGroupNorm {
        groups: g,
        statistics: OnceLock::new(),
    };
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::super::checks::{assert_same_op, random};
    use super::*;
    use candle_core::{Module, Var};

    /// Values and the three gradients against candle-nn's GroupNorm, with
    /// an offset in the input (so the mean matters) and uneven scales.
    #[test]
    fn fused_group_norm_equals_candle_nns_in_values_and_gradients() {
        // The last case's groups and channels (760 and 380 values) span
        // several runs of the lane sums, with tails of neither 16 nor 256.
        let cases = [
            (3, 8, 4, 4, 4),
            (2, 6, 3, 5, 3),
            (4, 4, 2, 2, 1),
            (2, 8, 1, 1, 8),
            (2, 4, 20, 19, 2),
        ];
        for (i, &(b, c, h, w, groups)) in cases.iter().enumerate() {
            let seed = 10 * i as u64;
            let x = random(&[b, c, h, w], seed, 0.7);
            // The last case also away from zero and wide (mean ≈ 30, std
            // ≈ 5): with s ≈ 1 a wrong power of s in the backward, or a
            // wrong mean term, would not show.
            let x = if i == cases.len() - 1 {
                Var::from_tensor(&x.as_tensor().affine(5.0, 26.5).unwrap()).unwrap()
            } else {
                x
            };
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

    /// The lane-summed statistics against f64 ones, on values far from
    /// zero (where E[v²] − E[v]² in f32 would lose every digit), on a
    /// block whose first value is its outlier, and on one whose first run
    /// sits apart from the rest (a group whose first channel is offset).
    #[test]
    fn statistics_hold_far_from_zero() {
        let wave = |i: usize| ((i * 7919) % 1000) as f64 / 1000.0 - 0.5;
        let far: Vec<f32> = (0..1_000).map(|i| (1e4 + wave(i)) as f32).collect();
        let outlier_first: Vec<f32> = (0..777)
            .map(|i| if i == 0 { 50.0 } else { wave(i) as f32 })
            .collect();
        let first_run_apart: Vec<f32> = (0..4_096)
            .map(|i| (wave(i) + if i < 256 { 5.0 } else { 0.0 }) as f32)
            .collect();
        for block in [far, outlier_first, first_run_apart] {
            let n = block.len() as f64;
            let mean = block.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = block.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            let (m, rstd) = statistics(&block, 1e-6);
            assert!(
                (m as f64 - mean).abs() < 1e-6 * mean.abs().max(1.0),
                "mean {m} vs {mean}"
            );
            let want = 1.0 / (var + 1e-6).sqrt();
            assert!((rstd as f64 / want - 1.0).abs() < 1e-4, "1/s {rstd} vs {want}");
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
