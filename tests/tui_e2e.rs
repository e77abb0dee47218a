//! The real binary in a pseudo-terminal: start the lab, see the path and
//! the preview, press space, n, s and q, and find the saved generator and a
//! restored terminal; detach, attach again, and stop the run; kill the lab
//! and find training still going.

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
    /// The folder the command runs in (handed on to a later lab).
    dir: Option<tempfile::TempDir>,
    /// How the emulated terminal answers a query (it ends with a status
    /// request, `ESC [ 5 n`).
    answers: Answers,
    /// The graphics the lab has sent so far (kitty's or sixel's escapes),
    /// and the end of the last chunk, for an escape split between two.
    pictures: Option<Answers>,
    tail: Vec<u8>,
    /// When the terminal sends its late replies ([`Answers::Late`]), and
    /// whether it has.
    late: Option<Instant>,
    /// When the rest of the reply cut by a slow link ([`CUT_REPLY`]) comes.
    late_rest: Option<Instant>,
    late_sent: bool,
}

/// Terminals the tests emulate, by what they answer the lab's query with.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Answers {
    /// The status request only, as every plain terminal does.
    Status,
    /// Nothing at all (tmux without passthrough, for a wrapped query).
    Nothing,
    /// Kitty graphics, device attributes, 10×20-pixel cells, status.
    Kitty,
    /// Device attributes with sixel (4), 10×20-pixel cells, status.
    Sixel,
    /// The status at once (tmux answers it itself), and every other reply
    /// 300 ms later, after the lab stopped waiting (the outer terminal's,
    /// over a slow SSH link): [`LATE_REPLIES`].
    Late,
}

/// A terminal's replies to queries, full of digits: kitty's graphics,
/// device attributes 1 and 2, the cell size, the background colour, a
/// DCS status string.
const LATE_REPLIES: &str = "\x1b_Gi=31;OK\x1b\\\x1b[?62;4;22c\x1b[>1;4000;29c\x1b[6;20;10t\
                            \x1b]11;rgb:1e1e/1e1e/2e2e\x1b\\\x1bP1$r0;1m\x1b\\";
const LATE_BY: Duration = Duration::from_millis(300);
/// A reply a slow link cut in two, the second part [`CUT_GAP`] after the
/// first (which comes with the late replies).
const CUT_REPLY: (&str, &str) = ("\x1b[>1;40", "00;29c");
const CUT_GAP: Duration = Duration::from_millis(200);

impl Answers {
    fn reply(self) -> &'static str {
        match self {
            Answers::Status => "\x1b[0n",
            Answers::Nothing => "",
            Answers::Kitty => "\x1b_Gi=31;OK\x1b\\\x1b[?62;22c\x1b[6;20;10t\x1b[0n",
            Answers::Sixel => "\x1b[?62;4;22c\x1b[6;20;10t\x1b[0n",
            Answers::Late => "\x1b[0n",
        }
    }
}

impl Drop for Lab {
    /// A test that failed halfway must not leave a runner training.
    fn drop(&mut self) {
        let _ = self.child.kill();
        if let Some(dir) = &self.dir
            && dir.path().join("run/lab.sock").exists()
        {
            let _ = std::process::Command::new(env!("CARGO_BIN_EXE_disback"))
                .args(["stop", "run"])
                .current_dir(dir.path())
                .output();
        }
    }
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
        Self::spawn(&["tui", "--config", "tiny.toml", "--out", "run"], dir)
    }

    /// The same on the tiny digits config.
    fn start_digits() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let teachers = dir.path().join("teachers");
        Self::start_digits_with(&teachers, dir, Answers::Status)
    }

    /// The tiny digits config in `dir`, its teacher cached in `teachers`,
    /// in a terminal that answers queries as `answers` says.
    fn start_digits_with(teachers: &std::path::Path, dir: tempfile::TempDir, answers: Answers) -> Self {
        let mut config = common::tiny_digits_config(teachers);
        config.schedule.steps = vec![1_000_000; config.schedule.steps.len()];
        let config_file = dir.path().join("digits.toml");
        std::fs::write(&config_file, config.to_toml().unwrap()).unwrap();
        let mut lab = Self::spawn(&["tui", "--config", "digits.toml", "--out", "run"], dir);
        lab.answers = answers;
        lab
    }

    /// Runs `disback ARGS` in a new pseudo-terminal, in `dir`.
    fn spawn(args: &[&str], dir: tempfile::TempDir) -> Self {
        let pty = native_pty_system()
            .openpty(PtySize {
                rows: 24,
                cols: 80,
                pixel_width: 0,
                pixel_height: 0,
            })
            .unwrap();
        let mut cmd = CommandBuilder::new(env!("CARGO_BIN_EXE_disback"));
        cmd.args(args);
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
            dir: Some(dir),
            answers: Answers::Status,
            pictures: None,
            tail: Vec::new(),
            late: None,
            late_rest: None,
            late_sent: false,
        }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.as_ref().expect("the lab owns its folder").path()
    }

    /// The folder, for the next lab on the same run.
    fn hand_over(mut self) -> tempfile::TempDir {
        self.dir.take().expect("the lab owns its folder")
    }

    /// Runs another `disback` command in the lab's folder.
    fn disback(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(env!("CARGO_BIN_EXE_disback"))
            .args(args)
            .current_dir(self.path())
            .output()
            .unwrap()
    }

    /// Logged records so far: grows while training runs.
    fn records(&self) -> usize {
        std::fs::read_to_string(self.run_file("metrics.jsonl"))
            .unwrap_or_default()
            .lines()
            .count()
    }

    /// Waits until training has logged more than `than` records.
    fn wait_for_records(&self, than: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.records() <= than {
            assert!(Instant::now() < deadline, "training does not go on");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the run's runner has ended.
    fn wait_runner_gone(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.run_file("lab.sock").exists() {
            assert!(Instant::now() < deadline, "the runner did not end");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pump(&mut self) {
        loop {
            if self.late.is_some_and(|at| Instant::now() >= at) {
                self.late = None;
                self.late_rest = Some(Instant::now() + CUT_GAP);
                self.press(&format!("{LATE_REPLIES}{}", CUT_REPLY.0));
            }
            if self.late_rest.is_some_and(|at| Instant::now() >= at) {
                self.late_rest = None;
                self.late_sent = true;
                self.press(CUT_REPLY.1);
            }
            let Ok(chunk) = self.bytes.recv_timeout(Duration::from_millis(20)) else {
                return;
            };
            // The lab on image data asks the terminal for graphics support
            // (the query ends with a status request): answer as this
            // terminal would.
            if chunk.windows(4).any(|w| w == b"\x1b[5n") {
                let reply = self.answers.reply();
                self.press(reply);
                if self.answers == Answers::Late {
                    self.late = Some(Instant::now() + LATE_BY);
                }
            }
            // Pictures: kitty's image escape (ESC _ G …), or sixel's
            // (ESC P … q).
            let mut seen = std::mem::take(&mut self.tail);
            seen.extend_from_slice(&chunk);
            if seen.windows(3).any(|w| w == b"\x1b_G") {
                self.pictures = Some(Answers::Kitty);
            }
            let sixel = |i: usize| seen[i + 2..(i + 12).min(seen.len())].contains(&b'q');
            if (0..seen.len().saturating_sub(2)).any(|i| &seen[i..i + 2] == b"\x1bP" && sixel(i)) {
                self.pictures = Some(Answers::Sixel);
            }
            self.tail = seen[seen.len().saturating_sub(16)..].to_vec();
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

    /// While paused: saves the generator (`s`), then stops the run (`q`,
    /// then `s`: leaving while training runs asks detach or stop). The lab
    /// exits with the terminal restored and the runner ends; stopping saves
    /// the generator too, at the same cost, so into the same one file.
    fn save_then_stop(&mut self) {
        self.press("s");
        self.wait_for("saved run/generator/saved-");
        self.press("q");
        self.wait_for("Leave the lab?");
        self.press("s");
        self.wait_exit(0);
        self.wait_runner_gone();
        assert_eq!(self.saved_generators().len(), 1, "{:?}", self.saved_generators());
    }

    fn run_file(&self, path: &str) -> std::path::PathBuf {
        self.path().join("run").join(path)
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
    lab.wait_for("┌Backtracking");
    lab.wait_for("▶ s'θ3 ");
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
    lab.wait_for("▶ s'θ2 ");
    lab.save_then_stop();
    assert!(
        lab.text().contains("disback: stopped and checkpointed"),
        "{}",
        lab.text()
    );
    assert!(lab.run_file("state/latest.json").is_file());
}

#[test]
fn an_image_run_shows_sample_grids_views_and_nodes() {
    let mut lab = Lab::start_digits();
    lab.wait_for("TARGET");
    lab.wait_for("generator (fixed latents)");
    // The grid: half-blocks in colour (xterm-256color: the 256-colour
    // palette), many of them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while half_blocks(&lab) < 40 {
        assert!(Instant::now() < deadline, "no image grid:\n{}", lab.text());
        lab.pump();
    }
    lab.wait_for("% covered");
    lab.press("v");
    lab.wait_for("Preview 2/3: Heun samples of target s'θ");
    lab.press("v");
    lab.wait_for("data (reference)");
    lab.press("v");
    lab.wait_for("generator (fixed latents)");
    // A node of the path: the teacher, by its number.
    lab.press("0");
    lab.wait_for("Preview: node s'θ0 (teacher)");
    lab.press(" ");
    lab.wait_for("[PAUSED]");
    lab.save_then_stop();
}

/// The very first key acts on an image run, whatever the terminal does
/// with the graphics query: one that never answers it (tmux without
/// passthrough, where the old query's reader took the first key), one that
/// answers kitty's, one that answers sixel's. All three share one teacher.
#[test]
fn the_first_key_acts_on_an_image_run_whatever_the_terminal_answers() {
    let teachers = tempfile::tempdir().unwrap();
    for answers in [Answers::Nothing, Answers::Kitty, Answers::Sixel] {
        let mut lab =
            Lab::start_digits_with(&teachers.path().join("t"), tempfile::tempdir().unwrap(), answers);
        lab.wait_for("TARGET");
        lab.wait_for("Preview 1/3");
        // The grid as this terminal gets it: half-blocks without an answer,
        // else pictures in the protocol it answered for.
        let deadline = Instant::now() + Duration::from_secs(60);
        while match answers {
            Answers::Nothing => half_blocks(&lab) < 40,
            _ => lab.pictures != Some(answers),
        } {
            assert!(Instant::now() < deadline, "{answers:?}: no grid:\n{}", lab.text());
            lab.pump();
        }
        // The first key of this lab: `q` opens the question (a lost `q`
        // would make the `s` that follows save a generator instead of
        // stopping the run); elsewhere `v` moves the preview on.
        if answers == Answers::Nothing {
            lab.press("q");
            lab.wait_for("Leave the lab?");
            lab.press("s");
            lab.wait_exit(0);
            lab.wait_runner_gone();
            assert!(lab.saved_generators().len() == 1, "{:?}", lab.saved_generators());
        } else {
            lab.press("v");
            lab.wait_for("Preview 2/3");
            lab.press(" ");
            lab.wait_for("[PAUSED]");
            lab.save_then_stop();
        }
    }
}

/// Over SSH, or through tmux, the terminal's replies to the graphics query
/// can come after the lab stopped waiting for them. Whenever they come,
/// they are not keys: their digits select no path node, their letters do
/// nothing (the `m` of the DCS reply would turn the manual schedule on).
#[test]
fn late_terminal_replies_never_act_as_keys() {
    let dir = tempfile::tempdir().unwrap();
    let teachers = dir.path().join("teachers");
    let mut lab = Lab::start_digits_with(&teachers, dir, Answers::Late);
    // The replies go 300 ms after the query, while the teacher trains, the
    // last one cut in two 200 ms apart.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lab.late_sent {
        assert!(Instant::now() < deadline, "the lab never asked the terminal");
        lab.pump();
    }
    // Keys act in order: once `v` has moved the preview on, every byte
    // before it has been read, and what it did is in the last events.
    lab.press("v");
    lab.wait_for("Preview 2/3");
    no_key_acted(&lab.text());
    lab.wait_for("TARGET");
    no_key_acted(&lab.text());
    lab.press(" ");
    lab.wait_for("[PAUSED]");
    lab.save_then_stop();
}

/// What keys hidden in a terminal's replies would have done, on screen.
fn no_key_acted(screen: &str) {
    let effects = [
        "has no node",
        "not recorded yet",
        "Preview: node",
        "manual schedule",
        "[MANUAL]",
        "Leave the lab?",
        "saved run/generator",
    ];
    for effect in effects {
        assert!(
            !screen.contains(effect),
            "a reply acted as keys ({effect:?}):\n{screen}"
        );
    }
}

/// Cells of the screen drawn as half-blocks with two colours.
fn half_blocks(lab: &Lab) -> usize {
    let screen = lab.parser.screen();
    let mut n = 0;
    for row in 0..24 {
        for col in 0..80 {
            if let Some(cell) = screen.cell(row, col)
                && cell.contents() == "▀"
                && cell.fgcolor() != cell.bgcolor()
            {
                n += 1;
            }
        }
    }
    n
}

#[test]
fn a_hang_up_termination_or_kill_of_the_lab_only_detaches_it() {
    // Exit status 128 + the signal for a lab that was told to go; a killed
    // one has none. Training goes on in every case.
    let mut dir = None;
    for (signal, code) in [("-HUP", Some(129)), ("-TERM", Some(143)), ("-KILL", None)] {
        let mut lab = match dir.take() {
            None => Lab::start(),
            Some(d) => Lab::spawn(&["attach", "run"], d),
        };
        lab.wait_for("▶ s'θ");
        let pid = lab.child.process_id().expect("a pid").to_string();
        assert!(
            std::process::Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
        match code {
            Some(code) => lab.wait_exit(code),
            None => while lab.child.try_wait().unwrap().is_none() {},
        }
        let records = lab.records();
        lab.wait_for_records(records + 2);
        dir = Some(lab.hand_over());
    }
    // Stopped from a script: checkpointed, then over.
    let dir = dir.take().unwrap();
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_disback"))
        .args(["stop", "run"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !dir.path().join("run/lab.sock").exists(),
        "stop returns once the runner ended"
    );
    assert!(dir.path().join("run/state/latest.json").is_file());
    let saved = std::fs::read_dir(dir.path().join("run/generator")).unwrap();
    let saved = saved.filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("saved-")
    });
    assert_eq!(saved.count(), 1, "stopping saves the generator");
}

#[test]
fn detach_attach_and_stop() {
    let mut lab = Lab::start();
    lab.wait_for("▶ s'θ3 ");
    lab.press(" ");
    lab.wait_for("[PAUSED]");
    lab.press(" ");
    lab.press("d");
    lab.wait_exit(0);
    assert!(lab.text().contains("disback attach run"), "{}", lab.text());
    let at_detach = lab.records();
    lab.wait_for_records(at_detach + 2);

    // `disback ls` shows it live; `disback attach` (no argument: the only
    // live run under runs/ — here the run is in ./run, so name it).
    let ls = lab.disback(&["ls", "."]);
    let listing = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert!(listing.contains("run") && listing.contains("live"), "{listing}");
    let mut lab = Lab::spawn(&["attach", "run"], lab.hand_over());
    lab.wait_for("┌Backtracking");
    // The full state: the events from before the detach are replayed.
    lab.wait_for("first target: s'θ3");
    assert!(lab.records() > at_detach, "the same run, further along");
    lab.press("q");
    lab.wait_for("Leave the lab?");
    lab.press("s");
    lab.wait_exit(0);
    lab.wait_runner_gone();
    assert!(lab.run_file("state/latest.json").is_file());
    let ls = lab.disback(&["ls", "."]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("ended"));
}

/// The lab on a pretrained diffusers teacher with no data: its header
/// names the teacher and its size, and the run backtracks.
#[test]
fn the_lab_opens_on_a_pretrained_teacher_without_data() {
    let dir = tempfile::tempdir().unwrap();
    let teacher = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/diffusers/plain-eps");
    let set = format!("teacher.pretrained={}", teacher.display());
    let args = [
        "tui",
        "--set",
        &set,
        "--set",
        "device=cpu",
        "--set",
        "record.batch=16",
        "--set",
        "distill.batch=16",
        "--set",
        "metrics.samples=16",
        "--set",
        "metrics.every=10",
        "--out",
        "run",
    ];
    let mut lab = Lab::spawn(&args, dir);
    // The header names the teacher (its size runs past 80 columns here).
    lab.wait_for("no data: the teacher's samples (16 images), 1×8×8 · teacher plain-eps");
    lab.wait_for("TARGET");
    lab.press(" ");
    lab.wait_for("[PAUSED]");
    lab.save_then_stop();
}
