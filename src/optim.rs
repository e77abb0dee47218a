//! Adam with state we own: candle's AdamW keeps its moments private, so a
//! run could not be resumed exactly; and its default weight decay is not 0.

use crate::kernels::{AdamConstants, adam_step, in_place_on_cpu};
use crate::model::Params;
use crate::parallel::Collective;
use anyhow::{Context, Result, ensure};
use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use std::collections::HashMap;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

#[derive(Debug)]
pub struct Adam {
    vars: Vec<(String, Var)>,
    /// Where each parameter starts in the flat moments (and one past the
    /// last).
    offsets: Vec<usize>,
    moments: Moments,
    /// Updates taken so far (for bias correction).
    pub t: u64,
    pub lr: f64,
    /// The ranks whose gradients each step averages (data parallelism).
    team: Collective,
}

/// The first and second moments of all parameters, end to end.
#[derive(Debug)]
enum Moments {
    /// f32 parameters on the CPU: host vectors, updated together with each
    /// parameter in one pass ([`adam_step_cpu`]).
    Host { m: Vec<f32>, v: Vec<f32> },
    /// Elsewhere: flat tensors, so that a step is a dozen tensor ops for
    /// the whole network instead of a dozen per parameter: on a GPU each
    /// op is a kernel launch, and launches are what small batches wait on
    /// there. Each element sees the same operations in the same order as
    /// in a per-parameter update, or in the CPU's pass.
    Tensors { m: Tensor, v: Tensor },
}

impl Adam {
    pub fn new(params: &Params, lr: f64) -> Result<Self> {
        let on_cpu = params.vars().all(|v| in_place_on_cpu(v.as_tensor()));
        Self::with_moments(params, lr, on_cpu)
    }

    /// With the moments on the host (the CPU's one-pass step) or as
    /// tensors (the tensor ops every device has).
    fn with_moments(params: &Params, lr: f64, on_host: bool) -> Result<Self> {
        let vars: Vec<(String, Var)> = params.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        let mut offsets = vec![0];
        for (_, v) in &vars {
            offsets.push(offsets[offsets.len() - 1] + v.elem_count());
        }
        let len = offsets[vars.len()];
        let moments = if on_host {
            Moments::Host {
                m: vec![0.0; len],
                v: vec![0.0; len],
            }
        } else {
            let (dtype, device) = vars.first().map_or((DType::F32, Device::Cpu), |(_, v)| {
                (v.dtype(), v.device().clone())
            });
            let zeros = Tensor::zeros(len, dtype, &device)?;
            Moments::Tensors {
                m: zeros.clone(),
                v: zeros,
            }
        };
        Ok(Self {
            moments,
            offsets,
            vars,
            t: 0,
            lr,
            team: Collective::solo(),
        })
    }

    /// Each step averages the gradient over `team`'s ranks first (one
    /// exchange of the whole flat gradient), so that every rank takes the
    /// step of the whole batch and the weights stay the same on all.
    pub fn averaged_over(mut self, team: &Collective) -> Self {
        self.team = team.clone();
        self
    }

    /// One update from the gradients of a backward pass. A parameter with no
    /// gradient is an error (nothing is updated then): it means the graph
    /// does not reach it.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        // Gradients carry candle's op graph (they are computed from the
        // weights); detached, the moments cannot chain one step's graph to
        // the next and grow without bound.
        let g = self
            .vars
            .iter()
            .map(|(name, var)| {
                let g = grads
                    .get(var.as_tensor())
                    .with_context(|| format!("parameter {name} received no gradient"))?;
                Ok(g.detach().flatten_all()?)
            })
            .collect::<Result<Vec<_>>>()?;
        let g = self.averaged(g)?;
        self.t += 1;
        if g.is_empty() {
            return Ok(());
        }
        let t = self.t as i32;
        // Bias corrections folded into the step size and epsilon.
        let c1 = 1.0 - BETA1.powi(t);
        let c2 = 1.0 - BETA2.powi(t);
        let step_size = self.lr * c2.sqrt() / c1;
        let eps = EPS * c2.sqrt();
        match &mut self.moments {
            Moments::Host { m, v } => {
                let constants = AdamConstants {
                    beta1: BETA1 as f32,
                    one_minus_beta1: (1.0 - BETA1) as f32,
                    beta2: BETA2 as f32,
                    one_minus_beta2: (1.0 - BETA2) as f32,
                    eps: eps as f32,
                    step_size: step_size as f32,
                };
                for (i, ((name, var), g)) in self.vars.iter().zip(&g).enumerate() {
                    let part = self.offsets[i]..self.offsets[i + 1];
                    adam_step(var, g, &mut m[part.clone()], &mut v[part], constants)
                        .with_context(|| format!("updating parameter {name}"))?;
                }
            }
            Moments::Tensors { m, v } => {
                let g = Tensor::cat(&g, 0)?;
                *m = ((&*m * BETA1)? + (&g * (1.0 - BETA1))?)?;
                *v = ((&*v * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
                drop(g);
                let update = ((&*m / (v.sqrt()? + eps)?)? * step_size)?;
                for (i, (_, var)) in self.vars.iter().enumerate() {
                    var.set(&(var.as_detached_tensor() - self.part(&update, i)?)?)?;
                }
            }
        }
        Ok(())
    }

    /// The flattened gradients, averaged over the team's ranks as one flat
    /// buffer (one exchange per step, not one per parameter).
    fn averaged(&self, g: Vec<Tensor>) -> Result<Vec<Tensor>> {
        if self.team.world() == 1 || g.is_empty() {
            return Ok(g);
        }
        let flat = self.team.average_tensor(&Tensor::cat(&g, 0)?)?;
        (0..g.len())
            .map(|i| Ok(flat.narrow(0, self.offsets[i], self.offsets[i + 1] - self.offsets[i])?))
            .collect()
    }

    /// Parameter `i`'s part of a flat tensor, in its shape (a view).
    fn part(&self, flat: &Tensor, i: usize) -> Result<Tensor> {
        let (start, end) = (self.offsets[i], self.offsets[i + 1]);
        Ok(flat
            .narrow(0, start, end - start)?
            .reshape(self.vars[i].1.shape())?)
    }

    /// Parameter `i`'s first and second moments, in its shape.
    fn moments_of(&self, i: usize) -> Result<(Tensor, Tensor)> {
        let var = &self.vars[i].1;
        Ok(match &self.moments {
            Moments::Host { m, v } => {
                let part = self.offsets[i]..self.offsets[i + 1];
                let as_tensor =
                    |flat: &[f32]| Tensor::from_slice(&flat[part.clone()], var.shape(), var.device());
                (as_tensor(m)?, as_tensor(v)?)
            }
            Moments::Tensors { m, v } => (self.part(m, i)?.copy()?, self.part(v, i)?.copy()?),
        })
    }

    /// The moments as named tensors, for checkpoints: each parameter's on
    /// its own, as a file holds them.
    pub fn state_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out = Vec::with_capacity(2 * self.vars.len());
        for (i, (name, _)) in self.vars.iter().enumerate() {
            let (m, v) = self.moments_of(i)?;
            out.push((format!("m.{name}"), m));
            out.push((format!("v.{name}"), v));
        }
        Ok(out)
    }

    /// Restores the moments saved by [`Adam::state_tensors`]. Everything is
    /// checked before anything changes.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, t: u64, source: &str) -> Result<()> {
        let (mut m, mut v) = (Vec::new(), Vec::new());
        for (name, var) in &self.vars {
            for (prefix, parts) in [("m", &mut m), ("v", &mut v)] {
                let key = format!("{prefix}.{name}");
                let saved = tensors
                    .get(&key)
                    .with_context(|| format!("{source}: missing optimiser tensor {key}"))?;
                ensure!(
                    saved.dims() == var.dims(),
                    "{source}: optimiser tensor {key} has shape {:?}, expected {:?}",
                    saved.dims(),
                    var.dims()
                );
                parts.push(saved.to_device(var.device())?.flatten_all()?);
            }
        }
        if !self.vars.is_empty() {
            let (m, v) = (Tensor::cat(&m, 0)?, Tensor::cat(&v, 0)?);
            self.moments = match self.moments {
                Moments::Host { .. } => Moments::Host {
                    m: m.to_dtype(DType::F32)?.to_vec1()?,
                    v: v.to_dtype(DType::F32)?.to_vec1()?,
                },
                Moments::Tensors { .. } => Moments::Tensors { m, v },
            };
        }
        self.t = t;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Init, ParamBuilder};
    use crate::rng::host_rng;

    /// A 2×3 weight and a 3-vector bias, and the loss Σ c·p² whose
    /// gradient 2c·p the textbook update below uses.
    fn two_params() -> (Params, [f64; 2]) {
        let device = Device::Cpu;
        let mut rng = host_rng(7, 0);
        let mut b = ParamBuilder::new(&device, &mut rng);
        b.param("w", (2, 3), Init::Uniform(1.0)).unwrap();
        b.param("b", 3, Init::Uniform(1.0)).unwrap();
        (b.finish(), [0.5, 3.0])
    }

    fn values(params: &Params) -> Vec<Vec<f64>> {
        params
            .vars()
            .map(|v| {
                let t = v.as_tensor().flatten_all().unwrap().to_dtype(DType::F64).unwrap();
                t.to_vec1::<f64>().unwrap()
            })
            .collect()
    }

    fn step(params: &Params, scale: [f64; 2], opt: &mut Adam) {
        let loss = params
            .vars()
            .zip(scale)
            .map(|(v, c)| (v.as_tensor().sqr().unwrap().sum_all().unwrap() * c).unwrap())
            .reduce(|a, b| (a + b).unwrap())
            .unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }

    #[test]
    fn each_parameter_moves_as_textbook_adam_says_and_a_reload_continues_the_same() {
        for on_host in [true, false] {
            textbook_adam_and_reload(on_host);
        }
    }

    fn textbook_adam_and_reload(on_host: bool) {
        let (params, scale) = two_params();
        let mut expected = values(&params);
        let mut moments: Vec<(Vec<f64>, Vec<f64>)> = expected
            .iter()
            .map(|p| (vec![0.0; p.len()], vec![0.0; p.len()]))
            .collect();
        let lr = 0.1;
        let mut opt = Adam::with_moments(&params, lr, on_host).unwrap();
        for t in 1..=3 {
            step(&params, scale, &mut opt);
            for ((p, (m, v)), c) in expected.iter_mut().zip(&mut moments).zip(scale) {
                for i in 0..p.len() {
                    let g = 2.0 * c * p[i];
                    m[i] = BETA1 * m[i] + (1.0 - BETA1) * g;
                    v[i] = BETA2 * v[i] + (1.0 - BETA2) * g * g;
                    let m_hat = m[i] / (1.0 - BETA1.powi(t));
                    let v_hat = v[i] / (1.0 - BETA2.powi(t));
                    p[i] -= lr * m_hat / (v_hat.sqrt() + EPS);
                }
            }
        }
        for (got, want) in values(&params).iter().zip(&expected) {
            for (a, b) in got.iter().zip(want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        // The saved moments, loaded into a fresh optimiser, take the same
        // next step as the one that kept them.
        let saved: HashMap<String, Tensor> = opt.state_tensors().unwrap().into_iter().collect();
        assert_eq!(saved["v.b"].dims(), &[3]);
        let (twin, _) = two_params();
        twin.copy_from(&params).unwrap();
        let mut reloaded = Adam::with_moments(&twin, lr, on_host).unwrap();
        reloaded.load_state(&saved, opt.t, "test").unwrap();
        step(&params, scale, &mut opt);
        step(&twin, scale, &mut reloaded);
        assert_eq!(values(&params), values(&twin));
    }

    /// The CPU's one-pass step and the tensor ops every device has take
    /// the same steps, and each continues from the other's saved moments
    /// (a checkpoint written on a GPU resumes on the CPU, and back).
    #[test]
    fn host_and_tensor_moments_step_alike_and_load_each_other() {
        let (on_host, scale) = two_params();
        let (as_tensors, _) = two_params();
        let mut host = Adam::with_moments(&on_host, 0.05, true).unwrap();
        let mut tensors = Adam::with_moments(&as_tensors, 0.05, false).unwrap();
        for _ in 0..3 {
            step(&on_host, scale, &mut host);
            step(&as_tensors, scale, &mut tensors);
        }
        assert_eq!(values(&on_host), values(&as_tensors));
        let state = |opt: &Adam| -> Vec<(String, Vec<f32>)> {
            let tensors = opt.state_tensors().unwrap().into_iter();
            tensors
                .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1().unwrap()))
                .collect()
        };
        assert_eq!(state(&host), state(&tensors));
        // Swap the moments over and go on: still the same steps.
        let from_host: HashMap<String, Tensor> = host.state_tensors().unwrap().into_iter().collect();
        let from_tensors: HashMap<String, Tensor> = tensors.state_tensors().unwrap().into_iter().collect();
        host.load_state(&from_tensors, tensors.t, "test").unwrap();
        tensors.load_state(&from_host, 3, "test").unwrap();
        step(&on_host, scale, &mut host);
        step(&as_tensors, scale, &mut tensors);
        assert_eq!(values(&on_host), values(&as_tensors));
        assert_eq!(state(&host), state(&tensors));
    }

    #[test]
    fn a_parameter_without_a_gradient_is_named_and_nothing_moves() {
        let (params, _) = two_params();
        let before = values(&params);
        let mut opt = Adam::new(&params, 0.1).unwrap();
        let w = params.vars().next().unwrap();
        let grads = w
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let err = opt.step(&grads).unwrap_err().to_string();
        assert!(err.contains("parameter b received no gradient"), "{err}");
        assert_eq!(values(&params), before);
        assert_eq!(opt.t, 0);
    }
}
