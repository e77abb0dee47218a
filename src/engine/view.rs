//! The session's state as the lab sees it ([`SessionView`], plain data:
//! no tensors, nothing to lock).

use super::probe::FunctionalProbe;
use super::protocol::{NodeStatus, NodeView, Seconds, SessionView};
use super::session::Session;
use super::teacher::heun_sampler;
use crate::config::Method;
use crate::rundir::Stage;

impl Session {
    pub fn view(&self) -> SessionView {
        let c = &self.config;
        let (stage_step, stage_total) = match self.phase.stage() {
            Stage::Pretrain => (self.clock.stage_step, c.teacher.steps),
            Stage::Record => (self.clock.stage_step, c.record.iterations),
            Stage::Backtrack => (self.schedule().total(), self.schedule().budget()),
            Stage::Done => (self.schedule().total(), self.schedule().budget()),
        };
        SessionView {
            method: c.method,
            stage: self.phase.stage(),
            device: self.device_name.clone(),
            data: self.describe_problem(),
            run_dir: self.run.root().to_path_buf(),
            stage_step,
            stage_total,
            iteration: self.clock.iteration,
            cost: self.clock.cost,
            nodes: self.node_views(),
            target: matches!(self.phase.stage(), Stage::Backtrack).then(|| self.schedule().target()),
            policy: self.schedule().policy(),
            latest: self.latest.clone(),
            latest_eval: self.latest_eval.clone(),
            failure: self.failure.clone(),
            measuring: self.describe_measuring(),
            seconds: Seconds {
                training: self.clock.seconds,
                measuring: self.clock.measuring,
            },
        }
    }

    /// What the run measures, when, and on how many of which samples.
    fn describe_measuring(&self) -> String {
        let m = &self.config.metrics;
        let when = match m.every {
            0 => "at the start and the end of backtracking".to_string(),
            n => format!("every {n} generator steps and at the end"),
        };
        let probe = FunctionalProbe::describe(FunctionalProbe::samples_for(&self.config));
        let nodes = match (self.config.method, m.path_spread) {
            (Method::DiffInstruct, _) => "no path".to_string(),
            (Method::Disback, true) => format!(
                "each node: {probe}, and {} of its samples ({}) against the data and G⁰",
                m.samples,
                heun_sampler(m.sampler_steps)
            ),
            (Method::Disback, false) => {
                format!("each node: {probe}; its samples not measured (metrics.path_spread)")
            }
        };
        format!("measuring {when}: {}; {nodes}", self.evaluator.describe())
    }

    /// The data, and for a pretrained teacher its folder and size: what
    /// the lab's header names.
    fn describe_problem(&self) -> String {
        let data = self.data.describe();
        match &self.config.teacher.pretrained {
            Some(dir) => {
                let n = self.teacher.params().count() as f64;
                let size = match n {
                    n if n >= 1e6 => format!("{:.1} M", n / 1e6),
                    n => format!("{:.1} k", n / 1e3),
                };
                let name = dir
                    .file_name()
                    .map_or(dir.display().to_string(), |f| f.to_string_lossy().into_owned());
                format!("{data} · teacher {name} ({size} parameters)")
            }
            None => data,
        }
    }

    fn node_views(&self) -> Vec<NodeView> {
        let recorded = self.path.len();
        let planned_nodes = match self.phase.stage() {
            // Before backtracking the plan is the config's; after, the path.
            Stage::Pretrain | Stage::Record => self.config.planned_nodes() + 1,
            _ => recorded.max(1),
        };
        let targets = self.schedule().targets();
        (0..planned_nodes)
            .map(|index| {
                let slot = targets.iter().position(|&t| t == index);
                let status = match self.phase.stage() {
                    Stage::Pretrain => NodeStatus::Pending,
                    Stage::Record if index < recorded => NodeStatus::Recorded,
                    Stage::Record if index == recorded => NodeStatus::Recording,
                    Stage::Record => NodeStatus::Pending,
                    Stage::Backtrack => match slot {
                        Some(p) if p == self.schedule().position() => NodeStatus::Target,
                        Some(p) if p < self.schedule().position() => NodeStatus::Passed,
                        Some(_) => NodeStatus::Recorded,
                        None => NodeStatus::Passed,
                    },
                    Stage::Done => NodeStatus::Passed,
                };
                let in_backtracking = matches!(self.phase.stage(), Stage::Backtrack | Stage::Done);
                NodeView {
                    index,
                    status,
                    steps: slot
                        .filter(|_| in_backtracking)
                        .map_or(0, |p| self.schedule().spent()[p]),
                    planned: slot.map(|p| self.schedule().planned()[p]),
                    spread: self.path.nodes().get(index).and_then(|n| n.spread.clone()),
                    gap: self.path.nodes().get(index).and_then(|n| n.gap.clone()),
                }
            })
            .collect()
    }
}
