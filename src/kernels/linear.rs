//! The affine layer `y = x W + b` on the CPU as one op, forward and
//! backward.
//!
//! Why by hand: built from candle ops, the layer is a product, the bias
//! (as `ones · b`, a second product, or a broadcast whose gradient is
//! candle's slow batch sum) and an addition, and in the backward candle's
//! gradient store adds every one of those nodes' gradients onto zeros.
//! At batch 4,096 and width 128 such passes took more time than the
//! products (measured with `perf`). Here:
//! - forward: the bias rows are written into the output and one `gemm`
//!   accumulates `x W` onto them;
//! - backward: `dx = dy Wᵀ` (only when `x` needs a gradient: not for data
//!   or noise fed to the first layer), `dW = xᵀ dy`, `db` the column sums
//!   of `dy`.
//!
//! The layer can also take `silu(x)` as its input (`Input::Silu`),
//! computing the SiLU inside the op and again in the backward instead of
//! keeping it: candle keeps every op's inputs alive until the backward
//! pass, so a separate SiLU holds a whole activation per layer (at batch
//! 4,096 and width 512, 8 MB each, a third of a ResNet-MLP's graph).
//!
//! And it can add its result onto a base of the output's size
//! (`linear_onto`, for the ResNet-MLP's block: the noise projection under
//! the first layer, the residual stream under the second). candle's
//! addition would keep both of its operands alive for the backward, one
//! more activation per addition (8 MB each at batch 4,096, width 512),
//! and make a serial pass of its own forward and two back. The op has
//! only three operands, so there the bias rides as the weight's last row.
//!
//! Other devices keep candle's product and broadcast addition.

use super::gemm::{Matrix, Start, matmul, matmul_onto};
use super::host::{f32_values, with_values};
use super::silu::{multiply_in_place, silu_and_slope_values, silu_values};
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor, bail};

/// (B, in) · (in, out) + (1, out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sizes {
    batch: usize,
    input: usize,
    output: usize,
}

/// What the product multiplies: the input as given, or its SiLU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Plain,
    Silu,
}

/// What the product is added to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Onto {
    /// The bias, the third operand: a row of `out` values.
    Bias,
    /// The third operand, (B, out), plus the bias, which is then the last
    /// row of the weight operand, (in + 1, out).
    BaseAndBias,
}

struct CpuLinear {
    sizes: Sizes,
    input: Input,
    onto: Onto,
}

impl Input {
    /// Runs `f` on the values the product multiplies.
    fn with<R>(self, x: &[f32], f: impl FnOnce(&[f32]) -> R) -> R {
        match self {
            Input::Plain => f(x),
            Input::Silu => f(&silu_values(x)),
        }
    }
}

impl CustomOp3 for CpuLinear {
    fn name(&self) -> &'static str {
        "cpu-linear"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        x_layout: &Layout,
        weight: &CpuStorage,
        weight_layout: &Layout,
        third: &CpuStorage,
        third_layout: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let Sizes { batch, input, output } = self.sizes;
        let x = f32_values(x, x_layout, batch * input, "linear", "input")?;
        let (weight_rows, third_len, third_name) = match self.onto {
            Onto::Bias => (input, output, "bias"),
            Onto::BaseAndBias => (input + 1, batch * output, "base"),
        };
        let weight = f32_values(weight, weight_layout, weight_rows * output, "linear", "weight")?;
        let third = f32_values(third, third_layout, third_len, "linear", third_name)?;
        let (weight, start) = match self.onto {
            Onto::Bias => (weight, Start::Bias(third)),
            Onto::BaseAndBias => {
                let (weight, bias) = weight.split_at(input * output);
                (weight, Start::BaseAndBias { base: third, bias })
            }
        };
        let y = self.input.with(x, |x| {
            matmul_onto(
                Matrix::rows(x, batch, input),
                Matrix::rows(weight, input, output),
                start,
            )
        });
        Ok((CpuStorage::F32(y), Shape::from((batch, output))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        third: &Tensor,
        _output: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Sizes { batch, input, output } = self.sizes;
        let device = x.device();
        let needs_dx = x.track_op();
        // Each `with_values` borrows a tensor's values (no copy); their
        // nested results flatten into one.
        let (dx, mut dw, db) = with_values(grad, |dy| {
            with_values(x, |x| {
                with_values(weight, |w| self.gradients(dy, x, &w[..input * output], needs_dx))
            })
            .flatten()
        })
        .flatten()?;
        let dx = dx
            .map(|dx| Tensor::from_vec(dx, (batch, input), device))
            .transpose()?;
        let (dw, d_third) = match self.onto {
            Onto::Bias => (dw, Some(Tensor::from_vec(db, third.shape(), device)?)),
            // The base's gradient is the output's; the bias's is the
            // weight operand's last row.
            Onto::BaseAndBias => {
                dw.extend_from_slice(&db);
                (dw, third.track_op().then(|| grad.clone()))
            }
        };
        Ok((dx, Some(Tensor::from_vec(dw, weight.shape(), device)?), d_third))
    }
}

impl CpuLinear {
    /// `dx` (when wanted), `dW` and `db` from the output's gradient `dy`,
    /// the input `x` and the weight `w`, all row-major values.
    fn gradients(
        &self,
        dy: &[f32],
        x: &[f32],
        w: &[f32],
        needs_dx: bool,
    ) -> (Option<Vec<f32>>, Vec<f32>, Vec<f32>) {
        let Sizes { batch, input, output } = self.sizes;
        let dy_m = Matrix::rows(dy, batch, output);
        let d_in = || matmul(dy_m, Matrix::rows(w, input, output).transposed());
        let dw = |multiplied: &[f32]| matmul(Matrix::rows(multiplied, batch, input).transposed(), dy_m);
        let (dx, dw) = match (self.input, needs_dx) {
            (Input::Plain, _) => (needs_dx.then(d_in), dw(x)),
            (Input::Silu, false) => (None, dw(&silu_values(x))),
            // Back through the SiLU: its values and slope from one pass.
            (Input::Silu, true) => {
                let (silu, slope) = silu_and_slope_values(x);
                let dw = dw(&silu);
                drop(silu);
                let mut dx = d_in();
                multiply_in_place(&mut dx, &slope);
                (Some(dx), dw)
            }
        };
        (dx, dw, column_sums(dy, output))
    }
}

/// The sums of the columns of `rows` (row-major, `width` wide).
fn column_sums(rows: &[f32], width: usize) -> Vec<f32> {
    let mut sums = vec![0f32; width];
    for row in rows.chunks_exact(width) {
        sums.iter_mut().zip(row).for_each(|(s, v)| *s += v);
    }
    sums
}

/// `x` (B, in), or its SiLU, times `weight` (in, out) plus `bias` (any
/// shape holding `out` values): candle's `x.matmul(weight)?.broadcast_add(bias)`,
/// of `x.silu()?` for `Input::Silu`.
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor, what: Input) -> Result<Tensor> {
    apply(x, weight, bias, what, Onto::Bias)
}

/// `base + x W + b` (of `silu(x)` for `Input::Silu`) with `weight_and_bias`
/// the (in + 1, out) rows of `W` then `b`, and `base` (B, out): candle's
/// `base + (x.matmul(W)? + b)`.
pub fn linear_onto(x: &Tensor, weight_and_bias: &Tensor, base: &Tensor, what: Input) -> Result<Tensor> {
    apply(x, weight_and_bias, base, what, Onto::BaseAndBias)
}

/// The op on operands whose shapes were checked against each other.
fn apply(x: &Tensor, weight: &Tensor, third: &Tensor, what: Input, onto: Onto) -> Result<Tensor> {
    let (batch, input) = x.dims2()?;
    let (rows, output) = weight.dims2()?;
    let (fits, op_name, weight_name, third_name) = match onto {
        Onto::Bias => (
            rows == input && third.elem_count() == output,
            "linear",
            "weight",
            "bias",
        ),
        Onto::BaseAndBias => (
            rows == input + 1 && third.dims() == [batch, output],
            "linear onto a base",
            "weight and bias",
            "base",
        ),
    };
    if !fits {
        bail!(
            "{op_name}: input {:?} does not fit {weight_name} {:?} and {third_name} {:?}",
            x.dims(),
            weight.dims(),
            third.dims()
        )
    }
    let op = CpuLinear {
        sizes: Sizes { batch, input, output },
        input: what,
        onto,
    };
    x.contiguous()?
        .apply_op3(&weight.contiguous()?, &third.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::super::checks::{assert_same_op, random};
    use super::*;

    /// Values and all three gradients against candle's product and
    /// broadcast addition (after candle's SiLU for `Input::Silu`), for
    /// square, wide, narrow and one-row layers, the input spread wide
    /// enough to reach both tails of the sigmoid.
    #[test]
    fn fused_linear_equals_candles_in_values_and_gradients() {
        for what in [Input::Plain, Input::Silu] {
            for (batch, input, output) in [(7, 5, 5), (16, 18, 32), (33, 64, 2), (1, 3, 9)] {
                let case = format!("{what:?}, batch {batch}, {input} → {output}");
                let x = random(&[batch, input], 1, 0.0);
                let w = random(&[input, output], 2, 0.0);
                let b = random(&[1, output], 3, 0.5);
                let x_wide = (x.as_tensor() * 4.0).unwrap();
                let ours = linear(&x_wide, w.as_tensor(), b.as_tensor(), what).unwrap();
                let multiplied = match what {
                    Input::Plain => x_wide.clone(),
                    Input::Silu => x_wide.silu().unwrap(),
                };
                let theirs = multiplied
                    .matmul(w.as_tensor())
                    .and_then(|y| y.broadcast_add(b.as_tensor()))
                    .unwrap();
                assert_same_op(
                    &ours,
                    &theirs,
                    [("x", &x), ("weight", &w), ("bias", &b)],
                    1e-4,
                    &case,
                );
            }
        }
    }

    /// Onto a base: values and the gradients of input, weight-and-bias and
    /// base against candle's `base + (x W + b)`, with `W` and `b` the
    /// operand's rows.
    #[test]
    fn linear_onto_a_base_equals_candles_in_values_and_gradients() {
        for what in [Input::Plain, Input::Silu] {
            for (batch, input, output) in [(7, 5, 5), (16, 18, 32), (33, 64, 2), (1, 3, 9)] {
                let case = format!("{what:?} onto a base, batch {batch}, {input} → {output}");
                let x = random(&[batch, input], 1, 0.0);
                let wb = random(&[input + 1, output], 2, 0.0);
                let base = random(&[batch, output], 3, 0.5);
                let x_wide = (x.as_tensor() * 4.0).unwrap();
                let ours = linear_onto(&x_wide, wb.as_tensor(), base.as_tensor(), what).unwrap();
                let multiplied = match what {
                    Input::Plain => x_wide.clone(),
                    Input::Silu => x_wide.silu().unwrap(),
                };
                let (w, b) = (wb.narrow(0, 0, input).unwrap(), wb.narrow(0, input, 1).unwrap());
                let theirs = multiplied
                    .matmul(&w)
                    .and_then(|y| y.broadcast_add(&b))
                    .and_then(|y| base.as_tensor() + y)
                    .unwrap();
                assert_same_op(
                    &ours,
                    &theirs,
                    [("x", &x), ("weight and bias", &wb), ("base", &base)],
                    1e-4,
                    &case,
                );
            }
        }
    }

    /// A base that is data (no gradient) gets none.
    #[test]
    fn an_untracked_base_gets_no_gradient() {
        let x = random(&[4, 3], 4, 0.0);
        let wb = random(&[4, 2], 5, 0.0);
        let base = random(&[4, 2], 6, 0.0).as_tensor().detach();
        let grads = linear_onto(x.as_tensor(), wb.as_tensor(), &base, Input::Plain)
            .and_then(|y| y.sum_all())
            .and_then(|s| s.backward())
            .unwrap();
        assert!(grads.get(&base).is_none());
        assert!(grads.get(x.as_tensor()).is_some() && grads.get(wb.as_tensor()).is_some());
    }

    /// An input that needs no gradient (data) gets none, and the weights'
    /// gradients are still right.
    #[test]
    fn an_untracked_input_gets_no_gradient() {
        let x = random(&[4, 3], 4, 0.0).as_tensor().detach();
        let w = random(&[3, 2], 5, 0.0);
        let b = random(&[1, 2], 6, 0.0);
        let grads = linear(&x, w.as_tensor(), b.as_tensor(), Input::Plain)
            .and_then(|y| y.sum_all())
            .and_then(|s| s.backward())
            .unwrap();
        assert!(grads.get(&x).is_none());
        // d(Σ y)/db = B per output; d(Σ y)/dW[i, j] = Σ_b x[b, i].
        let db: Vec<f32> = grads
            .get(b.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(db, vec![4.0, 4.0]);
        let column_sums: Vec<f32> = x.sum(0).unwrap().to_vec1().unwrap();
        let dw: Vec<Vec<f32>> = grads.get(w.as_tensor()).unwrap().to_vec2().unwrap();
        for (row, sum) in dw.iter().zip(&column_sums) {
            assert!(row.iter().all(|v| (v - sum).abs() < 1e-5));
        }
    }

    #[test]
    fn mismatched_shapes_are_refused_with_the_sizes() {
        let x = random(&[4, 3], 1, 0.0);
        let w = random(&[2, 5], 2, 0.0);
        let b = random(&[1, 5], 3, 0.0);
        let err = linear(x.as_tensor(), w.as_tensor(), b.as_tensor(), Input::Plain)
            .unwrap_err()
            .to_string();
        assert!(err.contains("[4, 3]") && err.contains("[2, 5]"), "{err}");
        // Onto a base: the weight operand needs the bias row, the base the
        // output's shape.
        let wb = random(&[4, 5], 2, 0.0);
        for (weight, base) in [(&w, random(&[4, 5], 3, 0.0)), (&wb, random(&[4, 4], 3, 0.0))] {
            let err = linear_onto(x.as_tensor(), weight.as_tensor(), base.as_tensor(), Input::Silu)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("base") && err.contains(&format!("{:?}", base.dims())),
                "{err}"
            );
        }
    }
}
