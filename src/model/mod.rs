//! Models: the EDM denoiser (teacher, path nodes, fake score) and the
//! one-step generator, with deep copies and checked save/load.

mod diffusers;
mod edm;
mod frozen;
mod layers;
mod nets;
mod params;
mod unet;

pub use diffusers::load_diffusers_weights;
pub use edm::{Denoiser, NoiseLevels, Precond, Sigmas, VpTable, loss_weight};
pub use frozen::frozen;
pub use layers::{Conv2d, Linear, attend};
pub use params::{Init, ParamBuilder, Params};

use nets::{GeneratorNet, ScoreNet};

use crate::config::{GeneratorInit, GeneratorSpec, NetSpec};
use crate::data::{Point, Samples};
use crate::rng::{Draws, HostRng, normal_tensor};
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use rand::Rng;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::Path;

const SCORE_NET: &str = "score-net";
const GENERATOR: &str = "generator";

/// Metadata written into every model file, checked on load so that a file
/// of the wrong kind or shape is refused with a reason, not a shape error.
fn model_metadata(kind: &str, config: String, extra: &[(&str, String)]) -> HashMap<String, String> {
    let mut m = HashMap::from([
        ("format".to_string(), "disback".to_string()),
        ("model".to_string(), kind.to_string()),
        ("config".to_string(), config),
    ]);
    for (k, v) in extra {
        m.insert(k.to_string(), v.clone());
    }
    m
}

fn check_metadata(path: &Path, meta: &HashMap<String, String>, kind: &str, config: &str) -> Result<()> {
    match meta.get("model") {
        Some(found) if found == kind => {}
        Some(found) => bail!("{} holds a {found}, not a {kind}", path.display()),
        None => bail!(
            "{} has no disback model metadata: not written by disback?",
            path.display()
        ),
    }
    if let Some(found) = meta.get("config").filter(|c| c.as_str() != config) {
        bail!(
            "{} holds a {kind} with settings {found}, but the config asks for {config}",
            path.display()
        );
    }
    Ok(())
}

/// A fixed-seed RNG for models whose weights are overwritten right away
/// (its draws are thrown away, so any seed would do).
fn scratch_rng() -> HostRng {
    HostRng::seed_from_u64(0)
}

impl Denoiser {
    pub fn new(spec: &NetSpec, sigma_data: f64, device: &Device, rng: &mut impl Rng) -> Result<Self> {
        Ok(Self {
            net: ScoreNet::new(spec, ParamBuilder::new(device, rng))?,
            sigma_data,
            frequencies: Default::default(),
            vp: match spec {
                NetSpec::Diffusers(d) => Some(std::sync::Arc::new(VpTable::new(&d.schedule))),
                _ => None,
            },
        })
    }

    pub fn params(&self) -> &Params {
        self.net.params()
    }

    /// A copy that shares no storage with `self` (candle's `VarMap::clone`
    /// would share it, so training one would move the other).
    pub fn deep_clone(&self) -> Result<Self> {
        let device = self.device();
        let copy = Self::new(&self.net.spec(), self.sigma_data, &device, &mut scratch_rng())?;
        copy.params().copy_from(self.params())?;
        Ok(copy)
    }

    pub fn device(&self) -> Device {
        self.params().device()
    }

    fn config_json(&self) -> String {
        serde_json::to_string(&self.net.spec()).expect("a net spec serialises")
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let meta = model_metadata(
            SCORE_NET,
            self.config_json(),
            &[("sigma_data", self.sigma_data.to_string())],
        );
        self.params().save(path, meta)
    }

    /// Overwrites every weight with the file's; the file must hold a score
    /// net of the same settings and σ_data, or nothing is changed.
    pub fn load(&self, path: &Path) -> Result<()> {
        self.params().load_file(path, |meta| {
            check_metadata(path, meta, SCORE_NET, &self.config_json())?;
            let file_sd: f64 = meta
                .get("sigma_data")
                .and_then(|s| s.parse().ok())
                .with_context(|| format!("{}: no sigma_data in its metadata", path.display()))?;
            if (file_sd - self.sigma_data).abs() > 1e-9 * self.sigma_data {
                bail!(
                    "{} was trained with sigma_data = {file_sd}, but this run uses {}; set \
                     diffusion.sigma_data = {file_sd} to use it",
                    path.display(),
                    self.sigma_data
                );
            }
            Ok(())
        })
    }
}

/// The one-step generator `x_0 = G(z)`, `z ~ N(0, I)`.
#[derive(Debug)]
pub struct Generator {
    net: GeneratorNetwork,
    /// Settings checked against a file's metadata on load.
    settings: String,
}

/// The two generator parametrisations (`generator.init`).
#[derive(Debug)]
enum GeneratorNetwork {
    /// An MLP on `σ_init · z` (boxed like the denoiser, for a small enum).
    Mlp(Box<GeneratorNet>),
    /// The teacher's architecture at one noise level: `D(σ_g z; σ_g)`,
    /// with `z` of the data's shape; `from_teacher` when its weights are
    /// the teacher's (else they stay randomly initialised).
    Denoiser {
        model: Denoiser,
        sigma_g: f64,
        from_teacher: bool,
        levels: FixedLevels,
    },
}

/// The noise levels of σ_g at the last batch size, kept: they are the same
/// for every batch of that size, and building them uploads six tensors.
#[derive(Debug, Default)]
struct FixedLevels(std::sync::Mutex<Option<(usize, std::sync::Arc<NoiseLevels>)>>);

impl FixedLevels {
    fn get(
        &self,
        model: &Denoiser,
        sigma: f64,
        batch: usize,
        device: &Device,
    ) -> Result<std::sync::Arc<NoiseLevels>> {
        let mut slot = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((b, levels)) = slot.as_ref()
            && *b == batch
        {
            return Ok(levels.clone());
        }
        let levels = std::sync::Arc::new(model.levels(vec![sigma as f32; batch], device)?);
        *slot = Some((batch, levels.clone()));
        Ok(levels)
    }
}

/// Samples a generator draws at once when it makes many without gradient,
/// for latents of `values_per_sample` values: 8,192 points, or 64 to 256
/// images, so that 10,000 final samples cost a chunk's activations, not
/// 10,000 samples' (`runtime::memory_estimate` counts on it).
pub fn generation_chunk(values_per_sample: usize) -> usize {
    (16_384 / values_per_sample.max(1)).clamp(64, 8192)
}

impl Generator {
    /// A generator as `spec` describes it. A teacher-initialised one has
    /// the teacher's architecture here and gets its weights from
    /// [`Generator::copy_teacher`].
    pub fn new(spec: &GeneratorSpec, device: &Device, rng: &mut impl Rng) -> Result<Self> {
        let (net, settings) = match spec {
            GeneratorSpec::Mlp(mlp) => (
                GeneratorNetwork::Mlp(Box::new(GeneratorNet::new(mlp, ParamBuilder::new(device, rng))?)),
                mlp_settings(mlp),
            ),
            GeneratorSpec::Denoiser {
                net,
                sigma_data,
                sigma_g,
                from_teacher,
            } => {
                let init = match from_teacher {
                    true => GeneratorInit::Teacher,
                    false => GeneratorInit::Random,
                };
                let settings = serde_json::json!({ "init": init, "sigma_g": sigma_g,
                    "sigma_data": sigma_data, "net": net });
                let network = GeneratorNetwork::Denoiser {
                    model: Denoiser::new(net, *sigma_data, device, rng)?,
                    sigma_g: *sigma_g,
                    from_teacher: *from_teacher,
                    levels: FixedLevels::default(),
                };
                (network, settings)
            }
        };
        Ok(Self {
            net,
            settings: settings.to_string(),
        })
    }

    pub fn params(&self) -> &Params {
        match &self.net {
            GeneratorNetwork::Mlp(net) => net.params(),
            GeneratorNetwork::Denoiser { model, .. } => model.params(),
        }
    }

    pub fn device(&self) -> Device {
        self.params().device()
    }

    /// The shape of one latent `z`: `latent_dim` for the MLP, the data's
    /// own shape for a denoiser.
    pub fn latent_shape(&self) -> Vec<usize> {
        match &self.net {
            GeneratorNetwork::Mlp(net) => vec![net.spec.latent_dim],
            GeneratorNetwork::Denoiser { model, .. } => match model.net.spec() {
                NetSpec::Mlp(c) => vec![c.dim],
                NetSpec::UNet { image, .. } => vec![image.channels, image.height, image.width],
                NetSpec::Diffusers(d) => vec![d.unet.in_channels, d.unet.sample_size, d.unet.sample_size],
            },
        }
    }

    /// For a teacher-initialised generator, sets every weight to the
    /// teacher's, so that `G(z) = D_θ(σ_g z; σ_g)`; a random one is left
    /// as it is.
    pub fn copy_teacher(&self, teacher: &Denoiser) -> Result<()> {
        match &self.net {
            GeneratorNetwork::Denoiser {
                model,
                from_teacher: true,
                ..
            } => model.params().copy_from(teacher.params()),
            _ => Ok(()),
        }
    }

    /// Samples with gradient tracking, from given latents: (B, latent_dim)
    /// for the MLP, (B, …the data's shape) for a denoiser generator (see
    /// [`Generator::latent_shape`]).
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        match &self.net {
            GeneratorNetwork::Mlp(net) => net.forward(z),
            GeneratorNetwork::Denoiser {
                model,
                sigma_g,
                levels,
                ..
            } => {
                let levels = levels.get(model, *sigma_g, z.dim(0)?, z.device())?;
                model.denoise(&z.affine(*sigma_g, 0.0)?, &levels)
            }
        }
    }

    /// Draws a (n, latent shape…) latent batch from the host RNG.
    pub fn latents(&self, n: usize, rng: &mut impl Rng) -> Result<Tensor> {
        normal_tensor(rng, self.latent_batch_shape(n), &self.device())
    }

    /// A latent batch for training, drawn where `draws` draws.
    pub fn draw_latents(&self, n: usize, draws: &mut Draws<'_>) -> Result<Tensor> {
        draws.normal(self.latent_batch_shape(n), &self.device())
    }

    fn latent_batch_shape(&self, n: usize) -> Vec<usize> {
        let mut shape = vec![n];
        shape.extend(self.latent_shape());
        shape
    }

    /// `n` samples without gradient, drawn in chunks to bound memory (see
    /// [`generation_chunk`]).
    pub fn generate(&self, n: usize, rng: &mut impl Rng) -> Result<Tensor> {
        let chunk = generation_chunk(self.latent_shape().iter().product());
        let mut parts = Vec::new();
        let mut left = n;
        while left > 0 {
            let b = left.min(chunk);
            let latents = self.latents(b, rng)?;
            parts.push(frozen(|| self.forward(&latents))?);
            left -= b;
        }
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// `n` samples without gradient, on the host.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> Result<Samples> {
        Samples::from_tensor(&self.generate(n, rng)?)
    }

    /// A copy that shares no storage with `self`.
    pub fn deep_clone(&self) -> Result<Self> {
        let net = match &self.net {
            GeneratorNetwork::Mlp(net) => GeneratorNetwork::Mlp(Box::new(GeneratorNet::new(
                &net.spec,
                ParamBuilder::new(&self.device(), &mut scratch_rng()),
            )?)),
            GeneratorNetwork::Denoiser {
                model,
                sigma_g,
                from_teacher,
                ..
            } => GeneratorNetwork::Denoiser {
                model: model.deep_clone()?,
                sigma_g: *sigma_g,
                from_teacher: *from_teacher,
                levels: FixedLevels::default(),
            },
        };
        let copy = Self {
            net,
            settings: self.settings.clone(),
        };
        copy.params().copy_from(self.params())?;
        Ok(copy)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        self.params()
            .save(path, model_metadata(GENERATOR, self.settings.clone(), &[]))
    }

    /// Overwrites every weight with the file's; the file must hold a
    /// generator of the same settings, or nothing is changed.
    pub fn load(&self, path: &Path) -> Result<()> {
        self.params()
            .load_file(path, |meta| check_metadata(path, meta, GENERATOR, &self.settings))
    }
}

/// The random MLP generator's settings, as its files record them (its
/// output dimension only where it is not the plane's 2, so that files
/// written before `data.dim` existed still load).
fn mlp_settings(mlp: &crate::config::MlpGeneratorSpec) -> serde_json::Value {
    let mut settings = serde_json::json!({ "init": GeneratorInit::Random, "latent_dim": mlp.latent_dim,
        "width": mlp.width, "depth": mlp.depth, "sigma_init": mlp.sigma_init });
    if mlp.dim != crate::data::DIM {
        settings["dim"] = mlp.dim.into();
    }
    settings
}

/// Points from a (B, 2) tensor.
pub fn tensor_to_points(x: &Tensor) -> Result<Vec<Point>> {
    let flat: Vec<f32> = x.flatten_all()?.to_vec1()?;
    Ok(flat.chunks_exact(2).map(|c| [c[0], c[1]]).collect())
}

/// A (B, 2) tensor from points.
pub fn points_to_tensor(points: &[Point], device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(
        points.as_flattened(),
        (points.len(), 2),
        device,
    )?)
}
