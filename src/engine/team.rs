//! A session among ranks (data parallelism). Every rank runs a session
//! of its own on its share of each batch; their optimisers average the
//! gradients, so all hold the same weights. Rank 0 leads: it alone
//! measures, writes the run directory and serves the lab, and before
//! each thing it does to its session (a step, a skip, a save, the manual
//! toggle) it broadcasts an [`Order`], which the other ranks carry out on
//! theirs ([`Session::follow`]). So a switch, a pause or a save happens on
//! the same iteration on every rank; pauses cost nothing (the others wait
//! for the next order). The backtracking schedule's own switches need no
//! order: every rank reads the same averaged gaps and decides alike.
//!
//! A rank that fails tells the others (its error reaches rank 0's log and
//! lab, naming it); every rank then stops, keeping the last checkpoint.

use super::outputs::ModelKind;
use super::session::Session;
use crate::config::{Config, DeviceChoice, ParallelBackend};
use crate::parallel::{Collective, LaunchedRank, launched_rank, nccl_built, start_nccl, start_threads};
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

/// The ranks rank 0 started as threads of this process, which it ends and
/// waits for when its session goes.
pub(super) struct Crew {
    team: Collective,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Crew {
    fn drop(&mut self) {
        // After a failure the broadcast fails at once and every rank is
        // already leaving.
        let _ = self
            .team
            .broadcast(Some(serde_json::to_vec(&Order::End).unwrap_or_default()));
        self.team.end();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
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

/// This process's team, as `config.parallel` and the launcher's
/// environment say. Rank 0 of a `threads` team gets the threads' ranks to
/// start; an `nccl` team with no launcher starts its other ranks as child
/// processes of this command.
pub(super) fn join_team(config: &mut Config, run: &RunDir) -> Result<(Collective, Vec<Collective>)> {
    let p = config.parallel.clone();
    let timeout = Duration::from_secs_f64(p.timeout_s);
    match p.backend {
        ParallelBackend::Solo => Ok((Collective::solo(), Vec::new())),
        ParallelBackend::Threads => {
            let mut team = start_threads(p.ranks, timeout);
            let leader = team.remove(0);
            Ok((leader, team))
        }
        ParallelBackend::Nccl => {
            // Before any rank is started on this box.
            nccl_built()?;
            let launched = match launched_rank()? {
                Some(launched) => launched,
                None => launch_local_ranks(p.ranks, run)?,
            };
            config.validate_world(launched.world)?;
            // One GPU per rank: the launcher's local rank picks it.
            config.device = DeviceChoice::Cuda(launched.local_rank);
            let device = crate::runtime::select_device(config.device)?.0;
            Ok((start_nccl(&launched, &device, timeout)?, Vec::new()))
        }
    }
}

/// Where rank 0's own start of its box's ranks says the run directory is
/// (its command line may leave it to a time stamp).
const RUN_DIR_VAR: &str = "DISBACK_RUN_DIR";

/// The run directory rank 0 gave the ranks it started, if it did.
pub fn team_run_dir() -> Option<PathBuf> {
    std::env::var_os(RUN_DIR_VAR).map(PathBuf::from)
}

/// The single-box launch: this process is rank 0 of `ranks`, and starts
/// ranks 1 … ranks−1 as copies of its own command line with the
/// environment torchrun would give them (they follow, writing nothing).
fn launch_local_ranks(ranks: usize, run: &RunDir) -> Result<LaunchedRank> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let exe = std::env::current_exe().context("finding this program to start the other ranks")?;
    for rank in 1..ranks {
        std::process::Command::new(&exe)
            .args(std::env::args_os().skip(1))
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", ranks.to_string())
            .env("LOCAL_RANK", rank.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            .env(RUN_DIR_VAR, run.root())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting rank {rank} of {ranks}"))?;
    }
    Ok(LaunchedRank {
        rank: 0,
        world: ranks,
        local_rank: 0,
        master: format!("127.0.0.1:{port}"),
    })
}

/// Rank 0's hold on its team: the ranks of a `threads` team start here,
/// each building its own session on `run` (writing nothing) and following
/// rank 0's orders; for every team, its drop orders the end.
pub(super) fn start_crew(
    leader: &Collective,
    others: Vec<Collective>,
    run: &RunDir,
    opening: Opening,
) -> Result<Option<Crew>> {
    if leader.world() == 1 {
        return Ok(None);
    }
    let mut threads = Vec::new();
    for team in others {
        let (run, opening) = (run.clone(), opening.clone());
        let thread = std::thread::Builder::new()
            .name(format!("disback-rank-{}", team.rank()))
            .spawn(move || run_follower(team, run, opening))
            .context("starting a rank's thread")?;
        threads.push(thread);
    }
    Ok(Some(Crew {
        team: leader.clone(),
        threads,
    }))
}

/// A rank other than 0, from its start to rank 0's end. Its errors have
/// reached the others (through the team) by the time it returns.
fn run_follower(team: Collective, run: RunDir, opening: Opening) {
    let rank = team.rank();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Session::open_as_follower(team.clone(), run, opening).and_then(Session::follow)
    }));
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => team.fail(&format!("{e:#}")),
        Err(_) => team.fail(&format!("rank {rank}'s thread panicked")),
    }
}

impl Session {
    /// Starts this rank's session of a new run in a team made by the
    /// caller (`parallel::start_threads`): rank 0 takes `run`; the others
    /// only read it and are then driven by [`Session::follow`], until rank
    /// 0 calls [`Session::dismiss`]. (`Session::start` makes the team
    /// `config.parallel` asks for by itself.)
    pub fn start_in_team(config: Config, run: RunDir, team: Collective) -> Result<Self> {
        let config = crate::data::resolve(config)?;
        config.validate()?;
        config.validate_world(team.world())?;
        let session = match team.leads() {
            true => Self::start_leading(config, run, team.clone()),
            false => Self::open_as_follower(team.clone(), run, Opening::New(config)),
        };
        if let Err(e) = &session {
            team.fail(&format!("{e:#}"));
        }
        session
    }

    /// Rank 0: the other ranks stop following (their `follow` returns
    /// their session). Rank 0's session stays usable alone only if it
    /// was alone; a team's rank 0 takes no more steps.
    pub fn dismiss(&mut self) -> Result<()> {
        if self.team.world() == 1 || !self.team.leads() {
            return Ok(());
        }
        match self.crew.take() {
            // Its drop orders the end and waits for the threads.
            Some(crew) => drop(crew),
            None => {
                self.order(&Order::End)?;
                self.team.end();
            }
        }
        // Its optimisers would wait for the others: no more steps. Saves
        // and reads go on, alone.
        self.failure = Some("this rank 0 dismissed its team: it takes no more steps".into());
        self.team = Collective::solo();
        Ok(())
    }

    /// Rank 0 tells the others what it does next (nothing when alone).
    pub(super) fn order(&self, order: &Order) -> Result<()> {
        if self.team.world() == 1 || !self.team.leads() {
            return Ok(());
        }
        self.team.broadcast(Some(serde_json::to_vec(order)?))?;
        Ok(())
    }

    /// A rank other than 0: does what rank 0 orders until it ends. An
    /// error here is one the team already knows of.
    pub fn follow(mut self) -> Result<Self> {
        if self.team.leads() {
            bail!("rank 0 leads; it follows no one");
        }
        loop {
            let order: Order = serde_json::from_slice(&self.team.broadcast(None)?)?;
            match order {
                Order::Step => drop(self.step()?),
                Order::Skip => drop(self.skip()?),
                Order::SetManual(on) => self.set_manual(on)?,
                Order::SaveGenerator(path) => drop(self.save_generator(path.as_deref())?),
                Order::SaveModel(kind, path) => self.save_model(kind, &path)?,
                Order::SaveState => self.save_state()?,
                Order::End => {
                    self.team.end();
                    return Ok(self);
                }
            }
        }
    }

    /// This rank's place in its team.
    pub fn team(&self) -> &Collective {
        &self.team
    }
}
