//! The engine: the steppable [`Session`], its run directory, metrics log
//! and checkpoints, and a plain-data view of its state for drivers.

mod checkpoint;
mod clock;
pub mod compare;
mod field;
mod lock;
mod log;
mod messages;
mod outputs;
mod path;
mod pretrain;
mod previews;
mod rundir;
mod session;
pub mod trainer;
mod view;

pub use checkpoint::checkpoint_iteration;
pub use clock::Clock;
pub use field::{FIELD_GRID, ScoreField};
pub use log::{MetricsLog, MetricsRecord, Stage, read_metrics};
pub use outputs::ModelKind;
pub use path::{DegradationPath, NodeInfo};
pub use rundir::{RunDir, read_points_csv, write_points_csv};
pub use session::{Event, Session};
pub use view::{NodeStatus, NodeView, SessionView};
