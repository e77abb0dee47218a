//! The terminal lab: a ratatui front end over the training thread. It sees
//! only plain data (the messages of `engine::protocol`); candle stays on the other
//! side of the channel.
//!
//! The event loop is a tokio `select!` over key presses (read by `input`,
//! which drops the terminal's replies to queries), messages from training,
//! a redraw tick (12.5 frames a second at most, and only when something
//! changed) and signals: a resized window redraws; SIGTERM and SIGHUP (a
//! dropped SSH connection) close the lab and leave training running in its
//! runner.
//! The terminal is restored on every way out, panics included.

mod app;
mod draw;
mod graphics;
mod input;
mod pictures;
mod plot;
mod probe;
mod theme;

pub use app::{App, Exit, Mode};
pub use draw::draw;
pub use pictures::{Palette, Tiling};
pub use theme::Theme;

use app::LogKind;
use draw::draw_with;

use crate::engine::protocol::{Command, Link};
use crate::rundir::Stage;
use anyhow::Result;
use graphics::{Encoded, Graphics};
use input::{Decoder, Keys};
use signal_hook::consts::{SIGHUP, SIGTERM};
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::UnboundedReceiver;

/// At most this many frames a second.
const FRAME: Duration = Duration::from_millis(80);
/// The name of the training thread, whose panics must not touch the screen.
const TRAINING_THREAD: &str = "disback-training";

/// How a lab session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabEnd {
    /// The lab closed and training goes on (the `d` key, or `signal`: a
    /// hang-up or termination of the lab, which only detaches it).
    Detached { signal: Option<i32> },
    /// The user stopped the run; it is checkpointed and over.
    Stopped,
    /// The run was over and the user closed it (or its runner ended).
    Quit,
}

/// Opens the lab on a link to training and returns when the user leaves.
/// For image data (`images`), the terminal is first asked for a graphics
/// protocol, so that previews can be real pixels.
pub fn run(mut link: Link, images: bool) -> Result<LabEnd> {
    install_panic_hook();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut terminal = ratatui::try_init().map_err(|e| anyhow::anyhow!("cannot open the terminal: {e}"))?;
    let theme = Theme::from_env();
    // Only with colour: the ramp is for terminals that want none. The
    // question comes before anything else reads the terminal's input, and
    // the keys pressed while it waited for the answer are kept.
    let probe = (images && theme.color).then(probe::probe);
    let silent = probe.as_ref().is_some_and(|p| !p.answered);
    let (picker, early_keys, input) = probe.map_or((None, Vec::new(), Decoder::default()), |p| {
        (p.picker, p.keys, p.input)
    });
    let graphics = picker.and_then(Graphics::start);
    let start = Start {
        graphics,
        early_keys,
        input,
        silent,
    };
    let outcome = runtime.block_on(event_loop(&mut terminal, &mut link, theme, start));
    link.close();
    ratatui::restore();
    outcome
}

/// Refuses to start the lab without a terminal to draw on and read keys
/// from: escape codes would go into a file or a pipe.
pub fn check_terminal() -> Result<()> {
    use std::io::IsTerminal;
    for (name, is_terminal) in [
        ("standard output", std::io::stdout().is_terminal()),
        ("standard input", std::io::stdin().is_terminal()),
    ] {
        if !is_terminal {
            anyhow::bail!(
                "the terminal lab needs a terminal, and {name} is not one; for a run without a \
                 screen use `disback run` (same options)"
            );
        }
    }
    Ok(())
}

/// Restores the terminal before a panic message is printed, except for
/// panics of the training thread: those become an `Update::Failed` and the
/// lab stays open to show them.
fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(TRAINING_THREAD) {
            return;
        }
        ratatui::restore();
        previous(info);
    }));
}

async fn event_loop(
    terminal: &mut ratatui::DefaultTerminal,
    link: &mut Link,
    theme: Theme,
    start: Start,
) -> Result<LabEnd> {
    let mut app = App::new(theme);
    app.palette = Palette::from_env(theme.color);
    let (mut graphics, mut encoded) = match start.graphics {
        Some((g, rx)) => {
            app.note(LogKind::Info, g.describe());
            (Some(g), Some(rx))
        }
        None => (None, None),
    };
    if start.silent {
        app.note(
            LogKind::Info,
            format!(
                "the terminal did not answer the graphics query within {} s: image previews are \
                 half-blocks (inside tmux, `set -g allow-passthrough on` lets pictures through)",
                probe::WAIT.as_secs_f64()
            ),
        );
    }
    // Keys pressed while the terminal was asked act first, in order.
    for key in start.early_keys {
        for command in app.on_key(key) {
            let _ = link.commands.send(command);
        }
    }
    let mut keys = Keys::start(start.input);
    let mut resized = signal(SignalKind::window_change())?;
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let opened = Instant::now();
    let mut dirty = true;
    let mut last_second = 0;
    let detached = |signal| Ok(LabEnd::Detached { signal });
    loop {
        tokio::select! {
            _ = tick.tick() => {
                app.elapsed = opened.elapsed();
                if app.elapsed.as_secs() != last_second {
                    last_second = app.elapsed.as_secs();
                    dirty = true;
                }
                if dirty {
                    terminal.draw(|frame| draw_with(frame, &app, graphics.as_mut()))?;
                    dirty = false;
                }
            }
            key = keys.next() => match key {
                Some(k) => {
                    for command in app.on_key(k) {
                        let _ = link.commands.send(command);
                    }
                    dirty = true;
                }
                // The terminal is gone: a hang-up, which only detaches.
                None => return detached(Some(SIGHUP)),
            },
            _ = resized.recv() => dirty = true,
            update = link.updates.recv() => match update {
                Some(u) => {
                    app.on_update(u);
                    dirty = true;
                }
                None => app.stopped = true,
            },
            Some(done) = next_encoding(&mut encoded) => {
                if let Some(g) = graphics.as_mut() {
                    g.receive(done);
                }
                dirty = true;
            }
            _ = sigterm.recv() => return detached(Some(SIGTERM)),
            _ = sighup.recv() => return detached(Some(SIGHUP)),
        }
        match app.exit {
            Some(Exit::Detach) => return detached(None),
            Some(Exit::Quit) => return Ok(LabEnd::Quit),
            None if app.stopping && app.stopped => return Ok(LabEnd::Stopped),
            None => {}
        }
    }
}

/// What the lab starts with, from asking the terminal.
struct Start {
    graphics: Option<(Graphics, UnboundedReceiver<Encoded>)>,
    /// Keys pressed while the lab waited for the terminal's answer.
    early_keys: Vec<crossterm::event::KeyEvent>,
    /// What the terminal sent so far, decoded (a reply cut short by the
    /// end of the wait is dropped whole by the lab's reader).
    input: Decoder,
    /// The terminal never answered the query.
    silent: bool,
}

/// The next finished picture encoding; never, without graphics.
async fn next_encoding(rx: &mut Option<UnboundedReceiver<Encoded>>) -> Option<Encoded> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Backtracking iterations per second of the run at the other end of
/// `link` while this thread does the lab's work: take in every update and
/// draw a frame every 80 ms, into an off-screen 160×48 terminal (for
/// `disback bench`, which links it over a runner's socket). The earlier
/// stages are skipped; the run is ended at the end.
pub fn backtracking_rate_with_lab(mut link: Link, time: Duration) -> Result<f64> {
    use tokio::sync::mpsc::error::TryRecvError;
    let mut app = App::new(Theme { color: true });
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(160, 48))?;
    // The measurement runs from the first backtracking iteration past the
    // warm-up that the lab sees arrive to the first that arrives after
    // `time`: both ends at an arrival, so a run slower than one iteration a
    // view (a large batch on a CPU) is measured, not rounded down to 0.
    let mut since: Option<(Instant, usize)> = None;
    let mut last_seen: Option<usize> = None;
    // One skip per stage: a skip sent every frame would pile up behind a
    // slow step and then skip backtracking targets too.
    let mut skipped: Option<Stage> = None;
    let mut progress = Progress::new();
    loop {
        loop {
            match link.updates.try_recv() {
                Ok(update) => app.on_update(update),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    anyhow::bail!("the run closed its link before the measurement ended")
                }
            }
        }
        if let Some(e) = &app.failure {
            anyhow::bail!("training failed during the bench: {e}");
        }
        anyhow::ensure!(!app.stopped, "training stopped before the measurement ended");
        if let Some(v) = &app.view {
            progress.saw(v.stage, v.iteration);
            if v.stage < Stage::Backtrack {
                if skipped != Some(v.stage) {
                    let _ = link.commands.send(Command::Skip);
                    skipped = Some(v.stage);
                }
            } else if last_seen.replace(v.iteration) != Some(v.iteration) {
                match since {
                    None if v.iteration > 10 => since = Some((Instant::now(), v.iteration)),
                    Some((t0, i0)) if t0.elapsed() >= time => {
                        let rate = (v.iteration - i0) as f64 / t0.elapsed().as_secs_f64();
                        let _ = link.commands.send(Command::Quit);
                        return Ok(rate);
                    }
                    _ => {}
                }
            }
        }
        progress.check()?;
        terminal.draw(|frame| draw(frame, &app))?;
        std::thread::sleep(FRAME);
    }
}

/// When the bench's lab last saw training move, so that a run that stops
/// moving is reported instead of waited on for ever.
struct Progress {
    at: Instant,
    seen: Option<(Stage, usize)>,
}

impl Progress {
    /// How long training may show no new stage or iteration: far more than
    /// any one step or stage change takes, even an image model's on a CPU.
    const PATIENCE: Duration = Duration::from_secs(180);

    fn new() -> Self {
        Self {
            at: Instant::now(),
            seen: None,
        }
    }

    fn saw(&mut self, stage: Stage, iteration: usize) {
        if self.seen != Some((stage, iteration)) {
            self.seen = Some((stage, iteration));
            self.at = Instant::now();
        }
    }

    fn check(&self) -> Result<()> {
        let waited = self.at.elapsed();
        if waited < Self::PATIENCE {
            return Ok(());
        }
        match self.seen {
            Some((stage, iteration)) => anyhow::bail!(
                "training showed no progress for {} s ({stage}, iteration {iteration})",
                waited.as_secs()
            ),
            None => anyhow::bail!("no view of the run arrived in {} s", waited.as_secs()),
        }
    }
}
