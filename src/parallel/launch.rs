//! Where a process stands in a launched team, from the environment that
//! launchers set: torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT`), or Slurm's srun (`SLURM_PROCID`,
//! `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`, with the master's address given
//! as for torchrun); and the one-box launch, where rank 0 starts the ranks
//! of its own machine as child processes.
//!
//! Slurm's world is the job *step*'s task count, not `SLURM_NTASKS`: an
//! `sbatch -n4` script is task 0 of the batch step and has
//! `SLURM_NTASKS=4`, `SLURM_PROCID=0` and `SLURM_LOCALID=0` too, but no
//! `SLURM_STEP_NUM_TASKS`, which srun sets in each task of the step it
//! launches.

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// This process's place in a team that a launcher started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchedRank {
    pub rank: usize,
    pub world: usize,
    /// The GPU this rank takes (`cuda:N`), counted among the GPUs this
    /// process sees.
    pub gpu: usize,
    /// Where rank 0 hands out the team's id: `MASTER_ADDR:MASTER_PORT`.
    pub master: String,
}

/// The launched rank the environment describes; `None` when no launcher
/// set a world (`WORLD_SIZE` or `SLURM_STEP_NUM_TASKS`), or a world of
/// one: a lone task (`srun --pty bash`) is a solo process and needs no
/// address, and so is an allocation's shell or batch script.
pub fn launched_rank() -> Result<Option<LaunchedRank>> {
    from_vars(|name| std::env::var(name).ok())
}

/// The number of processes a launcher started, where it started more
/// than one and this is one of them: the variable that says so and its
/// value.
pub fn launcher_world() -> Option<(&'static str, usize)> {
    [("WORLD_SIZE", "RANK"), (SLURM_WORLD, "SLURM_PROCID")]
        .into_iter()
        .find_map(|(name, rank)| {
            std::env::var_os(rank)?;
            let world = std::env::var(name).ok()?.trim().parse().ok()?;
            (world > 1).then_some((name, world))
        })
}

/// The number of tasks of the Slurm job step this process is a task of
/// (srun sets it; a batch script or an allocation's shell has none).
const SLURM_WORLD: &str = "SLURM_STEP_NUM_TASKS";

fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<LaunchedRank>> {
    // torchrun's names first; srun's where torchrun's are absent.
    let pick = |torch: &str, slurm: &str| {
        var(torch)
            .map(|v| (torch.to_string(), v))
            .or(var(slurm).map(|v| (slurm.to_string(), v)))
    };
    let Some(world) = pick("WORLD_SIZE", SLURM_WORLD) else {
        return Ok(None);
    };
    let number = |(name, value): (String, String)| -> Result<usize> {
        value
            .trim()
            .parse()
            .with_context(|| format!("{name}={value:?} is not a whole number"))
    };
    let world_name = world.0.clone();
    let world = number(world)?;
    // A lone task: one process, not a launched rank.
    if world == 1 {
        return Ok(None);
    }
    let rank = number(
        pick("RANK", "SLURM_PROCID").context("WORLD_SIZE is set but RANK is not: a launcher sets both")?,
    )?;
    if world == 0 || rank >= world {
        bail!("rank {rank} of a world of {world} ({world_name}): the rank must be below the world size");
    }
    let gpu = gpu_index(&var, rank, number)?;
    let addr = var("MASTER_ADDR").context(
        "MASTER_ADDR is not set: rank 0's address (torchrun sets it; under srun export the first node's name)",
    )?;
    let port = var("MASTER_PORT").context("MASTER_PORT is not set: a free TCP port on rank 0's machine")?;
    let mut port = number(("MASTER_PORT".into(), port))?;
    // torchrun's agent on node 0 serves its own store on MASTER_PORT and
    // says so: rank 0 listens on the next port.
    if var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        port += 1;
    }
    Ok(Some(LaunchedRank {
        rank,
        world,
        gpu,
        master: format!("{addr}:{port}"),
    }))
}

/// The GPU a rank takes. torchrun's `LOCAL_RANK` counts the GPUs the
/// process sees. Slurm's `SLURM_LOCALID` counts the node's tasks, which is
/// a GPU index only where every task sees every GPU: under
/// `--gpus-per-task` (or any binding) `CUDA_VISIBLE_DEVICES` shows a task
/// its own GPUs alone, and the task's first is index 0.
fn gpu_index(
    var: &impl Fn(&str) -> Option<String>,
    rank: usize,
    number: impl Fn((String, String)) -> Result<usize>,
) -> Result<usize> {
    if let Some(local) = var("LOCAL_RANK") {
        return number(("LOCAL_RANK".into(), local));
    }
    let Some(local) = var("SLURM_LOCALID") else {
        return Ok(rank);
    };
    let local = number(("SLURM_LOCALID".into(), local))?;
    let visible = var("CUDA_VISIBLE_DEVICES").map(|v| v.split(',').filter(|d| !d.trim().is_empty()).count());
    Ok(match visible {
        Some(seen) if local >= seen => 0,
        _ => local,
    })
}

/// Starts ranks 1 … `ranks`−1 of a team whose rank 0 is this process and
/// listens at `master` (its [`super::Door`], bound before they start):
/// each runs `program` with `args` (this program's own command line, for
/// `disback`) and the environment torchrun would give it, with `env`
/// added.
pub fn launch_local_ranks(
    ranks: usize,
    master: SocketAddr,
    program: &Path,
    args: &[OsString],
    env: &[(&str, OsString)],
) -> Result<Children> {
    let mut children = Vec::new();
    for rank in 1..ranks {
        let mut command = Command::new(program);
        command
            .args(args)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", ranks.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", master.ip().to_string())
            .env("MASTER_PORT", master.port().to_string())
            .env_remove("TORCHELASTIC_USE_AGENT_STORE")
            // Its own process group: Ctrl-C in the terminal reaches rank
            // 0 alone, which checkpoints and then ends the team; a rank
            // killed at once would leave rank 0 unable to save.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command
            .spawn()
            .with_context(|| format!("starting rank {rank} of {ranks} ({})", program.display()))?;
        children.push((rank, child));
    }
    Ok(Children(Arc::new(Mutex::new(children))))
}

/// Child processes that are ranks of this one's team: waited for when
/// the team is over, and how each ended said.
pub struct Children(Arc<Mutex<Vec<(usize, Child)>>>);

impl Children {
    /// A check, for rank 0 while its team gathers, that fails once any
    /// child has ended: a rank that died before it joined (a bad command
    /// line, no GPU) stops the start at once.
    pub fn watch(&self) -> impl FnMut() -> Result<()> + Send + 'static {
        let children = self.0.clone();
        move || {
            let mut children = children.lock().unwrap_or_else(|e| e.into_inner());
            for (rank, child) in children.iter_mut() {
                // try_wait keeps the status for the final wait.
                if let Ok(Some(status)) = child.try_wait() {
                    bail!(
                        "rank {rank} (pid {}) ended before it joined the team: {status}",
                        child.id()
                    );
                }
            }
            Ok(())
        }
    }

    /// How long the ranks may take to leave once rank 0's session is gone
    /// (they have heard the end or the failure by then).
    const LEAVING: Duration = Duration::from_secs(30);

    /// Waits up to `within` for every child (one still running then is
    /// killed) and says how each ended: `rank 1 (pid 42): exit status 0`.
    pub fn wait(&mut self, within: Duration) -> Vec<String> {
        let deadline = Instant::now() + within;
        let mut ends = Vec::new();
        let mut children = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (rank, mut child) in children.drain(..) {
            let pid = child.id();
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break status.to_string(),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break format!("still running after {} s, killed", within.as_secs_f64());
                    }
                    Err(e) => break format!("cannot be waited for: {e}"),
                }
            };
            ends.push(format!("rank {rank} (pid {pid}): {status}"));
        }
        ends
    }
}

/// No child is left unwaited (a zombie) or unreported, whatever ended the
/// team.
impl Drop for Children {
    fn drop(&mut self) {
        if self.0.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            return;
        }
        let ends = self.wait(Self::LEAVING);
        eprintln!(
            "disback: the ranks this process started ended: {}",
            ends.join("; ")
        );
    }
}

/// A signal that stops a run (Ctrl-C, a launcher passing SIGTERM on,
/// scancel, Slurm's time limit) reaches every rank; rank 0 answers it by
/// checkpointing, which needs the team whole, and then ends the team. So
/// a follower does not die of it: it says so and goes on following, for
/// at most `limit` (rank 0 may be gone); a second signal ends it at once.
pub fn outlast_signals(rank: usize, limit: Duration) -> Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).context("handling signals")?;
    std::thread::Builder::new()
        .name("disback-rank-signals".into())
        .spawn(move || {
            let Some(first) = signals.forever().next() else {
                return;
            };
            eprintln!(
                "disback: rank {rank} got signal {first}: it follows on until rank 0 has checkpointed \
                 and ended the team (at most {} s; a second signal ends it now)",
                limit.as_secs_f64()
            );
            let deadline = Instant::now() + limit;
            let signal = loop {
                if let Some(second) = signals.pending().next() {
                    break second;
                }
                if Instant::now() >= deadline {
                    eprintln!("disback: rank {rank}: rank 0 did not end the team; ending");
                    break first;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            // SAFETY: _exit ends the process without running teardown that
            // could wait behind a collective call still in flight.
            unsafe { libc::_exit(128 + signal) }
        })
        .context("starting the signal watcher")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(pairs: &[(&str, &str)]) -> Result<Option<LaunchedRank>> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        from_vars(|name| vars.get(name).cloned())
    }

    #[test]
    fn torchrun_and_srun_environments_are_read() {
        assert_eq!(read(&[]).unwrap(), None);
        let torchrun = read(&[
            ("WORLD_SIZE", "8"),
            ("RANK", "5"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((torchrun.rank, torchrun.world, torchrun.gpu), (5, 8, 1));
        assert_eq!(torchrun.master, "node0:29500");
        // Under torchrun's agent store, which holds MASTER_PORT itself.
        let agent = read(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "node0"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(agent.master, "node0:29501");
        let srun = [
            ("SLURM_NTASKS", "4"),
            ("SLURM_STEP_NUM_TASKS", "4"),
            ("SLURM_PROCID", "3"),
            ("SLURM_LOCALID", "3"),
            ("MASTER_ADDR", "10.0.0.1"),
            ("MASTER_PORT", "12345"),
        ];
        let every_gpu_seen = read(&srun).unwrap().unwrap();
        assert_eq!(
            (every_gpu_seen.rank, every_gpu_seen.world, every_gpu_seen.gpu),
            (3, 4, 3)
        );
        // --gpus-per-task=1: the task sees its own GPU alone, as index 0.
        let own_gpu = read(&[srun.as_slice(), &[("CUDA_VISIBLE_DEVICES", "3")]].concat())
            .unwrap()
            .unwrap();
        assert_eq!(own_gpu.gpu, 0);
        let all_four = read(&[srun.as_slice(), &[("CUDA_VISIBLE_DEVICES", "0,1,2,3")]].concat())
            .unwrap()
            .unwrap();
        assert_eq!(all_four.gpu, 3);
    }

    /// A lone task (`srun --pty bash`, a one-task allocation) is no team:
    /// nothing more is asked of its environment.
    #[test]
    fn a_world_of_one_is_solo() {
        assert_eq!(
            read(&[("SLURM_STEP_NUM_TASKS", "1"), ("SLURM_PROCID", "0")]).unwrap(),
            None
        );
        assert_eq!(read(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
        // The shell of a 4-task allocation (salloc): no task number.
        assert_eq!(read(&[("SLURM_NTASKS", "4")]).unwrap(), None);
        // An `sbatch -n4` script: task 0 of the batch step, which Slurm
        // numbers like a task of a 4-task step, but no step of 4 tasks.
        let batch = [
            ("SLURM_NTASKS", "4"),
            ("SLURM_PROCID", "0"),
            ("SLURM_LOCALID", "0"),
        ];
        assert_eq!(read(&batch).unwrap(), None);
    }

    #[test]
    fn a_broken_environment_is_named() {
        let err = |pairs: &[(&str, &str)]| format!("{:#}", read(pairs).unwrap_err());
        let base = [("MASTER_ADDR", "a"), ("MASTER_PORT", "1")];
        let e = err(&[("WORLD_SIZE", "2"), ("RANK", "two"), base[0], base[1]]);
        assert!(e.contains("RANK=\"two\" is not a whole number"), "{e}");
        let e = err(&[("WORLD_SIZE", "2"), ("RANK", "2"), base[0], base[1]]);
        assert!(e.contains("rank 2 of a world of 2"), "{e}");
        let e = err(&[("WORLD_SIZE", "2"), ("RANK", "0")]);
        assert!(e.contains("MASTER_ADDR is not set"), "{e}");
        let e = err(&[("WORLD_SIZE", "2"), base[0], base[1]]);
        assert!(e.contains("RANK is not"), "{e}");
    }

    /// The one-box launch starts its ranks with torchrun's environment on
    /// the port rank 0's door already holds, and waits for each, saying
    /// how it ended (and kills one that does not end).
    #[test]
    fn launched_ranks_get_the_held_port_and_are_waited_for() {
        let sh = |script: &str| -> Vec<OsString> { vec!["-c".into(), script.into()] };
        let dir = tempfile::tempdir().unwrap();
        let door = super::super::Door::open_local(dir.path()).unwrap();
        let master = door.address().unwrap();
        // The port is held: nobody else can bind it while the ranks start.
        assert!(std::net::TcpListener::bind(master).is_err());
        let script = sh("echo \"$MASTER_ADDR:$MASTER_PORT $RANK $WORLD_SIZE $LOCAL_RANK\" > \"$OUT/$RANK\"");
        let out = [("OUT", dir.path().as_os_str().to_owned())];
        let mut children = launch_local_ranks(3, master, Path::new("/bin/sh"), &script, &out).unwrap();
        let ends = children.wait(Duration::from_secs(20));
        assert!(ends.iter().all(|e| e.ends_with("exit status: 0")), "{ends:?}");
        for rank in 1..3 {
            let seen = std::fs::read_to_string(dir.path().join(rank.to_string())).unwrap();
            assert_eq!(seen.trim(), format!("{master} {rank} 3 {rank}"));
        }

        let mut children =
            launch_local_ranks(3, master, Path::new("/bin/sh"), &sh("exit $((RANK + 2))"), &[]).unwrap();
        let ends = children.wait(Duration::from_secs(20));
        assert!(
            ends[0].starts_with("rank 1 (pid ") && ends[0].ends_with("exit status: 3"),
            "{ends:?}"
        );
        assert!(
            ends[1].starts_with("rank 2 (pid ") && ends[1].ends_with("exit status: 4"),
            "{ends:?}"
        );

        let mut children = launch_local_ranks(2, master, Path::new("/bin/sh"), &sh("sleep 30"), &[]).unwrap();
        let ends = children.wait(Duration::from_millis(200));
        assert!(ends[0].ends_with("still running after 0.2 s, killed"), "{ends:?}");
    }

    /// A rank started on this box that dies before it joins stops the
    /// start at once, named with how it ended (not at the timeout).
    #[test]
    fn a_rank_that_died_before_joining_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let door = super::super::Door::open_local(dir.path()).unwrap();
        let master = door.address().unwrap();
        let script: Vec<OsString> = vec!["-c".into(), "exit 3".into()];
        let children = launch_local_ranks(2, master, Path::new("/bin/sh"), &script, &[]).unwrap();
        let door = door.watching(children.watch());
        let e = door
            .admit(2, Duration::from_secs(60), || Ok(Vec::new()))
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("rank 1 (pid ") && e.contains("ended before it joined the team: exit status: 3"),
            "{e}"
        );
    }
}
