//! Each node's place on the path, measured as it is recorded: how far its
//! samples lie from the data and from G⁰'s (`path/nodes.json`, and the
//! lab's path panel), so that a path degraded too far (the paper's Table
//! 6 failure: nodes that no longer make sensible samples) shows before the
//! generator is sent down it; and how far its denoiser lies from the
//! teacher's and the last node's on the functional probe (`probe`).

use super::probe::FunctionalProbe;
use super::protocol::NodeSpread;
use super::session::Session;
use crate::data::Samples;
use crate::diffusion::{heun_sample, model_denoise_fn};
use crate::model::Denoiser;
use crate::rng::{host_rng, normal_tensor, streams};
use anyhow::Result;

impl Session {
    /// `model`'s distance to the data and to G⁰, each on `metrics.samples`
    /// samples (Heun samples in `metrics.sampler_steps` steps), by the
    /// measure comparisons are judged on. Drawn from a
    /// stream of its own, so measuring changes no training draw. `None`
    /// when `metrics.path_spread` is off.
    pub(super) fn node_spread(&self, model: &Denoiser) -> Result<Option<NodeSpread>> {
        // Rank 0 measures; the others leave it out of their (unwritten) index.
        if !self.config.metrics.path_spread || !self.leads() {
            return Ok(None);
        }
        let mut rng = host_rng(self.config.seed, streams::PATH_SPREAD);
        let n = self.evaluator.samples();
        let data = self.evaluator.data_samples(&mut rng);
        let start = Samples::from_tensor(&self.student.average.generate(n, &mut rng)?)?;
        let grid = self.noise.karras(self.config.metrics.sampler_steps);
        let mut shape = vec![n];
        shape.extend(self.data.sample_shape());
        let noise = (normal_tensor(&mut rng, shape, &model.device())? * grid[0])?;
        let samples = Samples::from_tensor(&heun_sample(model_denoise_fn(model), noise, &grid)?)?;
        let (to_data, measure) = self.evaluator.distance(&samples, &data)?;
        let (to_start, _) = self.evaluator.distance(&samples, &start)?;
        Ok(Some(NodeSpread {
            to_data,
            to_start,
            measure: measure.into(),
        }))
    }
}

/// Heun steps of the teacher's own samples when they are judged: the step
/// count EDM samples CIFAR-10 with, so the judge sees the teacher at its
/// best (a measurement made once a comparison).
const JUDGE_HEUN_STEPS: usize = 18;

impl Session {
    /// The teacher's own samples (`log.final_samples` of them, Heun) judged
    /// like a generator's final ones, so that a comparison shows whether
    /// the teacher itself clears the bar its students are held to.
    pub fn teacher_evaluation(&self) -> Result<crate::metrics::Evaluation> {
        let mut rng = host_rng(self.config.seed, streams::PATH_SPREAD);
        let n = self.config.log.final_samples;
        let grid = self
            .noise
            .karras(self.config.diffusion.sampler_steps.min(JUDGE_HEUN_STEPS));
        let mut shape = vec![n];
        shape.extend(self.data.sample_shape());
        let noise = (normal_tensor(&mut rng, shape, &self.teacher.device())? * grid[0])?;
        let samples = heun_sample(model_denoise_fn(&self.teacher), noise, &grid)?;
        self.evaluator
            .distribution(&Samples::from_tensor(&samples)?, &mut rng)
    }
}

impl Session {
    /// Draws the run's probe on first use (rank 0 only: the others measure
    /// nothing). G⁰ is the student's average, untouched until backtracking
    /// starts (when every node has been measured), so a resumed run draws
    /// the same probe.
    pub(super) fn ready_probe(&mut self) -> Result<()> {
        if self.probe.is_none() && self.leads() {
            let samples = FunctionalProbe::samples_for(&self.config);
            let g0 = &self.student.average;
            let probe = FunctionalProbe::new(g0, self.config.sigma_data(), self.config.seed, samples)?;
            self.probe = Some(probe);
        }
        Ok(())
    }

    /// Recording is over: every node's distance from the last one (nodes
    /// recorded before a resume are read back from their files).
    pub(super) fn measure_path_ends(&mut self) -> Result<()> {
        self.ready_probe()?;
        let nodes = self.path.len();
        let Some(probe) = self.probe.as_mut().filter(|_| nodes >= 2) else {
            return Ok(());
        };
        let missing: Vec<usize> = (0..nodes).filter(|&i| !probe.has_node(i)).collect();
        if !missing.is_empty() {
            let node = self.teacher.deep_clone()?;
            for index in missing {
                node.load(&self.path.file(index))?;
                probe.probe_node(index, &node)?;
            }
        }
        let to_start = (0..nodes)
            .map(|i| probe.node_distance(i, nodes - 1))
            .collect::<Result<Vec<_>>>()?;
        self.path.set_distances_to_start(&to_start)
    }
}
