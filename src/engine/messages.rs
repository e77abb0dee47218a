//! Every message between training and its drivers, in one place:
//!
//! ```text
//!  terminal lab (ui/)                       training thread (engine/trainer.rs)
//!  ──────────────────                       ───────────────────────────────────
//!  keys ──▶ Command ──────── channel ──────▶ Session::step / skip / save …
//!                                                     │
//!  panels ◀── Update ◀────── channel ─────── Event (from the session), and
//!             Started / View (SessionView)            SessionView, PreviewData,
//!             Session(Event), Preview(PreviewData)    Paused, Failed, Stopped
//! ```
//!
//! The headless runner (`disback run`) reads the same [`Event`]s straight
//! from [`super::Session::step`]. Plain data only: no tensors cross.

use super::field::ScoreField;
use super::log::{MetricsRecord, Stage};
use super::view::SessionView;
use crate::data::{Bounds, Point};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What happened during a call, for drivers to show or print.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Event {
    StageStarted(Stage),
    /// The teacher is ready: trained now, or loaded from `source`.
    TeacherReady {
        source: String,
    },
    /// Labelled images: the classifier behind class coverage and the
    /// classifier Fréchet distance is ready, with its held-out accuracy.
    ClassifierReady {
        accuracy: f64,
    },
    /// Node `index` of the path, after `iteration` recording iterations.
    NodeRecorded {
        index: usize,
        iteration: usize,
        file: PathBuf,
    },
    /// A new backtracking target was loaded (`from` is None for the first).
    TargetSwitched {
        from: Option<usize>,
        to: usize,
    },
    Logged(Box<MetricsRecord>),
    Checkpointed {
        iteration: usize,
        dir: PathBuf,
    },
    Saved(PathBuf),
    /// Something a user should know that did not stop the run.
    Warning(String),
    Finished,
}

/// What the front end asks of training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Pause,
    Resume,
    /// One iteration (while paused).
    Step,
    /// Skip to the next checkpoint of the stage (see [`Session::skip`]).
    Skip,
    /// Manual schedule on or off.
    SetManual(bool),
    /// Save the generator into the run directory.
    SaveGenerator,
    /// Which preview to compute.
    SetPreview(Preview),
    /// Noise level of the score-field preview (data units).
    SetFieldSigma(f32),
    /// Save the generator and a resumable checkpoint, then end: the user
    /// stopped the run (`disback stop`, the lab's stop, a signal).
    Stop,
    /// End without saving (a finished run's last viewer quit).
    Quit,
    /// Whether any front end is watching: without one, no previews are
    /// computed.
    Watched(bool),
}

/// A front end's two ends of the conversation with training, whatever
/// carries it: the in-process channel or a runner's socket.
pub struct Link {
    pub commands: std::sync::mpsc::Sender<Command>,
    pub updates: tokio::sync::mpsc::UnboundedReceiver<Update>,
}

/// The preview views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Preview {
    /// Generator samples over the data.
    #[default]
    Generator,
    /// Heun samples of the model being trained or targeted: the teacher
    /// while pretraining, the degrading copy while recording, the current
    /// target while backtracking.
    Model,
    /// The target's score field against s_φ's, on a grid.
    ScoreField,
}

impl Preview {
    pub fn next(self) -> Self {
        match self {
            Preview::Generator => Preview::Model,
            Preview::Model => Preview::ScoreField,
            Preview::ScoreField => Preview::Generator,
        }
    }
}

/// Preview data, as plain vectors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PreviewData {
    Generator(Vec<Point>),
    /// Heun samples of a model, under a label naming it (`s'θ2`, `teacher`).
    Model {
        label: String,
        samples: Vec<Point>,
    },
    ScoreField(ScoreField),
}

impl PreviewData {
    /// The view this data is for.
    pub fn kind(&self) -> Preview {
        match self {
            PreviewData::Generator(_) => Preview::Generator,
            PreviewData::Model { .. } => Preview::Model,
            PreviewData::ScoreField(_) => Preview::ScoreField,
        }
    }
}

/// What training tells the front end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Update {
    /// Sent once: the first view, data samples to draw behind previews, and
    /// the region previews cover.
    Started {
        view: Box<SessionView>,
        data: Vec<Point>,
        bounds: Bounds,
    },
    /// The session's state, a few times a second, with the iteration rate.
    View {
        view: Box<SessionView>,
        rate: f64,
    },
    Session(Event),
    Preview(PreviewData),
    Paused(bool),
    /// Training stopped on an error; the state stays viewable.
    Failed(String),
    /// Whether this front end may steer the run (false: another lab
    /// attached to the same runner steers, this one watches).
    Control(bool),
    /// The thread is ending (after Stop or Quit).
    Stopped,
}
