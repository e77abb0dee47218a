//! The gradients of candle's backward pass with the project's patched
//! candle-core (vendor/README.md): a node's first gradient is stored as it
//! arrives, later ones are added (or subtracted). Checked against
//! derivatives worked out by hand, where a node has one consumer, several,
//! a subtracting one, and a first gradient that arrives as a strided view.

use candle_core::{Device, Tensor, Var};

fn var(values: &[f32], shape: &[usize]) -> Var {
    Var::from_tensor(&Tensor::from_slice(values, shape, &Device::Cpu).unwrap()).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * w.abs().max(1.0),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn a_node_with_several_consumers_gets_the_sum_of_their_gradients() {
    let xs = [0.5f32, -1.0, 2.0];
    let x = var(&xs, &[3]);
    // y = Σ (x·x + 3x − x): dy/dx = 2x + 2.
    let y = ((x.mul(&x).unwrap() + x.affine(3.0, 0.0).unwrap()).unwrap() - x.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap();
    let grads = y.backward().unwrap();
    let want: Vec<f32> = xs.iter().map(|v| 2.0 * v + 2.0).collect();
    assert_close(&values(grads.get(&x).unwrap()), &want, "dy/dx");
}

#[test]
fn subtracted_and_negated_first_gradients_keep_their_sign() {
    let (a, b) = (var(&[1.0, 2.0], &[2]), var(&[3.0, -4.0], &[2]));
    // y = Σ (2a − b) − Σ (−b)·b: dy/da = 2, dy/db = −1 + 2b.
    let first = (a.affine(2.0, 0.0).unwrap() - b.as_tensor())
        .unwrap()
        .sum_all()
        .unwrap();
    let second = b.neg().unwrap().mul(&b).unwrap().sum_all().unwrap();
    let grads = (first - second).unwrap().backward().unwrap();
    assert_close(&values(grads.get(&a).unwrap()), &[2.0, 2.0], "dy/da");
    assert_close(&values(grads.get(&b).unwrap()), &[5.0, -9.0], "dy/db");
}

#[test]
fn a_first_gradient_arriving_transposed_is_stored_in_the_tensors_layout() {
    let x = var(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]);
    let w = Tensor::from_slice(&[1.0f32, 10.0, 2.0, 20.0, 3.0, 30.0], (3, 2), &Device::Cpu).unwrap();
    // y = Σ xᵀ ⊙ w: dy/dx = wᵀ.
    let y = x.t().unwrap().mul(&w).unwrap().sum_all().unwrap();
    let grads = y.backward().unwrap();
    let dx = grads.get(&x).unwrap();
    assert!(dx.is_contiguous(), "the stored gradient is contiguous");
    assert_eq!(dx.dims(), &[2, 3]);
    assert_close(&values(dx), &[1.0, 2.0, 3.0, 10.0, 20.0, 30.0], "dy/dx");
}

#[test]
fn a_broadcast_bias_sums_its_gradient_over_the_batch() {
    let bias = var(&[1.0, -1.0], &[2]);
    let rows = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], (3, 2), &Device::Cpu).unwrap();
    // y = Σ (rows + bias)²: dy/dbias_c = Σ_r 2 (rows_rc + bias_c).
    let shifted = rows.broadcast_add(&bias).unwrap();
    let y = shifted.sqr().unwrap().sum_all().unwrap();
    let grads = y.backward().unwrap();
    assert_close(
        &values(grads.get(&bias).unwrap()),
        &[2.0 * 12.0, 2.0 * 9.0],
        "dy/dbias",
    );
}

/// Upstream candle 0.11.1 overwrote the gradient of an upsampled tensor
/// with the upsampling's alone, losing those of its other consumers that
/// the backward pass had reached first; the patch adds it like every other
/// gradient. Both orders of the two consumers are checked.
#[test]
fn upsampling_adds_its_gradient_to_the_inputs_other_ones() {
    let x = var(&[1.0, 2.0, 3.0, 4.0], &[1, 1, 2, 2]);
    // y = Σ up(x) + Σ 5x, each pixel copied to a 2×2 block: dy/dx = 4 + 5.
    let up = || x.upsample_nearest2d(4, 4).unwrap().sum_all().unwrap();
    let scaled = || x.affine(5.0, 0.0).unwrap().sum_all().unwrap();
    for (order, y) in [("up first", up() + scaled()), ("up last", scaled() + up())] {
        let grads = y.unwrap().backward().unwrap();
        assert_close(&values(grads.get(&x).unwrap()), &[9.0; 4], order);
    }
}
