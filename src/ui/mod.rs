//! The terminal lab: a ratatui front end over the training thread. It sees
//! only plain data (`engine::trainer` messages); candle stays on the other
//! side of the channel.
//!
//! The event loop is a tokio `select!` over key presses, messages from
//! training, a redraw tick (12.5 frames a second at most, and only when
//! something changed) and signals: SIGTERM and SIGHUP (a dropped SSH
//! connection) save the generator and a resumable checkpoint, then exit.
//! The terminal is restored on every way out, panics included.

mod app;
mod draw;
mod plot;
mod theme;

pub use app::{App, LogKind, LogLine, Mode, Series};
pub use draw::draw;
pub use theme::Theme;

use crate::engine::trainer::{Command, Start, TrainerHandle, Update, spawn};
use crate::runtime::Ended;
use anyhow::Result;
use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind};
use futures::StreamExt;
use signal_hook::consts::{SIGHUP, SIGTERM};
use std::time::{Duration, Instant};
use tokio::signal::unix::{SignalKind, signal};

/// At most this many frames a second.
const FRAME: Duration = Duration::from_millis(80);
/// The name of the training thread, whose panics must not touch the screen.
const TRAINING_THREAD: &str = "disback-training";

/// Opens the lab on a run and returns when the user quits, or when a
/// signal saved the run and stopped it.
pub fn run(start: Start) -> Result<Ended> {
    install_panic_hook();
    let trainer = spawn(start);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut terminal = ratatui::try_init().map_err(|e| anyhow::anyhow!("cannot open the terminal: {e}"))?;
    let outcome = runtime.block_on(event_loop(&mut terminal, trainer));
    ratatui::restore();
    let (summary, ended) = outcome?;
    println!("{summary}");
    Ok(ended)
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
    mut trainer: TrainerHandle,
) -> Result<(String, Ended)> {
    let mut app = App::new(Theme::from_env());
    let mut keys = EventStream::new();
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let opened = Instant::now();
    let mut dirty = true;
    let mut last_second = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                app.elapsed = opened.elapsed();
                if app.elapsed.as_secs() != last_second {
                    last_second = app.elapsed.as_secs();
                    dirty = true;
                }
                if dirty {
                    terminal.draw(|frame| draw(frame, &app))?;
                    dirty = false;
                }
            }
            key = keys.next() => match key {
                Some(Ok(TermEvent::Key(k))) if k.kind == KeyEventKind::Press => {
                    for command in app.on_key(k) {
                        let _ = trainer.commands.send(command);
                    }
                    dirty = true;
                }
                Some(Ok(TermEvent::Resize(..))) => dirty = true,
                Some(Ok(_)) => {}
                // The terminal is gone: treat it as a hang-up.
                Some(Err(_)) | None => return hang_up(trainer, "the terminal closed", SIGHUP).await,
            },
            update = trainer.updates.recv() => match update {
                Some(u) => {
                    app.on_update(u);
                    dirty = true;
                }
                None => app.stopped = true,
            },
            _ = sigterm.recv() => return hang_up(trainer, "SIGTERM", SIGTERM).await,
            _ = sighup.recv() => return hang_up(trainer, "SIGHUP", SIGHUP).await,
        }
        if app.quit {
            let run_dir = app.view.as_ref().map(|v| v.run_dir.display().to_string());
            // A training failure was already shown on screen; only wait
            // for the thread to end.
            let _ = tokio::task::spawn_blocking(move || trainer.join()).await?;
            let summary = match run_dir {
                Some(dir) => format!("disback: run directory {dir}"),
                None => "disback: no run was started".into(),
            };
            return Ok((summary, Ended::Finished));
        }
    }
}

/// Backtracking iterations per second of a run on the training thread while
/// this thread does the lab's work: take in every update and draw a frame
/// every 80 ms, into an off-screen 160×48 terminal (for `disback bench`).
/// The earlier stages are skipped.
pub fn backtracking_rate_with_lab(start: Start, time: Duration) -> Result<f64> {
    let mut trainer = spawn(start);
    let mut app = App::new(Theme { color: true });
    let mut terminal = ratatui::Terminal::new(ratatui::backend::TestBackend::new(160, 48))?;
    let mut since: Option<(Instant, usize)> = None;
    loop {
        while let Ok(update) = trainer.updates.try_recv() {
            app.on_update(update);
        }
        if let Some(e) = &app.failure {
            anyhow::bail!("training failed during the bench: {e}");
        }
        if let Some(v) = &app.view {
            match since {
                _ if v.stage < crate::engine::Stage::Backtrack => {
                    let _ = trainer.commands.send(Command::Skip);
                }
                None if v.iteration > 10 => since = Some((Instant::now(), v.iteration)),
                Some((t0, i0)) if t0.elapsed() >= time => {
                    let rate = (v.iteration - i0) as f64 / t0.elapsed().as_secs_f64();
                    let _ = trainer.commands.send(Command::Quit);
                    trainer.join()?;
                    return Ok(rate);
                }
                _ => {}
            }
        }
        terminal.draw(|frame| draw(frame, &app))?;
        std::thread::sleep(FRAME);
    }
}

/// Saves the generator and a checkpoint, waits for training to stop, and
/// says what was kept.
async fn hang_up(mut trainer: TrainerHandle, why: &str, signal: i32) -> Result<(String, Ended)> {
    let _ = trainer.commands.send(Command::Hangup);
    let mut saved = Vec::new();
    while let Some(update) = trainer.updates.recv().await {
        match update {
            Update::Session(crate::engine::Event::Saved(p)) => saved.push(p.display().to_string()),
            Update::Stopped => break,
            _ => {}
        }
    }
    let session = tokio::task::spawn_blocking(move || trainer.join()).await?;
    let dir = session
        .as_ref()
        .map(|s| s.run_dir().root().display().to_string())
        .unwrap_or_default();
    let summary = format!(
        "disback: stopped on {why}; saved {} and a checkpoint; resume with `disback tui --resume {dir}`",
        saved.join(", ")
    );
    Ok((summary, Ended::Stopped { signal }))
}
