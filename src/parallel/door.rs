//! Who may join a team of processes. Rank 0 listens on one socket, bound
//! once on the interface of `MASTER_ADDR` and kept; it writes a random
//! secret (mode 0600) into the run directory that every rank already
//! shares, and a rank shows the secret in its HELLO. A connection that
//! does not — a port scanner, a stale rank of another run — is refused
//! and logged, and the team goes on gathering; a rank that shows the
//! secret but disagrees on the world stops the start, naming both.

use super::wire::{FAILURE, HELLO, MESSAGE, REFUSED, read_frame, write_frame};
use anyhow::{Context, Result, bail};
use std::io::{ErrorKind, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file in the run directory that holds the team's secret while the
/// team gathers.
pub const SECRET_FILE: &str = "team.secret";

const SECRET_LEN: usize = 32;

/// A HELLO's length: rank and world (four bytes each), the secret.
const HELLO_LEN: usize = 8 + SECRET_LEN;

/// How long a connection may take to say HELLO: ranks say it at once; a
/// silent stranger holds the door no longer than this.
const HELLO_WAIT: Duration = Duration::from_secs(2);

/// Rank 0's door: the listening socket, the secret, and what it watches
/// while the team gathers.
pub struct Door {
    listener: TcpListener,
    secret: Vec<u8>,
    secret_file: PathBuf,
    watch: Option<Box<dyn FnMut() -> Result<()> + Send>>,
}

impl Door {
    /// Listens at `master` (`MASTER_ADDR:MASTER_PORT`): on the interface of
    /// that address only, which must be one of this machine's.
    pub fn open_at(master: &str, run_dir: &Path) -> Result<Self> {
        let listener = TcpListener::bind(master).with_context(|| {
            format!(
                "rank 0: cannot listen at {master} (MASTER_ADDR:MASTER_PORT): MASTER_ADDR must name \
                 this machine as the other ranks reach it, and the port must be free"
            )
        })?;
        Self::open_on(listener, run_dir)
    }

    /// A door on this machine's loopback, on a port the system picks: for
    /// the ranks rank 0 starts itself.
    pub fn open_local(run_dir: &Path) -> Result<Self> {
        let listener =
            TcpListener::bind("127.0.0.1:0").context("rank 0: listening on a local port for its ranks")?;
        Self::open_on(listener, run_dir)
    }

    /// The door on a socket already bound (the one-box launch binds it
    /// before its ranks start), with a fresh secret in `run_dir`.
    pub fn open_on(listener: TcpListener, run_dir: &Path) -> Result<Self> {
        let mut secret = vec![0u8; SECRET_LEN];
        rand::fill(&mut secret[..]);
        let secret_file = run_dir.join(SECRET_FILE);
        crate::files::atomic_write_private(&secret_file, &secret)?;
        Ok(Self {
            listener,
            secret,
            secret_file,
            watch: None,
        })
    }

    pub fn address(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Polls `watch` while the team gathers: an error from it (a rank
    /// this process started has ended before it joined) stops the start
    /// at once instead of at the timeout.
    pub fn watching(mut self, watch: impl FnMut() -> Result<()> + Send + 'static) -> Self {
        self.watch = Some(Box::new(watch));
        self
    }

    /// Admits ranks 1 … `world`−1, refusing strangers, within `timeout`;
    /// then hands each the token `make_token` makes. Returns their
    /// connections (rank r at r − 1), the token, and the refusals. If the
    /// start fails, every rank already admitted hears why at once (not at
    /// its own timeout).
    pub fn admit(
        mut self,
        world: usize,
        timeout: Duration,
        make_token: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<(Vec<TcpStream>, Vec<u8>, Vec<String>)> {
        let mut refused = Vec::new();
        let mut links: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
        let gathered = self.gather(&mut links, world, timeout, &mut refused);
        // The secret's work is done once the team is whole (or not to be).
        let _ = std::fs::remove_file(&self.secret_file);
        let mut links: Vec<TcpStream> = links.into_iter().flatten().collect();
        let token = gathered.and_then(|()| make_token());
        let token = match token {
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
        Ok((links, token, refused))
    }

    fn gather(
        &mut self,
        links: &mut [Option<TcpStream>],
        world: usize,
        timeout: Duration,
        refused: &mut Vec<String>,
    ) -> Result<()> {
        self.listener.set_nonblocking(true)?;
        let deadline = Instant::now() + timeout;
        while links.iter().any(Option::is_none) {
            if let Some(watch) = &mut self.watch {
                watch()?;
            }
            // After every connection too: strangers arriving one after
            // another must not hold the start past its deadline.
            if Instant::now() > deadline {
                let missing: Vec<String> = (links.iter().enumerate())
                    .filter(|(_, l)| l.is_none())
                    .map(|(i, _)| (i + 1).to_string())
                    .collect();
                bail!(
                    "rank {} did not join rank 0 at {} within {} s",
                    missing.join(", rank "),
                    self.address()?,
                    timeout.as_secs_f64()
                );
            }
            match self.listener.accept() {
                Ok((link, from)) => {
                    let hello_by = deadline.min(Instant::now() + HELLO_WAIT);
                    if let Some((peer, link)) = self.hear(link, world, links, from, hello_by, refused)? {
                        links[peer - 1] = Some(link);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(20)),
                // A signal, or a connection that closed before it was
                // accepted: nothing to do with the team's start.
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => {}
                Err(e) => return Err(e).context("rank 0: accepting the ranks' connections"),
            }
        }
        Ok(())
    }

    /// One connection's HELLO, heard by `by` (`None`: refused, logged). A
    /// rank that shows the secret but cannot join stops the start.
    fn hear(
        &self,
        mut link: TcpStream,
        world: usize,
        links: &[Option<TcpStream>],
        from: SocketAddr,
        by: Instant,
        refused: &mut Vec<String>,
    ) -> Result<Option<(usize, TcpStream)>> {
        link.set_nonblocking(false)?;
        link.set_nodelay(true)?;
        let mut refuse = |link: &mut TcpStream, why: &str| {
            let _ = write_frame(link, REFUSED, why.as_bytes());
            let line = format!("rank 0 refused a connection from {from}: {why}");
            eprintln!("disback: {line}");
            refused.push(line);
        };
        let hello = match read_hello(&mut link, by) {
            Ok(hello) => hello,
            Err(e) => {
                refuse(&mut link, &format!("it sent no disback HELLO ({e:#})"));
                return Ok(None);
            }
        };
        if hello[8..] != self.secret[..] {
            let file = self.secret_file.display();
            refuse(&mut link, &format!("it did not show the team's secret ({file})"));
            return Ok(None);
        }
        let peer = u32::from_le_bytes(hello[..4].try_into()?) as usize;
        let theirs = u32::from_le_bytes(hello[4..8].try_into()?) as usize;
        let problem = if theirs != world {
            Some(format!(
                "rank {peer} says the world is {theirs} ranks, rank 0 says {world}"
            ))
        } else if !(1..world).contains(&peer) {
            Some(format!("a rank {peer} joined a world of {world}"))
        } else if links[peer - 1].is_some() {
            Some(format!("two processes say they are rank {peer}"))
        } else {
            None
        };
        if let Some(problem) = problem {
            let _ = write_frame(&mut link, FAILURE, problem.as_bytes());
            bail!("{problem}");
        }
        link.set_read_timeout(None)?;
        Ok(Some((peer, link)))
    }
}

/// A HELLO frame read by `by`: its five-byte head is checked (the kind,
/// the one length a HELLO has) before its body is read, so a stranger
/// makes rank 0 allocate nothing, and trickling bytes wins no more time.
fn read_hello(link: &mut TcpStream, by: Instant) -> Result<[u8; HELLO_LEN]> {
    let mut head = [0u8; 5];
    read_by(link, &mut head, by)?;
    let len = u32::from_le_bytes(head[1..].try_into()?) as usize;
    if head[0] != HELLO || len != HELLO_LEN {
        bail!("its first 5 bytes are no HELLO's");
    }
    let mut hello = [0u8; HELLO_LEN];
    read_by(link, &mut hello, by)?;
    Ok(hello)
}

/// Fills `buf` from `link` by `by`, whatever the pace of the bytes.
fn read_by(link: &mut TcpStream, buf: &mut [u8], by: Instant) -> Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        let left = by.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("not said within {} s", HELLO_WAIT.as_secs_f64());
        }
        link.set_read_timeout(Some(left))?;
        match link.read(&mut buf[filled..]) {
            Ok(0) => bail!("the connection closed"),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A rank other than 0 joins at `master`: it reads the secret from
/// `run_dir`, says HELLO, and returns its connection with the token. Rank
/// 0 may start later, and a secret read before rank 0 wrote its own is
/// refused: both are tried again until `timeout`.
pub fn knock(
    rank: usize,
    world: usize,
    master: &str,
    run_dir: &Path,
    timeout: Duration,
) -> Result<(TcpStream, Vec<u8>)> {
    let deadline = Instant::now() + timeout;
    let secret_file = run_dir.join(SECRET_FILE);
    let mut last = String::from("nothing tried");
    while Instant::now() < deadline {
        match try_once(rank, world, master, &secret_file, deadline) {
            Ok(Ok(joined)) => return Ok(joined),
            Ok(Err(why)) => last = why,
            Err(failure) => return Err(failure),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "rank {rank}: could not join rank 0 at {master} within {} s: {last}",
        timeout.as_secs_f64()
    )
}

/// One try: the connection and token, a reason to try again, or rank 0's
/// failure (which ends the start).
fn try_once(
    rank: usize,
    world: usize,
    master: &str,
    secret_file: &Path,
    deadline: Instant,
) -> Result<Result<(TcpStream, Vec<u8>), String>> {
    let secret = match std::fs::read(secret_file) {
        Ok(secret) => secret,
        Err(e) => return Ok(Err(format!("no secret at {} ({e})", secret_file.display()))),
    };
    let mut link = match TcpStream::connect(master) {
        Ok(link) => link,
        Err(e) => return Ok(Err(format!("no rank 0 listening ({e})"))),
    };
    link.set_nodelay(true)?;
    let hello = [
        &(rank as u32).to_le_bytes()[..],
        &(world as u32).to_le_bytes(),
        &secret,
    ]
    .concat();
    if let Err(e) = write_frame(&mut link, HELLO, &hello) {
        return Ok(Err(format!("saying HELLO: {e:#}")));
    }
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    link.set_read_timeout(Some(left))?;
    match read_frame(&mut link) {
        Ok((MESSAGE, token)) => {
            link.set_read_timeout(None)?;
            Ok(Ok((link, token)))
        }
        Ok((FAILURE, why)) => bail!("{}", String::from_utf8_lossy(&why)),
        Ok((_, why)) => Ok(Err(format!(
            "rank 0 refused this rank: {} (is every rank on the same run directory?)",
            String::from_utf8_lossy(&why)
        ))),
        Err(e) => Ok(Err(format!("waiting for rank 0's token: {e:#}"))),
    }
}
