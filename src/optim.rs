//! Adam with state we own: candle's AdamW keeps its moments private, so a
//! run could not be resumed exactly; and its default weight decay is not 0.

use crate::model::Params;
use anyhow::{Context, Result, ensure};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use std::collections::HashMap;

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;
const EPS: f64 = 1e-8;

#[derive(Debug)]
pub struct Adam {
    vars: Vec<(String, Var)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates taken so far (for bias correction).
    pub t: u64,
    pub lr: f64,
}

impl Adam {
    pub fn new(params: &Params, lr: f64) -> Result<Self> {
        let vars: Vec<(String, Var)> = params.iter().map(|(n, v)| (n.to_string(), v.clone())).collect();
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Self {
            m: vars
                .iter()
                .map(|(_, v)| zeros(v))
                .collect::<candle_core::Result<_>>()?,
            v: vars
                .iter()
                .map(|(_, v)| zeros(v))
                .collect::<candle_core::Result<_>>()?,
            vars,
            t: 0,
            lr,
        })
    }

    /// One update from the gradients of a backward pass. A parameter with no
    /// gradient is an error: it means the graph does not reach it.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        // Bias corrections folded into the step size and epsilon.
        let c1 = 1.0 - BETA1.powi(t);
        let c2 = 1.0 - BETA2.powi(t);
        let step_size = self.lr * c2.sqrt() / c1;
        let eps = EPS * c2.sqrt();
        for (i, (name, var)) in self.vars.iter().enumerate() {
            // Gradients carry candle's op graph (they are computed from the
            // weights); detached, the moments cannot chain one step's graph
            // to the next and grow without bound.
            let g = grads
                .get(var.as_tensor())
                .with_context(|| format!("parameter {name} received no gradient"))?
                .detach();
            let m = ((&self.m[i] * BETA1)? + (&g * (1.0 - BETA1))?)?;
            let v = ((&self.v[i] * BETA2)? + (g.sqr()? * (1.0 - BETA2))?)?;
            let update = (&m / (v.sqrt()? + eps)?)?;
            var.set(&(var.as_detached_tensor() - (update * step_size)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// The moments as named tensors, for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.vars.len());
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.push((format!("m.{name}"), self.m[i].clone()));
            out.push((format!("v.{name}"), self.v[i].clone()));
        }
        out
    }

    /// Restores the moments saved by [`Adam::state_tensors`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, t: u64, source: &str) -> Result<()> {
        for (i, (name, var)) in self.vars.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
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
                *slot = saved.to_device(var.device())?;
            }
        }
        self.t = t;
        Ok(())
    }
}
