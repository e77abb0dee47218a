//! The runner: a run that lives in its own process and serves labs over a
//! Unix socket in its run directory, so training outlives the SSH
//! connection and any later terminal can attach and steer.
//!
//! ```text
//!  lab (client.rs) ──Command──▶ lab.sock ──▶ hub ──▶ training thread
//!  lab (client.rs) ◀─Update─── lab.sock ◀── hub ◀── (engine/trainer.rs)
//!                                            │
//!                                            └─ mirror: the state a late lab replays
//! ```
//!
//! The first lab to attach steers; later ones watch (read-only) until it
//! leaves. Only the user who started the run can connect (`SO_PEERCRED`);
//! the socket is mode 0600. Bad messages get an error reply and change
//! nothing.

mod client;
mod mirror;
mod peer;
mod wire;

pub use client::{attach_target, connect, live_runs, spawn_detached, stop};
pub use peer::redirect_output;

use peer::check_same_user;
pub use wire::{ClientMessage, Purpose, RunnerMessage, VERSION};

use crate::engine::protocol::{Command, Update};
use crate::engine::trainer::{Start, spawn};
use crate::runtime::Ended;
use anyhow::{Result, bail};
use mirror::Mirror;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc::{Receiver, UnboundedSender, channel, unbounded_channel};

/// The socket's name inside the run directory.
pub const SOCKET: &str = "lab.sock";
/// The detached runner's log inside the run directory.
pub const LOG: &str = "runner.log";

pub fn socket_path(run_dir: &Path) -> PathBuf {
    run_dir.join(SOCKET)
}

/// How a runner behaves beyond training.
pub struct Options {
    /// Once training has finished or failed, how long to keep the final
    /// state viewable with no lab attached.
    pub linger: Duration,
}

/// Trains `start` and serves labs until training ends: stopped by a lab,
/// `disback stop` or a signal (checkpointed), or finished and left alone
/// for `linger`. `show` sees every update (the foreground run prints them).
pub fn serve(start: Start, run_dir: &Path, options: Options, show: impl FnMut(&Update)) -> Result<Ended> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = bind(&socket_path(run_dir))?;
        let (link, thread) = spawn(start).split();
        let result = Hub::new(link.commands, options)
            .run(listener, link.updates, thread, &socket_path(run_dir), show)
            .await;
        let _ = std::fs::remove_file(socket_path(run_dir));
        result
    })
}

/// Binds the run's socket, mode 0600. A socket left by a runner that died
/// (nothing answers on it) is removed first.
fn bind(path: &Path) -> Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!("{}: another runner serves this run", path.display());
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the socket {} ({e}); a Unix socket path must be under 108 bytes",
            path.display()
        )
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// What a connection tells the hub.
enum FromLab {
    Joined {
        id: u64,
        purpose: Purpose,
        lines: tokio::sync::mpsc::Sender<String>,
        writer: tokio::task::JoinHandle<()>,
    },
    Message {
        id: u64,
        message: ClientMessage,
    },
    /// A message that could not be read.
    Refused {
        id: u64,
        why: String,
    },
    Left {
        id: u64,
    },
}

struct Lab {
    lines: tokio::sync::mpsc::Sender<String>,
    /// The task writing `lines` to the socket.
    writer: tokio::task::JoinHandle<()>,
}

struct Hub {
    /// To the training thread.
    commands: Sender<Command>,
    labs: BTreeMap<u64, Lab>,
    /// The lab that steers: the earliest attached one still there.
    controller: Option<u64>,
    mirror: Mirror,
    options: Options,
    /// When the last lab left a settled run.
    alone_since: Option<Instant>,
    /// How training was asked to end (a stop), if it was.
    ending: Option<Ended>,
    /// Whether training was asked to end at all.
    quitting: bool,
}

impl Hub {
    /// Lines a slow lab may fall behind before it is let go.
    const BACKLOG: usize = 4096;

    fn new(commands: Sender<Command>, options: Options) -> Self {
        // Nobody watches yet: no previews until a lab attaches.
        let _ = commands.send(Command::Watched(false));
        Self {
            commands,
            labs: BTreeMap::new(),
            controller: None,
            mirror: Mirror::default(),
            options,
            alone_since: Some(Instant::now()),
            ending: None,
            quitting: false,
        }
    }

    async fn run(
        mut self,
        listener: UnixListener,
        mut updates: tokio::sync::mpsc::UnboundedReceiver<Update>,
        thread: std::thread::JoinHandle<Result<crate::engine::Session>>,
        socket: &Path,
        mut show: impl FnMut(&Update),
    ) -> Result<Ended> {
        let (to_hub, mut from_labs) = unbounded_channel();
        let mut next_id = 0;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        // A foreground run whose terminal went away cannot print on: stop it
        // with a checkpoint (a background runner has no terminal to lose).
        let mut sighup = signal(SignalKind::hangup())?;
        // A second signal ends the process at once (a step that hangs).
        let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM, SIGHUP] {
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, stopping.clone())?;
        }
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                update = updates.recv() => {
                    let Some(update) = update else { break };
                    show(&update);
                    self.mirror.apply(&update);
                    let stopped = update == Update::Stopped;
                    self.broadcast(&RunnerMessage::Update(update));
                    if stopped {
                        break;
                    }
                }
                accepted = listener.accept() => {
                    if let Ok((stream, _)) = accepted {
                        next_id += 1;
                        tokio::spawn(connection(stream, next_id, to_hub.clone()));
                    }
                }
                Some(message) = from_labs.recv() => self.on_lab(message),
                _ = sigterm.recv() => self.stop_on_signal(SIGTERM, &stopping),
                _ = sigint.recv() => self.stop_on_signal(SIGINT, &stopping),
                _ = sighup.recv() => self.stop_on_signal(SIGHUP, &stopping),
                _ = tick.tick() => self.quit_when_alone(),
            }
        }
        // Gone before the labs hear the end, so none finds it after.
        drop(listener);
        let _ = std::fs::remove_file(socket);
        // Let every lab receive the last lines (the stop, the saves).
        let writers = std::mem::take(&mut self.labs).into_values().map(|lab| lab.writer);
        let _ = tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(writers)).await;
        let _ = thread.join();
        if let Some(ended) = self.ending {
            return Ok(ended);
        }
        match self.mirror.failure() {
            Some(message) => bail!("{message}"),
            None => Ok(Ended::Finished),
        }
    }

    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    fn stop_on_signal(&mut self, signal: i32, stopping: &std::sync::atomic::AtomicBool) {
        stopping.store(true, std::sync::atomic::Ordering::Relaxed);
        self.stop(Ended::Stopped { signal });
    }

    /// Asks training to checkpoint and end (once).
    fn stop(&mut self, how: Ended) {
        if !self.quitting {
            self.quitting = true;
            self.ending = Some(how);
            self.send(if self.mirror.settled() {
                Command::Quit
            } else {
                Command::Stop
            });
        }
    }

    /// A settled run with no lab ends after the linger time.
    fn quit_when_alone(&mut self) {
        if !self.labs.is_empty() || !self.mirror.settled() {
            self.alone_since = None;
            return;
        }
        let since = *self.alone_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.options.linger && !self.quitting {
            self.quitting = true;
            self.send(Command::Quit);
        }
    }

    fn on_lab(&mut self, message: FromLab) {
        match message {
            FromLab::Joined {
                id,
                purpose,
                lines,
                writer,
            } => {
                let lab = Lab { lines, writer };
                let welcome = RunnerMessage::Welcome {
                    version: VERSION,
                    pid: std::process::id(),
                };
                let _ = lab.lines.try_send(wire::encode(&welcome));
                if purpose == Purpose::Stop {
                    // Stopped by request: as SIGTERM would, for scripts.
                    self.labs.insert(id, lab);
                    return self.stop(Ended::Stopped { signal: SIGTERM });
                }
                for update in self.mirror.replay() {
                    let _ = lab
                        .lines
                        .try_send(wire::encode(&RunnerMessage::Update(update.clone())));
                }
                let steers = self.controller.is_none();
                let _ = lab
                    .lines
                    .try_send(wire::encode(&RunnerMessage::Update(Update::Control(steers))));
                if steers {
                    self.controller = Some(id);
                }
                if self.labs.is_empty() {
                    self.send(Command::Watched(true));
                }
                self.labs.insert(id, lab);
            }
            FromLab::Message { id, message } => match message {
                ClientMessage::Command(Command::Stop) if self.controller == Some(id) => {
                    self.stop(Ended::Stopped { signal: SIGTERM })
                }
                ClientMessage::Command(command) if self.controller == Some(id) => self.send(command),
                ClientMessage::Command(_) => self.reply_error(
                    id,
                    "read-only: another lab steers this run; it is handed to you when that one leaves",
                ),
                ClientMessage::Hello { .. } => self.reply_error(id, "already said hello"),
            },
            FromLab::Refused { id, why } => self.reply_error(id, &why),
            FromLab::Left { id } => self.leave(id),
        }
    }

    fn reply_error(&self, id: u64, message: &str) {
        if let Some(lab) = self.labs.get(&id) {
            let _ = lab
                .lines
                .try_send(wire::encode(&RunnerMessage::Error(message.into())));
        }
    }

    fn leave(&mut self, id: u64) {
        self.labs.remove(&id);
        if self.controller == Some(id) {
            // Hand the steering to the lab attached longest.
            self.controller = self.labs.keys().next().copied();
            if let Some(next) = self.controller {
                let line = wire::encode(&RunnerMessage::Update(Update::Control(true)));
                let _ = self.labs[&next].lines.try_send(line);
            }
        }
        if self.labs.is_empty() {
            self.send(Command::Watched(false));
        }
    }

    /// Sends a message to every lab; one too far behind is let go.
    fn broadcast(&mut self, message: &RunnerMessage) {
        if self.labs.is_empty() {
            return;
        }
        let line = wire::encode(message);
        let behind: Vec<u64> = self
            .labs
            .iter()
            .filter(|(_, lab)| lab.lines.try_send(line.clone()).is_err())
            .map(|(id, _)| *id)
            .collect();
        for id in behind {
            self.leave(id);
        }
    }
}

/// One connection: check who it is and its hello, then pass its messages
/// to the hub and the hub's lines to it.
async fn connection(stream: UnixStream, id: u64, to_hub: UnboundedSender<FromLab>) {
    let (read, mut write) = stream.into_split();
    let refuse = |message: String| wire::encode(&RunnerMessage::Error(message));
    let peer = peer::peer_uid(write.as_ref()).and_then(|uid| check_same_user(uid, peer::own_uid()));
    if let Err(e) = peer {
        let _ = write.write_all(refuse(format!("{e:#}")).as_bytes()).await;
        return;
    }
    let mut reader = BufReader::new(read);
    let hello = tokio::time::timeout(Duration::from_secs(10), wire::read_line(&mut reader)).await;
    let purpose = match hello.map(|r| r.map(|l| l.map(|l| wire::decode::<ClientMessage>(&l)))) {
        Ok(Ok(Some(Ok(ClientMessage::Hello { version, purpose })))) if version == VERSION => purpose,
        Ok(Ok(Some(Ok(ClientMessage::Hello { version, .. })))) => {
            let why = format!(
                "protocol version {version} is not this runner's ({VERSION}): use the same disback build"
            );
            let _ = write.write_all(refuse(why).as_bytes()).await;
            return;
        }
        Ok(Ok(Some(Ok(_)))) => {
            let _ = write.write_all(refuse("say hello first".into()).as_bytes()).await;
            return;
        }
        Ok(Ok(Some(Err(e)))) => {
            let _ = write.write_all(refuse(format!("{e:#}")).as_bytes()).await;
            return;
        }
        _ => return,
    };
    let (lines, mut outgoing): (_, Receiver<String>) = channel(Hub::BACKLOG);
    let writer = tokio::spawn(async move {
        while let Some(line) = outgoing.recv().await {
            if write.write_all(line.as_bytes()).await.is_err() {
                break;
            }
        }
        let _ = write.shutdown().await;
    });
    let joined = FromLab::Joined {
        id,
        purpose,
        lines,
        writer,
    };
    if to_hub.send(joined).is_err() {
        return;
    }
    loop {
        let (to, last) = match wire::read_line(&mut reader).await {
            Ok(None) => break,
            Ok(Some(line)) => match wire::decode::<ClientMessage>(&line) {
                Ok(message) => (FromLab::Message { id, message }, false),
                // Garbage changes nothing: it is answered, and reading goes on.
                Err(e) => (
                    FromLab::Refused {
                        id,
                        why: format!("{e:#}"),
                    },
                    false,
                ),
            },
            // A line too long to read past: answered, then the end.
            Err(e) => (
                FromLab::Refused {
                    id,
                    why: format!("{e:#}"),
                },
                true,
            ),
        };
        if to_hub.send(to).is_err() || last {
            break;
        }
    }
    let _ = to_hub.send(FromLab::Left { id });
}
