//! The engine: the steppable [`Session`], its run directory, metrics log
//! and checkpoints, and a plain-data view of its state for drivers.

mod board;
mod checkpoint;
mod clock;
mod cost;
mod crew;
mod field;
mod losses;
mod outputs;
mod path;
mod phase;
mod pretrain;
mod previews;
mod probe;
pub mod protocol;
mod session;
mod spread;
mod teacher;
mod team;
pub mod trainer;
mod view;

pub use checkpoint::{checkpoint_iteration, checkpoint_stage};
pub use cost::PassCost;
pub use phase::Moment;
pub use probe::FunctionalProbe;

pub use crew::{sessions_in_this_process, team_run_dir};
pub use protocol::ModelKind;
pub use session::Session;
