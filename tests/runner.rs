//! The runner over its socket: labs steer it with the engine's own
//! messages, a late lab gets the whole state, a second lab only watches,
//! garbage changes nothing, and a dead runner's socket is recognised.

mod common;

use disback::engine::protocol::{Command, Event, Link, Update};
use disback::engine::trainer::Start;
use disback::rundir::{RunDir, Stage};
use disback::runner::{self, ClientMessage, Options, Purpose, RunnerMessage, VERSION};
use disback::runtime::Ended;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A runner on a thread, training the tiny config with a budget that does
/// not run out.
fn serve(dir: &Path) -> (PathBuf, JoinHandle<anyhow::Result<Ended>>) {
    let mut config = common::tiny_config(&dir.join("teachers"));
    config.schedule.steps = vec![1_000_000; 4];
    let run = dir.join("run");
    let start = Start::New {
        config: Box::new(config),
        run: RunDir::create(&run, false).unwrap(),
    };
    let thread = {
        let run = run.clone();
        std::thread::spawn(move || {
            runner::serve(
                start,
                &run,
                Options {
                    linger: Duration::ZERO,
                },
                |_| {},
            )
        })
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while UnixStream::connect(run.join(runner::SOCKET)).is_err() {
        assert!(Instant::now() < deadline, "the runner never listened");
        std::thread::sleep(Duration::from_millis(5));
    }
    (run, thread)
}

/// Reads updates until one matches, returning it (and everything seen).
fn until(link: &mut Link, what: &str, mut f: impl FnMut(&Update) -> bool) -> (Update, Vec<Update>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "never saw {what}; saw {} updates",
            seen.len()
        );
        match link.updates.try_recv() {
            Ok(u) if f(&u) => return (u, seen),
            Ok(u) => seen.push(u),
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn iteration(u: &Update) -> Option<usize> {
    match u {
        Update::View { view, .. } => Some(view.iteration),
        _ => None,
    }
}

fn backtracking(u: &Update) -> bool {
    matches!(u, Update::View { view, .. } if view.stage == Stage::Backtrack && view.iteration > 90)
}

#[test]
fn commands_over_the_socket_steer_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (run, runner) = serve(dir.path());
    let (mut lab, _) = runner::connect(&run).unwrap();
    until(&mut lab, "control", |u| *u == Update::Control(true));
    until(&mut lab, "backtracking", backtracking);

    lab.commands.send(Command::Pause).unwrap();
    until(&mut lab, "paused", |u| *u == Update::Paused(true));
    let (view, _) = until(&mut lab, "a view", |u| iteration(u).is_some());
    let at = iteration(&view).unwrap();
    lab.commands.send(Command::Step).unwrap();
    until(&mut lab, "one step", |u| iteration(u) == Some(at + 1));

    lab.commands.send(Command::Skip).unwrap();
    until(&mut lab, "a switch", |u| {
        matches!(u, Update::Session(Event::TargetSwitched { from: Some(3), to: 2 }))
    });
    lab.commands.send(Command::SaveGenerator).unwrap();
    let (saved, _) = until(&mut lab, "saved", |u| {
        matches!(u, Update::Session(Event::Saved(_)))
    });
    let Update::Session(Event::Saved(file)) = saved else {
        unreachable!()
    };
    assert!(file.is_file());

    lab.commands.send(Command::Stop).unwrap();
    until(&mut lab, "stopped", |u| *u == Update::Stopped);
    let ended = runner.join().unwrap().unwrap();
    assert_eq!(ended, Ended::Stopped { signal: 15 });
    assert!(run.join("state/latest.json").is_file());
    assert!(
        !run.join(runner::SOCKET).exists(),
        "the socket goes with the runner"
    );
}

#[test]
fn a_late_lab_gets_the_whole_state_and_watches_until_the_first_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let (run, runner) = serve(dir.path());
    let (mut first, _) = runner::connect(&run).unwrap();
    until(&mut first, "backtracking", backtracking);
    let logged_before = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .count();

    let (mut second, _) = runner::connect(&run).unwrap();
    let (role, replay) = until(&mut second, "its role", |u| matches!(u, Update::Control(_)));
    assert_eq!(role, Update::Control(false), "the first lab steers");
    assert!(matches!(replay[0], Update::Started { .. }), "{:?}", replay[0]);
    let logged = replay
        .iter()
        .filter(|u| matches!(u, Update::Session(Event::Logged(_))))
        .count();
    assert!(
        logged >= logged_before,
        "{logged} of {logged_before} records replayed"
    );
    assert!(
        replay
            .iter()
            .any(|u| matches!(u, Update::Session(Event::TargetSwitched { .. })))
    );
    assert!(replay.iter().any(|u| matches!(u, Update::View { .. })));
    assert!(replay.iter().any(|u| matches!(u, Update::Preview(_))));

    // It watches: its commands are refused, and nothing changes.
    second.commands.send(Command::Pause).unwrap();
    until(
        &mut second,
        "a refusal",
        |u| matches!(u, Update::Session(Event::Warning(w)) if w.contains("read-only")),
    );
    // When the first lab leaves, the second steers.
    drop(first);
    until(&mut second, "control", |u| *u == Update::Control(true));
    second.commands.send(Command::Pause).unwrap();
    until(&mut second, "paused", |u| *u == Update::Paused(true));
    second.commands.send(Command::Stop).unwrap();
    until(&mut second, "stopped", |u| *u == Update::Stopped);
    runner.join().unwrap().unwrap();
}

/// A raw connection, as any program could open.
struct Raw {
    stream: UnixStream,
    lines: BufReader<UnixStream>,
}

impl Raw {
    fn open(run: &Path) -> Self {
        let stream = UnixStream::connect(run.join(runner::SOCKET)).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let lines = BufReader::new(stream.try_clone().unwrap());
        Self { stream, lines }
    }

    fn send(&mut self, line: &str) {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\n").unwrap();
    }

    /// The next message that is not an update.
    fn reply(&mut self) -> RunnerMessage {
        loop {
            let mut line = String::new();
            assert!(self.lines.read_line(&mut line).unwrap() > 0, "the runner hung up");
            let message: RunnerMessage = serde_json::from_str(&line).unwrap();
            if !matches!(message, RunnerMessage::Update(_)) {
                return message;
            }
        }
    }
}

fn hello(version: u32) -> String {
    serde_json::to_string(&ClientMessage::Hello {
        version,
        purpose: Purpose::Lab,
    })
    .unwrap()
}

#[test]
fn garbage_and_strangers_get_an_error_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (run, runner) = serve(dir.path());
    let (mut lab, _) = runner::connect(&run).unwrap();
    until(&mut lab, "backtracking", backtracking);

    // A lab of another protocol version is told why and let go.
    let mut old = Raw::open(&run);
    old.send(&hello(VERSION + 1));
    assert!(matches!(old.reply(), RunnerMessage::Error(e) if e.contains("protocol version")));
    // No hello first.
    let mut rude = Raw::open(&run);
    rude.send(r#"{"command":"pause"}"#);
    assert!(matches!(rude.reply(), RunnerMessage::Error(_)));

    // Garbage after a good hello: an error each, and the connection lives.
    let mut raw = Raw::open(&run);
    raw.send(&hello(VERSION));
    assert!(matches!(raw.reply(), RunnerMessage::Welcome { .. }));
    for junk in [
        "garbage",
        "{\"command\": \"self-destruct\"}",
        "\u{1}\u{2}",
        "[1, 2, 3]",
    ] {
        raw.send(junk);
        assert!(
            matches!(raw.reply(), RunnerMessage::Error(e) if e.contains("protocol version")),
            "{junk}"
        );
    }
    // Training went on, unpaused.
    let (view, _) = until(&mut lab, "a view", |u| iteration(u).is_some());
    let at = iteration(&view).unwrap();
    until(&mut lab, "progress", |u| iteration(u).is_some_and(|i| i > at + 5));

    lab.commands.send(Command::Stop).unwrap();
    until(&mut lab, "stopped", |u| *u == Update::Stopped);
    runner.join().unwrap().unwrap();
}

#[test]
fn a_dead_runners_socket_is_cleaned_up_and_its_checkpoint_named() {
    let dir = tempfile::tempdir().unwrap();
    let (run, runner) = serve(dir.path());
    let (mut lab, _) = runner::connect(&run).unwrap();
    until(&mut lab, "backtracking", backtracking);
    lab.commands.send(Command::Stop).unwrap();
    until(&mut lab, "stopped", |u| *u == Update::Stopped);
    runner.join().unwrap().unwrap();
    // What a runner killed with -9 leaves: a socket nobody answers.
    drop(std::os::unix::net::UnixListener::bind(run.join(runner::SOCKET)).unwrap());
    assert!(run.join(runner::SOCKET).exists());
    let err = format!("{:#}", runner::connect(&run).err().expect("nobody answers"));
    assert!(err.contains("gone") && err.contains("stale"), "{err}");
    assert!(
        err.contains("last checkpoint is iteration") && err.contains("--resume"),
        "{err}"
    );
    assert!(!run.join(runner::SOCKET).exists(), "the stale socket was removed");
}
