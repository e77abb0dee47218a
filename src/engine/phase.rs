//! Where a session is, held once: the [`Phase`] owns what only its stage
//! has (the teacher's optimiser, the degrading copy, the backtracker), so
//! a stage's state cannot outlive it or be missing in it. Beside it the
//! [`Clock`], the counters every stage advances.

use crate::distill::{BacktrackSchedule, Backtracker, DegradationRecorder};
use crate::optim::Adam;
use crate::rng::HostRng;
use crate::rundir::Stage;

/// The session's counters. Each has one meaning:
/// - `iteration`: iterations of every stage so far, teacher pretraining
///   included (the checkpoint clock);
/// - `stage_step`: iterations of the current stage;
/// - `cost`: distillation iterations, recording plus generator steps;
/// - `passes`: what those iterations cost in network passes
///   ([`super::cost::PassCost`]), the unit comparisons count in;
/// - `seconds`: the compute time of those iterations in this process (not
///   saved with a checkpoint: it differs from run to run);
/// - `measuring`: this process's seconds spent measuring (the distances,
///   the teacher's samples standing in for absent data, the nodes'
///   samples), likewise not saved: what the measurements cost beside the
///   training's `seconds`.
///
/// Per-target generator steps are the schedule's (`BacktrackSchedule::spent`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Clock {
    pub stage_step: usize,
    pub iteration: usize,
    pub cost: usize,
    pub passes: f64,
    pub seconds: f64,
    pub measuring: f64,
}

/// Where a measurement was taken, in every unit of cost.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Moment {
    pub cost: usize,
    pub passes: f64,
    pub seconds: f64,
}

/// Teacher pretraining's own state: its optimiser and data stream.
pub(super) struct Pretraining {
    pub opt: Adam,
    pub rng: HostRng,
}

/// The stage a session is in, with what only that stage has. Before stage
/// 2 exists, `plan` is its schedule as configured: what the lab shows as
/// the plan, and where the manual toggle waits until backtracking starts.
pub(super) enum Phase {
    /// The teacher is being trained on the data (a session whose teacher
    /// is loaded leaves this phase before its first step).
    Pretrain {
        training: Pretraining,
        plan: BacktrackSchedule,
    },
    /// Stage 1: the teacher's copy degrades toward G⁰ (for the baseline's
    /// `fit` start of s_φ: s_φ is fitted to G⁰).
    Record {
        recorder: DegradationRecorder,
        plan: BacktrackSchedule,
    },
    /// Stage 2: the generator walks the path back to the teacher.
    Backtrack(Backtracker),
    /// The generator is final; the walk's models stay for previews.
    Done(Backtracker),
}

impl Phase {
    pub fn stage(&self) -> Stage {
        match self {
            Phase::Pretrain { .. } => Stage::Pretrain,
            Phase::Record { .. } => Stage::Record,
            Phase::Backtrack(_) => Stage::Backtrack,
            Phase::Done(_) => Stage::Done,
        }
    }

    /// The backtracking schedule: stage 2's own, or the plan before it.
    pub fn schedule(&self) -> &BacktrackSchedule {
        match self {
            Phase::Pretrain { plan, .. } | Phase::Record { plan, .. } => plan,
            Phase::Backtrack(b) | Phase::Done(b) => &b.schedule,
        }
    }

    pub fn schedule_mut(&mut self) -> &mut BacktrackSchedule {
        match self {
            Phase::Pretrain { plan, .. } | Phase::Record { plan, .. } => plan,
            Phase::Backtrack(b) | Phase::Done(b) => &mut b.schedule,
        }
    }

    /// Stage 2's models, from backtracking on.
    pub fn backtracker(&self) -> Option<&Backtracker> {
        match self {
            Phase::Backtrack(b) | Phase::Done(b) => Some(b),
            _ => None,
        }
    }

    /// Stage 1's models, while recording.
    pub fn recorder(&self) -> Option<&DegradationRecorder> {
        match self {
            Phase::Record { recorder, .. } => Some(recorder),
            _ => None,
        }
    }

    /// The end of the walk: the same models, no more steps.
    pub fn finish(self) -> Phase {
        match self {
            Phase::Backtrack(b) => Phase::Done(b),
            other => other,
        }
    }
}
