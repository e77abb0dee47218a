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
//! How the team is joined, started and ended, apart from the session:
//! `crew.rs`.

use super::crew::{Opening, Order};
use super::session::Session;
use crate::config::Config;
use crate::parallel::Collective;
use crate::rundir::RunDir;
use anyhow::{Result, bail};

impl Session {
    /// A rank other than 0 of a `threads` team, from its start to rank 0's
    /// end, on its own thread. Its errors have reached the others (through
    /// the team) by the time it returns.
    pub(super) fn run_follower(team: Collective, run: RunDir, opening: Opening) {
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
