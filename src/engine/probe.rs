//! Each node's place on the path by what it computes, not by what it
//! samples: the root-mean-square difference of two denoisers' outputs on a
//! fixed probe batch of G⁰'s samples, noised at a few σ. It costs a few
//! forward passes (no sampling), so it is always measured, and it shows
//! what the sample distances of `spread` can hide: a copy whose samples
//! already look like G⁰'s can still be a gradual step from the teacher in
//! the field the generator loss reads, and the reverse.
//!
//! `path/nodes.json` keeps, per node, its distance from the teacher (node
//! 0) and from the last node (s'θ fitted to G⁰: where s_φ starts, the
//! nearest thing to G⁰'s own denoiser), in units of σ_data.
//!
//! Each node's outputs on the probe are kept once computed, so a path of
//! N + 1 nodes costs N + 1 probe evaluations in all (not one per pair, and
//! no node file is read again at the end of recording).

use super::protocol::NodeGap;
use crate::config::Config;
use crate::model::{Denoiser, Generator, frozen};
use crate::rng::{host_rng, normal_tensor, streams};
use anyhow::{Result, ensure};
use candle_core::Tensor;

/// G⁰ samples in the probe batch of points: a distance over 256 × 5
/// outputs moves by well under 1% between probes, for milliseconds.
const PROBE_POINTS: usize = 256;

/// G⁰ samples in the probe batch of images: each is a network evaluation
/// per σ at the teacher's size, and an image holds hundreds of outputs
/// (8 × 5 evaluations a node: about one training iteration at batch 16).
const PROBE_IMAGES: usize = 8;

/// The probe's noise levels, in units of σ_data: from nearly clean to
/// nearly pure noise, the range the generator loss draws from.
const PROBE_SIGMAS: [f64; 5] = [0.1, 0.3, 1.0, 3.0, 10.0];

/// A fixed batch of G⁰'s samples, each noised once at every probe σ, and
/// the outputs of the nodes probed so far.
pub struct FunctionalProbe {
    /// (noised batch, σ) pairs.
    inputs: Vec<(Tensor, f64)>,
    sigma_data: f64,
    /// Node i's outputs at `inputs`, once probed.
    outputs: Vec<Option<Vec<Tensor>>>,
}

impl FunctionalProbe {
    /// The probe batch of a run: a few images, or more points.
    pub fn samples_for(config: &Config) -> usize {
        match config.data.is_image() {
            true => PROBE_IMAGES,
            false => PROBE_POINTS,
        }
    }

    /// What the probe measures on, in words (the run's header).
    pub fn describe(samples: usize) -> String {
        format!(
            "functional distance on {samples} G⁰ samples at {} σ",
            PROBE_SIGMAS.len()
        )
    }

    /// Draws `samples` from `g0` (its own stream of `seed`: measuring
    /// changes no training draw, and every node is probed on the same
    /// points).
    pub fn new(g0: &Generator, sigma_data: f64, seed: u64, samples: usize) -> Result<Self> {
        let mut rng = host_rng(seed, streams::PATH_PROBE);
        let x0 = g0.generate(samples, &mut rng)?;
        let inputs = PROBE_SIGMAS
            .iter()
            .map(|&s| {
                let sigma = s * sigma_data;
                let noise = normal_tensor(&mut rng, x0.shape(), &x0.device().clone())?;
                Ok(((&x0 + (noise * sigma)?)?, sigma))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            inputs,
            sigma_data,
            outputs: Vec::new(),
        })
    }

    /// `model`'s denoised outputs at every probe input, without a graph.
    fn outputs_of(&self, model: &Denoiser) -> Result<Vec<Tensor>> {
        self.inputs
            .iter()
            .map(|(x, sigma)| {
                let levels = model.levels(vec![*sigma as f32; x.dim(0)?], &x.device().clone())?;
                frozen(|| model.denoise(x, &levels))
            })
            .collect()
    }

    /// RMS of the difference of two sets of outputs over the samples,
    /// their coordinates and the probe σ, divided by σ_data.
    fn rms(&self, a: &[Tensor], b: &[Tensor]) -> Result<f64> {
        let mut sum = 0.0;
        for (a, b) in a.iter().zip(b) {
            sum += (a - b)?
                .sqr()?
                .mean_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
        Ok((sum / self.inputs.len() as f64).sqrt() / self.sigma_data)
    }

    /// RMS of `D_a(x; σ) − D_b(x; σ)` over the probe's samples, their
    /// coordinates and the probe σ, divided by σ_data.
    pub fn distance(&self, a: &Denoiser, b: &Denoiser) -> Result<f64> {
        self.rms(&self.outputs_of(a)?, &self.outputs_of(b)?)
    }

    /// Probes node `index` (`model`) unless it was probed already.
    pub fn probe_node(&mut self, index: usize, model: &Denoiser) -> Result<()> {
        if self.outputs.len() <= index {
            self.outputs.resize(index + 1, None);
        }
        if self.outputs[index].is_none() {
            self.outputs[index] = Some(self.outputs_of(model)?);
        }
        Ok(())
    }

    /// Node `index` (`model`)'s distance from the teacher (node 0); its
    /// distance from the last node is known when recording ends
    /// (`Session::measure_path_ends`).
    pub fn gap(&mut self, index: usize, teacher: &Denoiser, model: &Denoiser) -> Result<NodeGap> {
        // After a resume mid-recording the teacher's outputs are gone.
        self.probe_node(0, teacher)?;
        self.probe_node(index, model)?;
        Ok(NodeGap {
            to_teacher: self.node_distance(index, 0)?,
            to_start: None,
        })
    }

    /// Whether node `index` has been probed.
    pub fn has_node(&self, index: usize) -> bool {
        self.outputs.get(index).is_some_and(Option::is_some)
    }

    /// The distance between two probed nodes.
    pub fn node_distance(&self, a: usize, b: usize) -> Result<f64> {
        let get = |i: usize| {
            let outputs = self.outputs.get(i).and_then(Option::as_ref);
            ensure!(outputs.is_some(), "node {i} has not been probed");
            Ok(outputs.unwrap())
        };
        self.rms(get(a)?, get(b)?)
    }
}
