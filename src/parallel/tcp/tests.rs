use super::*;
use crate::parallel::watchdog::Exit;
use std::net::TcpListener;
use std::path::PathBuf;

const LONG: Duration = Duration::from_secs(20);

/// A team's meeting place on this machine: rank 0's door, bound once, and
/// the run directory every rank shares.
struct Place {
    master: String,
    dir: tempfile::TempDir,
    door: Mutex<Option<Door>>,
}

impl Place {
    fn new() -> Arc<Self> {
        let dir = tempfile::tempdir().unwrap();
        let door = Door::open_on(TcpListener::bind("127.0.0.1:0").unwrap(), dir.path()).unwrap();
        Arc::new(Self {
            master: door.address().unwrap().to_string(),
            dir,
            door: Mutex::new(Some(door)),
        })
    }

    fn join(&self, rank: usize, world: usize, watching: Option<Watching>) -> Result<(Hub, Vec<u8>)> {
        let door = match rank {
            0 => self.door.lock().unwrap().take(),
            _ => None,
        };
        let how = Joining {
            rank,
            world,
            master: &self.master,
            run_dir: self.dir.path(),
            door,
            timeout: LONG,
            watching,
        };
        Hub::join(how, || Ok(b"nccl-id".to_vec()))
    }
}

/// A watchdog whose "exits" are written down instead of ending the test.
fn watching(timeout: Duration, grace: Duration) -> (Watching, Arc<Mutex<Vec<String>>>) {
    let exits = Arc::new(Mutex::new(Vec::new()));
    let seen = exits.clone();
    let exit: Exit = Arc::new(move |m: &str| seen.lock().unwrap().push(m.to_string()));
    let w = Watching {
        timeout,
        grace,
        resume: "resume with: disback run --resume RUN".into(),
        exit,
    };
    (w, exits)
}

fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < LONG,
            "{what}: not within {} s",
            LONG.as_secs()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn on_ranks<T: Send + 'static>(
    world: usize,
    work: impl Fn(usize, Arc<Place>) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let place = Place::new();
    let work = Arc::new(work);
    let handles: Vec<_> = (0..world)
        .map(|rank| {
            let (work, place) = (work.clone(), place.clone());
            std::thread::spawn(move || work(rank, place))
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Three ranks on this machine: each gets rank 0's token, hears its
/// orders; then rank 2's process "dies" (its hub dropped, the connection
/// closed without leaving) and the others learn it by name.
#[test]
fn ranks_get_the_token_and_orders_and_learn_of_a_dead_rank() {
    let errors = on_ranks(3, |rank, place| {
        let (hub, token) = place.join(rank, 3, None).unwrap();
        assert_eq!(token, b"nccl-id");
        let order = hub.broadcast((rank == 0).then(|| b"step".to_vec())).unwrap();
        assert_eq!(order, b"step");
        if rank == 2 {
            drop(hub);
            return String::new();
        }
        wait_until("the news of rank 2", || hub.check().is_err());
        format!("{:#}", hub.broadcast((rank == 0).then(Vec::new)).unwrap_err())
    });
    for e in &errors[..2] {
        assert!(e.contains("rank 2's process ended"), "{e}");
    }
}

#[test]
fn a_failure_is_named_on_every_rank_and_a_wrong_world_is_refused() {
    let errors = on_ranks(2, |rank, place| {
        let (hub, _) = place.join(rank, 2, None).unwrap();
        if rank == 1 {
            hub.fail("the generator loss is NaN at iteration 7");
            return String::new();
        }
        wait_until("rank 1's failure", || hub.check().is_err());
        format!("{:#}", hub.broadcast(Some(vec![])).unwrap_err())
    });
    assert!(
        errors[0].contains("rank 1 failed: the generator loss is NaN at iteration 7"),
        "{}",
        errors[0]
    );

    let errors = on_ranks(2, |rank, place| match rank {
        0 => place.join(0, 2, None).err().map(|e| format!("{e:#}")),
        _ => place.join(1, 3, None).err().map(|e| format!("{e:#}")),
    });
    for e in &errors {
        let e = e.as_deref().expect("refused");
        assert!(
            e.contains("rank 1 says the world is 3 ranks, rank 0 says 2"),
            "{e}"
        );
    }
}

/// Connections that do not show the secret (a port scanner; a process
/// with another run's secret) are refused and written down, and the team
/// starts all the same; neither gets the token.
#[test]
fn a_strangers_connection_is_refused_while_the_team_starts() {
    let place = Place::new();
    let leader = {
        let place = place.clone();
        std::thread::spawn(move || place.join(0, 2, None).map(|(hub, _)| hub))
    };
    let mut scanner = TcpStream::connect(&place.master).unwrap();
    std::io::Write::write_all(&mut scanner, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut impostor = TcpStream::connect(&place.master).unwrap();
    let wrong_secret = [&1u32.to_le_bytes()[..], &2u32.to_le_bytes(), &[7u8; 32]].concat();
    write_frame(&mut impostor, super::super::wire::HELLO, &wrong_secret).unwrap();
    for stranger in [&mut scanner, &mut impostor] {
        let (kind, _) = read_frame(stranger).unwrap();
        assert_eq!(
            kind,
            super::super::wire::REFUSED,
            "a stranger got more than a refusal"
        );
    }
    let (member, token) = place.join(1, 2, None).unwrap();
    assert_eq!(token, b"nccl-id");
    let leader = leader.join().unwrap().expect("the team started");
    let refused = leader.refused();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0].contains("from 127.0.0.1") && refused[0].contains("no disback HELLO"),
        "{refused:?}"
    );
    assert!(
        refused[1].contains("did not show the team's secret"),
        "{refused:?}"
    );
    member.check().unwrap();
    // The secret served its purpose: it is gone from the run directory.
    assert!(!place.dir.path().join(super::super::door::SECRET_FILE).exists());
}

/// The secret is readable by its owner alone.
#[test]
fn the_secret_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let place = Place::new();
    let file: PathBuf = place.dir.path().join(super::super::door::SECRET_FILE);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// Rank 0 orders the end and closes at once; rank 2 is slow to take the
/// order. Every rank ends first (rank 0 waits for their LEFT), then the
/// team dissolves: no rank hears a failure.
#[test]
fn every_rank_ends_before_the_team_dissolves_and_no_one_hears_a_failure() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let results = {
        let log = log.clone();
        on_ranks(3, move |rank, place| {
            let (hub, _) = place.join(rank, 3, None).unwrap();
            let end = hub.broadcast((rank == 0).then(|| b"end".to_vec()));
            if rank == 2 {
                std::thread::sleep(Duration::from_millis(300));
            }
            // Rank 0 writes down its end after it; the others before.
            if rank > 0 {
                log.lock().unwrap().push(rank);
            }
            hub.end();
            if rank == 0 {
                log.lock().unwrap().push(rank);
            }
            let heard = hub.check();
            drop(hub);
            heard.and(end).map_err(|e| format!("rank {rank}: {e:#}"))
        })
    };
    for r in results {
        assert_eq!(r.unwrap(), b"end");
    }
    // Rank 0's end returned last: after both others had left.
    assert_eq!(log.lock().unwrap().last(), Some(&0));
}

/// A rank fails while rank 0 sits paused in the lab (no collective call):
/// its watchdog stays still, however long; only a rank stuck inside a
/// collective call is ended, `grace` after the news.
#[test]
fn the_watchdog_leaves_a_paused_rank_0_alone() {
    let results = on_ranks(2, |rank, place| {
        let (w, exits) = watching(LONG, Duration::from_millis(100));
        let (hub, _) = place.join(rank, 2, Some(w)).unwrap();
        if rank == 1 {
            hub.fail("the fake-score loss is NaN");
            return Vec::new();
        }
        // Paused: well past the grace, no call, no check.
        std::thread::sleep(Duration::from_millis(800));
        let while_paused = exits.lock().unwrap().clone();
        assert!(
            while_paused.is_empty(),
            "a paused rank 0 was ended: {while_paused:?}"
        );
        // Inside a call that will never end (NCCL waiting for rank 1).
        let _call = hub.call(false);
        wait_until("the watchdog", || !exits.lock().unwrap().is_empty());
        exits.lock().unwrap().clone()
    });
    let e = &results[0][0];
    assert!(
        e.starts_with("rank 0: rank 1 failed: the fake-score loss is NaN"),
        "{e}"
    );
    assert!(e.contains("resume with: disback run --resume RUN"), "{e}");
}

/// A rank that waits in a timed call (a gradient exchange) longer than
/// the team's timeout is ended, naming itself and how to resume, and the
/// others hear it; an untimed wait (for rank 0's measurement) is not.
#[test]
fn a_rank_hung_in_a_gradient_exchange_is_ended_after_the_timeout() {
    let results = on_ranks(2, |rank, place| {
        let (w, exits) = watching(Duration::from_millis(200), LONG);
        let (hub, _) = place.join(rank, 2, Some(w)).unwrap();
        if rank == 0 {
            wait_until("rank 1's news", || hub.check().is_err());
            return (
                format!("{:#}", hub.check().unwrap_err()),
                exits.lock().unwrap().clone(),
            );
        }
        {
            let _waiting_for_a_measurement = hub.call(false);
            std::thread::sleep(Duration::from_millis(800));
        }
        assert!(exits.lock().unwrap().is_empty(), "an untimed wait was ended");
        let _exchange = hub.call(true);
        wait_until("the watchdog", || !exits.lock().unwrap().is_empty());
        (String::new(), exits.lock().unwrap().clone())
    });
    let ended = &results[1].1[0];
    assert!(
        ended.starts_with("rank 1 waited more than 0.2 s (parallel.timeout_s) in gradient exchange 2"),
        "{ended}"
    );
    assert!(ended.contains("resume with: disback run --resume RUN"), "{ended}");
    let (heard, rank_0_exits) = &results[0];
    assert!(
        heard.contains("rank 1 failed: rank 1 waited more than 0.2 s"),
        "{heard}"
    );
    assert!(rank_0_exits.is_empty(), "{rank_0_exits:?}");
}

/// The environment through which the next test starts itself again as a
/// rank process: its rank, rank 0's address, the run directory.
const RANK_VAR: &str = "DISBACK_TEST_TCP_RANK";
const MASTER_VAR: &str = "DISBACK_TEST_TCP_MASTER";
const DIR_VAR: &str = "DISBACK_TEST_TCP_DIR";

/// Rank 0 here, ranks 1 and 2 as processes on loopback (this test binary
/// run again for this test, as a rank: [`be_a_rank_process`]): rank 0
/// orders the end and every process exits 0, though each got a SIGTERM
/// first, with nothing in its log but that.
#[test]
fn a_team_of_processes_ends_with_every_process_exiting_0() {
    if let Ok(rank) = std::env::var(RANK_VAR) {
        return be_a_rank_process(rank.parse().unwrap());
    }
    let place = Place::new();
    let children: Vec<_> = (1..3)
        .map(|rank| {
            let test = "parallel::tcp::tests::a_team_of_processes_ends_with_every_process_exiting_0";
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([test, "--exact", "--nocapture"])
                .env(RANK_VAR, rank.to_string())
                .env(MASTER_VAR, &place.master)
                .env(DIR_VAR, place.dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let (hub, _) = place.join(0, 3, None).unwrap();
    // A Ctrl-C or a launcher's SIGTERM reaches every rank: the ranks
    // other than 0 outlast it, waiting for rank 0's orders (rank 0 would
    // checkpoint, which needs them).
    let mut children: Vec<_> = children
        .into_iter()
        .map(|mut child| {
            // SAFETY: kill sends a signal to a child this test started.
            assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
            let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
            let mut heard = String::new();
            while !heard.contains("got signal") {
                let mut line = String::new();
                assert!(
                    std::io::BufRead::read_line(&mut log, &mut line).unwrap() > 0,
                    "{heard}"
                );
                heard.push_str(&line);
            }
            (child, log, heard)
        })
        .collect();
    hub.broadcast(Some(b"end".to_vec())).unwrap();
    hub.end();
    hub.check().unwrap();
    drop(hub);
    for (child, log, heard) in &mut children {
        let status = child.wait().unwrap();
        std::io::Read::read_to_string(log, heard).unwrap();
        assert!(status.success(), "{status}: {heard}");
        let lines: Vec<&str> = heard.lines().filter(|l| l.starts_with("disback:")).collect();
        assert_eq!(lines.len(), 1, "{heard}");
        assert!(lines[0].contains("got signal 15"), "{heard}");
    }
}

/// A rank other than 0 as the processes of an NCCL team run it, with the
/// watchdog that ends the process.
fn be_a_rank_process(rank: usize) {
    let (master, dir) = (
        std::env::var(MASTER_VAR).unwrap(),
        std::env::var(DIR_VAR).unwrap(),
    );
    let how = Joining {
        rank,
        world: 3,
        master: &master,
        run_dir: Path::new(&dir),
        door: None,
        timeout: LONG,
        watching: Some(Watching {
            timeout: LONG,
            grace: Duration::from_millis(100),
            resume: "resume".into(),
            exit: crate::parallel::watchdog::exit_process(),
        }),
    };
    crate::parallel::outlast_signals(rank, LONG).unwrap();
    let (hub, _) = Hub::join(how, || unreachable!("rank 0 makes the token")).unwrap();
    assert_eq!(hub.broadcast(None).unwrap(), b"end");
    hub.end();
    hub.check().unwrap();
}

/// A HELLO with the team's secret, as rank `rank` of `world` says it.
fn hello_of(place: &Place, rank: u32, world: u32) -> Vec<u8> {
    let secret = std::fs::read(place.dir.path().join(super::super::door::SECRET_FILE)).unwrap();
    [&rank.to_le_bytes()[..], &world.to_le_bytes(), &secret].concat()
}

/// A stranger that trickles a HELLO-shaped frame, one byte a second
/// (each byte within any per-read timeout), holds the door no longer than
/// the time a HELLO may take: the team starts.
#[test]
fn a_slow_stranger_does_not_hold_the_door() {
    let place = Place::new();
    let leader = {
        let place = place.clone();
        std::thread::spawn(move || place.join(0, 2, None).map(|(hub, _)| hub))
    };
    let mut slow = TcpStream::connect(&place.master).unwrap();
    let frame = [&[super::super::wire::HELLO][..], &40u32.to_le_bytes(), &[9u8; 40]].concat();
    std::thread::spawn(move || {
        for byte in frame {
            if std::io::Write::write_all(&mut slow, &[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    let (member, token) = place.join(1, 2, None).expect("the team started");
    assert_eq!(token, b"nccl-id");
    let leader = leader.join().unwrap().expect("the team started");
    let refused = leader.refused();
    assert!(refused[0].contains("it sent no disback HELLO"), "{refused:?}");
    member.check().unwrap();
}

/// A frame head that is no HELLO's is refused on its five bytes: no
/// body of the length it claims is waited for or allocated.
#[test]
fn a_head_that_is_no_hello_is_refused_at_once() {
    let place = Place::new();
    let leader = {
        let place = place.clone();
        std::thread::spawn(move || place.join(0, 2, None).map(|(hub, _)| hub))
    };
    let mut big = TcpStream::connect(&place.master).unwrap();
    let head = [&[super::super::wire::HELLO][..], &(60u32 << 20).to_le_bytes()].concat();
    std::io::Write::write_all(&mut big, &head).unwrap();
    let (kind, why) = read_frame(&mut big).unwrap();
    assert_eq!(kind, super::super::wire::REFUSED);
    assert!(String::from_utf8_lossy(&why).contains("no HELLO's"), "{why:?}");
    let (_member, _) = place.join(1, 2, None).unwrap();
    leader.join().unwrap().expect("the team started");
}

/// When the start fails (here a rank with the wrong world), a rank
/// already admitted hears rank 0's failure at once, not at its own
/// timeout.
#[test]
fn admitted_ranks_hear_a_failed_start() {
    let place = Place::new();
    let leader = {
        let place = place.clone();
        std::thread::spawn(move || place.join(0, 3, None).map(|_| ()))
    };
    // Accepted in the order they connect: rank 1 is admitted first.
    let mut rank_1 = TcpStream::connect(&place.master).unwrap();
    write_frame(&mut rank_1, super::super::wire::HELLO, &hello_of(&place, 1, 3)).unwrap();
    let mut rank_2 = TcpStream::connect(&place.master).unwrap();
    write_frame(&mut rank_2, super::super::wire::HELLO, &hello_of(&place, 2, 4)).unwrap();
    let e = format!("{:#}", leader.join().unwrap().unwrap_err());
    assert!(
        e.contains("rank 2 says the world is 4 ranks, rank 0 says 3"),
        "{e}"
    );
    rank_1.set_read_timeout(Some(LONG)).unwrap();
    let (kind, why) = read_frame(&mut rank_1).expect("rank 0 told the admitted rank");
    assert_eq!(kind, FAILURE);
    assert!(
        String::from_utf8_lossy(&why).contains("rank 2 says the world is 4 ranks"),
        "{why:?}"
    );
}
