//! The real binary in a pseudo-terminal: start the lab, see the path and
//! the preview, press space, n, s and q, and find the saved generator and a
//! restored terminal.

mod common;

use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use std::io::{Read, Write};
use std::num::NonZeroU16;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The lab running in a pseudo-terminal of 80×24, and what it drew.
struct Lab {
    child: Box<dyn portable_pty::Child + Send + Sync>,
    keys: Box<dyn Write + Send>,
    parser: vt100::Parser,
    bytes: Receiver<Vec<u8>>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// Starts `disback tui` on the tiny config with a budget that does not
    /// run out, in a fresh directory, with its run in `run/`.
    fn start() -> Self {
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
        let child = pty.slave.spawn_command(cmd).unwrap();
        drop(pty.slave);
        let mut reader = pty.master.try_clone_reader().unwrap();
        let keys = pty.master.take_writer().unwrap();
        let (tx, bytes) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            keys,
            parser: vt100::Parser::new(NonZeroU16::new(24).unwrap(), NonZeroU16::new(80).unwrap(), 0),
            bytes,
            dir,
        }
    }

    fn pump(&mut self) {
        while let Ok(chunk) = self.bytes.recv_timeout(Duration::from_millis(20)) {
            self.parser.process(&chunk);
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

    fn press(&mut self, keys: &str) {
        self.keys.write_all(keys.as_bytes()).unwrap();
        self.keys.flush().unwrap();
    }

    /// Waits for the lab to exit with `code` and the terminal restored.
    fn wait_exit(&mut self, code: u32) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the lab did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        self.pump();
        assert_eq!(status.exit_code(), code, "exit status {status:?}");
        let screen = self.parser.screen();
        assert!(!screen.alternate_screen(), "still on the alternate screen");
        assert!(!screen.hide_cursor(), "the cursor is still hidden");
    }

    fn run_file(&self, path: &str) -> std::path::PathBuf {
        self.dir.path().join("run").join(path)
    }

    fn saved_generators(&self) -> Vec<String> {
        std::fs::read_dir(self.run_file("generator"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("saved-"))
            .collect()
    }
}

#[test]
fn the_lab_runs_in_a_terminal_and_restores_it() {
    let mut lab = Lab::start();
    lab.wait_for("Backtracking path");
    lab.wait_for("▶ s'θ3  TARGET");
    assert!(
        lab.parser.screen().alternate_screen(),
        "the lab draws on the alternate screen"
    );
    let braille = lab
        .text()
        .chars()
        .filter(|c| ('\u{2801}'..='\u{28ff}').contains(c))
        .count();
    assert!(braille > 20, "the preview shows samples:\n{}", lab.text());

    lab.press(" ");
    lab.wait_for("[PAUSED]");
    lab.press("n");
    lab.wait_for("target switched: s'θ3 → s'θ2");
    lab.wait_for("▶ s'θ2  TARGET");
    lab.press("s");
    lab.wait_for("saved run/generator/saved-");
    lab.press("q");
    lab.wait_for("Quit now?");
    lab.press("y");
    lab.wait_exit(0);
    assert!(
        lab.text().contains("disback: run directory run"),
        "{}",
        lab.text()
    );
    assert_eq!(lab.saved_generators().len(), 1, "one saved generator");
    assert!(lab.run_file("metrics.jsonl").is_file());
}

#[test]
fn a_hang_up_or_termination_saves_and_exits_cleanly() {
    // Exit status 128 + the signal: stopped, resumable.
    for (signal, code) in [("-HUP", 129), ("-TERM", 143)] {
        let mut lab = Lab::start();
        lab.wait_for("▶ s'θ3  TARGET");
        let pid = lab.child.process_id().expect("a pid").to_string();
        assert!(
            std::process::Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        lab.wait_exit(code);
        assert!(lab.text().contains("saved"), "{signal}: {}", lab.text());
        assert_eq!(
            lab.saved_generators().len(),
            1,
            "{signal}: the generator is saved"
        );
        assert!(
            lab.run_file("state/latest.json").is_file(),
            "{signal}: a checkpoint is kept"
        );
    }
}
