//! The control plane of a team of processes: TCP connections from every
//! rank to rank 0 (`MASTER_ADDR:MASTER_PORT`), opened at the start to hand
//! out a token (NCCL's unique id) and kept for rank 0's orders and for
//! failures. A rank whose connection closes has died: the others learn
//! it within the moment, not at the next gradient exchange's timeout.
//!
//! Frames: one byte of kind, four of length (little-endian), the bytes.

use anyhow::{Context, Result, bail, ensure};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MESSAGE: u8 = 0;
const FAILURE: u8 = 1;
const HELLO: u8 = 2;

/// One rank's end of the control plane.
pub(super) struct Hub {
    rank: usize,
    /// Rank 0: a connection to each other rank (index r − 1); the others:
    /// their one connection to rank 0.
    links: Vec<Mutex<TcpStream>>,
    failure: Arc<Failure>,
    /// Rank 0's orders, as the reader thread receives them (ranks > 0).
    orders: Mutex<Option<Receiver<Vec<u8>>>>,
}

/// The first failure any rank reported, and whether this rank's training
/// has seen it (if not, it may be stuck in a device exchange); and whether
/// the team ended, after which a closed connection is no failure.
#[derive(Default)]
struct Failure {
    message: Mutex<Option<String>>,
    seen: AtomicBool,
    ended: AtomicBool,
}

impl Failure {
    /// Records `message` unless a failure came first; true if it was first.
    fn record(&self, message: String) -> bool {
        let mut m = self.message.lock().unwrap_or_else(|e| e.into_inner());
        if m.is_some() {
            return false;
        }
        *m = Some(message);
        true
    }

    fn get(&self) -> Option<String> {
        let m = self.message.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if m.is_some() {
            self.seen.store(true, Ordering::SeqCst);
        }
        m
    }
}

impl Hub {
    /// Joins the team as `rank` of `world` through rank 0 at `master`.
    /// Rank 0 makes the token (`make_token`) and hands it to every rank;
    /// everyone returns it. `exit_after`: a rank that has not seen a
    /// failure this long after it came is stuck (in NCCL, which waits for
    /// a dead rank forever) and exits the process with the failure.
    pub fn join(
        rank: usize,
        world: usize,
        master: &str,
        timeout: Duration,
        make_token: impl FnOnce() -> Result<Vec<u8>>,
        exit_after: Option<Duration>,
    ) -> Result<(Self, Vec<u8>)> {
        let failure = Arc::new(Failure::default());
        let (links, token) = if rank == 0 {
            gather(world, master, timeout, make_token)?
        } else {
            let mut link = connect(master, timeout)
                .with_context(|| format!("rank {rank}: reaching rank 0 at {master}"))?;
            let hello = [(rank as u32).to_le_bytes(), (world as u32).to_le_bytes()].concat();
            write_frame(&mut link, HELLO, &hello)?;
            link.set_read_timeout(Some(timeout))?;
            let (kind, token) = read_frame(&mut link).context("waiting for rank 0's token")?;
            if kind == FAILURE {
                bail!("{}", String::from_utf8_lossy(&token));
            }
            link.set_read_timeout(None)?;
            (vec![link], token)
        };
        let mut hub = Self {
            rank,
            links: links.into_iter().map(Mutex::new).collect(),
            failure,
            orders: Mutex::new(None),
        };
        if rank > 0 {
            let (tx, rx) = channel();
            *hub.orders.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(rx);
            hub.listen(0, Some(tx), exit_after)?;
        } else {
            for peer in 1..world {
                hub.listen(peer, None, exit_after)?;
            }
        }
        Ok((hub, token))
    }

    /// A thread reading rank `peer`'s frames: orders into `orders`
    /// (ranks > 0), failures and closed connections into `failure`.
    fn listen(
        &self,
        peer: usize,
        orders: Option<Sender<Vec<u8>>>,
        exit_after: Option<Duration>,
    ) -> Result<()> {
        let link = self.link(peer).try_clone()?;
        let (failure, rank) = (self.failure.clone(), self.rank);
        let others: Vec<TcpStream> = match rank {
            0 => (1..self.links.len() + 1)
                .filter(|&r| r != peer)
                .map(|r| self.link(r).try_clone())
                .collect::<std::io::Result<_>>()?,
            _ => Vec::new(),
        };
        std::thread::Builder::new()
            .name(format!("disback-rank-{peer}-link"))
            .spawn(move || {
                let mut link = link;
                let message = loop {
                    match read_frame(&mut link) {
                        Ok((MESSAGE, bytes)) => {
                            if let Some(tx) = &orders {
                                let _ = tx.send(bytes);
                            }
                        }
                        Ok((FAILURE, bytes)) => {
                            let text = String::from_utf8_lossy(&bytes).into_owned();
                            break match peer {
                                0 => text,
                                _ => format!("rank {peer} failed: {text}"),
                            };
                        }
                        Ok(_) | Err(_) if failure.ended.load(Ordering::SeqCst) => return,
                        Ok(_) | Err(_) => {
                            break format!("rank {peer}'s process ended (its connection closed) while rank {rank} ran");
                        }
                    }
                };
                // A closed connection after a failure was reported says
                // nothing new.
                if failure.record(message.clone()) {
                    for mut other in others {
                        let _ = write_frame(&mut other, FAILURE, message.as_bytes());
                    }
                    drop(orders);
                    if let Some(grace) = exit_after {
                        std::thread::sleep(grace);
                        if !failure.seen.load(Ordering::SeqCst) {
                            eprintln!("disback: rank {rank}: {message}; stuck waiting for it on the device, so exiting");
                            std::process::exit(1);
                        }
                    }
                }
            })?;
        Ok(())
    }

    fn link(&self, peer: usize) -> std::sync::MutexGuard<'_, TcpStream> {
        let index = if self.rank == 0 { peer - 1 } else { 0 };
        self.links[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An error if any rank failed.
    pub fn check(&self) -> Result<()> {
        match self.failure.get() {
            Some(m) => bail!("{m}"),
            None => Ok(()),
        }
    }

    pub fn broadcast(&self, message: Option<Vec<u8>>) -> Result<Vec<u8>> {
        self.check()?;
        if self.rank == 0 {
            let message = message.context("rank 0 broadcast nothing")?;
            for peer in 1..self.links.len() + 1 {
                write_frame(&mut self.link(peer), MESSAGE, &message)
                    .with_context(|| format!("sending rank 0's order to rank {peer}"))?;
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

    /// The team's work is over: connections that close from now on are
    /// ranks leaving, not dying.
    pub fn end(&self) {
        self.failure.ended.store(true, Ordering::SeqCst);
    }

    pub fn fail(&self, message: &str) {
        let message = match self.rank {
            0 => format!("rank 0 failed: {message}"),
            _ => message.to_string(),
        };
        let first = self.failure.record(match self.rank {
            0 => message.clone(),
            r => format!("rank {r} failed: {message}"),
        });
        self.failure.seen.store(true, Ordering::SeqCst);
        if first {
            let peers: Vec<usize> = match self.rank {
                0 => (1..self.links.len() + 1).collect(),
                _ => vec![0],
            };
            for peer in peers {
                let _ = write_frame(&mut self.link(peer), FAILURE, message.as_bytes());
            }
        }
    }
}

/// A process that ends closes its connections; a hub dropped in a living
/// process does the same (the listening threads hold clones, which would
/// keep them open).
impl Drop for Hub {
    fn drop(&mut self) {
        for link in &self.links {
            let _ = link
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Rank 0: accepts every other rank, checks who they say they are, and
/// hands each the token.
fn gather(
    world: usize,
    master: &str,
    timeout: Duration,
    make_token: impl FnOnce() -> Result<Vec<u8>>,
) -> Result<(Vec<TcpStream>, Vec<u8>)> {
    let port = master.rsplit_once(':').map_or(master, |(_, p)| p);
    // Every interface: MASTER_ADDR is how the others reach this machine,
    // which may not be an address of one interface here.
    let listener = TcpListener::bind(format!("0.0.0.0:{port}"))
        .with_context(|| format!("rank 0: listening on port {port} (MASTER_PORT) for the other ranks"))?;
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut links: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
    while links.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((mut link, _)) => {
                link.set_nonblocking(false)?;
                link.set_read_timeout(Some(timeout))?;
                let (kind, hello) = read_frame(&mut link)?;
                ensure!(
                    kind == HELLO && hello.len() == 8,
                    "a connection on MASTER_PORT that is no disback rank"
                );
                let peer = u32::from_le_bytes(hello[..4].try_into()?) as usize;
                let theirs = u32::from_le_bytes(hello[4..].try_into()?) as usize;
                ensure!(
                    theirs == world,
                    "rank {peer} says the world is {theirs} ranks, rank 0 says {world}"
                );
                ensure!(
                    (1..world).contains(&peer),
                    "a rank {peer} joined a world of {world}"
                );
                ensure!(
                    links[peer - 1].is_none(),
                    "two processes say they are rank {peer}"
                );
                link.set_read_timeout(None)?;
                links[peer - 1] = Some(link);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    let missing: Vec<String> = (links.iter().enumerate())
                        .filter(|(_, l)| l.is_none())
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    bail!(
                        "rank {} did not join rank 0 at {master} within {} s",
                        missing.join(", rank "),
                        timeout.as_secs_f64()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
    let mut links: Vec<TcpStream> = links.into_iter().map(|l| l.expect("all joined")).collect();
    let token = match make_token() {
        Ok(token) => token,
        Err(e) => {
            for link in &mut links {
                let _ = write_frame(link, FAILURE, format!("rank 0 failed: {e:#}").as_bytes());
            }
            return Err(e);
        }
    };
    for link in &mut links {
        write_frame(link, MESSAGE, &token)?;
    }
    Ok((links, token))
}

/// Connects to rank 0, trying again until `timeout` (it may start later).
fn connect(master: &str, timeout: Duration) -> Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match TcpStream::connect(master) {
            Ok(link) => {
                link.set_nodelay(true)?;
                return Ok(link);
            }
            Err(e) if Instant::now() > deadline => {
                bail!("no rank 0 listening within {} s: {e}", timeout.as_secs_f64())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn write_frame(link: &mut TcpStream, kind: u8, bytes: &[u8]) -> Result<()> {
    let mut frame = Vec::with_capacity(5 + bytes.len());
    frame.push(kind);
    frame.extend((bytes.len() as u32).to_le_bytes());
    frame.extend(bytes);
    link.write_all(&frame)?;
    Ok(())
}

fn read_frame(link: &mut TcpStream) -> Result<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    link.read_exact(&mut head)?;
    let len = u32::from_le_bytes(head[1..].try_into()?) as usize;
    let mut bytes = vec![0u8; len];
    link.read_exact(&mut bytes)?;
    Ok((head[0], bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    /// Three ranks on this machine: each gets rank 0's token, hears its
    /// orders; then rank 2's process "dies" (its hub dropped, the
    /// connection closed) and the others learn it by name.
    #[test]
    fn ranks_get_the_token_and_orders_and_learn_of_a_dead_rank() {
        let master = format!("127.0.0.1:{}", free_port());
        let timeout = Duration::from_secs(20);
        let handles: Vec<_> = (0..3)
            .map(|rank| {
                let master = master.clone();
                std::thread::spawn(move || {
                    let (hub, token) =
                        Hub::join(rank, 3, &master, timeout, || Ok(b"nccl-id".to_vec()), None).unwrap();
                    assert_eq!(token, b"nccl-id");
                    let order = hub.broadcast((rank == 0).then(|| b"step".to_vec())).unwrap();
                    assert_eq!(order, b"step");
                    if rank == 2 {
                        // The process ends: its links close.
                        drop(hub);
                        return String::new();
                    }
                    // Wait for the news, then every exchange names it.
                    let started = Instant::now();
                    while hub.check().is_ok() {
                        assert!(started.elapsed() < timeout, "no failure seen");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    format!("{:#}", hub.broadcast((rank == 0).then(Vec::new)).unwrap_err())
                })
            })
            .collect();
        let errors: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for e in &errors[..2] {
            assert!(e.contains("rank 2's process ended"), "{e}");
        }
    }

    #[test]
    fn a_failure_is_named_on_every_rank_and_a_wrong_world_is_refused() {
        let master = format!("127.0.0.1:{}", free_port());
        let timeout = Duration::from_secs(20);
        let handles: Vec<_> = (0..2)
            .map(|rank| {
                let master = master.clone();
                std::thread::spawn(move || {
                    let (hub, _) = Hub::join(rank, 2, &master, timeout, || Ok(vec![1]), None).unwrap();
                    if rank == 1 {
                        hub.fail("the generator loss is NaN at iteration 7");
                        return String::new();
                    }
                    // Rank 1's news arrives on rank 0's listener thread;
                    // every exchange from then on names it.
                    let started = Instant::now();
                    loop {
                        if let Err(e) = hub.broadcast(Some(vec![])) {
                            break format!("{e:#}");
                        }
                        assert!(started.elapsed() < timeout, "no failure seen");
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        let errors: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        assert!(
            errors[0].contains("rank 1 failed: the generator loss is NaN at iteration 7"),
            "{}",
            errors[0]
        );

        let master = format!("127.0.0.1:{}", free_port());
        let leader = {
            let master = master.clone();
            std::thread::spawn(move || Hub::join(0, 2, &master, timeout, || Ok(vec![1]), None).err())
        };
        let member = Hub::join(1, 3, &master, timeout, || Ok(vec![]), None);
        let e = format!("{:#}", leader.join().unwrap().expect("refused"));
        assert!(
            e.contains("rank 1 says the world is 3 ranks, rank 0 says 2"),
            "{e}"
        );
        assert!(member.is_err());
    }
}
