//! The lab's side of a runner: starting one in the background, finding
//! live runs, connecting, stopping.

use super::wire::{self, ClientMessage, Purpose, RunnerMessage, VERSION};
use super::{LOG, socket_path};
use crate::engine::checkpoint_iteration;
use crate::engine::protocol::{Command, Event, Link, Update};
use crate::rundir::{RunDir, read_metrics};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Connects to the runner of `run_dir` as a lab. Returns the link and the
/// runner's pid. A run whose runner is gone is an error that says what is
/// left of it.
pub fn connect(run_dir: &Path) -> Result<(Link, u32)> {
    let (reader, pid) = hello(run_dir, Purpose::Lab)?;
    let (commands, command_rx) = std::sync::mpsc::channel::<Command>();
    let (update_tx, updates) = tokio::sync::mpsc::unbounded_channel();
    let mut writer = reader.get_ref().try_clone()?;
    let carrier = std::thread::spawn(move || {
        for command in command_rx {
            if writer
                .write_all(wire::encode(&ClientMessage::Command(command)).as_bytes())
                .is_err()
            {
                return;
            }
        }
        // The lab let go: tell the runner this lab left.
        let _ = writer.shutdown(std::net::Shutdown::Both);
    });
    std::thread::spawn(move || {
        for line in reader.split(b'\n') {
            let update = match line.map(|l| wire::decode::<RunnerMessage>(&l)) {
                Ok(Ok(RunnerMessage::Update(u))) => u,
                Ok(Ok(RunnerMessage::Error(e))) => Update::Session(Event::Warning(format!("runner: {e}"))),
                Ok(Ok(RunnerMessage::Welcome { .. })) => continue,
                Ok(Err(e)) => Update::Session(Event::Warning(format!("runner sent {e:#}"))),
                Err(_) => return,
            };
            if update_tx.send(update).is_err() {
                return;
            }
        }
    });
    Ok((
        Link {
            commands,
            updates,
            carrier: Some(carrier),
        },
        pid,
    ))
}

/// Opens the socket and exchanges hellos; returns the reader (which may
/// already hold the lines after the welcome) and the runner's pid.
fn hello(run_dir: &Path, purpose: Purpose) -> Result<(BufReader<UnixStream>, u32)> {
    let path = socket_path(run_dir);
    let mut stream = UnixStream::connect(&path).map_err(|e| gone(run_dir, e))?;
    stream.write_all(
        wire::encode(&ClientMessage::Hello {
            version: VERSION,
            purpose,
        })
        .as_bytes(),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    (&mut reader).take(wire::MAX_LINE).read_until(b'\n', &mut line)?;
    reader.get_ref().set_read_timeout(None)?;
    match wire::decode::<RunnerMessage>(line.trim_ascii_end()) {
        Ok(RunnerMessage::Welcome { pid, .. }) => Ok((reader, pid)),
        Ok(RunnerMessage::Error(e)) => bail!("{}: {e}", run_dir.display()),
        _ => bail!("{}: the runner did not answer as expected", run_dir.display()),
    }
}

/// The error for a run with no runner: cleans up a stale socket and says
/// how to continue from what was kept.
fn gone(run_dir: &Path, e: std::io::Error) -> anyhow::Error {
    let path = socket_path(run_dir);
    let stale = path.exists();
    if stale {
        let _ = std::fs::remove_file(&path);
    }
    let kept = match RunDir::open(run_dir).ok().and_then(|r| checkpoint_iteration(&r)) {
        Some(i) => format!(
            "its last checkpoint is iteration {i} (at most one checkpoint interval was lost); continue \
             it with `disback tui --resume {}`",
            run_dir.display()
        ),
        None => "it has no checkpoint to continue from".into(),
    };
    let what = match stale {
        true => "its runner is gone (killed or crashed: a stale socket was removed)",
        false => "no runner serves it (it ended, or never ran in the background)",
    };
    anyhow::anyhow!("{}: {what}; {kept} ({e})", run_dir.display())
}

/// Asks the runner of `run_dir` to checkpoint and end, and waits until it
/// has.
pub fn stop(run_dir: &Path) -> Result<()> {
    let (reader, _) = hello(run_dir, Purpose::Stop)?;
    let deadline = Instant::now() + Duration::from_secs(600);
    for line in reader.split(b'\n') {
        let Ok(line) = line else { break };
        if let Ok(RunnerMessage::Update(Update::Session(Event::Saved(p)))) = wire::decode(&line) {
            eprintln!("saved {}", p.display());
        }
        if Instant::now() > deadline {
            bail!("{}: the runner did not stop within 10 minutes", run_dir.display());
        }
    }
    // The runner closes the socket once training has ended.
    Ok(())
}

/// Starts `disback serve ARGS` in the background: its own session (no
/// terminal, so no SIGHUP), output to `runner.log` in the run directory.
/// Returns its pid once its socket answers; a failure before that (a bad
/// config, a busy directory) is returned with the runner's own message.
pub fn spawn_detached(args: &[String], run_dir: &Path) -> Result<u32> {
    let exe = std::env::current_exe().context("cannot find the disback binary")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the closure only calls setsid (async-signal-safe).
    unsafe { command.pre_exec(super::peer::leave_terminal) };
    let mut child = command.spawn().context("cannot start the runner")?;
    // The runner points its output at its log once the run directory is
    // its own; until then its errors come down this pipe.
    let mut early = String::new();
    child.stderr.take().expect("piped").read_to_string(&mut early)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!(
                "the runner ended at once ({status}): {}",
                if early.trim().is_empty() {
                    "see its log".into()
                } else {
                    early.trim().to_string()
                }
            );
        }
        if UnixStream::connect(socket_path(run_dir)).is_ok() {
            return Ok(child.id());
        }
        if Instant::now() > deadline {
            bail!(
                "the runner did not open {} within a minute; see {}",
                socket_path(run_dir).display(),
                run_dir.join(LOG).display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A run directory under a folder, as `disback ls` shows it.
#[derive(Debug, Clone)]
pub struct LiveRun {
    pub dir: PathBuf,
    /// A runner answers on its socket.
    pub live: bool,
    pub stage: Option<String>,
    pub step: Option<usize>,
    pub energy: Option<f64>,
    pub loss: Option<f64>,
}

/// Every run directory directly under `base`, newest name last.
pub fn live_runs(base: &Path) -> Vec<LiveRun> {
    let Ok(entries) = std::fs::read_dir(base) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("config.toml").is_file())
        .collect();
    dirs.sort();
    dirs.into_iter()
        .map(|dir| {
            let records = read_metrics(&dir.join("metrics.jsonl")).unwrap_or_default();
            let last = records.last();
            let energy = records
                .iter()
                .rev()
                .find_map(|r| r.eval.as_ref().map(|e| e.energy));
            LiveRun {
                live: UnixStream::connect(socket_path(&dir)).is_ok(),
                stage: last.map(|r| r.stage.to_string()),
                step: last.map(|r| r.step),
                energy,
                loss: last.and_then(|r| r.loss_g.or(r.loss_teacher).or(r.loss_fake)),
                dir,
            }
        })
        .collect()
}

/// The run `disback attach` means: the one given, or the only live run
/// under `runs/`; with several, the user picks one.
pub fn attach_target(given: Option<PathBuf>, base: &Path) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir);
    }
    let live: Vec<LiveRun> = live_runs(base).into_iter().filter(|r| r.live).collect();
    match live.len() {
        0 => bail!(
            "no live run under {}/ (`disback ls` lists every run; `disback attach RUN_DIR` names one)",
            base.display()
        ),
        1 => Ok(live[0].dir.clone()),
        _ => {
            eprintln!("live runs:");
            for (i, r) in live.iter().enumerate() {
                eprintln!("  {}  {}", i + 1, r.dir.display());
            }
            eprint!("attach to which (1–{})? ", live.len());
            let mut answer = String::new();
            std::io::stdin().read_line(&mut answer)?;
            let pick: usize = answer.trim().parse().unwrap_or(0);
            match live.get(pick.wrapping_sub(1)) {
                Some(r) => Ok(r.dir.clone()),
                None => bail!("no run numbered {:?}", answer.trim()),
            }
        }
    }
}
