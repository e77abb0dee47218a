//! The data distributions `q_0`: 2-D toys (Gaussian mixtures, with exact
//! densities and scores, and a few shapes without one) and images. Both
//! reach the models the same way, as a batch tensor from [`Dataset::batch`]:
//! (B, 2) for points, (B, C, H, W) for images.

mod embed;
mod gmm;
mod images;
mod pixels;

pub use embed::Embedding;
pub use gmm::{GaussianMixture, log_sum_exp};
pub use images::{ImageSet, Images};
pub use pixels::{PixelImages, to_byte};

use crate::config::{Config, DataConfig, DiffusersSpec, EDM_SIGMA_DATA};
use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use rand::{Rng, RngExt, SeedableRng};
use rand_distr::StandardNormal;

/// Fills in what a config leaves to be computed from its data: σ_data (the
/// 2-D data's own standard deviation per coordinate; EDM's 0.5 for images,
/// so that no file is read to know it), a preset mixture's explicit
/// components, and for a pretrained teacher its description (read from its
/// folder), the σ range it was trained on and, without data, its images'
/// shape. A run writes this form, so its `config.toml` alone reproduces it.
pub fn resolve(mut config: Config) -> Result<Config> {
    if let Some(dir) = &config.teacher.pretrained {
        match &config.teacher.diffusers {
            None => {
                let spec = DiffusersSpec::read(dir).context("teacher.pretrained")?;
                config.teacher.diffusers = Some(spec);
            }
            // A stored description (a resumed run) is checked against the
            // folder while it is there: one written by an older reading
            // of the same files would build another network.
            Some(stored) if dir.exists() => {
                let read = DiffusersSpec::read(dir).context("teacher.pretrained")?;
                let differing = differing_keys(&serde_json::to_value(stored)?, &serde_json::to_value(&read)?);
                if !differing.is_empty() {
                    anyhow::bail!(
                        "teacher.diffusers: the description stored in this run's config differs from what \
                         {} reads as now ({}): the run was made with another reading of its teacher; \
                         start a new run",
                        dir.display(),
                        differing.join(", ")
                    );
                }
            }
            Some(_) => {}
        }
    }
    if let Some(spec) = &config.teacher.diffusers {
        if let DataConfig::None { channels, size } = &mut config.data {
            (*channels, *size) = (spec.unet.in_channels, spec.unet.sample_size);
        }
        // The teacher knows only the noise levels it was trained on (its
        // images are in [−1, 1]: EDM's units are the data's).
        let sigmas = spec.schedule.sigmas();
        config.diffusion.sigma_min = sigmas[0];
        config.diffusion.sigma_max = sigmas[sigmas.len() - 1];
    }
    if config.diffusion.sigma_data.is_none() {
        let std = PlaneData::new(&config.data).map_or(EDM_SIGMA_DATA, |plane| plane.std());
        config.diffusion.sigma_data = Some(std);
    }
    let components = match config.data {
        DataConfig::Ring {
            modes, radius, std, ..
        } => Some(GaussianMixture::ring_components(modes, radius, std)),
        DataConfig::Random { modes, seed, .. } => Some(GaussianMixture::random_components(modes, seed)),
        _ => None,
    };
    if let (Some(components), Some(e)) = (components, config.data.embedding()) {
        config.data = DataConfig::Gmm {
            components,
            dim: e.dim,
            off_plane_std: e.off_plane_std,
            // The seed only places the plane: in 2-D it would change the
            // resolved config (and the teacher's cache key) for nothing.
            seed: if e.dim > 2 { e.seed } else { 0 },
        };
    }
    Ok(config)
}

/// The dotted keys where two JSON values differ (objects by key, anything
/// else as a whole).
fn differing_keys(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    use serde_json::Value::Object;
    match (a, b) {
        (Object(a), Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            let null = serde_json::Value::Null;
            keys.into_iter()
                .flat_map(|k| {
                    let (x, y) = (a.get(k).unwrap_or(&null), b.get(k).unwrap_or(&null));
                    differing_keys(x, y)
                        .into_iter()
                        .map(move |inner| match inner.is_empty() {
                            true => k.clone(),
                            false => format!("{k}.{inner}"),
                        })
                })
                .collect()
        }
        _ if a == b => vec![],
        _ => vec![String::new()],
    }
}

/// A point in the plane: 2-D data as the models see it, or where a sample
/// of a mixture embedded in more dimensions shows in pictures (its
/// coordinates on the plane, [`Embedding::project`]).
pub type Point = [f32; 2];

/// The dimension of the plane.
pub const DIM: usize = 2;

/// Samples on the host, one after another: `len()` samples of `shape`
/// (`[2]` for points, `[C, H, W]` for images). What metrics, files and
/// previews work on; the models see the same values as a tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

impl Samples {
    /// A (B, …) tensor's rows.
    pub fn from_tensor(t: &Tensor) -> Result<Self> {
        Ok(Self {
            shape: t.dims()[1..].to_vec(),
            values: t.flatten_all()?.to_vec1()?,
        })
    }

    pub fn from_points(points: &[Point]) -> Self {
        Self {
            shape: vec![DIM],
            values: points.as_flattened().to_vec(),
        }
    }

    /// Values per sample.
    pub fn dim(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn len(&self) -> usize {
        self.values.len() / self.dim().max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn rows(&self) -> std::slice::ChunksExact<'_, f32> {
        self.values.chunks_exact(self.dim().max(1))
    }

    /// The first `n` samples (all of them if there are fewer).
    pub fn head(&self, n: usize) -> Samples {
        Samples {
            shape: self.shape.clone(),
            values: self.values[..n.min(self.len()) * self.dim()].to_vec(),
        }
    }

    /// The samples as points, when they are 2-D.
    pub fn points(&self) -> Option<Vec<Point>> {
        (self.shape == [DIM]).then(|| self.rows().map(|r| [r[0], r[1]]).collect())
    }

    /// A (B, …) tensor on `device`.
    /// This rank's `local` rows of a global batch.
    pub fn shard(self, shard: crate::parallel::Shard, local: usize) -> Samples {
        let per_row = self.shape.iter().product();
        Samples {
            values: shard.take(self.values, local, per_row),
            shape: self.shape,
        }
    }

    pub fn to_tensor(&self, device: &Device) -> Result<Tensor> {
        let mut shape = vec![self.len()];
        shape.extend(&self.shape);
        Ok(Tensor::from_slice(&self.values, shape, device)?)
    }
}

/// A rectangle of the plane: what previews and plots show.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Bounds {
    pub x: (f32, f32),
    pub y: (f32, f32),
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            x: (-3.0, 3.0),
            y: (-3.0, 3.0),
        }
    }
}

impl Bounds {
    /// A square around the points with a 25% margin, centred on them, so
    /// that a generator wandering a little past the data stays in view.
    pub fn around(points: &[Point]) -> Self {
        if points.is_empty() {
            return Self::default();
        }
        let (mut lo, mut hi) = ([f32::INFINITY; 2], [f32::NEG_INFINITY; 2]);
        for p in points {
            for d in 0..2 {
                lo[d] = lo[d].min(p[d]);
                hi[d] = hi[d].max(p[d]);
            }
        }
        let half = 0.625 * (hi[0] - lo[0]).max(hi[1] - lo[1]).max(1e-3);
        let centre = [(lo[0] + hi[0]) / 2.0, (lo[1] + hi[1]) / 2.0];
        Self {
            x: (centre[0] - half, centre[0] + half),
            y: (centre[1] - half, centre[1] + half),
        }
    }

    /// An `nx` × `ny` grid of cell centres, row by row from the bottom.
    pub fn grid(&self, nx: usize, ny: usize) -> Vec<Point> {
        let (x0, x1) = self.x;
        let (y0, y1) = self.y;
        (0..ny)
            .flat_map(|j| {
                (0..nx).map(move |i| {
                    [
                        x0 + (x1 - x0) * (i as f32 + 0.5) / nx as f32,
                        y0 + (y1 - y0) * (j as f32 + 0.5) / ny as f32,
                    ]
                })
            })
            .collect()
    }
}

/// A data distribution to distil.
#[derive(Debug, Clone)]
pub enum Dataset {
    Plane(PlaneData),
    Images(Images),
}

impl Dataset {
    /// The data `config` names; image files are read and checked here, and
    /// an error names the file and what is wrong with it.
    pub fn load(config: &DataConfig) -> Result<Self> {
        if let Some(plane) = PlaneData::new(config) {
            return Ok(Dataset::Plane(plane));
        }
        match Images::load(config) {
            Some(images) => Ok(Dataset::Images(images?)),
            None => anyhow::bail!("data.kind = \"none\": there is no data to load"),
        }
    }

    pub fn plane(&self) -> Option<&PlaneData> {
        match self {
            Dataset::Plane(p) => Some(p),
            Dataset::Images(_) => None,
        }
    }

    pub fn images(&self) -> Option<&Images> {
        match self {
            Dataset::Images(i) => Some(i),
            Dataset::Plane(_) => None,
        }
    }

    /// The exact mixture, when the data is one.
    pub fn mixture(&self) -> Option<&GaussianMixture> {
        self.plane().and_then(PlaneData::mixture)
    }

    /// Samples of this data as points of the plane, for pictures: a
    /// mixture's samples projected onto its plane (Qᵀ x, the plane's own
    /// coordinates), other 2-D samples as they are; `None` for images.
    pub fn plane_points(&self, samples: &Samples) -> Option<Vec<Point>> {
        let plane = self.plane()?;
        Some(samples.rows().map(|x| plane.embedding().project(x)).collect())
    }

    /// The shape of one sample: `[dim]` or `[C, H, W]`.
    pub fn sample_shape(&self) -> Vec<usize> {
        match self {
            Dataset::Plane(p) => vec![p.dim()],
            Dataset::Images(i) => {
                let s = i.shape();
                vec![s.channels, s.height, s.width]
            }
        }
    }

    /// `n` samples on the host.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Samples {
        let values = match self {
            Dataset::Plane(p) => p.sample_values(n, rng),
            Dataset::Images(i) => i.sample(n, rng).pixels,
        };
        Samples {
            shape: self.sample_shape(),
            values,
        }
    }

    /// `n` samples as a (n, dim) or (n, C, H, W) tensor on `device`.
    pub fn batch(&self, n: usize, rng: &mut impl Rng, device: &Device) -> Result<Tensor> {
        self.sample(n, rng).to_tensor(device)
    }

    /// A short human description for headers and logs.
    pub fn describe(&self) -> String {
        match self {
            Dataset::Plane(p) => p.describe(),
            Dataset::Images(i) => i.describe(),
        }
    }
}

/// A 2-D data distribution (a mixture's plane may sit in more dimensions).
#[derive(Debug, Clone)]
pub enum PlaneData {
    Mixture(GaussianMixture),
    Checkerboard { cells: usize, size: f64 },
    SwissRoll { scale: f64, noise: f64 },
}

impl PlaneData {
    /// The 2-D data `config` names; `None` for images.
    pub fn new(config: &DataConfig) -> Option<Self> {
        Some(match config {
            DataConfig::Gmm { components, .. } => {
                PlaneData::Mixture(GaussianMixture::embedded(components, config.embedding()?))
            }
            DataConfig::Ring {
                modes, radius, std, ..
            } => PlaneData::Mixture(GaussianMixture::embedded(
                &GaussianMixture::ring_components(*modes, *radius, *std),
                config.embedding()?,
            )),
            DataConfig::Random { modes, seed, .. } => PlaneData::Mixture(GaussianMixture::embedded(
                &GaussianMixture::random_components(*modes, *seed),
                config.embedding()?,
            )),
            DataConfig::Checkerboard { cells, size } => PlaneData::Checkerboard {
                cells: *cells,
                size: *size,
            },
            DataConfig::SwissRoll { scale, noise } => PlaneData::SwissRoll {
                scale: *scale,
                noise: *noise,
            },
            _ => return None,
        })
    }

    /// The exact mixture, when the data is one.
    pub fn mixture(&self) -> Option<&GaussianMixture> {
        match self {
            PlaneData::Mixture(m) => Some(m),
            _ => None,
        }
    }

    /// Values per sample: a mixture's `dim`, else 2.
    pub fn dim(&self) -> usize {
        self.mixture().map_or(DIM, GaussianMixture::dim)
    }

    /// How the data's plane sits among its dimensions (the identity for
    /// all but embedded mixtures).
    pub fn embedding(&self) -> &Embedding {
        static PLANE: std::sync::LazyLock<Embedding> =
            std::sync::LazyLock::new(|| Embedding::new(crate::config::PlaneEmbedding::PLANE));
        match self {
            PlaneData::Mixture(m) => m.embedding(),
            _ => &PLANE,
        }
    }

    /// `n` samples of `dim` values each, one after another.
    pub fn sample_values(&self, n: usize, rng: &mut impl Rng) -> Vec<f32> {
        match self {
            PlaneData::Mixture(m) => m.sample_values(n, rng),
            _ => self.sample(n, rng).into_flattened(),
        }
    }

    /// `n` samples in the plane's coordinates (a mixture's plane, before
    /// any embedding): the exact 2-D picture.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Vec<Point> {
        match self {
            PlaneData::Mixture(m) => m.sample(n, rng),
            PlaneData::Checkerboard { cells, size } => {
                let cell = size / *cells as f64;
                (0..n)
                    .map(|_| {
                        // Pick a row, then a dark column in it: (row + col) even.
                        let row = rng.random_range(0..*cells);
                        let dark = (0..*cells).filter(|c| (row + c) % 2 == 0).count();
                        let col = 2 * rng.random_range(0..dark) + row % 2;
                        let u: f64 = rng.random();
                        let v: f64 = rng.random();
                        [
                            (-size / 2.0 + (col as f64 + u) * cell) as f32,
                            (-size / 2.0 + (row as f64 + v) * cell) as f32,
                        ]
                    })
                    .collect()
            }
            PlaneData::SwissRoll { scale, noise } => {
                let turns = 4.5 * std::f64::consts::PI;
                (0..n)
                    .map(|_| {
                        let t = rng.random_range(1.5 * std::f64::consts::PI..turns);
                        let e0: f64 = rng.sample(StandardNormal);
                        let e1: f64 = rng.sample(StandardNormal);
                        let r = scale / turns;
                        [
                            (r * t * t.cos() + noise * e0) as f32,
                            (r * t * t.sin() + noise * e1) as f32,
                        ]
                    })
                    .collect()
            }
        }
    }

    /// Standard deviation per coordinate (averaged over both), the default
    /// σ_data. Exact for mixtures; estimated from a fixed-seed sample of
    /// 200,000 points otherwise, so it is the same on every run.
    pub fn std(&self) -> f64 {
        if let Some(m) = self.mixture() {
            return m.std();
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed);
        let xs = self.sample(200_000, &mut rng);
        let n = xs.len() as f64;
        let var: f64 = (0..2)
            .map(|d| {
                let mean = xs.iter().map(|p| p[d] as f64).sum::<f64>() / n;
                xs.iter().map(|p| (p[d] as f64 - mean).powi(2)).sum::<f64>() / n
            })
            .sum();
        (var / 2.0).sqrt()
    }

    /// A short human description for headers and logs.
    pub fn describe(&self) -> String {
        match self {
            PlaneData::Mixture(m) => {
                let modes = m.components().len();
                let e = m.embedding();
                match e.is_plane() {
                    true => format!("Gaussian mixture, {modes} modes"),
                    false => format!(
                        "Gaussian mixture, {modes} modes, {}-D, off-plane σ {}",
                        e.dim(),
                        e.off_plane_std()
                    ),
                }
            }
            PlaneData::Checkerboard { cells, .. } => format!("checkerboard {cells}×{cells}"),
            PlaneData::SwissRoll { .. } => "swiss roll".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::host_rng;

    #[test]
    fn checkerboard_samples_only_dark_squares() {
        let data = PlaneData::Checkerboard { cells: 4, size: 4.0 };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let xs = data.sample(5000, &mut rng);
        let mut seen = [[0usize; 4]; 4];
        for p in &xs {
            assert!(p.iter().all(|v| v.abs() <= 2.0));
            let col = ((p[0] + 2.0).floor() as usize).min(3);
            let row = ((p[1] + 2.0).floor() as usize).min(3);
            assert_eq!((row + col) % 2, 0, "{p:?} is on a light square");
            seen[row][col] += 1;
        }
        // Every dark square gets about 1/8 of the samples.
        for (row, cols) in seen.iter().enumerate() {
            for (col, &n) in cols.iter().enumerate() {
                if (row + col) % 2 == 0 {
                    assert!((n as f64 / 5000.0 - 0.125).abs() < 0.02, "{row},{col}: {n}");
                }
            }
        }
    }

    #[test]
    fn swiss_roll_stays_within_its_scale() {
        let data = PlaneData::SwissRoll {
            scale: 2.5,
            noise: 0.0,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        for p in data.sample(1000, &mut rng) {
            let r = (p[0] * p[0] + p[1] * p[1]).sqrt();
            assert!(
                (2.5 / 3.0 - 1e-4..=2.5 + 1e-4).contains(&(r as f64)),
                "radius {r}"
            );
        }
    }

    #[test]
    fn resolving_writes_out_the_mixture_and_sigma_data() {
        let c = resolve(Config::default()).unwrap();
        let DataConfig::Gmm { components, .. } = &c.data else {
            panic!("a ring resolves to explicit components");
        };
        assert_eq!(components.len(), 10);
        assert!((components[0].mean[0] - 2.5).abs() < 1e-12);
        // Ten equal modes on radius 2.5, std 0.15: per-coordinate variance
        // r²/2 + s² → σ_data = sqrt(3.125 + 0.0225).
        let sd = c.sigma_data();
        assert!((sd - (3.125f64 + 0.0225).sqrt()).abs() < 1e-9, "{sd}");
        // The written form reads back as the same config.
        assert_eq!(Config::parse(&c.to_toml().unwrap(), &[]).unwrap(), c);
        // Images use EDM's σ_data, known without reading a file.
        let digits = resolve(Config::parse("[data]\nkind = \"digits\"\n", &[]).unwrap()).unwrap();
        assert_eq!(digits.sigma_data(), 0.5);
    }

    #[test]
    fn resolving_keeps_the_embedding_and_the_same_data() {
        let sets = [
            "data.kind=\"random\"",
            "data.modes=3",
            "data.seed=4",
            "data.dim=6",
            "data.off_plane_std=0.1",
        ];
        let config = Config::parse("", &sets.map(String::from)).unwrap();
        let resolved = resolve(config.clone()).unwrap();
        let DataConfig::Gmm {
            dim,
            off_plane_std,
            seed,
            ..
        } = resolved.data
        else {
            panic!("a random mixture resolves to explicit components");
        };
        assert_eq!((dim, off_plane_std, seed), (6, 0.1, 4));
        assert_eq!(
            Config::parse(&resolved.to_toml().unwrap(), &[]).unwrap(),
            resolved
        );
        let draw = |c: &DataConfig| Dataset::load(c).unwrap().sample(50, &mut host_rng(1, 0));
        let (before, after) = (draw(&config.data), draw(&resolved.data));
        assert_eq!(before, after);
        assert_eq!(before.shape, vec![6]);
        // σ_data is the per-coordinate spread over all six coordinates.
        let plane = PlaneData::new(&resolved.data).unwrap();
        assert!((resolved.sigma_data() - plane.std()).abs() < 1e-12);
        // Pictures show the plane: the projection of the samples is the
        // plane's mixture plus nothing of the off-plane noise.
        let data = Dataset::load(&resolved.data).unwrap();
        let points = data.plane_points(&before).unwrap();
        assert_eq!(points.len(), 50);
        assert!(
            data.describe().ends_with("6-D, off-plane σ 0.1"),
            "{}",
            data.describe()
        );
    }
}
