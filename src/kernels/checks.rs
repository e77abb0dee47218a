//! What the fused CPU ops' tests share: seeded inputs and a distance.

use crate::rng::{host_rng, normal_tensor};
use candle_core::backprop::GradStore;
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
    let (ours_grads, theirs_grads) = (
        weighted_gradients(ours, &probe),
        weighted_gradients(theirs, &probe),
    );
    for (name, var) in inputs {
        let (a, b) = (ours_grads.get(var).unwrap(), theirs_grads.get(var).unwrap());
        assert!(
            max_difference(a, b) < 10.0 * tolerance,
            "{case}: {name} gradients differ"
        );
    }
}

/// The gradients of Σ probe · output.
fn weighted_gradients(output: &Tensor, probe: &Var) -> GradStore {
    (output * probe.as_tensor())
        .and_then(|t| t.sum_all())
        .and_then(|t| t.backward())
        .unwrap()
}

/// [`assert_same_op`] for `op()` against `theirs` on the calling thread
/// and on two, and the two bit for bit the same in values and in every
/// input's gradient (for ops whose sums do not depend on the threads).
pub fn assert_same_op_on_one_and_two_threads(
    op: &(dyn Fn() -> Tensor + Sync),
    theirs: &Tensor,
    inputs: [(&str, &Var); 3],
    tolerance: f32,
    case: &str,
) {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let one = op();
    assert_same_op(&one, theirs, inputs, tolerance, case);
    let two = pool.install(op);
    pool.install(|| assert_same_op(&two, theirs, inputs, tolerance, &format!("{case}, 2 threads")));
    assert_eq!(max_difference(&one, &two), 0.0, "{case}: 1 and 2 threads differ");
    let probe = random(one.dims(), 1_000, 0.0);
    let one_grads = weighted_gradients(&one, &probe);
    let two_grads = pool.install(|| weighted_gradients(&two, &probe));
    for (name, var) in inputs {
        let difference = max_difference(one_grads.get(var).unwrap(), two_grads.get(var).unwrap());
        assert_eq!(
            difference, 0.0,
            "{case}: the {name} gradients differ on 1 and 2 threads"
        );
    }
}
