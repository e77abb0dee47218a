//! All randomness comes from one seeded host RNG per purpose and is uploaded
//! to the device: candle's CPU random numbers cannot be seeded, and host
//! draws make a run identical on every device for the same seed.

use anyhow::Result;
use candle_core::{Device, Tensor};
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

/// A tensor of standard normal draws, of any shape.
pub fn normal_tensor(
    rng: &mut impl Rng,
    shape: impl Into<candle_core::Shape>,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    Ok(Tensor::from_vec(
        normal_vec(rng, shape.elem_count()),
        shape,
        device,
    )?)
}

/// A uniform index in `lo..=hi`.
pub fn index_in(rng: &mut impl Rng, lo: usize, hi: usize) -> usize {
    rng.random_range(lo..=hi)
}
