//! This process's team, apart from the session: joining it as
//! `config.parallel` and the launcher's environment say, the ranks rank 0
//! starts (threads of this process, or child processes on its own
//! machine), rank 0's [`Order`]s, and the end: every rank leaves first,
//! then rank 0 waits for its threads and children and says how they ended.

use super::protocol::ModelKind;
use crate::config::{Config, DeviceChoice, ParallelBackend};
use crate::parallel::{
    Children, Collective, Door, LaunchedRank, Meeting, launch_local_ranks, launched_rank, launcher_world,
    nccl_built, start_nccl, start_threads,
};
use crate::rundir::RunDir;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

/// What rank 0 is about to do to its session; the others do the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) enum Order {
    Step,
    Skip,
    SetManual(bool),
    SaveGenerator(Option<PathBuf>),
    SaveModel(ModelKind, PathBuf),
    SaveState,
    /// Rank 0's session ends (the run is over or its driver stopped).
    End,
}

/// How a session starts, with its config (resolved and checked): new, or
/// resumed from its run's checkpoint (the config read from the run, with
/// this start's parallel settings, which may differ from the run's).
#[derive(Clone)]
pub(super) enum Opening {
    New(Config),
    Resume(Config),
}

impl Opening {
    pub fn config_mut(&mut self) -> &mut Config {
        match self {
            Opening::New(c) | Opening::Resume(c) => c,
        }
    }
}

/// The ranks this process holds besides its own: the other ranks of a
/// `threads` team, and the processes of a one-box `nccl` launch.
pub(super) struct Crewmates {
    threads: Vec<Collective>,
    children: Option<Children>,
}

/// Rank 0's hold on its team, which orders the end when its session goes,
/// then waits for the ranks it started.
pub(super) struct Crew {
    team: Collective,
    threads: Vec<JoinHandle<()>>,
    children: Option<Children>,
}

impl Crewmates {
    fn none() -> Self {
        Self {
            threads: Vec::new(),
            children: None,
        }
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        // After a failure the broadcast fails at once and every rank is
        // already leaving.
        let _ = self
            .team
            .broadcast(Some(serde_json::to_vec(&Order::End).unwrap_or_default()));
        // Returns once every other rank has left.
        self.team.end();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        // Waits for the child processes and says how each ended.
        drop(self.children.take());
    }
}

/// This process's team, as `config.parallel` and the launcher's
/// environment say. Rank 0 of a `threads` team gets the threads' ranks to
/// start; an `nccl` team with no launcher starts its other ranks as child
/// processes of this command.
pub(super) fn join_team(config: &mut Config, run: &RunDir) -> Result<(Collective, Crewmates)> {
    let p = config.parallel.clone();
    let timeout = Duration::from_secs_f64(p.timeout_s);
    match p.backend {
        ParallelBackend::Solo => Ok((Collective::solo(), Crewmates::none())),
        ParallelBackend::Threads => {
            // One rank is one thread: no launcher's business.
            if p.ranks > 1
                && let Some((name, world)) = launcher_world()
            {
                bail!(
                    "{name}={world}: a launcher started {world} processes, but parallel.backend = \"threads\" \
                     runs every rank in one process: use parallel.backend = \"nccl\" (one GPU per process), \
                     or start one process"
                );
            }
            let mut threads = start_threads(p.ranks, timeout);
            let leader = threads.remove(0);
            Ok((
                leader,
                Crewmates {
                    threads,
                    children: None,
                },
            ))
        }
        ParallelBackend::Nccl => {
            if let Some(command) = ONE_PROCESS_COMMAND.get() {
                bail!(
                    "`disback {command}` runs its sessions in this process: parallel.backend = \"nccl\" \
                     (one process per GPU) is for `disback run`, `tui` and `serve`; set \
                     parallel.backend = \"threads\" or \"solo\" here"
                );
            }
            // Before any rank is started on this box.
            nccl_built()?;
            let (launched, door, children) = match launched_rank()? {
                Some(launched) => (launched, None, None),
                None => {
                    let (launched, door, children) = launch_local_ranks_of(p.ranks, run)?;
                    (launched, Some(door), Some(children))
                }
            };
            config.validate_world(launched.world)?;
            // One GPU per rank, as the launcher says.
            config.device = DeviceChoice::Cuda(launched.gpu);
            let device = crate::runtime::select_device(config.device)?.0;
            let meeting = Meeting {
                launched: &launched,
                door,
                run_dir: run.root(),
                timeout,
            };
            let mates = Crewmates {
                threads: Vec::new(),
                children,
            };
            Ok((start_nccl(meeting, &device)?, mates))
        }
    }
}

/// The command of this process, where it runs its sessions itself
/// (compare, sweep, bench): an `nccl` team would read the launcher's
/// environment and start copies of *that* command line as its ranks.
static ONE_PROCESS_COMMAND: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Says that this process's `command` runs its sessions itself: any
/// session of an `nccl` config is refused, naming the command.
pub fn sessions_in_this_process(command: &'static str) {
    let _ = ONE_PROCESS_COMMAND.set(command);
}

/// Where rank 0's own start of its box's ranks says the run directory is
/// (its command line may leave it to a time stamp).
const RUN_DIR_VAR: &str = "DISBACK_RUN_DIR";

/// The run directory rank 0 gave the ranks it started, if it did.
pub fn team_run_dir() -> Option<PathBuf> {
    std::env::var_os(RUN_DIR_VAR).map(PathBuf::from)
}

/// The single-box launch: this process is rank 0 of `ranks`. Its door is
/// bound (and kept) first; then ranks 1 … ranks−1 start as copies of its
/// own command line (they follow, writing nothing).
fn launch_local_ranks_of(ranks: usize, run: &RunDir) -> Result<(LaunchedRank, Door, Children)> {
    let door = Door::open_local(run.root())?;
    let master = door.address()?;
    let exe = std::env::current_exe().context("finding this program to start the other ranks")?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let env = [(RUN_DIR_VAR, run.root().as_os_str().to_owned())];
    let children = launch_local_ranks(ranks, master, &exe, &args, &env)?;
    let door = door.watching(children.watch());
    let launched = LaunchedRank {
        rank: 0,
        world: ranks,
        gpu: 0,
        master: master.to_string(),
    };
    Ok((launched, door, children))
}

/// Rank 0's hold on its team: the ranks of a `threads` team start here,
/// each running `follow` (its own session on `run`, writing nothing,
/// following rank 0's orders); for every team, its drop orders the end.
pub(super) fn start_crew(
    leader: &Collective,
    mates: Crewmates,
    run: &RunDir,
    opening: Opening,
    follow: fn(Collective, RunDir, Opening),
) -> Result<Option<Crew>> {
    if leader.world() == 1 {
        return Ok(None);
    }
    let mut threads = Vec::new();
    for team in mates.threads {
        let (run, opening) = (run.clone(), opening.clone());
        let thread = std::thread::Builder::new()
            .name(format!("disback-rank-{}", team.rank()))
            .spawn(move || follow(team, run, opening))
            .context("starting a rank's thread")?;
        threads.push(thread);
    }
    Ok(Some(Crew {
        team: leader.clone(),
        threads,
        children: mates.children,
    }))
}
