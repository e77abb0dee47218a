//! Parameter updates on the CPU, written into the parameters in place: one
//! Adam step and one moving-average step, each a single pass over a
//! parameter and over rayon's threads.
//!
//! Why by hand: as candle tensor ops an Adam step is a dozen passes over
//! every parameter (scale, add, square, root, divide, subtract, copy back),
//! each into a fresh allocation and each on the calling thread alone. At
//! batch 1,024 and width 512 on two threads those serial passes were a
//! large part of the time the second core sat idle (`perf`: the optimiser
//! was 6% of all samples, every one on the main thread).
//!
//! Each value sees the same f32 operations in the same order as the tensor
//! ops (candle's scalar multiply is `x · a + 0`, which changes only the
//! sign of a zero), so the numbers are those of the tensor path; a test
//! holds the two together. Other devices keep the tensor ops.

use super::host::{PART, f32_values, f32_values_mut, split_over_threads};
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Result, Tensor, Var};
use rayon::prelude::*;
use std::cell::RefCell;

/// Whether these updates apply to a parameter: f32 on the CPU.
pub fn in_place_on_cpu(param: &Tensor) -> bool {
    param.device().is_cpu() && param.dtype() == DType::F32
}

/// One Adam step's constants, in f32 as the tensor ops apply them.
#[derive(Debug, Clone, Copy)]
pub struct AdamConstants {
    pub beta1: f32,
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// ε with the second moment's bias correction folded in.
    pub eps: f32,
    /// The learning rate with both bias corrections folded in.
    pub step_size: f32,
}

impl AdamConstants {
    /// Adam's moments and the parameter, for one value.
    #[inline(always)]
    fn update(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        *m = *m * self.beta1 + g * self.one_minus_beta1;
        *v = *v * self.beta2 + (g * g) * self.one_minus_beta2;
        *p -= (*m / (v.sqrt() + self.eps)) * self.step_size;
    }
}

/// Adam's step on `param` from its gradient, with its part of the first
/// and second moments, which are updated too.
pub fn adam_step(param: &Var, grad: &Tensor, m: &mut [f32], v: &mut [f32], c: AdamConstants) -> Result<()> {
    let grad = grad.contiguous()?;
    let op = AdamStep {
        moments: RefCell::new((m, v)),
        constants: c,
    };
    param.as_tensor().inplace_op2(&grad, &op)
}

/// `average ← decay · average + (1 − decay) · source`, in place.
pub fn average_toward(average: &Var, source: &Tensor, decay: f64) -> Result<()> {
    let op = AverageToward {
        decay: decay as f32,
        rest: (1.0 - decay) as f32,
    };
    average.as_tensor().inplace_op2(&source.contiguous()?, &op)
}

/// The op [`adam_step`] applies. The moments are host vectors the op
/// borrows, in a cell because candle calls an in-place op through `&self`
/// and hands it only its destination mutably.
struct AdamStep<'a> {
    moments: RefCell<(&'a mut [f32], &'a mut [f32])>,
    constants: AdamConstants,
}

impl InplaceOp2 for AdamStep<'_> {
    fn name(&self) -> &'static str {
        "adam-step"
    }

    fn cpu_fwd(&self, param: &mut CpuStorage, pl: &Layout, grad: &CpuStorage, gl: &Layout) -> Result<()> {
        let n = pl.shape().elem_count();
        let p = f32_values_mut(param, pl, n, self.name(), "parameter")?;
        let g = f32_values(grad, gl, n, self.name(), "gradient")?;
        let mut moments = self.moments.borrow_mut();
        let (m, v) = &mut *moments;
        if m.len() != n || v.len() != n {
            candle_core::bail!(
                "{}: {n} values but moments of {} and {}",
                self.name(),
                m.len(),
                v.len()
            );
        }
        adam_values(p, g, m, v, self.constants, split_over_threads(n));
        Ok(())
    }
}

/// Adam's step on the values themselves; in `PART`s over rayon's
/// threads when `parallel` (each value's arithmetic is the same either way).
fn adam_values(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], c: AdamConstants, parallel: bool) {
    let chunk = |p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]| {
        for i in 0..p.len() {
            c.update(&mut p[i], g[i], &mut m[i], &mut v[i]);
        }
    };
    if parallel {
        p.par_chunks_mut(PART)
            .zip(g.par_chunks(PART))
            .zip(m.par_chunks_mut(PART).zip(v.par_chunks_mut(PART)))
            .for_each(|((p, g), (m, v))| chunk(p, g, m, v));
    } else {
        chunk(p, g, m, v);
    }
}

/// The moving average's step on the values themselves, as [`adam_values`].
fn average_values(a: &mut [f32], s: &[f32], decay: f32, rest: f32, parallel: bool) {
    let chunk = |(a, s): (&mut [f32], &[f32])| {
        for (a, s) in a.iter_mut().zip(s) {
            *a = *a * decay + s * rest;
        }
    };
    if parallel {
        a.par_chunks_mut(PART).zip(s.par_chunks(PART)).for_each(chunk);
    } else {
        chunk((a, s));
    }
}

struct AverageToward {
    decay: f32,
    rest: f32,
}

impl InplaceOp2 for AverageToward {
    fn name(&self) -> &'static str {
        "average-toward"
    }

    fn cpu_fwd(&self, avg: &mut CpuStorage, al: &Layout, src: &CpuStorage, sl: &Layout) -> Result<()> {
        let n = al.shape().elem_count();
        let a = f32_values_mut(avg, al, n, self.name(), "average")?;
        let s = f32_values(src, sl, n, self.name(), "source")?;
        average_values(a, s, self.decay, self.rest, split_over_threads(n));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::checks::random;
    use super::*;

    fn values(len: usize, seed: u64, offset: f64) -> Vec<f32> {
        random(&[len], seed, offset).as_tensor().to_vec1().unwrap()
    }

    fn constants() -> AdamConstants {
        AdamConstants {
            beta1: 0.9,
            one_minus_beta1: 0.1,
            beta2: 0.999,
            one_minus_beta2: 0.001,
            eps: 1e-8,
            step_size: 0.01,
        }
    }

    /// Over rayon's threads the chunks line up on every slice: each value
    /// gets its own gradient and moments, as on one thread.
    #[test]
    fn threads_update_each_value_as_one_thread_does() {
        let n = 3 * PART + 17;
        let (g, s) = (values(n, 1, 0.0), values(n, 2, 0.0));
        let start = (values(n, 3, 0.0), values(n, 4, 0.0), values(n, 5, 2.0));
        let run = |parallel: bool| {
            let (mut p, mut m, mut v) = start.clone();
            // Second moments are never negative.
            v.iter_mut().for_each(|v| *v = v.abs());
            let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
            pool.install(|| {
                adam_values(&mut p, &g, &mut m, &mut v, constants(), parallel);
                average_values(&mut m, &s, 0.99, 0.01, parallel);
            });
            (p, m, v)
        };
        let (serial, threaded) = (run(false), run(true));
        assert_eq!(serial, threaded);
        // And something moved.
        assert_ne!(serial.0, start.0);
    }

    /// The in-place moving average equals the tensor ops it replaces.
    #[test]
    fn the_moving_average_equals_the_tensor_ops() {
        let (average, source) = (random(&[37, 5], 6, 0.0), random(&[37, 5], 7, 1.0));
        let decay = 0.99;
        let expected =
            ((average.as_tensor() * decay).unwrap() + (source.as_tensor() * (1.0 - decay)).unwrap()).unwrap();
        average_toward(&average, source.as_tensor(), decay).unwrap();
        let (got, want): (Vec<f32>, Vec<f32>) = (
            average.flatten_all().unwrap().to_vec1().unwrap(),
            expected.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(got, want);
        assert_ne!(
            got,
            random(&[37, 5], 6, 0.0)
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        );
    }

    #[test]
    fn moments_of_the_wrong_length_are_an_error_and_nothing_moves() {
        let param = random(&[4, 3], 8, 0.0);
        let before: Vec<f32> = param.flatten_all().unwrap().to_vec1().unwrap();
        let grad = random(&[4, 3], 9, 0.0);
        let (mut m, mut v) = (vec![0.0; 11], vec![0.0; 12]);
        let err = adam_step(&param, grad.as_tensor(), &mut m, &mut v, constants()).unwrap_err();
        assert!(
            err.to_string().contains("12 values but moments of 11 and 12"),
            "{err}"
        );
        assert_eq!(param.flatten_all().unwrap().to_vec1::<f32>().unwrap(), before);
    }
}
