//! Randomness. On the CPU everything comes from one seeded host RNG per
//! purpose (candle's CPU random numbers cannot be seeded), so a seed gives
//! byte-identical runs and a resumed run continues the exact stream. On a
//! GPU the training loops draw on the device instead ([`Draws::Device`],
//! candle's generator, seeded per run and stage by [`seed_device`]): an
//! upload per iteration would make every iteration wait for the host.
//! Measurements, previews and initialisation keep host streams everywhere.

use crate::parallel::Shard;
use anyhow::Result;
use candle_core::{Device, Shape, Tensor};
use rand::{Rng, RngExt};
use rand_distr::StandardNormal;

/// Independent random streams, so that measuring, previewing or caching
/// never shifts the numbers training draws.
pub mod streams {
    pub const GENERATOR_INIT: u64 = 1;
    pub const TEACHER_INIT: u64 = 2;
    pub const TEACHER_TRAIN: u64 = 3;
    pub const TRAIN: u64 = 4;
    pub const EVAL: u64 = 5;
    pub const FINAL_SAMPLES: u64 = 6;
    pub const STF_REFERENCE: u64 = 7;
    pub const SNAPSHOTS: u64 = 8;
    pub const BOUNDS: u64 = 9;
    /// Drawing a `random` mixture's components from its own seed.
    pub const RANDOM_MIXTURE: u64 = 10;
    /// The terminal lab's previews (generator and target samples).
    pub const PREVIEW: u64 = 11;
    /// Data points drawn behind previews and plots.
    pub const BACKGROUND: u64 = 12;
    /// The image classifier's weights, training batches and split.
    pub const CLASSIFIER: u64 = 13;
    /// Measuring each node of the path against the data and G⁰.
    pub const PATH_SPREAD: u64 = 14;
    /// A pretrained teacher's samples standing in for data it came without.
    pub const TEACHER_REFERENCE: u64 = 15;
    /// The probe batch of G⁰ samples each node's denoiser is measured on.
    pub const PATH_PROBE: u64 = 16;
    /// A mixture's plane in `data.dim` dimensions (its map Q), from `data.seed`.
    pub const PLANE_EMBEDDING: u64 = 17;
}

/// The RNG used everywhere; its state is serialisable, so resumed runs
/// continue the exact same stream.
pub type HostRng = rand_chacha::ChaCha8Rng;

/// Creates a host RNG for a seed and a purpose, so that streams with
/// different purposes never overlap.
pub fn host_rng(seed: u64, stream: u64) -> HostRng {
    use rand::SeedableRng;
    let mut rng = HostRng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// `n` standard normal draws.
pub fn normal_vec(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.sample::<f32, _>(StandardNormal)).collect()
}

/// A tensor of standard normal draws, of any shape, drawn on the host.
pub fn normal_tensor(rng: &mut impl Rng, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
    let shape = shape.into();
    crate::transfer::upload(normal_vec(rng, shape.elem_count()), shape, device)
}

/// Where a training step draws its random numbers, and which rows of them
/// this rank keeps. Every rank draws the whole global batch from the same
/// stream and keeps its own rows (`shard`): so the ranks' shares are
/// disjoint draws, never copies; N ranks draw exactly the numbers one rank
/// draws for the whole batch (a data-parallel run is the single-device run,
/// up to the order of float sums); and a checkpoint resumes on any number
/// of ranks, its one stream being every rank's. The cost is drawing (not
/// computing on) the whole batch on every rank, small beside a network
/// pass.
pub struct Draws<'a> {
    pub source: DrawSource<'a>,
    pub shard: Shard,
}

pub enum DrawSource<'a> {
    /// From a seeded host stream, uploaded: the CPU path.
    Host(&'a mut HostRng),
    /// On the tensors' device by candle's generator: the GPU path, where
    /// nothing is uploaded.
    Device,
}

impl Draws<'_> {
    /// On the device, or from the host stream `rng`; this rank's `shard`.
    pub fn new(on_device: bool, rng: &mut HostRng, shard: Shard) -> Draws<'_> {
        let source = match on_device {
            true => DrawSource::Device,
            false => DrawSource::Host(rng),
        };
        Draws { source, shard }
    }

    /// From the host stream `rng`, the whole batch (one rank).
    pub fn host(rng: &mut HostRng) -> Draws<'_> {
        Draws {
            source: DrawSource::Host(rng),
            shard: Shard::WHOLE,
        }
    }

    /// Standard normal draws of `shape` (this rank's rows) on `device`.
    pub fn normal(&mut self, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
        let shape = shape.into();
        let mut dims = shape.dims().to_vec();
        let local = dims.first().copied().unwrap_or(1);
        if let Some(rows) = dims.first_mut() {
            *rows = self.shard.global(local);
        }
        match &mut self.source {
            DrawSource::Host(rng) => {
                let all = normal_vec(*rng, dims.iter().product());
                let mine = self.shard.take(all, local, shape.elem_count() / local.max(1));
                crate::transfer::upload(mine, shape, device)
            }
            DrawSource::Device => self.shard.rows(Tensor::randn(0f32, 1f32, dims, device)?, local),
        }
    }
}

/// Seeds `device`'s generator for one stage of one run, from the run's
/// seed, the stream's purpose and where the run is (its iteration), so a
/// resumed run draws the same numbers from there on as before the stop.
/// The CPU's generator cannot be seeded and is not used by runs.
pub fn seed_device(device: &Device, seed: u64, stream: u64, iteration: usize) -> Result<()> {
    if device.is_cpu() {
        return Ok(());
    }
    let mut rng = host_rng(seed, stream);
    rng.set_word_pos(iteration as u128 * 16);
    Ok(device.set_seed(rng.random())?)
}

/// A uniform index in `lo..=hi`.
pub fn index_in(rng: &mut impl Rng, lo: usize, hi: usize) -> usize {
    rng.random_range(lo..=hi)
}
