//! The real binary in a pseudo-terminal: start the lab, see the path and
//! the preview, press space, n, s and q, and find the saved generator and a
//! restored terminal.

mod common;

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

struct Screen {
    parser: vt100::Parser,
    bytes: Receiver<Vec<u8>>,
    raw: Vec<u8>,
}

impl Screen {
    fn pump(&mut self) {
        while let Ok(chunk) = self.bytes.recv_timeout(Duration::from_millis(20)) {
            self.parser.process(&chunk);
            self.raw.extend_from_slice(&chunk);
        }
    }

    fn text(&self) -> String {
        self.parser.screen().contents()
    }

    /// Waits until the screen shows `needle`.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            self.pump();
            if self.text().contains(needle) {
                return;
            }
        }
        panic!("the screen never showed {needle:?}:\n{}", self.text());
    }
}

#[test]
fn the_lab_runs_in_a_terminal_and_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::tiny_config(&dir.path().join("teachers"));
    config.schedule.steps = vec![1_000_000; 4];
    let config_file = dir.path().join("tiny.toml");
    std::fs::write(&config_file, config.to_toml().unwrap()).unwrap();

    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_disback"));
    cmd.args(["tui", "--config", config_file.to_str().unwrap(), "--out", "run"]);
    cmd.cwd(dir.path());
    cmd.env("TERM", "xterm-256color");
    cmd.env_remove("NO_COLOR");
    let mut child = pty.slave.spawn_command(cmd).unwrap();
    drop(pty.slave);
    let mut reader = pty.master.try_clone_reader().unwrap();
    let mut keys = pty.master.take_writer().unwrap();
    let (tx, bytes) = channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut screen = Screen {
        parser: vt100::Parser::new(NonZeroU16::new(24).unwrap(), NonZeroU16::new(80).unwrap(), 0),
        bytes,
        raw: Vec::new(),
    };
    let mut press = |k: &str| {
        keys.write_all(k.as_bytes()).unwrap();
        keys.flush().unwrap();
    };

    screen.wait_for("Backtracking path");
    screen.wait_for("▶ s'θ3  TARGET");
    assert!(
        screen.parser.screen().alternate_screen(),
        "the lab draws on the alternate screen"
    );
    let braille = screen
        .text()
        .chars()
        .filter(|c| ('\u{2801}'..='\u{28ff}').contains(c))
        .count();
    assert!(braille > 20, "the preview shows samples:\n{}", screen.text());

    press(" ");
    screen.wait_for("[PAUSED]");
    press("n");
    screen.wait_for("target switched: s'θ3 → s'θ2");
    screen.wait_for("▶ s'θ2  TARGET");
    press("s");
    screen.wait_for("saved run/generator/saved-");
    press("q");
    screen.wait_for("Quit now?");
    press("y");

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the lab did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    screen.pump();
    assert!(status.success(), "exit status {status:?}");
    // The terminal is back: main screen, cursor shown, the summary printed.
    assert!(
        !screen.parser.screen().alternate_screen(),
        "still on the alternate screen"
    );
    assert!(
        !screen.parser.screen().hide_cursor(),
        "the cursor is still hidden"
    );
    assert!(
        screen.text().contains("disback: run directory run"),
        "{}",
        screen.text()
    );

    let saved: Vec<_> = std::fs::read_dir(dir.path().join("run/generator"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("saved-"))
        .collect();
    assert_eq!(saved.len(), 1, "one saved generator: {saved:?}");
    assert!(dir.path().join("run/metrics.jsonl").is_file());
}
