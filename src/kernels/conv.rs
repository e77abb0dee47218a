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
//! runs 3.6× faster than the other orientation at these sizes (measured).
//! Other devices keep candle's own convolution.

use super::gemm::{Matrix, matmul};
use super::host::{f32_values, host_values};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

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

    /// Values in one patch row, ordered (ky, kx, channel).
    fn patch_len(&self) -> usize {
        self.kernel * self.kernel * self.channels
    }

    /// Patch rows: one per (image, output pixel).
    fn patches(&self) -> usize {
        self.batch * self.out_plane()
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

    /// Calls `run(row, at, pixel)` for every run of C values the patches
    /// of one image hold: patch row `row`, from offset `at` in that row, is
    /// input pixel `pixel`. The one map the gather and the scatter walk.
    /// (Plain loops: an iterator chain here cost 7% of a step.)
    fn for_each_run(&self, mut run: impl FnMut(usize, usize, usize)) {
        let (k, ow) = (self.kernel, self.out_width());
        for oy in 0..self.out_height() {
            for ox in 0..ow {
                for ky in 0..k {
                    let Some(iy) = self.source(oy, ky, self.height) else {
                        continue;
                    };
                    for kx in 0..k {
                        let Some(ix) = self.source(ox, kx, self.width) else {
                            continue;
                        };
                        run(oy * ow + ox, (ky * k + kx) * self.channels, iy * self.width + ix);
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
        let rows = matmul(
            Matrix::rows(&im2col(x, &g), g.patches(), g.patch_len()),
            Matrix::rows(&kernel_matrix(weight, &g), g.patch_len(), g.out_channels),
        );
        Ok((CpuStorage::F32(rows_to_images(&rows, bias, &g)), g.output_shape()))
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
        let (x, weight) = (host_values(x)?, host_values(weight)?);
        let (grad_rows, grad_bias) = images_to_rows(&host_values(grad)?, &g);
        let grad_rows = Matrix::rows(&grad_rows, g.patches(), g.out_channels);
        let patches = im2col(&x, &g);
        let patches = Matrix::rows(&patches, g.patches(), g.patch_len());
        let kernel = kernel_matrix(&weight, &g);
        let kernel = Matrix::rows(&kernel, g.patch_len(), g.out_channels);
        let grad_kernel = matmul(patches.transposed(), grad_rows);
        let grad_patches = matmul(grad_rows, kernel.transposed());
        Ok((
            Some(Tensor::from_vec(
                col2im(&grad_patches, &g),
                g.input_shape(),
                device,
            )?),
            Some(Tensor::from_vec(
                weight_from_matrix(&grad_kernel, &g),
                g.weight_shape(),
                device,
            )?),
            Some(Tensor::from_vec(grad_bias, bias.shape(), device)?),
        ))
    }
}

/// (B, C, H, W) → (B·H'·W', k·k·C): row (b, y, x) holds the patch that
/// output pixel (y, x) of image b sees, zeros where it overhangs the edge.
fn im2col(x: &[f32], g: &Geometry) -> Vec<f32> {
    let (c, len, image_len) = (g.channels, g.patch_len(), g.channels * g.plane());
    let mut patches = vec![0f32; g.patches() * len];
    // One task per image, gathering from a channels-last copy of it so that
    // every run is C contiguous values.
    patches
        .par_chunks_mut(g.out_plane() * len)
        .zip(x.par_chunks(image_len))
        .for_each(|(out, image)| {
            let pixels = transpose(image, c, g.plane());
            g.for_each_run(|row, at, pixel| {
                out[row * len + at..][..c].copy_from_slice(&pixels[pixel * c..][..c]);
            });
        });
    patches
}

/// The adjoint of [`im2col`]: adds every patch entry back onto the input
/// position it came from.
fn col2im(patches: &[f32], g: &Geometry) -> Vec<f32> {
    let (c, len, image_len) = (g.channels, g.patch_len(), g.channels * g.plane());
    let mut x = vec![0f32; g.batch * image_len];
    // One task per image: no two tasks write the same value.
    x.par_chunks_mut(image_len)
        .zip(patches.par_chunks(g.out_plane() * len))
        .for_each(|(image, rows)| {
            let mut pixels = vec![0f32; image_len];
            g.for_each_run(|row, at, pixel| {
                let dst = &mut pixels[pixel * c..][..c];
                dst.iter_mut()
                    .zip(&rows[row * len + at..][..c])
                    .for_each(|(d, s)| *d += *s);
            });
            image.copy_from_slice(&transpose(&pixels, g.plane(), c));
        });
    x
}

/// A (rows, cols) row-major block, transposed.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    for (r, row) in values.chunks_exact(cols).enumerate() {
        for (col, v) in row.iter().enumerate() {
            out[col * rows + r] = *v;
        }
    }
    out
}

/// The weight (O, C, k, k) as the (k·k·C, O) matrix the patch rows meet.
fn kernel_matrix(weight: &[f32], g: &Geometry) -> Vec<f32> {
    let (o, c, kk) = (g.out_channels, g.channels, g.kernel * g.kernel);
    let mut m = vec![0f32; g.patch_len() * o];
    for (oc, filter) in weight.chunks_exact(c * kk).enumerate() {
        for (ic, taps) in filter.chunks_exact(kk).enumerate() {
            for (tap, v) in taps.iter().enumerate() {
                m[(tap * c + ic) * o + oc] = *v;
            }
        }
    }
    m
}

/// The inverse of [`kernel_matrix`]: (k·k·C, O) back to (O, C, k, k).
fn weight_from_matrix(m: &[f32], g: &Geometry) -> Vec<f32> {
    let (o, c, kk) = (g.out_channels, g.channels, g.kernel * g.kernel);
    let mut weight = vec![0f32; o * c * kk];
    for (row, values) in m.chunks_exact(o).enumerate() {
        let (tap, ic) = (row / c, row % c);
        for (oc, v) in values.iter().enumerate() {
            weight[(oc * c + ic) * kk + tap] = *v;
        }
    }
    weight
}

/// Product rows (B·H'·W', O) → images (B, O, H', W'), plus the bias.
fn rows_to_images(rows: &[f32], bias: &[f32], g: &Geometry) -> Vec<f32> {
    let (o, plane) = (g.out_channels, g.out_plane());
    let mut out = vec![0f32; g.batch * o * plane];
    out.par_chunks_mut(o * plane)
        .zip(rows.par_chunks(plane * o))
        .for_each(|(image, rows)| {
            image.copy_from_slice(&transpose(rows, plane, o));
            for (channel, b) in image.chunks_exact_mut(plane).zip(bias) {
                channel.iter_mut().for_each(|v| *v += b);
            }
        });
    out
}

/// The output gradient (B, O, H', W') as rows (B·H'·W', O), and its sum per
/// channel (the bias gradient).
fn images_to_rows(grad: &[f32], g: &Geometry) -> (Vec<f32>, Vec<f32>) {
    let (o, plane) = (g.out_channels, g.out_plane());
    let mut rows = vec![0f32; grad.len()];
    rows.par_chunks_mut(plane * o)
        .zip(grad.par_chunks(o * plane))
        .for_each(|(rows, image)| rows.copy_from_slice(&transpose(image, o, plane)));
    let mut bias = vec![0f32; o];
    for image in grad.chunks_exact(o * plane) {
        for (sum, channel) in bias.iter_mut().zip(image.chunks_exact(plane)) {
            *sum += channel.iter().sum::<f32>();
        }
    }
    (rows, bias)
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
mod tests {
    use super::super::checks::{assert_same_op, random};
    use super::*;

    /// Values and all three gradients against candle's own convolution, for
    /// the kernels, strides and paddings the U-Net uses and odd sizes.
    #[test]
    fn fused_convolution_equals_candles_in_values_and_gradients() {
        let cases = [
            // (batch, in, out, height, width, kernel, stride, padding)
            (3, 4, 5, 8, 8, 3, 1, 1),
            (2, 3, 6, 8, 8, 3, 2, 1),
            (2, 5, 4, 7, 5, 3, 2, 1),
            (4, 6, 3, 4, 4, 1, 1, 0),
            (1, 2, 3, 6, 9, 5, 1, 2),
            (2, 2, 2, 5, 5, 3, 1, 0),
        ];
        for (i, &(b, c, o, h, w, k, s, p)) in cases.iter().enumerate() {
            let x = random(&[b, c, h, w], 10 + i as u64, 0.0);
            let weight = random(&[o, c, k, k], 20 + i as u64, 0.0);
            let bias = random(&[1, o, 1, 1], 30 + i as u64, 0.0);
            let ours = conv2d(&x, &weight, &bias, s, p).unwrap();
            let theirs = x
                .conv2d(&weight, p, s, 1, 1)
                .unwrap()
                .broadcast_add(&bias)
                .unwrap();
            let inputs = [("input", &x), ("weight", &weight), ("bias", &bias)];
            assert_same_op(&ours, &theirs, inputs, 1e-5, &format!("case {i}"));
        }
    }

    /// col2im is the adjoint of im2col: <im2col(x), y> = <x, col2im(y)>.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        let g = Geometry {
            batch: 2,
            channels: 3,
            height: 6,
            width: 5,
            out_channels: 1,
            kernel: 3,
            stride: 2,
            padding: 1,
        };
        let x = random(&[2, 3, 6, 5], 1, 0.0)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let y = random(&[g.patches(), g.patch_len()], 2, 0.0)
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a * b) as f64).sum::<f64>();
        let lhs = dot(&im2col(&x, &g), &y);
        let rhs = dot(&x, &col2im(&y, &g));
        assert!((lhs - rhs).abs() < 1e-6 * lhs.abs().max(1.0), "{lhs} vs {rhs}");
    }

    #[test]
    fn the_kernel_matrix_round_trips() {
        let g = Geometry {
            batch: 1,
            channels: 3,
            height: 4,
            width: 4,
            out_channels: 5,
            kernel: 3,
            stride: 1,
            padding: 1,
        };
        let weight: Vec<f32> = (0..5 * 3 * 9).map(|i| i as f32).collect();
        let m = kernel_matrix(&weight, &g);
        // Row (tap (1, 2), channel 2), column 4: weight[4, 2, 1, 2].
        assert_eq!(
            m[((3 + 2) * 3 + 2) * 5 + 4],
            weight[((4 * 3 + 2) * 3 + 1) * 3 + 2]
        );
        assert_eq!(weight_from_matrix(&m, &g), weight);
    }

    #[test]
    fn mismatched_shapes_are_refused_with_the_sizes() {
        let x = random(&[1, 3, 8, 8], 1, 0.0);
        let weight = random(&[4, 2, 3, 3], 2, 0.0);
        let bias = random(&[4], 3, 0.0);
        let error = conv2d(&x, &weight, &bias, 1, 1).unwrap_err().to_string();
        assert!(
            error.contains("[1, 3, 8, 8]") && error.contains("[4, 2, 3, 3]"),
            "{error}"
        );
    }
}
