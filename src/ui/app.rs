//! The terminal lab's state: what the training thread last said, the
//! histories behind the sparklines, the event log, and the key map. Plain
//! data only, so every state can be built in a test and drawn.

use super::pictures::Palette;
use super::theme::Theme;
use crate::config::SchedulePolicy;
use crate::data::{Bounds, Point};
use crate::engine::protocol::{
    Command, DataInfo, Event, NodeStatus, Preview, PreviewData, SessionView, Update,
};
use crate::rundir::{MetricsRecord, Stage};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::VecDeque;
use std::time::Duration;

/// A bounded series for a sparkline.
#[derive(Debug, Clone, Default)]
pub struct Series {
    values: VecDeque<f64>,
}

impl Series {
    const CAPACITY: usize = 400;

    pub fn push(&mut self, v: f64) {
        if !v.is_finite() {
            return;
        }
        if self.values.len() == Self::CAPACITY {
            self.values.pop_front();
        }
        self.values.push_back(v);
    }

    pub fn latest(&self) -> Option<f64> {
        self.values.back().copied()
    }

    /// The last `n` values.
    pub fn tail(&self, n: usize) -> impl Iterator<Item = f64> + '_ {
        self.values
            .iter()
            .skip(self.values.len().saturating_sub(n))
            .copied()
    }

    pub fn clear(&mut self) {
        self.values.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// One line of the event log.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub at: Duration,
    pub kind: LogKind,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    Info,
    Good,
    Warn,
    Error,
}

/// What the next key press means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    Help,
    /// `q` while training runs: detach or stop?
    ConfirmQuit,
}

/// How the user leaves the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Close the lab; training goes on in its runner.
    Detach,
    /// The run is over (finished, failed or stopped): end it and close.
    Quit,
}

#[derive(Debug, Clone)]
pub struct App {
    pub theme: Theme,
    /// How image previews become cells (without a graphics protocol).
    pub palette: Palette,
    pub view: Option<SessionView>,
    pub rate: f64,
    /// Time since the lab opened (set by the event loop).
    pub elapsed: Duration,
    /// 2-D data: points drawn behind previews, and the region shown.
    pub data: Vec<Point>,
    pub bounds: Bounds,
    /// Image data: previews are image grids.
    pub images: bool,
    /// Labelled images: the class names, for the coverage chart.
    pub classes: Option<Vec<String>>,
    pub preview: Preview,
    pub preview_data: Option<PreviewData>,
    /// Counts preview frames, so that a drawing can tell a new one.
    pub preview_frame: u64,
    /// The node the path's cursor is on (↑ ↓), for a node preview.
    pub node_cursor: Option<usize>,
    pub field_sigma: Option<f32>,
    pub paused: bool,
    pub mode: Mode,
    /// Teacher loss while pretraining, generator loss after.
    pub main_loss: Series,
    pub fake_loss: Series,
    /// Mean mismatch degree of the current target over the σ grid.
    pub mismatch: Series,
    /// Images: the Fréchet distance a comparison is judged on (classifier
    /// features, or pixels for unlabelled images).
    pub quality: Series,
    /// The stage the loss series belong to.
    series_stage: Option<Stage>,
    pub log: VecDeque<LogLine>,
    pub failure: Option<String>,
    /// The training thread has ended.
    pub stopped: bool,
    /// The user asked to stop the run (checkpoint, then end); the lab
    /// closes once it has.
    pub stopping: bool,
    /// Whether this lab steers the run (false: another lab does, and this
    /// one watches).
    pub control: bool,
    pub exit: Option<Exit>,
}

impl App {
    const LOG_LINES: usize = 200;

    pub fn new(theme: Theme) -> Self {
        Self {
            theme,
            palette: if theme.color {
                Palette::TrueColour
            } else {
                Palette::Ramp
            },
            view: None,
            rate: 0.0,
            elapsed: Duration::ZERO,
            data: Vec::new(),
            bounds: Bounds::default(),
            images: false,
            classes: None,
            preview: Preview::Generator,
            preview_data: None,
            preview_frame: 0,
            node_cursor: None,
            field_sigma: None,
            paused: false,
            mode: Mode::Normal,
            main_loss: Series::default(),
            fake_loss: Series::default(),
            mismatch: Series::default(),
            quality: Series::default(),
            series_stage: None,
            log: VecDeque::new(),
            failure: None,
            stopped: false,
            stopping: false,
            control: true,
            exit: None,
        }
    }

    pub fn stage(&self) -> Option<Stage> {
        self.view.as_ref().map(|v| v.stage)
    }

    /// Training still has work to do (so quitting would interrupt it).
    pub fn running(&self) -> bool {
        self.failure.is_none() && !self.stopped && self.stage().is_some_and(|s| s != Stage::Done)
    }

    pub fn manual(&self) -> bool {
        self.view
            .as_ref()
            .is_some_and(|v| v.policy == SchedulePolicy::Manual)
    }

    pub fn note(&mut self, kind: LogKind, text: impl Into<String>) {
        if self.log.len() == Self::LOG_LINES {
            self.log.pop_front();
        }
        self.log.push_back(LogLine {
            at: self.elapsed,
            kind,
            text: text.into(),
        });
    }

    /// Takes in one message from the training thread.
    pub fn on_update(&mut self, update: Update) {
        match update {
            Update::Started { view, data } => {
                self.note(LogKind::Info, format!("run directory {}", view.run_dir.display()));
                if view.iteration > 0 {
                    self.note(
                        LogKind::Info,
                        format!("continuing at iteration {}", view.iteration),
                    );
                }
                self.view = Some(*view);
                match data {
                    DataInfo::Plane { points, bounds } => {
                        self.data = points;
                        self.bounds = bounds;
                    }
                    DataInfo::Images { classes } => {
                        self.images = true;
                        self.classes = classes;
                    }
                }
            }
            Update::View { view, rate } => {
                self.view = Some(*view);
                self.rate = rate;
            }
            Update::Session(event) => self.on_event(event),
            // Data computed before the user changed views is dropped.
            Update::Preview(data) if data.kind() == self.preview => {
                if let PreviewData::ScoreField(f) = &data {
                    self.field_sigma = Some(f.sigma);
                }
                self.preview_data = Some(data);
                self.preview_frame += 1;
            }
            Update::Preview(_) => {}
            Update::Paused(p) => {
                self.paused = p;
                self.note(LogKind::Info, if p { "paused" } else { "resumed" });
            }
            Update::Failed(message) => {
                self.note(LogKind::Error, format!("failed: {message}"));
                self.failure = Some(message);
            }
            Update::Control(steers) => {
                if steers != self.control || !steers {
                    self.note(
                        LogKind::Info,
                        match steers {
                            true => "this lab steers the run",
                            false => {
                                "read-only: another lab steers this run (you get it when that one leaves)"
                            }
                        },
                    );
                }
                self.control = steers;
            }
            Update::Stopped => self.stopped = true,
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::StageStarted(stage) => self.note(LogKind::Info, format!("stage: {stage}")),
            Event::TeacherReady { source } => self.note(LogKind::Good, format!("teacher {source}")),
            Event::ClassifierReady { accuracy } => self.note(
                LogKind::Info,
                format!("image classifier: {:.1}% held-out accuracy", 100.0 * accuracy),
            ),
            Event::NodeRecorded {
                index,
                iteration,
                spread,
                ..
            } => self.note(
                LogKind::Good,
                match spread {
                    Some(s) => format!(
                        "node s'θ{index} recorded at iteration {iteration}: {}",
                        s.describe()
                    ),
                    None => format!("node s'θ{index} recorded at iteration {iteration}"),
                },
            ),
            Event::TargetSwitched { from, to } => {
                let text = match from {
                    Some(f) => format!("target switched: s'θ{f} → s'θ{to} (all weights loaded)"),
                    None => format!("first target: s'θ{to}"),
                };
                self.note(LogKind::Good, text);
            }
            Event::Logged(record) => self.on_record(&record),
            Event::Saved(path) => self.note(LogKind::Good, format!("saved {}", path.display())),
            Event::Warning(w) => self.note(LogKind::Warn, w),
            Event::Checkpointed { .. } => {}
            Event::Finished => self.note(
                LogKind::Good,
                "finished: the generator is final (s saves a copy, q ends the run, d detaches)",
            ),
        }
    }

    fn on_record(&mut self, r: &MetricsRecord) {
        // The loss sparklines change meaning with the stage (teacher →
        // generator, degrading copy → s_φ): start them afresh.
        if self.series_stage != Some(r.stage) {
            self.main_loss.clear();
            self.fake_loss.clear();
            self.series_stage = Some(r.stage);
        }
        if let Some(v) = r.loss_teacher.or(r.loss_g) {
            self.main_loss.push(v);
        }
        if let Some(v) = r.loss_fake {
            self.fake_loss.push(v);
        }
        if let Some(m) = r.eval.as_ref().and_then(|e| e.mismatch_target_mean()) {
            self.mismatch.push(m);
        }
        if let Some(fd) = r.eval.as_ref().and_then(|e| e.classifier_fd.or(e.pixel_fd)) {
            self.quality.push(fd);
        }
    }

    /// Maps a key to state changes and commands for training. A lab that
    /// only watches sends none.
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Command> {
        let commands = self.key_commands(key);
        if !self.control && !commands.is_empty() {
            self.note(
                LogKind::Warn,
                "read-only: another lab steers this run (d detaches this one)",
            );
            return Vec::new();
        }
        commands
    }

    /// Switches the preview to `preview`; its data comes with the next update.
    fn show(&mut self, preview: Preview) -> Vec<Command> {
        self.preview = preview;
        self.preview_data = None;
        vec![Command::SetPreview(preview)]
    }

    /// A node's Heun samples, when the node is on the path and recorded.
    fn show_node(&mut self, index: usize) -> Vec<Command> {
        let status = self
            .view
            .as_ref()
            .and_then(|v| v.nodes.iter().find(|n| n.index == index))
            .map(|n| n.status);
        match status {
            None => {
                self.note(LogKind::Warn, format!("the path has no node s'θ{index}"));
                Vec::new()
            }
            Some(NodeStatus::Pending | NodeStatus::Recording) => {
                self.note(LogKind::Warn, format!("node s'θ{index} is not recorded yet"));
                Vec::new()
            }
            Some(_) => {
                self.node_cursor = Some(index);
                self.show(Preview::Node(index))
            }
        }
    }

    /// Moves the path's cursor up (towards the last node, drawn on top) or
    /// down (towards the teacher).
    fn move_node_cursor(&mut self, up: bool) {
        let Some(count) = self.view.as_ref().map(|v| v.nodes.len()).filter(|&n| n > 0) else {
            return;
        };
        let last = count - 1;
        // The first press shows the cursor where it starts: on the target.
        self.node_cursor = Some(match (self.node_cursor, up) {
            (None, _) => self.view.as_ref().and_then(|v| v.target).unwrap_or(0).min(last),
            (Some(i), true) => (i + 1).min(last),
            (Some(i), false) => i.saturating_sub(1),
        });
    }

    fn key_commands(&mut self, key: KeyEvent) -> Vec<Command> {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            self.exit = Some(Exit::Detach);
            return Vec::new();
        }
        match self.mode {
            Mode::Help => {
                if matches!(key.code, KeyCode::Char('?') | KeyCode::Esc | KeyCode::Char('q')) {
                    self.mode = Mode::Normal;
                }
                Vec::new()
            }
            Mode::ConfirmQuit => {
                self.mode = Mode::Normal;
                match key.code {
                    KeyCode::Char('d') | KeyCode::Char('q') | KeyCode::Enter => {
                        self.exit = Some(Exit::Detach);
                        Vec::new()
                    }
                    KeyCode::Char('s') if self.control => {
                        self.stopping = true;
                        self.note(LogKind::Info, "stopping: saving a checkpoint…");
                        vec![Command::Stop]
                    }
                    KeyCode::Char('s') => vec![Command::Stop], // refused as read-only
                    _ => Vec::new(),
                }
            }
            Mode::Normal => self.normal_key(key.code),
        }
    }

    fn normal_key(&mut self, code: KeyCode) -> Vec<Command> {
        match code {
            KeyCode::Char(' ') => vec![if self.paused {
                Command::Resume
            } else {
                Command::Pause
            }],
            KeyCode::Char('.') if self.paused => vec![Command::Step],
            KeyCode::Char('.') => {
                self.note(
                    LogKind::Warn,
                    "'.' steps one iteration while paused: press space first",
                );
                Vec::new()
            }
            KeyCode::Char('n') => vec![Command::Skip],
            KeyCode::Char('s') => vec![Command::SaveGenerator],
            KeyCode::Char('v') => self.show(self.preview.next(self.images)),
            KeyCode::Up | KeyCode::Down => {
                self.move_node_cursor(code == KeyCode::Up);
                Vec::new()
            }
            KeyCode::Enter => match self.node_cursor {
                Some(index) => self.show_node(index),
                None => {
                    self.note(LogKind::Info, "↑ ↓ pick a node of the path first, then enter");
                    Vec::new()
                }
            },
            KeyCode::Char(c @ '0'..='9') => self.show_node(c as usize - '0' as usize),
            KeyCode::Esc if matches!(self.preview, Preview::Node(_)) => self.show(Preview::Generator),
            KeyCode::Char('m') => {
                let on = !self.manual();
                self.note(
                    LogKind::Info,
                    if on {
                        "manual schedule: staying on each target until n"
                    } else {
                        "manual schedule off: the configured schedule decides again"
                    },
                );
                vec![Command::SetManual(on)]
            }
            KeyCode::Char('[') | KeyCode::Char(']') if self.preview == Preview::ScoreField => {
                let s = self.field_sigma.unwrap_or(0.5);
                let s = if code == KeyCode::Char('[') {
                    s / 2.0
                } else {
                    s * 2.0
                };
                vec![Command::SetFieldSigma(s.clamp(1e-3, 100.0))]
            }
            KeyCode::Char('?') => {
                self.mode = Mode::Help;
                Vec::new()
            }
            KeyCode::Char('d') => {
                self.exit = Some(Exit::Detach);
                Vec::new()
            }
            KeyCode::Char('q') | KeyCode::Esc if self.running() => {
                self.mode = Mode::ConfirmQuit;
                Vec::new()
            }
            // A watching lab leaves a settled run to the lab that steers it.
            KeyCode::Char('q') if !self.control => {
                self.exit = Some(Exit::Detach);
                Vec::new()
            }
            KeyCode::Char('q') => {
                self.exit = Some(Exit::Quit);
                vec![Command::Quit]
            }
            _ => Vec::new(),
        }
    }
}
