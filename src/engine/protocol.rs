//! Every message between training and its drivers, in one place:
//!
//! ```text
//!  terminal lab (ui/)                       training thread (engine/trainer.rs)
//!  ──────────────────                       ───────────────────────────────────
//!  keys ──▶ Command ──────── channel ──────▶ Session::step / skip / save …
//!                                                     │
//!  panels ◀── Update ◀────── channel ─────── Event (from the session), and
//!             Started / View (SessionView)            SessionView, DataInfo, PreviewData,
//!             Session(Event), Preview(PreviewData)    Paused, Failed, Stopped
//! ```
//!
//! The headless runner (`disback run`) reads the same [`Event`]s straight
//! from `Session::step`. Plain data only: no tensors cross. This
//! file imports no file that holds `impl Session`: it is the vocabulary the
//! session, the runner and the lab share.

use crate::config::{Method, SchedulePolicy};
use crate::data::{Bounds, PixelImages, Point};
use crate::metrics::Evaluation;
use crate::rundir::{MetricsRecord, ScoreField, Stage};
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
    /// Node `index` of the path, after `iteration` recording iterations,
    /// and how far it lies from the data and from G⁰.
    NodeRecorded {
        index: usize,
        iteration: usize,
        file: PathBuf,
        spread: Option<NodeSpread>,
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
    /// Which preview to compute (a node's: once, as nodes do not change).
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
    /// The thread that carries commands to a runner, if one does: see
    /// [`Link::close`].
    pub carrier: Option<std::thread::JoinHandle<()>>,
}

impl Link {
    /// Lets go of training, after every command sent so far is delivered:
    /// a key pressed just before leaving (resume, then detach) is not lost
    /// when the process ends.
    pub fn close(self) {
        let Link {
            commands, carrier, ..
        } = self;
        drop(commands);
        if let Some(carrier) = carrier {
            let _ = carrier.join();
        }
    }
}

/// The preview views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Preview {
    /// Generator samples (over the data for points; from fixed latents for
    /// images, so that frames compare over time).
    #[default]
    Generator,
    /// Heun samples of the model being trained or targeted: the teacher
    /// while pretraining, the degrading copy while recording, the current
    /// target while backtracking.
    Model,
    /// Data samples, for reference (images only: points have the data
    /// behind every scatter).
    Data,
    /// The target's score field against s_φ's, on a grid (points only).
    ScoreField,
    /// Heun samples of one recorded node of the degradation path (0 is the
    /// teacher), to see the path before stepping onto it.
    Node(usize),
}

impl Preview {
    /// The view `v` moves to: generator → model → score field for points,
    /// generator → model → data for images. A node preview goes back to the
    /// generator.
    pub fn next(self, images: bool) -> Self {
        match self {
            Preview::Generator => Preview::Model,
            Preview::Model if images => Preview::Data,
            Preview::Model => Preview::ScoreField,
            Preview::Data | Preview::ScoreField | Preview::Node(_) => Preview::Generator,
        }
    }
}

/// Samples as a preview carries them: points, or images as bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Shown {
    Points(Vec<Point>),
    Images(PixelImages),
}

impl Shown {
    /// How many samples.
    pub fn len(&self) -> usize {
        match self {
            Shown::Points(p) => p.len(),
            Shown::Images(i) => i.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Preview data, as plain values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PreviewData {
    Generator(Shown),
    /// Heun samples of a model, under a label naming it (`s'θ2`, `teacher`).
    Model {
        label: String,
        samples: Shown,
    },
    Data(Shown),
    ScoreField(ScoreField),
    /// Heun samples of node `index` of the path.
    Node {
        index: usize,
        samples: Shown,
    },
}

impl PreviewData {
    /// The view this data is for.
    pub fn kind(&self) -> Preview {
        match self {
            PreviewData::Generator(_) => Preview::Generator,
            PreviewData::Model { .. } => Preview::Model,
            PreviewData::Data(_) => Preview::Data,
            PreviewData::ScoreField(_) => Preview::ScoreField,
            PreviewData::Node { index, .. } => Preview::Node(*index),
        }
    }

    /// The samples shown, unless this is a score field.
    pub fn samples(&self) -> Option<&Shown> {
        match self {
            PreviewData::Generator(s) | PreviewData::Data(s) => Some(s),
            PreviewData::Model { samples, .. } | PreviewData::Node { samples, .. } => Some(samples),
            PreviewData::ScoreField(_) => None,
        }
    }
}

/// What a front end needs to know about the data once: points to draw
/// behind previews and the region they cover (2-D), or the classes and
/// their shares (labelled images).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DataInfo {
    Plane { points: Vec<Point>, bounds: Bounds },
    Images { classes: Option<Vec<String>> },
}

/// What training tells the front end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Update {
    /// Sent once: the first view and what the lab draws the data with.
    Started {
        view: Box<SessionView>,
        data: DataInfo,
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
    /// Its distance to the data and to G⁰, once recorded and measured.
    pub spread: Option<NodeSpread>,
    /// Its denoiser's distance from the teacher's and the last node's.
    pub gap: Option<NodeGap>,
}

/// A node's functional distance (`engine::probe`): the RMS difference of
/// its denoiser's outputs from the teacher's and from the last node's (s'θ
/// fitted to G⁰) on a fixed probe batch of G⁰ samples at a few σ, in units
/// of σ_data. Cheap, so always measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeGap {
    pub to_teacher: f64,
    /// Known once recording is over.
    pub to_start: Option<f64>,
}

/// A node's distance to the data and to the initial generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeSpread {
    pub to_data: f64,
    pub to_start: f64,
    /// The distance used (as comparisons judge: see `Evaluation::quality`).
    pub measure: String,
}

impl NodeSpread {
    /// "0.76 from the data, 0.41 from G⁰ (energy distance)".
    pub fn describe(&self) -> String {
        format!(
            "{} from the data, {} from G⁰ ({})",
            short_number(self.to_data),
            short_number(self.to_start),
            self.measure
        )
    }
}

/// The models of a session, for `Session::save_model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModelKind {
    /// The generator as sampled (the moving average of its weights).
    Generator,
    /// s'_θ, the teacher's copy being degraded (stage 1 only).
    Degrading,
    /// s_φ, the fake score (stage 2 on).
    FakeScore,
    /// The current backtracking target (stage 2 on).
    Target,
    Teacher,
}

/// A distance in at most five characters: 0.76, 26.3, 483, 8341, 834k, 1.7M.
pub fn short_number(v: f64) -> String {
    match v.abs() {
        a if a < 9.995 => format!("{v:.2}"),
        a if a < 99.95 => format!("{v:.1}"),
        a if a < 9_999.5 => format!("{v:.0}"),
        a if a < 999_500.0 => format!("{:.0}k", v / 1e3),
        _ => format!("{:.1}M", v / 1e6),
    }
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
    /// What the run measures, when and how, in words (the header).
    #[serde(default)]
    pub measuring: String,
    /// This process's compute seconds: training iterations, and measuring.
    #[serde(default)]
    pub seconds: Seconds,
}

/// Where a process's compute time went (see `phase::Clock`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Seconds {
    pub training: f64,
    pub measuring: f64,
}

#[cfg(test)]
mod tests {
    use super::short_number;

    #[test]
    fn short_numbers_fit_five_characters() {
        let cases = [
            (0.7612, "0.76"),
            (26.31, "26.3"),
            (483.2, "483"),
            (8341.0, "8341"),
            (833_962.0, "834k"),
            (1_746_620.0, "1.7M"),
        ];
        for (v, shown) in cases {
            assert_eq!(short_number(v), shown);
            assert!(shown.chars().count() <= 5);
        }
    }
}
