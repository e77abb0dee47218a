//! Each node's place on the path by what it computes, not by what it
//! samples: the root-mean-square difference of two denoisers' outputs on a
//! fixed probe batch of G⁰'s samples, noised at a few σ. It costs a few
//! forward passes (milliseconds on the toys, no sampling), so it is always
//! measured, and it shows what the sample distances of `spread` can hide: a
//! copy whose samples already look like G⁰'s can still be a gradual step
//! from the teacher in the field the generator loss reads, and the reverse.
//!
//! `path/nodes.json` keeps, per node, its distance from the teacher (node
//! 0) and from the last node (s'θ fitted to G⁰: where s_φ starts, the
//! nearest thing to G⁰'s own denoiser), in units of σ_data.

use super::protocol::NodeGap;
use super::session::Session;
use crate::model::{Denoiser, Generator, frozen};
use crate::rng::{host_rng, normal_tensor, streams};
use anyhow::Result;
use candle_core::Tensor;

/// G⁰ samples in the probe batch.
const PROBE_SAMPLES: usize = 256;

/// The probe's noise levels, in units of σ_data: from nearly clean to
/// nearly pure noise, the range the generator loss draws from.
const PROBE_SIGMAS: [f64; 5] = [0.1, 0.3, 1.0, 3.0, 10.0];

/// A fixed batch of G⁰'s samples, each noised once at every probe σ.
pub struct FunctionalProbe {
    /// (noised batch, σ) pairs.
    inputs: Vec<(Tensor, f64)>,
    sigma_data: f64,
}

impl FunctionalProbe {
    /// Draws the probe from `g0` (its own stream of `seed`: measuring
    /// changes no training draw, and every node is probed on the same
    /// points).
    pub fn new(g0: &Generator, sigma_data: f64, seed: u64) -> Result<Self> {
        let mut rng = host_rng(seed, streams::PATH_PROBE);
        let x0 = g0.generate(PROBE_SAMPLES, &mut rng)?;
        let inputs = PROBE_SIGMAS
            .iter()
            .map(|&s| {
                let sigma = s * sigma_data;
                let noise = normal_tensor(&mut rng, x0.shape(), &x0.device().clone())?;
                Ok(((&x0 + (noise * sigma)?)?, sigma))
            })
            .collect::<Result<_>>()?;
        Ok(Self { inputs, sigma_data })
    }

    /// RMS of `D_a(x; σ) − D_b(x; σ)` over the probe's samples, their
    /// coordinates and the probe σ, divided by σ_data.
    pub fn distance(&self, a: &Denoiser, b: &Denoiser) -> Result<f64> {
        let mut sum = 0.0;
        for (x, sigma) in &self.inputs {
            let levels = a.levels(vec![*sigma as f32; x.dim(0)?], &x.device().clone())?;
            let diff =
                frozen(|| -> Result<Tensor> { Ok((a.denoise(x, &levels)? - b.denoise(x, &levels)?)?) })?;
            sum += diff
                .sqr()?
                .mean_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
        Ok((sum / self.inputs.len() as f64).sqrt() / self.sigma_data)
    }
}

impl Session {
    /// The probe of this run: G⁰ is the student's average, untouched
    /// until backtracking starts (when every node has been measured).
    fn probe(&self) -> Result<FunctionalProbe> {
        FunctionalProbe::new(&self.student.average, self.config.sigma_data(), self.config.seed)
    }

    /// `model`'s distance from the teacher; its distance from G⁰'s fitted
    /// copy is filled in when recording ends ([`Session::measure_path_ends`]).
    pub(super) fn node_gap(&self, model: &Denoiser) -> Result<Option<NodeGap>> {
        if !self.leads() {
            return Ok(None);
        }
        Ok(Some(NodeGap {
            to_teacher: self.probe()?.distance(model, &self.teacher)?,
            to_start: None,
        }))
    }

    /// Recording is over: every node's distance from the last one.
    pub(super) fn measure_path_ends(&mut self) -> Result<()> {
        if !self.leads() || self.path.len() < 2 {
            return Ok(());
        }
        let probe = self.probe()?;
        let (last, node) = (self.teacher.deep_clone()?, self.teacher.deep_clone()?);
        last.load(&self.path.file(self.path.len() - 1))?;
        let mut to_start = Vec::with_capacity(self.path.len());
        for index in 0..self.path.len() {
            node.load(&self.path.file(index))?;
            to_start.push(probe.distance(&node, &last)?);
        }
        self.path.set_distances_to_start(&to_start)
    }
}
