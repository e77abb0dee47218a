//! The training thread's protocol against a real session on a tiny config:
//! pause stops iterations, a step is exactly one, skip loads the next node,
//! save writes a loadable generator, quit ends the thread.

mod common;

use disback::config::{Config, SchedulePolicy};
use disback::engine::protocol::{Command, Event, Preview, PreviewData, SessionView, Update};
use disback::engine::trainer::{Start, TrainerHandle, spawn};
use disback::rundir::Stage;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The tiny config with a budget that does not run out during a test.
fn long_tiny(dir: &std::path::Path) -> Config {
    let mut c = common::tiny_config(&dir.join("teachers"));
    c.schedule.steps = vec![1_000_000; 4];
    c
}

struct Driver {
    trainer: TrainerHandle,
    view: Option<SessionView>,
    pings: usize,
}

impl Driver {
    fn start(config: Config, run_dir: PathBuf) -> Self {
        let d = Self {
            trainer: spawn(Start::New {
                config: Box::new(config),
                run: disback::rundir::RunDir::create(&run_dir, false).unwrap(),
            }),
            view: None,
            pings: 0,
        };
        // (A thread that failed to start has hung up already.)
        let _ = d.trainer.commands.send(Command::SetPreview(Preview::ScoreField));
        d
    }

    fn send(&self, c: Command) {
        self.trainer.commands.send(c).unwrap();
    }

    /// Reads updates until `done` holds for one (or 30 s pass).
    fn until(&mut self, what: &str, mut done: impl FnMut(&Update) -> bool) -> Update {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.trainer.updates.try_recv() {
                Ok(u) => {
                    if let Update::View { view, .. } | Update::Started { view, .. } = &u {
                        self.view = Some((**view).clone());
                    }
                    if let Update::Failed(e) = &u {
                        panic!("training failed while waiting for {what}: {e}");
                    }
                    if done(&u) {
                        return u;
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(2)),
            }
        }
        panic!("timed out waiting for {what}");
    }

    /// The view right after everything sent so far has been handled. A new
    /// score-field σ is answered by a view, then that field; the view just
    /// before the field with this σ is the answer (periodic views can come
    /// earlier, never between the two).
    fn fresh_view(&mut self) -> SessionView {
        self.pings += 1;
        let sigma = 0.1 + self.pings as f32 / 1024.0;
        self.send(Command::SetFieldSigma(sigma));
        self.until(
            "the ping",
            |u| matches!(u, Update::Preview(PreviewData::ScoreField(f)) if f.sigma == sigma),
        );
        self.view.clone().expect("a view came first")
    }

    fn pause(&mut self) -> SessionView {
        self.send(Command::Pause);
        self.until("paused", |u| *u == Update::Paused(true));
        self.fresh_view()
    }
}

#[test]
fn pause_stops_and_a_step_is_exactly_one_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::start(long_tiny(dir.path()), dir.path().join("run"));
    d.until(
        "backtracking",
        |u| matches!(u, Update::View { view, .. } if view.stage == Stage::Backtrack && view.iteration > 120),
    );
    let paused = d.pause();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        d.fresh_view().iteration,
        paused.iteration,
        "no iteration while paused"
    );
    for k in 1..=3 {
        d.send(Command::Step);
        assert_eq!(d.fresh_view().iteration, paused.iteration + k, "step {k}");
    }
    d.send(Command::Resume);
    d.until("resumed", |u| *u == Update::Paused(false));
    let before = d.fresh_view().iteration;
    d.until(
        "progress",
        |u| matches!(u, Update::View { view, .. } if view.iteration > before + 20),
    );
    d.send(Command::Quit);
    d.until("stopped", |u| *u == Update::Stopped);
    d.trainer.join().unwrap();
}

#[test]
fn skip_loads_the_next_node_and_save_writes_a_loadable_generator() {
    let dir = tempfile::tempdir().unwrap();
    let mut d = Driver::start(long_tiny(dir.path()), dir.path().join("run"));
    d.until(
        "backtracking",
        |u| matches!(u, Update::View { view, .. } if view.stage == Stage::Backtrack),
    );
    d.pause();
    d.send(Command::SetManual(true));
    assert_eq!(d.fresh_view().policy, SchedulePolicy::Manual);

    d.send(Command::Skip);
    d.until("the switch", |u| {
        *u == Update::Session(Event::TargetSwitched { from: Some(3), to: 2 })
    });
    assert_eq!(d.fresh_view().target, Some(2));

    d.send(Command::SaveGenerator);
    let saved = match d.until("saved", |u| matches!(u, Update::Session(Event::Saved(_)))) {
        Update::Session(Event::Saved(p)) => p,
        _ => unreachable!(),
    };
    // Previews arrive as plain data.
    d.send(Command::SetPreview(Preview::Model));
    d.until(
        "a model preview",
        |u| matches!(u, Update::Preview(PreviewData::Model { samples, .. }) if samples.len() == 600),
    );
    d.send(Command::SetPreview(Preview::Generator));
    d.until(
        "a generator preview",
        |u| matches!(u, Update::Preview(PreviewData::Generator(s)) if s.len() == 1500),
    );
    d.send(Command::SetPreview(Preview::ScoreField));
    assert_eq!(d.fresh_view().target, Some(2));

    d.send(Command::Quit);
    let session = d.trainer.join().expect("quit ends the training thread");
    // The skip loaded every weight of node 2.
    assert_eq!(session.schedule().target(), 2);
    assert_eq!(common::target_vs_file(&session, 2), 0.0);

    let out = dir.path().join("s.csv");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_disback"))
        .args(["sample", "--n", "50", "--generator"])
        .arg(&saved)
        .arg("--config")
        .arg(session.run_dir().config())
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_eq!(std::fs::read_to_string(out).unwrap().lines().count(), 51);
}

#[test]
fn hangup_saves_the_generator_and_a_resumable_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let mut d = Driver::start(long_tiny(dir.path()), run.clone());
    d.until(
        "backtracking",
        |u| matches!(u, Update::View { view, .. } if view.stage == Stage::Backtrack && view.iteration > 110),
    );
    d.send(Command::Stop);
    d.until("saved", |u| matches!(u, Update::Session(Event::Saved(_))));
    d.until("stopped", |u| *u == Update::Stopped);
    let at_hang_up = d.trainer.join().unwrap().iteration();
    let resumed = disback::engine::Session::resume(disback::rundir::RunDir::open(&run).unwrap()).unwrap();
    assert_eq!(
        resumed.iteration(),
        at_hang_up,
        "the checkpoint is the state at hang-up"
    );
}

#[test]
fn a_bad_start_is_reported_not_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = long_tiny(dir.path());
    config.teacher.file = Some(dir.path().join("missing.safetensors"));
    let mut d = Driver::start(config, dir.path().join("run"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let failure = loop {
        assert!(Instant::now() < deadline, "no failure reported");
        if let Ok(Update::Failed(e)) = d.trainer.updates.try_recv() {
            break e;
        }
    };
    assert!(failure.contains("missing.safetensors"), "{failure}");
    assert!(d.trainer.join().is_err());
}
