//! The control plane of a team of processes: TCP connections from every
//! rank to rank 0, opened at the start to hand out a token (NCCL's unique
//! id; who may join: `door.rs`) and kept for rank 0's orders, for
//! failures and for the end. A rank whose connection closes without
//! having left has died: the others learn it within the moment, not at
//! the next gradient exchange's timeout.
//!
//! One writer per socket: every frame is written under its connection's
//! lock (orders, failures forwarded by a reader thread, the end); the
//! reader threads only read, each on its own clone.
//!
//! The end: rank 0 orders it, each other rank does its part and says
//! [`LEFT`]; rank 0 waits for every rank to have left, failed or closed
//! before its own connections close. So no rank sees another's closing
//! as a failure, and every process exits 0.

use super::door::{Door, knock};
use super::watchdog::{InCall, Watchdog, Watching};
use super::wire::{FAILURE, LEFT, MESSAGE, read_frame, write_frame};
use anyhow::{Context, Result, bail};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One rank's end of the control plane.
pub(super) struct Hub {
    rank: usize,
    /// Rank 0: a connection to each other rank (index r − 1); the others:
    /// their one connection to rank 0.
    links: Arc<Links>,
    news: Arc<News>,
    /// Rank 0's orders, as the reader thread receives them (ranks > 0).
    orders: Mutex<Option<Receiver<Vec<u8>>>>,
    watchdog: Option<Watchdog>,
    /// How long rank 0 waits for the others to leave at the end.
    timeout: Duration,
    /// The connections rank 0 refused while the team gathered (each was
    /// logged as it came; kept for the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    refused: Vec<String>,
}

struct Links(Vec<Mutex<TcpStream>>);

impl Links {
    fn lock(&self, index: usize) -> MutexGuard<'_, TcpStream> {
        self.0[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes `bytes` to every link but `except`, ignoring links that are
    /// gone (their ranks are leaving anyway).
    fn tell(&self, kind: u8, bytes: &[u8], except: Option<usize>) {
        for index in (0..self.0.len()).filter(|&i| Some(i) != except) {
            let _ = write_frame(&mut self.lock(index), kind, bytes);
        }
    }
}

/// What this rank has heard: the first failure any rank reported, whether
/// its own part of the work is over, and (rank 0) who is still in.
#[derive(Default)]
struct News {
    failure: Mutex<Option<String>>,
    /// This rank ended: a connection closing now is a rank leaving.
    ended: AtomicBool,
    /// Per link: whether its rank is still in the team (not left, failed
    /// or closed).
    present: Mutex<Vec<Presence>>,
    changed: Condvar,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Presence {
    In,
    Left,
    Gone,
}

impl News {
    /// Records `message` unless a failure came first; true if it was first.
    fn record(&self, message: String) -> bool {
        let mut m = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if m.is_some() {
            return false;
        }
        *m = Some(message);
        true
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn presence(&self) -> MutexGuard<'_, Vec<Presence>> {
        self.present.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, index: usize, now: Presence) {
        let mut present = self.presence();
        if present[index] != Presence::Gone {
            present[index] = now;
        }
        self.changed.notify_all();
    }
}

/// How a rank joins: where rank 0 is, the run directory every rank
/// shares (for the secret), rank 0's door if it already holds one, the
/// team's timeout, and how the watchdog watches (`None`: no watchdog).
pub(super) struct Joining<'a> {
    pub rank: usize,
    pub world: usize,
    pub master: &'a str,
    pub run_dir: &'a Path,
    pub door: Option<Door>,
    pub timeout: Duration,
    pub watching: Option<Watching>,
}

impl Hub {
    /// Joins the team. Rank 0 makes the token (`make_token`) and hands it
    /// to every rank; everyone returns it.
    pub fn join(how: Joining<'_>, make_token: impl FnOnce() -> Result<Vec<u8>>) -> Result<(Self, Vec<u8>)> {
        let Joining {
            rank,
            world,
            master,
            run_dir,
            door,
            timeout,
            watching,
        } = how;
        let (links, token, refused) = if rank == 0 {
            let door = match door {
                Some(door) => door,
                None => Door::open_at(master, run_dir)?,
            };
            door.admit(world, timeout, make_token)?
        } else {
            let (link, token) = knock(rank, world, master, run_dir, timeout)?;
            (vec![link], token, Vec::new())
        };
        let news = Arc::new(News {
            present: Mutex::new(vec![Presence::In; links.len()]),
            ..News::default()
        });
        let links = Arc::new(Links(links.into_iter().map(Mutex::new).collect()));
        let watchdog = match watching {
            Some(watching) => {
                let (failure, told) = (news.clone(), (links.clone(), news.clone()));
                Some(Watchdog::start(
                    rank,
                    watching,
                    move || failure.failure(),
                    move |message| spread_failure(rank, &told.0, &told.1, message),
                )?)
            }
            None => None,
        };
        let mut hub = Self {
            rank,
            links,
            news,
            orders: Mutex::new(None),
            watchdog,
            timeout,
            refused,
        };
        if rank > 0 {
            let (tx, rx) = channel();
            *hub.orders.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(rx);
            hub.listen(0, Some(tx))?;
        } else {
            for peer in 1..world {
                hub.listen(peer, None)?;
            }
        }
        Ok((hub, token))
    }

    /// The index of rank `peer`'s link.
    fn index(&self, peer: usize) -> usize {
        if self.rank == 0 { peer - 1 } else { 0 }
    }

    /// A thread reading rank `peer`'s frames: orders into `orders` (on
    /// ranks other than 0), a rank leaving, failures and closed
    /// connections into the news, failures passed on to the other ranks
    /// (rank 0).
    fn listen(&self, peer: usize, orders: Option<Sender<Vec<u8>>>) -> Result<()> {
        let index = self.index(peer);
        let mut reader = self.links.lock(index).try_clone()?;
        let (links, news, rank) = (self.links.clone(), self.news.clone(), self.rank);
        std::thread::Builder::new()
            .name(format!("disback-rank-{peer}-link"))
            .spawn(move || {
                let message = loop {
                    match read_frame(&mut reader) {
                        Ok((MESSAGE, bytes)) => {
                            if let Some(tx) = &orders {
                                let _ = tx.send(bytes);
                            }
                        }
                        Ok((LEFT, _)) => news.mark(index, Presence::Left),
                        Ok((FAILURE, bytes)) => {
                            let text = String::from_utf8_lossy(&bytes).into_owned();
                            break Some(match peer {
                                0 => text,
                                _ => format!("rank {peer} failed: {text}"),
                            });
                        }
                        Ok(_) => {}
                        Err(_) => {
                            let left = news.presence()[index] == Presence::Left;
                            break match left || news.ended.load(Ordering::SeqCst) {
                                true => None,
                                false => Some(format!(
                                    "rank {peer}'s process ended (its connection closed) while rank {rank} ran"
                                )),
                            };
                        }
                    }
                };
                if let Some(message) = message
                    && news.record(message.clone())
                    && rank == 0
                {
                    links.tell(FAILURE, message.as_bytes(), Some(index));
                }
                // The orders end here: a rank waiting for one hears the news.
                drop(orders);
                news.mark(index, Presence::Gone);
            })?;
        Ok(())
    }

    /// An error if any rank failed.
    pub fn check(&self) -> Result<()> {
        match self.news.failure() {
            Some(m) => bail!("{m}"),
            None => Ok(()),
        }
    }

    pub fn broadcast(&self, message: Option<Vec<u8>>) -> Result<Vec<u8>> {
        self.check()?;
        if self.rank == 0 {
            let message = message.context("rank 0 broadcast nothing")?;
            for index in 0..self.links.0.len() {
                write_frame(&mut self.links.lock(index), MESSAGE, &message)
                    .with_context(|| format!("sending rank 0's order to rank {}", index + 1))?;
            }
            return Ok(message);
        }
        let orders = self.orders.lock().unwrap_or_else(|e| e.into_inner());
        match orders.as_ref().map(|rx| rx.recv()) {
            Some(Ok(message)) => Ok(message),
            _ => {
                self.check()?;
                bail!("rank 0's connection ended")
            }
        }
    }

    /// A collective call (on the device) begins: the watchdog watches it
    /// until the returned guard drops. `timed`: see [`Watchdog::call`].
    pub fn call(&self, timed: bool) -> Option<InCall<'_>> {
        self.watchdog.as_ref().map(|w| w.call(timed))
    }

    /// This rank's part of the team's work is over. A rank other than 0
    /// says so to rank 0; rank 0 waits until every rank has left (or
    /// failed, or closed), at most the team's timeout, so that its own
    /// leaving alarms no one.
    pub fn end(&self) {
        if self.rank > 0 {
            self.news.ended.store(true, Ordering::SeqCst);
            let _ = write_frame(&mut self.links.lock(0), LEFT, &[]);
            return;
        }
        let deadline = Instant::now() + self.timeout;
        let mut present = self.news.presence();
        while present.contains(&Presence::In) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let late: Vec<String> = (present.iter().enumerate())
                    .filter(|(_, p)| **p == Presence::In)
                    .map(|(i, _)| (i + 1).to_string())
                    .collect();
                eprintln!(
                    "disback: rank {} had not left {} s after rank 0 ordered the end",
                    late.join(", rank "),
                    self.timeout.as_secs_f64()
                );
                break;
            }
            present = (self.news.changed.wait_timeout(present, left))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.news.ended.store(true, Ordering::SeqCst);
    }

    pub fn fail(&self, message: &str) {
        spread_failure(self.rank, &self.links, &self.news, message);
    }

    /// The connections refused while the team gathered (rank 0).
    #[cfg(test)]
    fn refused(&self) -> &[String] {
        &self.refused
    }
}

/// Records this rank's failure and, if it is the first, tells the others.
fn spread_failure(rank: usize, links: &Links, news: &News, message: &str) {
    let (told, recorded) = match rank {
        0 => {
            let m = format!("rank 0 failed: {message}");
            (m.clone(), m)
        }
        r => (message.to_string(), format!("rank {r} failed: {message}")),
    };
    if news.record(recorded) {
        links.tell(FAILURE, told.as_bytes(), None);
    }
}

/// A process that ends closes its connections; a hub dropped in a living
/// process does the same (the reader threads hold clones, which would
/// keep them open).
impl Drop for Hub {
    fn drop(&mut self) {
        for index in 0..self.links.0.len() {
            let _ = self.links.lock(index).shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests;
