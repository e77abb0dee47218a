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

/// `f(input)` and the gradient of Σ probe · f(input) with respect to `x`
/// (`input` is `x` itself or a tensor made from it).
pub fn value_and_gradient(
    x: &Var,
    input: &Tensor,
    probe: &Var,
    f: &dyn Fn(&Tensor) -> Tensor,
) -> (Tensor, Tensor) {
    let y = f(input);
    let grads = (&y * probe.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    (y, grads.get(x.as_tensor()).unwrap().clone())
}

/// Asserts that `ours` and `theirs`, outputs of two implementations of
/// one op on the same `inputs`, agree in value (within `tolerance`) and in
/// every input's gradient (within 10 × `tolerance`). The loss weighs each
/// output differently, so a misplaced gradient entry shows.
pub fn assert_same_op(ours: &Tensor, theirs: &Tensor, inputs: [(&str, &Var); 3], tolerance: f32, case: &str) {
    assert!(max_difference(ours, theirs) < tolerance, "{case}: values differ");
    let probe = random(ours.dims(), 1_000, 0.0);
    let gradients = |output: &Tensor| {
        (output * probe.as_tensor())
            .and_then(|t| t.sum_all())
            .and_then(|t| t.backward())
            .unwrap()
    };
    let (ours_grads, theirs_grads) = (gradients(ours), gradients(theirs));
    for (name, var) in inputs {
        let (a, b) = (ours_grads.get(var).unwrap(), theirs_grads.get(var).unwrap());
        assert!(
            max_difference(a, b) < 10.0 * tolerance,
            "{case}: {name} gradients differ"
        );
    }
}
