//! The training thread: it owns the session (and so the device) and speaks
//! to a front end only through typed messages: [`Command`]s in, [`Update`]s
//! out, all plain data. Training never waits on the front end (updates go
//! out on an unbounded channel and snapshots are throttled), and the front
//! end never waits on training.

use super::previews::Previewer;
use super::protocol::Event;
use super::protocol::{Command, DataInfo, Link, Preview, Update};
use super::session::Session;
use crate::rng::{host_rng, streams};
use crate::rundir::{RunDir, read_metrics};
use anyhow::Result;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// How to start: a new run, or a resumed one. The caller creates or opens
/// the run directory, so a taken or occupied one is refused before a lab
/// takes over the screen.
pub enum Start {
    New {
        config: Box<crate::config::Config>,
        run: RunDir,
    },
    /// With the ranks it continues on, where they change.
    Resume {
        run: RunDir,
        parallel: Option<crate::config::ParallelConfig>,
    },
}

/// The front end's end of the training thread.
pub struct TrainerHandle {
    pub commands: Sender<Command>,
    pub updates: UnboundedReceiver<Update>,
    thread: JoinHandle<Result<Session>>,
}

impl TrainerHandle {
    /// The front end's ends, and the thread (whose result is the session).
    pub fn split(self) -> (Link, JoinHandle<Result<Session>>) {
        let link = Link {
            commands: self.commands,
            updates: self.updates,
            carrier: None,
        };
        (link, self.thread)
    }

    /// Waits for the thread to end and returns its session.
    pub fn join(self) -> Result<Session> {
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the training thread panicked"))?
    }
}

/// Starts the training thread. The session is built on it, so the thread
/// owns the device from the start; an error building it arrives as
/// `Update::Failed` and the thread ends.
pub fn spawn(start: Start) -> TrainerHandle {
    let (commands, command_rx) = std::sync::mpsc::channel();
    let (update_tx, updates) = unbounded_channel();
    let thread = std::thread::Builder::new()
        .name("disback-training".into())
        .spawn(move || {
            let failed = update_tx.clone();
            // A panic becomes a failure the front end can show.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                train(start, command_rx, update_tx)
            }))
            .unwrap_or_else(|payload| {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let message = format!("the training thread panicked: {what}");
                let _ = failed.send(Update::Failed(message.clone()));
                let _ = failed.send(Update::Stopped);
                Err(anyhow::anyhow!(message))
            })
        })
        .expect("spawning the training thread");
    TrainerHandle {
        commands,
        updates,
        thread,
    }
}

fn train(start: Start, commands: Receiver<Command>, updates: UnboundedSender<Update>) -> Result<Session> {
    let session = match start {
        Start::New { config, run } => Session::start(*config, run),
        Start::Resume { run, parallel } => Session::resume_on(run, parallel),
    };
    match session {
        Ok(session) => Trainer::new(session, commands, updates).run(),
        Err(e) => {
            let _ = updates.send(Update::Failed(format!("{e:#}")));
            let _ = updates.send(Update::Stopped);
            Err(e)
        }
    }
}

/// How often each kind of update goes out while training runs (at least:
/// see [`Trainer::preview_due`]).
const VIEW_EVERY: Duration = Duration::from_millis(100);
const GENERATOR_PREVIEW_EVERY: Duration = Duration::from_millis(250);
const FIELD_PREVIEW_EVERY: Duration = Duration::from_millis(500);
/// Heun sampling costs dozens of forward passes: rarely, unless the model
/// changed (a switch or a step while paused).
const MODEL_PREVIEW_EVERY: Duration = Duration::from_secs(3);
/// Previews take at most this share of the training thread's time: the
/// gap after a preview is at least its cost times (1 − share) / share.
const PREVIEW_SHARE: f64 = 0.025;
/// Data points drawn behind 2-D previews.
const BACKGROUND_POINTS: usize = 1500;

struct Trainer {
    session: Session,
    commands: Receiver<Command>,
    updates: UnboundedSender<Update>,
    paused: bool,
    /// Whether a front end watches (previews are computed only then).
    watched: bool,
    preview: Preview,
    field_sigma: f32,
    previewer: Option<Previewer>,
    last_view: Instant,
    /// When the last preview was made and what it cost.
    last_preview: Option<(Instant, Duration)>,
    rate: RateMeter,
}

impl Trainer {
    fn new(session: Session, commands: Receiver<Command>, updates: UnboundedSender<Update>) -> Self {
        let field_sigma = session.default_field_sigma();
        Self {
            session,
            commands,
            updates,
            paused: false,
            watched: true,
            preview: Preview::Generator,
            field_sigma,
            previewer: None,
            last_view: Instant::now(),
            last_preview: None,
            rate: RateMeter::new(),
        }
    }

    fn send(&self, update: Update) {
        // A closed channel means the front end is gone; the next command
        // read notices and ends the loop.
        let _ = self.updates.send(update);
    }

    fn run(mut self) -> Result<Session> {
        let data = match (self.session.data().plane(), self.session.data().images()) {
            (Some(plane), _) => DataInfo::Plane {
                points: plane.sample(BACKGROUND_POINTS, &mut host_rng(0, streams::BACKGROUND)),
                bounds: self.session.bounds(),
            },
            (None, images) => DataInfo::Images {
                classes: images.and_then(|i| i.classes()),
            },
        };
        self.send(Update::Started {
            view: Box::new(self.session.view()),
            data,
        });
        match Previewer::new(&self.session) {
            Ok(p) => self.previewer = Some(p),
            Err(e) => self.send(Update::Session(Event::Warning(format!("previews: {e:#}")))),
        }
        // A resumed run's history, so its sparklines continue where they were.
        if self.session.iteration() > 0 {
            for record in read_metrics(&self.session.run_dir().metrics()).unwrap_or_default() {
                self.send(Update::Session(Event::Logged(Box::new(record))));
            }
        }
        self.refresh(true);
        loop {
            let idle = self.paused || self.session.is_done() || self.session.failure().is_some();
            let command = if idle {
                match self.commands.recv_timeout(VIEW_EVERY) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => return Ok(self.session),
                }
            } else {
                match self.commands.try_recv() {
                    Ok(c) => Some(c),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => return Ok(self.session),
                }
            };
            if let Some(command) = command {
                if self.handle(command) {
                    self.send(Update::Stopped);
                    return Ok(self.session);
                }
                continue;
            }
            if idle {
                // Nothing moves: keep the view fresh, but do not redraw
                // previews from new random draws of an unchanged model.
                self.send_view_when_due();
            } else {
                self.train_one();
                self.refresh(false);
            }
        }
    }

    /// Applies a command; true when the thread should end.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Pause | Command::Resume => {
                self.paused = command == Command::Pause;
                self.rate = RateMeter::new();
                self.send(Update::Paused(self.paused));
            }
            Command::Step => {
                if self.paused {
                    self.train_one();
                    self.refresh(true);
                }
            }
            Command::Skip => {
                let result = self.session.skip();
                self.forward(result);
                self.refresh(true);
            }
            Command::SetManual(on) => {
                let result = self.session.set_manual(on).map(|()| Vec::new());
                self.forward(result);
                self.refresh(true);
            }
            Command::SaveGenerator => {
                let result = self.session.save_generator(None).map(|p| vec![Event::Saved(p)]);
                self.forward(result);
            }
            Command::SetPreview(p) => {
                self.preview = p;
                self.last_preview = None;
                self.refresh(true);
            }
            Command::SetFieldSigma(s) => {
                self.field_sigma = s;
                self.last_preview = None;
                self.refresh(true);
            }
            Command::Watched(on) => {
                self.watched = on;
                self.last_preview = None;
            }
            Command::Stop => {
                let saved = self.session.save_generator(None).and_then(|p| {
                    self.session.save_state()?;
                    Ok(vec![Event::Saved(p)])
                });
                self.forward(saved);
                return true;
            }
            Command::Quit => return true,
        }
        false
    }

    fn train_one(&mut self) {
        let result = self.session.step();
        if result.is_ok() {
            self.rate.tick();
        }
        let switched = matches!(&result, Ok(events) if events.iter().any(|e| matches!(e, Event::TargetSwitched { .. } | Event::StageStarted(_))));
        self.forward(result);
        if switched && self.preview != Preview::Generator {
            self.last_preview = None;
        }
    }

    /// Sends a call's events on (minus the frequent ones the view carries),
    /// or its error.
    fn forward(&mut self, result: Result<Vec<Event>>) {
        match result {
            Ok(events) => {
                for e in events {
                    if !matches!(e, Event::Checkpointed { .. }) {
                        self.send(Update::Session(e));
                    }
                }
            }
            Err(e) => self.send(Update::Failed(format!("{e:#}"))),
        }
    }

    fn send_view_when_due(&mut self) {
        if self.last_view.elapsed() >= VIEW_EVERY {
            self.send_view();
        }
    }

    fn send_view(&mut self) {
        self.send(Update::View {
            view: Box::new(self.session.view()),
            rate: self.rate.per_second(),
        });
        self.last_view = Instant::now();
    }

    /// Sends the view and the preview when they are due (or now).
    fn refresh(&mut self, now: bool) {
        if now {
            self.send_view();
        } else {
            self.send_view_when_due();
        }
        if !self.watched || !(now || self.preview_due()) {
            return;
        }
        let Some(previewer) = self.previewer.as_mut() else {
            return;
        };
        let started = Instant::now();
        match previewer.compute(&self.session, self.preview, self.field_sigma) {
            Ok(data) => self.send(Update::Preview(data)),
            Err(e) => self.send(Update::Session(Event::Warning(format!("preview: {e:#}")))),
        }
        self.last_preview = Some((Instant::now(), started.elapsed()));
    }

    /// Whether the shown preview should be made again: never for what does
    /// not change (data, a recorded node), otherwise after its view's
    /// interval, stretched so that previews cost at most [`PREVIEW_SHARE`]
    /// of the time (an image model's Heun samples on a CPU take seconds).
    fn preview_due(&self) -> bool {
        let every = match self.preview {
            Preview::Generator => GENERATOR_PREVIEW_EVERY,
            Preview::Model => MODEL_PREVIEW_EVERY,
            Preview::ScoreField => FIELD_PREVIEW_EVERY,
            Preview::Data | Preview::Node(_) => return self.last_preview.is_none(),
        };
        self.last_preview.is_none_or(|(at, cost)| {
            let gap = cost.mul_f64((1.0 - PREVIEW_SHARE) / PREVIEW_SHARE);
            at.elapsed() >= every.max(gap)
        })
    }
}

/// Iterations per second over the last few seconds.
struct RateMeter {
    ticks: std::collections::VecDeque<Instant>,
}

impl RateMeter {
    const WINDOW: Duration = Duration::from_secs(3);

    fn new() -> Self {
        Self {
            ticks: std::collections::VecDeque::new(),
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        self.ticks.push_back(now);
        while self
            .ticks
            .front()
            .is_some_and(|t| now.duration_since(*t) > Self::WINDOW)
        {
            self.ticks.pop_front();
        }
    }

    fn per_second(&self) -> f64 {
        match (self.ticks.front(), self.ticks.back()) {
            (Some(a), Some(b)) if self.ticks.len() > 1 => {
                (self.ticks.len() - 1) as f64 / b.duration_since(*a).as_secs_f64().max(1e-9)
            }
            _ => 0.0,
        }
    }
}
