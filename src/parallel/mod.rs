//! Data parallelism: ranks that each train on their share of every batch
//! and average their gradients, so every rank holds the same weights.
//!
//! A [`Collective`] is one rank's handle on the others. It does three
//! things: sums (averages) a flat buffer over the ranks, broadcasts rank
//! 0's bytes, and spreads a rank's failure to every other rank so that no
//! one waits for a rank that is gone. Its backends:
//!
//! - `solo`: one rank; every exchange is a no-op.
//! - `threads` ([`threads`]): ranks as threads of one process, meeting in
//!   shared memory. Tests and CPU machines run data-parallel with it.
//! - `nccl` (`nccl.rs`, in the `nccl` build): one process per GPU,
//!   gradients summed by NCCL on the device, orders, failures and the end
//!   over TCP connections to rank 0 (`tcp.rs`), which admits only ranks
//!   that show the run's secret (`door.rs`); a watchdog ends a rank stuck
//!   in NCCL (`watchdog.rs`).
//!
//! Sums run in rank order on every backend but NCCL's (whose order NCCL
//! chooses, the same on every rank), so every rank gets the same bits.

mod door;
mod launch;
#[cfg(feature = "nccl")]
mod nccl;
// Only NCCL's team uses the hub and its watchdog; without NCCL they are
// built for their tests.
#[cfg_attr(not(feature = "nccl"), allow(dead_code))]
mod tcp;
mod threads;
#[cfg_attr(not(feature = "nccl"), allow(dead_code))]
mod watchdog;
mod wire;

pub use door::{Door, SECRET_FILE};
pub use launch::{
    Children, LaunchedRank, launch_local_ranks, launched_rank, launcher_world, outlast_signals,
};
#[cfg(feature = "nccl")]
pub use nccl::start_nccl;
pub use threads::start_threads;

/// Whether this build has NCCL; without it, says how to get it.
pub fn nccl_built() -> Result<()> {
    if cfg!(feature = "nccl") {
        return Ok(());
    }
    anyhow::bail!(
        "parallel.backend = \"nccl\" needs the NCCL build (cargo build --release --features nccl; \
         the CUDA toolkit and NCCL's library); on the CPU use parallel.backend = \"threads\""
    )
}

/// Where a rank of an NCCL team meets the others: its place in the team,
/// rank 0's door if this process already holds it (the one-box launch),
/// the run directory every rank shares, and the team's timeout.
pub struct Meeting<'a> {
    pub launched: &'a LaunchedRank,
    pub door: Option<Door>,
    pub run_dir: &'a std::path::Path,
    pub timeout: std::time::Duration,
}

#[cfg(not(feature = "nccl"))]
pub fn start_nccl(_: Meeting<'_>, _: &candle_core::Device) -> Result<Collective> {
    nccl_built().map(|()| unreachable!("checked: no NCCL build"))
}

use anyhow::Result;
use candle_core::Tensor;
use std::sync::Arc;

/// Which part of each batch a rank takes: rows `rank·n … (rank+1)·n` of a
/// global batch of `world·n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    pub world: usize,
}

impl Shard {
    /// The whole batch: one rank.
    pub const WHOLE: Shard = Shard { rank: 0, world: 1 };

    /// Rows of the global batch that `local` rows per rank make.
    pub fn global(&self, local: usize) -> usize {
        local * self.world
    }

    /// This rank's `local` items of a global batch laid out row after
    /// row, each row `per_row` values long.
    pub fn take<T: Clone>(&self, mut all: Vec<T>, local: usize, per_row: usize) -> Vec<T> {
        if self.world == 1 {
            return all;
        }
        let start = self.rank * local * per_row;
        all.truncate(start + local * per_row);
        all.split_off(start)
    }

    /// This rank's `local` rows of a tensor holding the global batch.
    pub fn rows(&self, all: Tensor, local: usize) -> Result<Tensor> {
        if self.world == 1 {
            return Ok(all);
        }
        Ok(all.narrow(0, self.rank * local, local)?)
    }
}

/// What a backend does; [`Collective`] adds the rank and the averaging.
trait Backend: Send + Sync {
    /// Replaces `values` by their sum over the ranks (every rank passes the
    /// same length). `patient`: wait as long as it takes (the others may
    /// be waiting for rank 0's measurement), not the team's timeout.
    fn sum(&self, rank: usize, values: &mut [f32], patient: bool) -> Result<()>;
    /// The sum of `t` over the ranks where the backend sums on the device
    /// (NCCL); `None` sends it through [`Backend::sum`] on the host.
    fn sum_on_device(&self, _rank: usize, _t: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
    /// Rank 0's `message` (it passes `Some`, the others `None`), on every
    /// rank. Waits without a time limit: orders come when a lab says so.
    fn broadcast(&self, rank: usize, message: Option<Vec<u8>>) -> Result<Vec<u8>>;
    /// This rank failed: every rank's next (or current) exchange returns
    /// an error naming it and `message`.
    fn fail(&self, rank: usize, message: &str);
    /// This rank's part of the team's work is over (rank 0 ordered the
    /// end): it leaves without alarming the others; rank 0 returns once
    /// every other rank has left.
    fn end(&self) {}
}

/// One rank's handle on the team (cheap to clone: the models, optimisers
/// and the session of one rank each keep one).
#[derive(Clone)]
pub struct Collective {
    backend: Option<Arc<dyn Backend>>,
    shard: Shard,
    /// What the team is, for headers ("2 × threads").
    kind: &'static str,
}

impl std::fmt::Debug for Collective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Collective({}, rank {} of {})",
            self.kind,
            self.rank(),
            self.world()
        )
    }
}

impl Default for Collective {
    fn default() -> Self {
        Self::solo()
    }
}

impl Collective {
    /// One rank alone.
    pub fn solo() -> Self {
        Self {
            backend: None,
            shard: Shard::WHOLE,
            kind: "solo",
        }
    }

    fn team(backend: Arc<dyn Backend>, rank: usize, world: usize, kind: &'static str) -> Self {
        Self {
            backend: Some(backend),
            shard: Shard { rank, world },
            kind,
        }
    }

    pub fn rank(&self) -> usize {
        self.shard.rank
    }

    pub fn world(&self) -> usize {
        self.shard.world
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Rank 0: the one that decides, writes files and serves the lab.
    pub fn leads(&self) -> bool {
        self.shard.rank == 0
    }

    /// The backend's name: solo, threads or nccl.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Replaces `values` by their mean over the ranks: a gradient
    /// exchange, which a rank waits for at most the team's timeout.
    pub fn average(&self, values: &mut [f32]) -> Result<()> {
        self.average_within(values, false)
    }

    fn average_within(&self, values: &mut [f32], patient: bool) -> Result<()> {
        let Some(backend) = &self.backend else {
            return Ok(());
        };
        backend.sum(self.rank(), values, patient)?;
        let world = self.world() as f32;
        values.iter_mut().for_each(|v| *v /= world);
        Ok(())
    }

    /// The mean of `t` over the ranks (a flat f32 tensor): on the device
    /// where the backend can (NCCL), through the host otherwise.
    pub fn average_tensor(&self, t: &Tensor) -> Result<Tensor> {
        let Some(backend) = &self.backend else {
            return Ok(t.clone());
        };
        if let Some(sum) = backend.sum_on_device(self.rank(), t)? {
            return Ok((sum / self.world() as f64)?);
        }
        let mut values = crate::transfer::read(t)?;
        self.average(&mut values)?;
        crate::transfer::upload(values, t.shape(), t.device())
    }

    /// Host values (losses, gaps) averaged over the ranks. They were read
    /// from f32 tensors, so the round trip through f32 loses nothing. The
    /// ranks wait for each other as long as it takes: rank 0 may be
    /// measuring (the end's 10,000 samples take minutes on a CPU).
    pub fn average_values(&self, values: Vec<f64>) -> Result<Vec<f64>> {
        if self.backend.is_none() {
            return Ok(values);
        }
        let mut f32s: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        self.average_within(&mut f32s, true)?;
        Ok(f32s.into_iter().map(f64::from).collect())
    }

    /// Waits until every rank is here.
    pub fn barrier(&self) -> Result<()> {
        self.average_within(&mut [0.0], true)
    }

    /// Rank 0's `message` on every rank (rank 0 passes `Some`).
    pub fn broadcast(&self, message: Option<Vec<u8>>) -> Result<Vec<u8>> {
        match &self.backend {
            Some(backend) => backend.broadcast(self.rank(), message),
            None => message.ok_or_else(|| anyhow::anyhow!("a solo rank has no rank 0 to hear from")),
        }
    }

    /// Rank 0's `value` on every rank (the others' are ignored): how rank 0
    /// decides for all.
    pub fn from_leader<T>(&self, value: T) -> Result<T>
    where
        T: serde::Serialize + serde::de::DeserializeOwned,
    {
        if self.backend.is_none() {
            return Ok(value);
        }
        let mine = match self.leads() {
            true => Some(serde_json::to_vec(&value)?),
            false => None,
        };
        Ok(serde_json::from_slice(&self.broadcast(mine)?)?)
    }

    /// Rank 0's value on every rank; the others check theirs against it, so
    /// that ranks which would go different ways (a teacher found in the
    /// cache by one and not another) stop with the difference named.
    pub fn agree<T>(&self, what: &str, value: &T) -> Result<()>
    where
        T: serde::Serialize + PartialEq + std::fmt::Debug + serde::de::DeserializeOwned,
    {
        if self.backend.is_none() {
            return Ok(());
        }
        let leaders: T = serde_json::from_slice(&serde_json::to_vec(value)?)?;
        let leaders = self.from_leader(leaders)?;
        anyhow::ensure!(
            &leaders == value,
            "rank {} disagrees with rank 0 on {what}: {value:?} here, {leaders:?} on rank 0",
            self.rank()
        );
        Ok(())
    }

    /// The team's work is over: this rank leaves without alarming others
    /// (rank 0 last: it waits for the others to have left).
    pub fn end(&self) {
        if let Some(backend) = &self.backend {
            backend.end();
        }
    }

    /// Tells every other rank this one failed with `message`.
    pub fn fail(&self, message: &str) {
        if let Some(backend) = &self.backend {
            backend.fail(self.rank(), message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_tile_the_global_batch_in_rank_order() {
        let all: Vec<u32> = (0..12).collect();
        let parts: Vec<Vec<u32>> = (0..3)
            .map(|rank| Shard { rank, world: 3 }.take(all.clone(), 2, 2))
            .collect();
        assert_eq!(parts, [vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9, 10, 11]]);
        assert_eq!(Shard::WHOLE.take(all.clone(), 12, 1), all);
        let t = Tensor::arange(0f32, 6f32, &candle_core::Device::Cpu).unwrap();
        let second = Shard { rank: 1, world: 2 }.rows(t, 3).unwrap();
        assert_eq!(second.to_vec1::<f32>().unwrap(), [3.0, 4.0, 5.0]);
    }

    #[test]
    fn a_solo_rank_averages_to_itself_and_leads() {
        let solo = Collective::solo();
        let mut values = [1.0, 2.0];
        solo.average(&mut values).unwrap();
        assert_eq!(values, [1.0, 2.0]);
        assert!(solo.leads() && solo.world() == 1);
        solo.agree("anything", &3).unwrap();
    }
}
