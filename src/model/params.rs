//! Named parameters of a model: creation from the seeded host RNG (candle's
//! CPU RNG cannot be seeded), deep copies, and strict save/load.

use crate::files::{TensorFile, read_tensors, write_tensors};
use anyhow::{Context, Result, ensure};
use candle_core::{Device, Tensor, Var};
use rand::{Rng, RngExt};
use std::collections::HashMap;
use std::path::Path;

/// The parameters of one model, in a fixed order.
#[derive(Debug)]
pub struct Params {
    entries: Vec<(String, Var)>,
}

/// How a new parameter is filled.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    /// U(−bound, bound), drawn from the host RNG.
    Uniform(f64),
    Zeros,
    Ones,
}

/// Creates parameters, recording each under a name.
pub struct ParamBuilder<'a, R: Rng> {
    device: &'a Device,
    rng: &'a mut R,
    entries: Vec<(String, Var)>,
}

impl<'a, R: Rng> ParamBuilder<'a, R> {
    pub fn new(device: &'a Device, rng: &'a mut R) -> Self {
        Self {
            device,
            rng,
            entries: Vec::new(),
        }
    }

    pub fn param(&mut self, name: &str, shape: impl Into<candle_core::Shape>, init: Init) -> Result<Var> {
        let shape = shape.into();
        let n = shape.elem_count();
        let values: Vec<f32> = match init {
            Init::Uniform(bound) => (0..n)
                .map(|_| self.rng.random_range(-bound..bound) as f32)
                .collect(),
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
        };
        let var = Var::from_tensor(&Tensor::from_vec(values, shape, self.device)?)?;
        self.entries.push((name.to_string(), var.clone()));
        Ok(var)
    }

    pub fn device(&self) -> &Device {
        self.device
    }

    pub fn finish(self) -> Params {
        Params {
            entries: self.entries,
        }
    }
}

impl Params {
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.entries.iter().map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Values in all parameters together.
    pub fn count(&self) -> usize {
        self.vars().map(|v| v.elem_count()).sum()
    }

    /// The device the parameters live on.
    pub fn device(&self) -> Device {
        self.vars().next().map_or(Device::Cpu, |v| v.device().clone())
    }

    /// Overwrites every parameter with `other`'s values (a deep copy: no
    /// storage is shared afterwards). Names and shapes must match.
    pub fn copy_from(&self, other: &Params) -> Result<()> {
        ensure!(
            self.len() == other.len(),
            "cannot copy {} parameters into {}",
            other.len(),
            self.len()
        );
        for ((name, dst), (other_name, src)) in self.iter().zip(other.iter()) {
            ensure!(name == other_name, "parameter {name} does not match {other_name}");
            dst.set(&src.as_detached_tensor().copy()?)
                .with_context(|| format!("copying parameter {name}"))?;
        }
        Ok(())
    }

    /// Moves every parameter toward `other`'s: `self ← decay·self +
    /// (1 − decay)·other` (an exponential moving average of `other`).
    pub fn average_toward(&self, other: &Params, decay: f64) -> Result<()> {
        for ((name, dst), (_, src)) in self.iter().zip(other.iter()) {
            let updated = if crate::kernels::in_place_on_cpu(dst) {
                crate::kernels::average_toward(dst, src.as_tensor(), decay)
            } else {
                let mixed =
                    ((dst.as_detached_tensor() * decay)? + (src.as_detached_tensor() * (1.0 - decay))?)?;
                dst.set(&mixed)
            };
            updated.with_context(|| format!("averaging parameter {name}"))?;
        }
        Ok(())
    }

    /// Detached tensors (sharing storage), for saving.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.entries
            .iter()
            .map(|(n, v)| (n.clone(), v.as_detached_tensor()))
            .collect()
    }

    /// Saves to a safetensors file (atomically) with `metadata`.
    pub fn save(&self, path: &Path, metadata: HashMap<String, String>) -> Result<()> {
        write_tensors(path, &self.tensors(), metadata)
    }

    /// Loads every parameter from named tensors: each name must be present
    /// with the right shape, and no tensor may be left over. This is the
    /// check the public reference code lacks (its switches could load
    /// nothing when names did not match). Every weight must be finite.
    /// Everything is checked before the first weight is overwritten, so a
    /// bad file changes nothing.
    pub fn load_from(&self, tensors: &HashMap<String, Tensor>, source: &str) -> Result<()> {
        let missing: Vec<&str> = self
            .iter()
            .map(|(n, _)| n)
            .filter(|n| !tensors.contains_key(*n))
            .collect();
        ensure!(
            missing.is_empty(),
            "{source}: missing tensors {}",
            missing.join(", ")
        );
        let mut extra: Vec<&String> = tensors
            .keys()
            .filter(|k| !self.entries.iter().any(|(n, _)| n == *k))
            .collect();
        extra.sort();
        ensure!(extra.is_empty(), "{source}: unexpected tensors {extra:?}");
        for (name, var) in self.iter() {
            let t = &tensors[name];
            ensure!(
                t.dims() == var.dims(),
                "{source}: tensor {name} has shape {:?}, the model expects {:?}",
                t.dims(),
                var.dims()
            );
            ensure!(
                t.flatten_all()?.to_vec1::<f32>()?.iter().all(|x| x.is_finite()),
                "{source}: tensor {name} holds NaN or infinite values; refusing to load it"
            );
        }
        for (name, var) in self.iter() {
            var.set(&tensors[name].to_device(var.device())?)
                .with_context(|| format!("{source}: loading {name}"))?;
        }
        Ok(())
    }

    /// Reads a safetensors file, lets `check` refuse it by its metadata,
    /// then loads every parameter from it.
    pub fn load_file(
        &self,
        path: &Path,
        check: impl FnOnce(&HashMap<String, String>) -> Result<()>,
    ) -> Result<()> {
        let device = self
            .entries
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(Device::Cpu);
        let TensorFile { tensors, metadata } = read_tensors(path, &device)?;
        check(&metadata)?;
        self.load_from(&tensors, &path.display().to_string())
    }

    /// Largest absolute difference between two parameter sets of the same
    /// layout (used to prove that switches load every weight).
    pub fn max_abs_diff(&self, other: &Params) -> Result<f32> {
        let mut worst = 0f32;
        for ((name, a), (_, b)) in self.iter().zip(other.iter()) {
            let d = (a.as_tensor() - b.as_tensor())
                .with_context(|| format!("comparing {name}"))?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            worst = worst.max(d);
        }
        Ok(worst)
    }

    /// Whether every weight is finite, checked element by element (a sum
    /// would overflow to infinity for large finite weights).
    pub fn all_finite(&self) -> Result<bool> {
        for v in self.vars() {
            let values: Vec<f32> = v.as_tensor().flatten_all()?.to_vec1()?;
            if !values.iter().all(|x| x.is_finite()) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn two_params() -> Params {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut b = ParamBuilder::new(&Device::Cpu, &mut rng);
        b.param("a", (2, 3), Init::Uniform(1.0)).unwrap();
        b.param("b", (1, 4), Init::Zeros).unwrap();
        b.finish()
    }

    fn set(p: &Params, name: &str, values: Vec<f32>) {
        let (_, var) = p.iter().find(|(n, _)| *n == name).unwrap();
        var.set(&Tensor::from_vec(values, var.dims(), &Device::Cpu).unwrap())
            .unwrap();
    }

    #[test]
    fn finiteness_is_checked_per_weight_not_by_a_sum() {
        let p = two_params();
        assert!(p.all_finite().unwrap());
        // Finite weights whose sum overflows f32 are still finite.
        set(&p, "b", vec![3e38, 3e38, 3e38, 3e38]);
        assert!(p.all_finite().unwrap());
        // A NaN and an infinity are found however the rest sums.
        set(&p, "b", vec![0.0, f32::NAN, 0.0, 0.0]);
        assert!(!p.all_finite().unwrap());
        set(&p, "b", vec![f32::INFINITY, f32::NEG_INFINITY, 0.0, 0.0]);
        assert!(!p.all_finite().unwrap());
    }

    #[test]
    fn non_finite_weights_in_a_file_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nan.safetensors");
        let p = two_params();
        set(&p, "b", vec![0.0, f32::NAN, 0.0, 0.0]);
        p.save(&file, HashMap::new()).unwrap();
        let q = two_params();
        let before = q.tensors()[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let err = q.load_file(&file, |_| Ok(())).unwrap_err().to_string();
        assert!(err.contains("nan.safetensors") && err.contains("NaN"), "{err}");
        let after = q.tensors()[0].1.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(before, after, "nothing was loaded");
    }

    #[test]
    fn the_moving_average_moves_by_one_minus_decay() {
        let (avg, live) = (two_params(), two_params());
        set(&avg, "b", vec![0.0; 4]);
        set(&live, "b", vec![1.0, 2.0, 3.0, 4.0]);
        avg.average_toward(&live, 0.75).unwrap();
        let b: Vec<f32> = avg.tensors()[1].1.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(b, vec![0.25, 0.5, 0.75, 1.0]);
    }
}
