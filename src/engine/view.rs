//! A plain-data picture of a session, for the terminal lab and progress
//! lines: no tensors, nothing to lock.

use super::log::{MetricsRecord, Stage};
use super::session::Session;
use crate::config::{Method, SchedulePolicy};
use crate::metrics::Evaluation;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeStatus {
    /// Not recorded yet.
    Pending,
    /// Being recorded now (the next node of stage 1).
    Recording,
    /// Recorded, not yet a target.
    Recorded,
    /// The current backtracking target.
    Target,
    /// Already backtracked past (or, for the last node, where s_φ started).
    Passed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub index: usize,
    pub status: NodeStatus,
    /// Generator steps spent with this node as the target.
    pub steps: usize,
    /// Steps the schedule plans for it (None when it is no target).
    pub planned: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionView {
    pub method: Method,
    pub stage: Stage,
    pub device: String,
    pub data: String,
    pub run_dir: PathBuf,
    /// Iterations of the current stage, and how many it has in all (the
    /// generator budget while backtracking).
    pub stage_step: usize,
    pub stage_total: usize,
    pub iteration: usize,
    pub cost: usize,
    pub nodes: Vec<NodeView>,
    pub target: Option<usize>,
    pub policy: SchedulePolicy,
    pub latest: Option<MetricsRecord>,
    pub latest_eval: Option<Evaluation>,
    pub failure: Option<String>,
}

impl Session {
    pub fn view(&self) -> SessionView {
        let c = &self.config;
        let (stage_step, stage_total) = match self.clock.stage {
            Stage::Pretrain => (self.clock.stage_step, c.teacher.steps),
            Stage::Record => (self.clock.stage_step, c.record.iterations),
            Stage::Backtrack => (self.schedule().total(), self.schedule().budget()),
            Stage::Done => (self.schedule().total(), self.schedule().budget()),
        };
        SessionView {
            method: c.method,
            stage: self.clock.stage,
            device: self.device_name.clone(),
            data: self.data.describe(),
            run_dir: self.run.root().to_path_buf(),
            stage_step,
            stage_total,
            iteration: self.clock.iteration,
            cost: self.clock.cost,
            nodes: self.node_views(),
            target: matches!(self.clock.stage, Stage::Backtrack).then(|| self.schedule().target()),
            policy: self.schedule().policy(),
            latest: self.latest.clone(),
            latest_eval: self.latest_eval.clone(),
            failure: self.failure.clone(),
        }
    }

    fn node_views(&self) -> Vec<NodeView> {
        let recorded = self.path.len();
        let planned_nodes = match self.clock.stage {
            // Before backtracking the plan is the config's; after, the path.
            Stage::Pretrain | Stage::Record => self.config.planned_nodes() + 1,
            _ => recorded.max(1),
        };
        let targets = self.schedule().targets();
        (0..planned_nodes)
            .map(|index| {
                let slot = targets.iter().position(|&t| t == index);
                let status = match self.clock.stage {
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
                let in_backtracking = matches!(self.clock.stage, Stage::Backtrack | Stage::Done);
                NodeView {
                    index,
                    status,
                    steps: slot
                        .filter(|_| in_backtracking)
                        .map_or(0, |p| self.schedule().spent()[p]),
                    planned: slot.map(|p| self.schedule().planned()[p]),
                }
            })
            .collect()
    }
}
