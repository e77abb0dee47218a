//! 2-D convolution on the CPU as one fused op: patches, one matrix
//! product, bias, forward and backward.
//!
//! Why by hand: candle 0.11's CPU convolution is fine forward, but its
//! backward is not. The input gradient goes through `conv_transpose2d`,
//! a direct loop of short dot products, and the kernel gradient through a
//! convolution that treats the batch as channels; on a digits U-Net
//! teacher step those loops took most of the time. Building the
//! convolution from candle ops instead (im2col, matmul) was faster, but a
//! third of its backward went into candle's gradient store adding the
//! patch matrix's gradient onto zeros, allocating it twice more.
//!
//! So the whole convolution is one `CustomOp3(x, weight, bias)`:
//! - forward: gather one patch row per output pixel (k·k·C values, each
//!   run of C copied from a channels-last scratch copy of the image), one
//!   `gemm` product with the reordered kernel, then back to (B, O, H', W')
//!   with the bias added;
//! - backward: the kernel gradient `patchesᵀ · g` and the patch gradient
//!   `g · kernelᵀ` as two more products, the patch gradient scattered back
//!   onto the image (col2im, the adjoint of the gather), the bias gradient
//!   a sum. The patch matrix never enters candle's graph.
//!
//! The patch rows put the long dimension (B·H'·W') first, which `gemm`
//! runs 3.6× faster than the other orientation at these sizes (measured;
//! a version that laid the patches out as (k·k·C, B·H'·W') to skip the
//! transposes below ran the digits U-Net at 0.6× the speed: `gemm` then
//! repacked its operands, and the gather copied runs of 4–8 values).
//!
//! The batch is worked in chunks of a few images ([`CHUNK_ROWS`] patch
//! rows), one chunk a rayon task, each gathering, multiplying and writing
//! back its own images. Patches of the whole batch at once were 9× the
//! input, a fresh allocation per call: `perf` put a tenth of a digits
//! U-Net step into zeroing it (the allocator's memset and the kernel's
//! page clearing); a chunk's scratch is small, reused by the allocator,
//! and mostly stays in the cache. The kernel gradient is one partial
//! product per chunk, summed in chunk order: the chunks depend on the
//! geometry only, so the result does not depend on the threads.
//!
//! 3 × 3 stride-1 convolutions with 32 channels or more on both sides go
//! to `winograd.rs` instead, forward and input gradient (2.25× fewer
//! multiply-adds); their kernel gradient stays the patch product here.
//! Other devices keep candle's own convolution.

use super::gemm::{Matrix, matmul, matmul_on_this_thread};
use super::host::{f32_values, vectorised, with_values};
use super::sums::sum_of;
use super::transpose::{transpose_into, transposed};
use super::winograd::{self, Filters, Images};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Patch rows a chunk aims at: enough for `gemm` to run at speed, few
/// enough for a digits-sized chunk's scratch to stay in the L2 cache.
const CHUNK_ROWS: usize = 512;

/// A square convolution's sizes: input (B, C, H, W), output channels O,
/// kernel k×k.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    batch: usize,
    channels: usize,
    height: usize,
    width: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl Geometry {
    fn out_height(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn out_width(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel) / self.stride + 1
    }

    fn plane(&self) -> usize {
        self.height * self.width
    }

    fn out_plane(&self) -> usize {
        self.out_height() * self.out_width()
    }

    /// Values of one input image, and of one output image.
    fn image_len(&self) -> usize {
        self.channels * self.plane()
    }

    fn out_image_len(&self) -> usize {
        self.out_channels * self.out_plane()
    }

    /// Values in one patch row, ordered (ky, kx, channel).
    fn patch_len(&self) -> usize {
        self.kernel * self.kernel * self.channels
    }

    /// Images a chunk holds (the last chunk may hold fewer).
    fn images_per_chunk(&self) -> usize {
        (CHUNK_ROWS / self.out_plane()).clamp(1, self.batch.max(1))
    }

    fn input_shape(&self) -> Shape {
        Shape::from((self.batch, self.channels, self.height, self.width))
    }

    fn weight_shape(&self) -> Shape {
        Shape::from((self.out_channels, self.channels, self.kernel, self.kernel))
    }

    fn output_shape(&self) -> Shape {
        Shape::from((self.batch, self.out_channels, self.out_height(), self.out_width()))
    }

    /// The input index a kernel offset reads for output index `o` along a
    /// side of `size`, or `None` where it falls in the zero padding.
    fn source(&self, o: usize, offset: usize, size: usize) -> Option<usize> {
        (o * self.stride + offset)
            .checked_sub(self.padding)
            .filter(|&i| i < size)
    }

    /// The input's sizes for [`winograd::convolve`], where its F(2 × 2,
    /// 3 × 3) pays (a 3 × 3, stride-1 kernel between enough channels).
    fn winograd(&self) -> Option<Images> {
        winograd::pays(
            self.kernel,
            self.stride,
            self.padding,
            self.channels,
            self.out_channels,
        )
        .then_some(Images {
            channels: self.channels,
            height: self.height,
            width: self.width,
            padding: self.padding,
        })
    }

    /// The output gradient's sizes for the input gradient's convolution,
    /// where the forward's is a Winograd one: 3 × 3, stride 1, O channels
    /// in, padding 2 − p, which gives back H × W.
    fn winograd_adjoint(&self) -> Option<Images> {
        self.winograd().map(|_| Images {
            channels: self.out_channels,
            height: self.out_height(),
            width: self.out_width(),
            padding: 2 - self.padding,
        })
    }

    /// Calls `run(pixel, taps)` for each run of one image's patch rows,
    /// in their order (row by row, each row's taps (ky, kx) in turn): a
    /// run is `taps` consecutive taps of one kernel row, `taps` × C values,
    /// copied from the input pixels from `pixel` on (consecutive in a
    /// channels-last image), or `None` where they fall in the zero
    /// padding. The one map the gather and the scatter walk; a run of a
    /// whole kernel row is one copy, not k.
    fn for_each_run(&self, mut run: impl FnMut(Option<usize>, usize)) {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        for oy in 0..self.out_height() {
            for ox in 0..self.out_width() {
                // The taps kx whose column lies inside the image: ix =
                // ox·s + kx − p in 0 .. width.
                let first = p.saturating_sub(ox * s).min(k);
                let end = (self.width + p).saturating_sub(ox * s).clamp(first, k);
                for ky in 0..k {
                    match self.source(oy, ky, self.height) {
                        Some(iy) if end > first => {
                            if first > 0 {
                                run(None, first);
                            }
                            run(Some(iy * self.width + ox * s + first - p), end - first);
                            if end < k {
                                run(None, k - end);
                            }
                        }
                        _ => run(None, k),
                    }
                }
            }
        }
    }
}

/// The convolution `x * weight + bias` as a candle op (see the module).
#[derive(Debug, Clone, Copy)]
struct CpuConv2d(Geometry);

impl CustomOp3 for CpuConv2d {
    fn name(&self) -> &'static str {
        "cpu-conv2d"
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
        let x = f32_values(x, x_layout, g.input_shape().elem_count(), "conv2d", "input")?;
        let weight = f32_values(
            weight,
            weight_layout,
            g.weight_shape().elem_count(),
            "conv2d",
            "weight",
        )?;
        let bias = f32_values(bias, bias_layout, g.out_channels, "conv2d", "bias")?;
        Ok((CpuStorage::F32(forward(x, weight, bias, &g)), g.output_shape()))
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
        let device = x.device();
        // Data (no graph behind it) needs no gradient: no patch product
        // and no scatter for it.
        let needs_dx = x.track_op();
        let (dx, grad_kernel, grad_bias) = with_values(x, |x| {
            with_values(weight, |weight| {
                with_values(grad, |grad| backward(x, weight, grad, needs_dx, &g))
            })
        })???;
        Ok((
            dx.map(|dx| Tensor::from_vec(dx, g.input_shape(), device))
                .transpose()?,
            Some(Tensor::from_vec(
                weight_from_matrix(&grad_kernel, &g),
                g.weight_shape(),
                device,
            )?),
            Some(Tensor::from_vec(grad_bias, bias.shape(), device)?),
        ))
    }
}

/// `a · b`, on this thread where the chunks already keep every thread
/// busy, else split over the threads as [`matmul`] does (the same values
/// either way: the split cuts the output, not the sums).
fn chunk_product(a: Matrix<'_>, b: Matrix<'_>, g: &Geometry) -> Vec<f32> {
    if g.batch.div_ceil(g.images_per_chunk()) >= rayon::current_num_threads() {
        matmul_on_this_thread(a, b)
    } else {
        matmul(a, b)
    }
}

/// The convolution's output (B, O, H', W'), chunk by chunk.
fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: &Geometry) -> Vec<f32> {
    if let Some(images) = g.winograd() {
        let filters = Filters::forward(weight, g.out_channels, g.channels);
        return winograd::convolve(x, images, &filters, Some(bias));
    }
    let kernel = kernel_matrix(weight, g);
    let kernel = Matrix::rows(&kernel, g.patch_len(), g.out_channels);
    let per = g.images_per_chunk();
    let len = g.batch * g.out_image_len();
    // Written once, by the transposes, so not zero-filled first.
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(per * g.out_image_len())
        .zip(x.par_chunks(per * g.image_len()))
        .for_each(|(out, x)| {
            let patches = im2col(x, g);
            let rows = patches.len() / g.patch_len();
            let mut products = chunk_product(Matrix::rows(&patches, rows, g.patch_len()), kernel, g);
            // The bias along each product row, contiguous there.
            for row in products.chunks_exact_mut(g.out_channels) {
                row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
            }
            let row_block = g.out_plane() * g.out_channels;
            out.par_chunks_mut(g.out_image_len())
                .zip(products.par_chunks(row_block))
                .for_each(|(image, rows)| transpose_into(rows, g.out_plane(), g.out_channels, image));
        });
    // SAFETY: the transposes together wrote all `len` values.
    unsafe { out.set_len(len) };
    out
}

/// The input gradient (if `needs_dx`), the kernel gradient as a
/// (k·k·C, O) matrix, and the bias gradient.
fn backward(
    x: &[f32],
    weight: &[f32],
    grad: &[f32],
    needs_dx: bool,
    g: &Geometry,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    match g.winograd_adjoint() {
        Some(adjoint) if needs_dx => {
            // The input gradient is itself a 3 × 3 stride-1 convolution.
            let filters = Filters::adjoint(weight, g.out_channels, g.channels);
            let dx = winograd::convolve(grad, adjoint, &filters, None);
            let (_, grad_kernel, grad_bias) = patch_backward(x, None, grad, g);
            (Some(dx), grad_kernel, grad_bias)
        }
        _ => patch_backward(x, needs_dx.then_some(weight), grad, g),
    }
}

/// [`backward`] by patch products, chunk by chunk: the input gradient
/// where a `weight` is given.
fn patch_backward(
    x: &[f32],
    weight: Option<&[f32]>,
    grad: &[f32],
    g: &Geometry,
) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
    let needs_dx = weight.is_some();
    let kernel = weight.map(|weight| kernel_matrix(weight, g));
    let kernel = kernel
        .as_deref()
        .map(|kernel| Matrix::rows(kernel, g.patch_len(), g.out_channels));
    let per = g.images_per_chunk();
    // Written once, by the scatters' transposes, so not zero-filled first.
    let dx_len = if needs_dx { x.len() } else { 0 };
    let mut dx = Vec::with_capacity(dx_len);
    let chunk = |(x, grad): (&[f32], &[f32]), dx: Option<&mut [MaybeUninit<f32>]>| {
        let grad_rows = images_to_rows(grad, g);
        let rows = grad_rows.len() / g.out_channels;
        let grad_rows = Matrix::rows(&grad_rows, rows, g.out_channels);
        if let (Some(dx), Some(kernel)) = (dx, kernel) {
            let grad_patches = chunk_product(grad_rows, kernel.transposed(), g);
            col2im(&grad_patches, g, dx);
        }
        let patches = im2col(x, g);
        let patches = Matrix::rows(&patches, rows, g.patch_len());
        chunk_product(patches.transposed(), grad_rows, g)
    };
    let inputs = x
        .par_chunks(per * g.image_len())
        .zip(grad.par_chunks(per * g.out_image_len()));
    // One kernel-gradient partial per chunk, in chunk order.
    let partials: Vec<Vec<f32>> = if needs_dx {
        inputs
            .zip(dx.spare_capacity_mut()[..dx_len].par_chunks_mut(per * g.image_len()))
            .map(|(inputs, dx)| chunk(inputs, Some(dx)))
            .collect()
    } else {
        inputs.map(|inputs| chunk(inputs, None)).collect()
    };
    // SAFETY: the chunks together wrote all `dx_len` values.
    unsafe { dx.set_len(dx_len) };
    let mut grad_kernel = vec![0f32; g.patch_len() * g.out_channels];
    for partial in &partials {
        grad_kernel.iter_mut().zip(partial).for_each(|(sum, v)| *sum += v);
    }
    // In vector lanes: a plain `sum` is one chain of additions a value.
    let mut grad_bias = vec![0f64; g.out_channels];
    for image in grad.chunks_exact(g.out_image_len()) {
        for (sum, channel) in grad_bias.iter_mut().zip(image.chunks_exact(g.out_plane())) {
            *sum += vectorised(
                #[inline(always)]
                || sum_of(channel, |v| v),
            );
        }
    }
    let grad_bias = grad_bias.into_iter().map(|v| v as f32).collect();
    (needs_dx.then_some(dx), grad_kernel, grad_bias)
}

/// Images (n, C, H, W) → (n·H'·W', k·k·C): row (b, y, x) holds the patch
/// that output pixel (y, x) of image b sees, zeros where it overhangs the
/// edge. Image by image over the threads: where the whole batch is one
/// chunk (the small planes), a gather on one thread left the other cores
/// idle while it ran.
fn im2col(x: &[f32], g: &Geometry) -> Vec<f32> {
    let per_image = g.out_plane() * g.patch_len();
    let len = x.len() / g.image_len() * per_image;
    // Not zero-filled first: the gather writes the padding's zeros itself
    // (a memset of 9× the input for a 3 × 3 kernel was 5% of the small
    // planes' convolutions in `perf`).
    let mut patches = Vec::with_capacity(len);
    patches.spare_capacity_mut()[..len]
        .par_chunks_mut(per_image)
        .zip(x.par_chunks(g.image_len()))
        .for_each(|(rows, image)| gather(image, g, rows));
    // SAFETY: the gathers together wrote all `len` values.
    unsafe { patches.set_len(len) };
    patches
}

/// One image's patch rows, gathered from a channels-last copy of it, so
/// that every run is C contiguous values; every value of `rows` written,
/// zeros in the padding.
fn gather(image: &[f32], g: &Geometry, rows: &mut [MaybeUninit<f32>]) {
    let c = g.channels;
    let pixels = transposed(image, c, g.plane());
    let mut at = 0;
    g.for_each_run(|pixel, taps| {
        let run = &mut rows[at..][..taps * c];
        match pixel {
            Some(p) => {
                run.write_copy_of_slice(&pixels[p * c..][..taps * c]);
            }
            None => run.fill(MaybeUninit::new(0.0)),
        }
        at += taps * c;
    });
}

/// The adjoint of [`im2col`]: adds every patch entry back onto the input
/// position it came from, written into `x` (n images, (C, H, W) each;
/// every value written), image by image over the threads.
fn col2im(patches: &[f32], g: &Geometry, x: &mut [MaybeUninit<f32>]) {
    let len = g.out_plane() * g.patch_len();
    x.par_chunks_mut(g.image_len())
        .zip(patches.par_chunks(len))
        .for_each(|(image, rows)| scatter(rows, g, image));
}

/// One image's share of [`col2im`].
fn scatter(rows: &[f32], g: &Geometry, image: &mut [MaybeUninit<f32>]) {
    let c = g.channels;
    let mut pixels = vec![0f32; g.image_len()];
    let mut at = 0;
    g.for_each_run(|pixel, taps| {
        let run = &rows[at..][..taps * c];
        at += taps * c;
        if let Some(p) = pixel {
            let dst = &mut pixels[p * c..][..taps * c];
            dst.iter_mut().zip(run).for_each(|(d, s)| *d += *s);
        }
    });
    transpose_into(&pixels, g.plane(), c, image);
}

/// The weight (O, C, k, k) as the (k·k·C, O) matrix the patch rows meet.
fn kernel_matrix(weight: &[f32], g: &Geometry) -> Vec<f32> {
    let (o, c, kk) = (g.out_channels, g.channels, g.kernel * g.kernel);
    // Why in two moves: writing value by value, every value to another
    // row, missed the cache on each write; for a 512 → 256 filter bank at
    // 4×4 that took longer than the product it feeds. A tiled transpose
    // gives rows (channel, tap), whole rows then move to (tap, channel).
    let by_channel = transposed(weight, o, c * kk);
    if kk == 1 {
        return by_channel;
    }
    // Row (tap, channel) of the result is row (channel, tap) here.
    gather_rows(&by_channel, o, |row| (row % c) * kk + row / c)
}

/// A fresh vector whose row r (each `width` values) is row `source(r)` of
/// `rows`: every row written once, whatever `source` gives (an index out
/// of `rows` panics).
fn gather_rows(rows: &[f32], width: usize, source: impl Fn(usize) -> usize) -> Vec<f32> {
    assert!(
        width > 0 && rows.len().is_multiple_of(width),
        "whole rows of {width} values"
    );
    let mut gathered = Vec::with_capacity(rows.len());
    let spare = &mut gathered.spare_capacity_mut()[..rows.len()];
    for (row, out) in spare.chunks_exact_mut(width).enumerate() {
        out.write_copy_of_slice(&rows[source(row) * width..][..width]);
    }
    // SAFETY: whole rows (asserted above), each written by the loop.
    unsafe { gathered.set_len(rows.len()) };
    gathered
}

/// The inverse of [`kernel_matrix`]: (k·k·C, O) back to (O, C, k, k),
/// by the same two moves backwards.
fn weight_from_matrix(m: &[f32], g: &Geometry) -> Vec<f32> {
    let (o, c, kk) = (g.out_channels, g.channels, g.kernel * g.kernel);
    if kk == 1 {
        return transposed(m, c, o);
    }
    // Row (channel, tap) of `by_channel` is row (tap, channel) of `m`.
    let by_channel = gather_rows(m, o, |row| (row % kk) * c + row / kk);
    transposed(&by_channel, c * kk, o)
}

/// Output gradients (n, O, H', W') as rows (n·H'·W', O).
fn images_to_rows(grad: &[f32], g: &Geometry) -> Vec<f32> {
    let (o, plane) = (g.out_channels, g.out_plane());
    let mut rows = Vec::with_capacity(grad.len());
    rows.spare_capacity_mut()[..grad.len()]
        .par_chunks_mut(plane * o)
        .zip(grad.par_chunks(o * plane))
        .for_each(|(rows, image)| transpose_into(image, o, plane, rows));
    // SAFETY: the transposes together wrote all `grad.len()` values.
    unsafe { rows.set_len(grad.len()) };
    rows
}

/// `x` (B, C, H, W) convolved with `weight` (O, C, k, k), plus `bias` (any
/// shape holding O values), with `padding` zeros on every side: the
/// result is (B, O, H', W'), as candle's `conv2d` plus a broadcast bias.
pub fn conv2d(x: &Tensor, weight: &Tensor, bias: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    let (batch, channels, height, width) = x.dims4()?;
    let (out_channels, in_channels, kernel, kernel_w) = weight.dims4()?;
    if in_channels != channels
        || kernel != kernel_w
        || stride == 0
        || height + 2 * padding < kernel
        || width + 2 * padding < kernel
        || bias.elem_count() != out_channels
    {
        bail!(
            "conv2d: input {:?} does not fit kernel {:?} and bias {:?} (stride {stride}, padding {padding})",
            x.dims(),
            weight.dims(),
            bias.dims()
        )
    }
    let g = Geometry {
        batch,
        channels,
        height,
        width,
        out_channels,
        kernel,
        stride,
        padding,
    };
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &bias.contiguous()?, CpuConv2d(g))
}

#[cfg(test)]
#[path = "conv_tests.rs"]
mod tests;
