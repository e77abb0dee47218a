//! The layers the networks are built from, each owning its named
//! parameters (so models save, load, copy and average by name).

use super::frozen::param;
use super::params::{Init, ParamBuilder};
use crate::kernels::{self, Input, linear, linear_onto};
use anyhow::Result;
use candle_core::{Module, Tensor, Var};
use rand::Rng;

/// `y = x W + b`, with `W` stored as (in, out) so no transpose is needed.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Var,
    bias: Var,
}

impl Linear {
    /// PyTorch's default initialisation, U(±1/√in), scaled by `gain`
    /// (0 gives a zero layer).
    pub fn new<R: Rng>(
        b: &mut ParamBuilder<'_, R>,
        name: &str,
        (input, output): (usize, usize),
        gain: f64,
    ) -> Result<Self> {
        let init = uniform(gain, input);
        Ok(Self {
            weight: b.param(&format!("{name}.weight"), (input, output), init)?,
            bias: b.param(&format!("{name}.bias"), (1, output), init)?,
        })
    }

    /// On the CPU one fused op ([`kernels::linear`]). Elsewhere the bias
    /// is added as `ones(B, 1) · b` rather than broadcast: its gradient is
    /// then a matrix product instead of candle's batch sum.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            return self.fused(x, Input::Plain);
        }
        let ones = Tensor::ones((x.dim(0)?, 1), x.dtype(), x.device())?;
        Ok((x.matmul(&param(&self.weight))? + ones.matmul(&param(&self.bias))?)?)
    }

    /// `y = silu(x) W + b`, the same values as `forward(&silu(x))`. On the
    /// CPU one fused op that recomputes the SiLU in its backward rather
    /// than keeping it alive in the graph.
    pub fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            return self.fused(x, Input::Silu);
        }
        self.forward(&silu(x)?)
    }

    /// `y = base + silu(x) W + b`, `base` of the output's shape: the same
    /// values as `base + forward_silu(x)`, up to rounding. On the CPU one
    /// fused op, so that no addition keeps the product and the base alive
    /// for the backward (see [`kernels::linear`]).
    pub fn forward_silu_onto(&self, x: &Tensor, base: &Tensor) -> Result<Tensor> {
        if x.device().is_cpu() {
            // The op's third operand is the base: the bias joins the
            // weight as its last row (a copy of in × out values, against
            // the product's B × in × out).
            let weight_and_bias = Tensor::cat(&[param(&self.weight), param(&self.bias)], 0)?;
            return Ok(linear_onto(x, &weight_and_bias, base, Input::Silu)?);
        }
        Ok((base + self.forward_silu(x)?)?)
    }

    fn fused(&self, x: &Tensor, input: Input) -> Result<Tensor> {
        Ok(linear(x, &param(&self.weight), &param(&self.bias), input)?)
    }
}

/// SiLU, `x σ(x)`: on the CPU one fused op ([`kernels::silu`]),
/// elsewhere candle's.
pub fn silu(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() {
        return Ok(kernels::silu(x)?);
    }
    Ok(x.silu()?)
}

/// U(±gain/√fan_in), PyTorch's default bound; 0 gives zeros.
fn uniform(gain: f64, fan_in: usize) -> Init {
    if gain == 0.0 {
        Init::Zeros
    } else {
        Init::Uniform(gain / (fan_in as f64).sqrt())
    }
}

/// A square 2-D convolution, stride 1 or 2, with "same" padding (or
/// another, see [`Conv2d::with_padding`]).
#[derive(Debug, Clone)]
pub struct Conv2d {
    weight: Var,
    bias: Var,
    stride: usize,
    /// Zeros around the input: (before, after) on each side.
    padding: (usize, usize),
}

impl Conv2d {
    pub fn new<R: Rng>(
        b: &mut ParamBuilder<'_, R>,
        name: &str,
        (input, output): (usize, usize),
        kernel: usize,
        stride: usize,
        gain: f64,
    ) -> Result<Self> {
        let init = uniform(gain, input * kernel * kernel);
        Ok(Self {
            weight: b.param(&format!("{name}.weight"), (output, input, kernel, kernel), init)?,
            bias: b.param(&format!("{name}.bias"), (1, output, 1, 1), init)?,
            stride,
            padding: (kernel / 2, kernel / 2),
        })
    }

    /// `padding` zeros around the input instead; 0 pads one row and column
    /// after the input only (PyTorch downsamplers of padding 0 do, so that
    /// a stride-2 convolution halves an even side).
    pub fn with_padding(mut self, padding: usize) -> Self {
        self.padding = match padding {
            0 => (0, 1),
            p => (p, p),
        };
        self
    }

    /// (B, in, H, W) → (B, out, H / stride, W / stride). On the CPU as
    /// one matrix product over patches ([`kernels::conv2d`], whose backward
    /// is far faster than candle's there); elsewhere candle's own.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (weight, bias) = (&param(&self.weight), &param(&self.bias));
        let (x, padding) = match self.padding {
            (before, after) if before == after => (x.clone(), before),
            (before, after) => (
                x.pad_with_zeros(2, before, after)?
                    .pad_with_zeros(3, before, after)?,
                0,
            ),
        };
        if x.device().is_cpu() {
            return Ok(kernels::conv2d(&x, weight, bias, self.stride, padding)?);
        }
        let y = x.conv2d(weight, padding, self.stride, 1, 1)?;
        Ok(y.broadcast_add(bias)?)
    }
}

/// Group normalisation with a learned per-channel scale and shift: on the
/// CPU one fused op ([`kernels::group_norm`]), elsewhere candle-nn's
/// `GroupNorm`, which is built from differentiable tensor ops (unlike its
/// fused LayerNorm, which has no backward pass).
#[derive(Debug, Clone)]
pub struct GroupNorm {
    weight: Var,
    bias: Var,
    groups: usize,
    eps: f64,
}

impl GroupNorm {
    pub fn new<R: Rng>(
        b: &mut ParamBuilder<'_, R>,
        name: &str,
        channels: usize,
        groups: usize,
    ) -> Result<Self> {
        Self::with_eps(b, name, channels, groups, 1e-5)
    }

    /// With `eps` added to each group's variance (PyTorch's default 1e-5).
    pub fn with_eps<R: Rng>(
        b: &mut ParamBuilder<'_, R>,
        name: &str,
        channels: usize,
        groups: usize,
        eps: f64,
    ) -> Result<Self> {
        Ok(Self {
            weight: b.param(&format!("{name}.weight"), channels, Init::Ones)?,
            bias: b.param(&format!("{name}.bias"), channels, Init::Zeros)?,
            groups,
            eps,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (weight, bias) = (&param(&self.weight), &param(&self.bias));
        if x.device().is_cpu() {
            return Ok(kernels::group_norm(x, weight, bias, self.groups, self.eps)?);
        }
        let channels = self.weight.dim(0)?;
        let norm = candle_nn::GroupNorm::new(weight.clone(), bias.clone(), channels, self.groups, self.eps)?;
        Ok(norm.forward(x)?)
    }
}

/// Multi-head scaled dot-product attention over each image's pixels:
/// `q`, `k`, `v` are (B·P, C) rows, P pixels an image, C split into
/// `heads` heads; returns the mixed values as (B·P, C) rows.
/// On the CPU one fused op ([`kernels::attention`]).
pub fn attend(q: &Tensor, k: &Tensor, v: &Tensor, batch: usize, heads: usize) -> Result<Tensor> {
    if q.device().is_cpu() {
        return Ok(kernels::attention(q, k, v, batch, heads)?);
    }
    attend_by_tensor_ops(q, k, v, batch, heads)
}

/// [`attend`] from candle's tensor ops, for devices without the fused op.
fn attend_by_tensor_ops(q: &Tensor, k: &Tensor, v: &Tensor, batch: usize, heads: usize) -> Result<Tensor> {
    let (rows, channels) = q.dims2()?;
    let (pixels, head_dim) = (rows / batch, channels / heads);
    let split = |t: &Tensor| -> Result<Tensor> {
        Ok(t.reshape((batch, pixels, heads, head_dim))?
            .transpose(1, 2)?
            .contiguous()?)
    };
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    let scores = q.matmul(&k.transpose(2, 3)?.contiguous()?)?;
    let weights = kernels::scaled_softmax(&scores, 1.0 / (head_dim as f64).sqrt())?;
    Ok(weights
        .matmul(&v)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, channels))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device};

    /// The fused CPU attention against the tensor ops other devices run,
    /// in value and in the gradients of q, k and v: one image of one head
    /// (its products split over the two threads), one image of several
    /// heads (the heads shared out), many images, a pixel count off every
    /// block size; on 1 and 2 threads bit for bit the same, values and
    /// gradients (every product here sums fewer than 512 terms, where
    /// `gemm` adds in the same order however the output is cut).
    #[test]
    fn fused_attention_equals_the_tensor_ops() {
        use crate::kernels::checks::{assert_same_op_on_one_and_two_threads, random};
        // (batch, pixels, heads, channels)
        let cases = [
            (1, 80, 1, 48),
            (1, 64, 4, 64),
            (1, 37, 1, 24),
            (3, 16, 4, 32),
            (2, 64, 1, 48),
        ];
        for (i, &(batch, pixels, heads, channels)) in cases.iter().enumerate() {
            let rows = |seed: u64| random(&[batch * pixels, channels], 10 * i as u64 + seed, 0.0);
            let (q, k, v) = (rows(1), rows(2), rows(3));
            let theirs = attend_by_tensor_ops(&q, &k, &v, batch, heads).unwrap();
            let inputs = [("q", &q), ("k", &k), ("v", &v)];
            let ours = || attend(&q, &k, &v, batch, heads).unwrap();
            assert_same_op_on_one_and_two_threads(&ours, &theirs, inputs, 1e-5, &format!("case {i}"));
        }
    }

    #[test]
    fn attention_refuses_rows_that_are_not_the_images_heads() {
        let q = Tensor::zeros((10, 6), candle_core::DType::F32, &Device::Cpu).unwrap();
        let error = attend(&q, &q, &q, 3, 2).unwrap_err().to_string();
        assert!(error.contains("[10, 6]") && error.contains("3 images"), "{error}");
        let error = attend(&q, &q, &q, 2, 4).unwrap_err().to_string();
        assert!(error.contains("4 heads"), "{error}");
    }

    /// `attend` against the attention written out head by head with
    /// candle-nn's softmax, in value and in the gradients of q, k and v
    /// (the fused softmax is what the queries' and keys' gradients pass
    /// through).
    #[test]
    fn attention_matches_the_written_out_heads_with_every_gradient() {
        let (batch, pixels, heads, head_dim) = (2, 5, 2, 3);
        let channels = heads * head_dim;
        let rows = |seed: u64| {
            let values: Vec<f32> = (0..batch * pixels * channels)
                .map(|i| (((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0) - 1.0)
                .collect();
            Var::from_vec(values, (batch * pixels, channels), &Device::Cpu).unwrap()
        };
        let (q, k, v) = (rows(1), rows(2), rows(3));
        let ours = attend(&q, &k, &v, batch, heads).unwrap();
        let mut theirs = Vec::new();
        for b in 0..batch {
            let image = |t: &Var| t.as_tensor().narrow(0, b * pixels, pixels).unwrap();
            let mut mixed = Vec::new();
            for h in 0..heads {
                let head = |t: &Tensor| t.narrow(1, h * head_dim, head_dim).unwrap();
                let (qh, kh, vh) = (head(&image(&q)), head(&image(&k)), head(&image(&v)));
                let scores = (qh.matmul(&kh.t().unwrap()).unwrap() / (head_dim as f64).sqrt()).unwrap();
                let weights = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
                mixed.push(weights.matmul(&vh).unwrap());
            }
            theirs.push(Tensor::cat(&mixed, 1).unwrap());
        }
        let theirs = Tensor::cat(&theirs, 0).unwrap();
        let gap = |a: &Tensor, b: &Tensor| -> f32 {
            (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar()
                .unwrap()
        };
        assert!(gap(&ours, &theirs) < 1e-5, "values differ");
        let probe = rows(4);
        let grads = |y: &Tensor| {
            (y * probe.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        };
        let (ours_grads, theirs_grads) = (grads(&ours), grads(&theirs));
        for (name, var) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, b) = (ours_grads.get(var).unwrap(), theirs_grads.get(var).unwrap());
            assert!(gap(a, b) < 1e-5, "{name} gradients differ");
            assert!(gap(a, &a.zeros_like().unwrap()) > 1e-3, "{name} got no gradient");
        }
    }
}
