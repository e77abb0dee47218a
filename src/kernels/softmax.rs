//! `softmax(scale · x)` over the last dimension on the CPU as one op,
//! forward and backward: the attention weights of the project's own
//! U-Net (`model/unet.rs`); its rows, in place, serve the fused
//! attention (`attention.rs`).
//!
//! Why by hand: candle-nn's `softmax` is built from tensor ops (max,
//! subtract, exp, sum, divide, each a serial pass with a fresh allocation,
//! more in the backward), and the attention's scale by 1/√d is one more;
//! its `softmax_last_dim` is one pass but has no backward. At the CIFAR-10
//! U-Net's 16×16 attention (8 × 256 × 256 scores) those passes made its
//! backward 0.74× PyTorch's (`cargo bench --bench unet_ops -- cifar`).
//! Here the forward is one pass per row over the threads, and the backward
//! another, from the output alone:
//!
//! ```text
//! y = softmax(s · x),   dx = s · y ⊙ (dy − Σ dy ⊙ y)      (Σ over the row)
//! ```
//!
//! Other devices keep candle-nn's ops.

use super::host::{f32_values, vectorised, with_values};
use super::silu::exp;
use super::sums::{max_of, pair_sums, sum_of};
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Rows of `len` values, each scaled by `scale` and normalised.
#[derive(Debug, Clone, Copy)]
struct CpuScaledSoftmax {
    len: usize,
    scale: f32,
}

impl CustomOp1 for CpuScaledSoftmax {
    fn name(&self) -> &'static str {
        "cpu-scaled-softmax"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let shape = layout.shape().clone();
        let x = f32_values(x, layout, shape.elem_count(), "softmax", "input")?;
        // Written once, so not zero-filled first (a pass of its own).
        let mut y = Vec::with_capacity(x.len());
        y.spare_capacity_mut()[..x.len()]
            .par_chunks_mut(self.len)
            .zip(x.par_chunks(self.len))
            .for_each(|(y, x)| {
                vectorised(
                    #[inline(always)]
                    || softmax_row(y, x, self.scale),
                )
            });
        // SAFETY: the rows together wrote all `x.len()` values.
        unsafe { y.set_len(x.len()) };
        Ok((CpuStorage::F32(y), shape))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dx = with_values(y, |y| {
            with_values(dy, |dy| {
                // Every row below writes its whole part of dx.
                assert_eq!(dy.len(), y.len(), "softmax: gradient and output sizes differ");
                let mut dx = Vec::with_capacity(y.len());
                dx.spare_capacity_mut()[..y.len()]
                    .par_chunks_mut(self.len)
                    .zip(y.par_chunks(self.len).zip(dy.par_chunks(self.len)))
                    .for_each(|(dx, (y, dy))| {
                        vectorised(
                            #[inline(always)]
                            || softmax_row_backward(dx, y, dy, self.scale),
                        )
                    });
                // SAFETY: the rows together wrote all `y.len()` values.
                unsafe { dx.set_len(y.len()) };
                dx
            })
        })??;
        Ok(Some(Tensor::from_vec(dx, y.shape(), y.device())?))
    }
}

/// One row: y = softmax(scale · x).
#[inline(always)]
fn softmax_row(y: &mut [MaybeUninit<f32>], x: &[f32], scale: f32) {
    // exp(s·(x − max)) for s > 0; for s < 0 the largest of s·x comes from
    // the smallest x, so shift by the scaled maximum.
    let top = max_of(x, |v| v * scale);
    // The vectorised e^x of the SiLU, then the sum apart, so that the
    // exponentials run as vector instructions.
    for (y, &v) in y.iter_mut().zip(x) {
        y.write(exp(v * scale - top));
    }
    // SAFETY: every value of the row was written just above.
    normalise(unsafe { &mut *(y as *mut [MaybeUninit<f32>] as *mut [f32]) });
}

/// One row in place: row = softmax(scale · row) (the attention's scores,
/// where a second P × P buffer would be one more to allocate and fill).
#[inline(always)]
pub(super) fn softmax_row_in_place(row: &mut [f32], scale: f32) {
    let top = max_of(row, |v| v * scale);
    row.iter_mut().for_each(|v| *v = exp(*v * scale - top));
    normalise(row);
}

/// Divides a row of positive values by their sum.
#[inline(always)]
fn normalise(row: &mut [f32]) {
    let inverse = (1.0 / sum_of(row, |v| v)) as f32;
    row.iter_mut().for_each(|y| *y *= inverse);
}

/// One row of the backward: dx = s · y ⊙ (dy − Σ dy ⊙ y).
#[inline(always)]
fn softmax_row_backward(dx: &mut [MaybeUninit<f32>], y: &[f32], dy: &[f32], scale: f32) {
    let dot = pair_sums(y, dy, |y, d| (y * d, 0.0)).0 as f32;
    for ((dx, &y), &d) in dx.iter_mut().zip(y).zip(dy) {
        dx.write(scale * y * (d - dot));
    }
}

/// [`softmax_row_backward`] in the gradient's place: `dy` becomes dx.
#[inline(always)]
pub(super) fn softmax_row_backward_in_place(dy: &mut [f32], y: &[f32], scale: f32) {
    let dot = pair_sums(y, dy, |y, d| (y * d, 0.0)).0 as f32;
    dy.iter_mut()
        .zip(y)
        .for_each(|(d, &y)| *d = scale * y * (*d - dot));
}

/// `softmax(scale · x)` over the last dimension of `x`.
pub fn scaled_softmax(x: &Tensor, scale: f64) -> Result<Tensor> {
    if !x.device().is_cpu() {
        // Not `softmax_last_dim`: it has no backward, and the attention's
        // queries and keys would get no gradient.
        return candle_nn::ops::softmax(&(x * scale)?, candle_core::D::Minus1);
    }
    let len = x.dims().last().copied().unwrap_or(1).max(1);
    x.contiguous()?.apply_op1(CpuScaledSoftmax {
        len,
        scale: scale as f32,
    })
}

#[cfg(test)]
mod tests {
    use super::super::checks::{max_difference, random, value_and_gradient};
    use super::*;

    /// The in-place rows equal the out-of-place ones bit for bit, forward
    /// and backward, with a negative scale among the cases.
    #[test]
    fn rows_in_place_equal_the_rows_out_of_place() {
        for (len, scale) in [(7, 0.5f32), (33, -1.5), (1, 2.0)] {
            let x: Vec<f32> = (0..len).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.7).collect();
            let dy: Vec<f32> = (0..len).map(|i| ((i * 13 % 7) as f32 - 3.0) * 0.3).collect();
            let mut y = vec![MaybeUninit::new(f32::NAN); len];
            softmax_row(&mut y, &x, scale);
            // SAFETY: every value was set (NaN, then the row's).
            let y: Vec<f32> = y.iter().map(|v| unsafe { v.assume_init() }).collect();
            let mut in_place = x.clone();
            softmax_row_in_place(&mut in_place, scale);
            assert_eq!(in_place, y, "forward, {len} values, scale {scale}");
            let mut dx = vec![MaybeUninit::new(f32::NAN); len];
            softmax_row_backward(&mut dx, &y, &dy, scale);
            // SAFETY: as above.
            let dx: Vec<f32> = dx.iter().map(|v| unsafe { v.assume_init() }).collect();
            let mut dy_in_place = dy.clone();
            softmax_row_backward_in_place(&mut dy_in_place, &y, scale);
            assert_eq!(dy_in_place, dx, "backward, {len} values, scale {scale}");
        }
    }

    /// Values and gradient against candle-nn's softmax of the scaled
    /// input, with a negative scale and rows of one value among the cases.
    #[test]
    fn fused_softmax_equals_candle_nns_in_value_and_gradient() {
        for (shape, scale, seed) in [
            (vec![3, 7], 0.5, 1),
            (vec![2, 1, 33, 33], 1.0 / 33f64.sqrt(), 2),
            (vec![4, 1], 2.0, 3),
            (vec![5, 9], -1.5, 4),
        ] {
            let x = random(&shape, seed, 3.0);
            let probe = random(&shape, seed + 100, 0.0);
            let run = |f: &dyn Fn(&Tensor) -> Tensor| value_and_gradient(&x, x.as_tensor(), &probe, f);
            let (ours, ours_grad) = run(&|x| scaled_softmax(x, scale).unwrap());
            let (theirs, theirs_grad) =
                run(&|x| candle_nn::ops::softmax(&(x * scale).unwrap(), candle_core::D::Minus1).unwrap());
            assert!(max_difference(&ours, &theirs) < 1e-6, "{shape:?}: values differ");
            assert!(
                max_difference(&ours_grad, &theirs_grad) < 1e-5,
                "{shape:?}: gradients differ"
            );
            // Each row sums to one.
            let sums = ours.sum(candle_core::D::Minus1).unwrap().flatten_all().unwrap();
            assert!(
                sums.to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .all(|s| (s - 1.0).abs() < 1e-5)
            );
        }
    }
}
