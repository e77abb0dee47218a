//! The method, as the paper writes it: stage 1 records the degradation path
//! ([`DegradationRecorder`], Algorithm 1), stage 2 walks it back to the
//! teacher ([`Backtracker`], Algorithm 2; the Diff-Instruct baseline is the
//! same walk on a one-node path), both training a [`Student`] generator
//! with the score-distillation loss. Nothing here writes a file: the engine
//! drives these types and keeps the clock, the run directory and the
//! measurements.

mod backtracker;
mod loss;
mod noise;
mod recorder;
mod schedule;
mod student;

pub use backtracker::{Backtracker, NodeSource};
pub use loss::GeneratorLoss;
pub use noise::NoiseLaws;
pub use recorder::{DegradationRecorder, NodeDue, RecordProgress};
pub use schedule::{BacktrackSchedule, Decision};
pub use student::Student;
