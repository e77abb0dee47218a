//! What the fused CPU ops' tests share: seeded inputs and a distance.

use crate::rng::{host_rng, normal_tensor};
use candle_core::{Device, Tensor, Var};

/// A trainable tensor of N(offset, 1) values from `seed`.
pub fn random(shape: &[usize], seed: u64, offset: f64) -> Var {
    let values = normal_tensor(&mut host_rng(seed, 0), shape, &Device::Cpu).unwrap();
    Var::from_tensor(&(values + offset).unwrap()).unwrap()
}

/// The largest absolute difference between two tensors of one shape.
pub fn max_difference(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let difference = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
    difference.max(0).unwrap().to_scalar().unwrap()
}
