//! Fused CPU kernels: candle custom ops that do in one pass, with a
//! hand-written backward, what candle's own CPU ops do in many. Each file
//! says why it exists (what `perf` found in candle's version) and is tested
//! against the plain tensor ops it replaces, in values and in every
//! gradient. On other devices the models keep candle's ops.
//!
//! | kernel | replaces | matches |
//! |---|---|---|
//! | [`linear`] | `x W + b` (and `silu(x) W + b`, and `base + …`) | candle's matmul + broadcast add, within float rounding |
//! | [`silu`] | candle's SiLU and its six-pass backward | candle's `silu`, within float rounding |
//! | [`conv2d`] | candle's CPU convolution (a loop of dot products backward; 3 × 3 stride-1 ones by Winograd's F(2 × 2, 3 × 3)) | `Tensor::conv2d` + bias, within float rounding |
//! | [`group_norm`] | candle-nn's `GroupNorm` (ten tensor passes) | candle-nn's `group_norm`, within float rounding |
//! | [`attention`] | multi-head attention from candle's ops (heads split and merged by strided copies) | the same ops with candle-nn's `softmax`, within float rounding |
//! | [`scaled_softmax`] | the attention's scale and candle-nn's `softmax` (five passes, more back) | candle-nn's `softmax`, within float rounding |
//! | [`adam_step`], [`average_toward`] | a dozen tensor passes per parameter | the flat tensor Adam and moving average, bit for bit |
//!
//! `gemm` (matrix products over rayon's threads on plain slices), `host`
//! (reading tensors' values, splitting passes over threads, compiling a
//! pass for AVX2), `sums` (reductions in vector lanes) and `transpose`
//! (8 × 8 tiles in vector registers) are what the kernels share.

mod attention;
mod conv;
mod gemm;
mod host;
mod linear;
mod norm;
mod silu;
mod softmax;
mod sums;
mod transpose;
mod update;
mod winograd;

#[cfg(test)]
pub(crate) mod checks;

pub use attention::attention;
pub use conv::conv2d;
pub use linear::{Input, linear, linear_onto};
pub use norm::group_norm;
pub use silu::silu;
pub use softmax::scaled_softmax;
pub use update::{AdamConstants, adam_step, average_toward, in_place_on_cpu};
