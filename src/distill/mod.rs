//! Distillation: the degradation path (stage 1), the backtracking schedule
//! (stage 2) and the score-distillation losses shared with the baseline.

mod loss;
mod path;
mod schedule;

pub use loss::{GeneratorLoss, generator_loss};
pub use path::{DegradationPath, NodeInfo};
pub use schedule::{BacktrackSchedule, Decision, Policy};
