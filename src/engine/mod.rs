//! The engine: the steppable [`Session`], its run directory, metrics log
//! and checkpoints, and a plain-data view of its state for drivers.

mod board;
mod checkpoint;
mod clock;
mod cost;
mod field;
mod losses;
mod outputs;
mod path;
mod phase;
mod pretrain;
mod previews;
pub mod protocol;
mod session;
mod spread;
mod teacher;
mod team;
pub mod trainer;
mod view;

pub use checkpoint::checkpoint_iteration;
pub use cost::PassCost;
pub use phase::Moment;

pub use outputs::ModelKind;
pub use session::Session;
pub use team::team_run_dir;
