//! Forward passes that keep no graph, for nets whose output is used only
//! as a value (the target and fake scores in the generator's loss, the
//! generator's samples that fit a score model, samplers and metrics).
//!
//! candle has no `no_grad`: every op on a parameter (a `Var`) records its
//! inputs so that a backward pass can reach the parameter, and that record
//! keeps each activation of the forward alive until its output is dropped.
//! Inside [`frozen`] the layers read their parameters as constants, so no
//! op is recorded and each activation is freed as soon as the next layer
//! has read it: a frozen forward holds one or two activations at a time,
//! not all of them.

use candle_core::{Tensor, Var};
use std::cell::Cell;

thread_local! {
    static FROZEN: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every layer's parameters read as constants on this
/// thread (nested calls are fine; the previous state returns afterwards,
/// on a panic too).
pub fn frozen<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            FROZEN.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(FROZEN.with(|c| c.replace(true)));
    f()
}

/// A parameter as a layer uses it: the variable itself, so its gradient
/// is recorded, or inside [`frozen`] a constant sharing its storage.
pub(crate) fn param(v: &Var) -> Tensor {
    if FROZEN.with(Cell::get) {
        v.as_tensor().detach()
    } else {
        v.as_tensor().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn inside_frozen_a_parameter_records_nothing_and_outside_it_does() {
        let v = Var::new(&[1f32, 2.0], &Device::Cpu).unwrap();
        let x = Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap();
        let traced = (&x * param(&v)).unwrap();
        assert!(traced.track_op());
        let (inside, nested_then_outer) = frozen(|| {
            let inner = frozen(|| (&x * param(&v)).unwrap());
            // Leaving the nested scope keeps the outer one frozen.
            (inner, (&x * param(&v)).unwrap())
        });
        assert!(!inside.track_op() && !nested_then_outer.track_op());
        assert!(
            (&x * param(&v)).unwrap().track_op(),
            "the scope ends with the call"
        );
        assert_eq!(inside.to_vec1::<f32>().unwrap(), traced.to_vec1::<f32>().unwrap());
    }
}
