//! A pretrained `diffusers` model as a plain description: the `UNet2DModel`
//! architecture of its `config.json` and the noise schedule of its
//! scheduler's `scheduler_config.json`, read and checked here (the files
//! only: the weights are the model's business). What this lab cannot build
//! is refused with the file, the key and the value.

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Block types this lab builds.
const DOWN_BLOCKS: [&str; 2] = ["DownBlock2D", "AttnDownBlock2D"];
const UP_BLOCKS: [&str; 2] = ["UpBlock2D", "AttnUpBlock2D"];

/// A `UNet2DModel`'s architecture: every setting that fixes its weights'
/// names and shapes and what its forward pass does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusersUNet {
    pub sample_size: usize,
    pub in_channels: usize,
    pub out_channels: usize,
    pub center_input_sample: bool,
    pub flip_sin_to_cos: bool,
    pub freq_shift: f64,
    /// Whether each level's blocks have self-attention, down and up.
    pub down_attention: Vec<bool>,
    pub up_attention: Vec<bool>,
    pub block_out_channels: Vec<usize>,
    pub layers_per_block: usize,
    /// A middle block (`UNetMidBlock2D`), with attention or without.
    pub mid_block: bool,
    pub mid_attention: bool,
    pub mid_block_scale_factor: f64,
    pub downsample_padding: usize,
    /// Channels per attention head (None: one head of all channels).
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: usize,
    pub attn_norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    /// `resnet_time_scale_shift = "scale_shift"`: the time embedding
    /// scales and shifts each block's second norm (else it is added).
    pub scale_shift: bool,
    pub time_embedding_dim: Option<usize>,
}

/// What a VP model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prediction {
    /// The noise ε (DDPM).
    Epsilon,
    /// v = √ᾱ ε − √(1 − ᾱ) x₀.
    V,
    /// The clean sample x₀.
    Sample,
}

/// The β schedule a VP model was trained with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Betas {
    Linear { start: f64, end: f64 },
    ScaledLinear { start: f64, end: f64 },
    SquaredcosCapV2,
    Given { betas: Vec<f64> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpSchedule {
    pub betas: Betas,
    pub train_timesteps: usize,
    pub prediction: Prediction,
}

impl VpSchedule {
    /// ᾱ_t for t = 0 … T − 1, in the f32 arithmetic `diffusers` uses.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let t = self.train_timesteps;
        let linear = |a: f32, b: f32| -> Vec<f32> {
            (0..t)
                .map(|i| match t {
                    1 => a,
                    _ => a + (b - a) * i as f32 / (t - 1) as f32,
                })
                .collect()
        };
        let betas: Vec<f32> = match &self.betas {
            Betas::Linear { start, end } => linear(*start as f32, *end as f32),
            Betas::ScaledLinear { start, end } => linear((*start as f32).sqrt(), (*end as f32).sqrt())
                .into_iter()
                .map(|b| b * b)
                .collect(),
            Betas::SquaredcosCapV2 => {
                let alpha_bar = |x: f64| ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..t)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / t as f64, (i + 1) as f64 / t as f64);
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                    })
                    .collect()
            }
            Betas::Given { betas } => betas.iter().map(|&b| b as f32).collect(),
        };
        let mut product = 1f32;
        betas
            .iter()
            .map(|b| {
                product *= 1.0 - b;
                product as f64
            })
            .collect()
    }

    /// σ_t = √((1 − ᾱ_t) / ᾱ_t): the VP model's noise levels in EDM's
    /// variance-exploding units, increasing with t.
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod()
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect()
    }
}

/// A pretrained `diffusers` model: where it is, its architecture and its
/// noise schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffusersSpec {
    pub unet: DiffusersUNet,
    pub schedule: VpSchedule,
}

/// The files of a `diffusers` model folder.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffusersFiles {
    pub config: PathBuf,
    pub weights: PathBuf,
    pub scheduler: PathBuf,
}

impl DiffusersFiles {
    /// Finds the files of a model folder (`config.json`,
    /// `diffusion_pytorch_model.safetensors`, `scheduler_config.json` beside
    /// them, as google/ddpm-* ship them) or of a pipeline folder (`unet/`
    /// and `scheduler/`). A missing one is named, with what to do.
    pub fn find(dir: &Path) -> Result<Self> {
        let unet = match dir.join("unet").is_dir() {
            true => dir.join("unet"),
            false => dir.to_path_buf(),
        };
        let config = unet.join("config.json");
        if !config.is_file() {
            bail!(
                "{}: no config.json (a diffusers model folder holds config.json and \
                 diffusion_pytorch_model.safetensors, or a pipeline folder unet/ and scheduler/)",
                dir.display()
            );
        }
        let weights = unet.join("diffusion_pytorch_model.safetensors");
        if !weights.is_file() {
            let pickle = unet.join("diffusion_pytorch_model.bin");
            let hint = match pickle.is_file() {
                true => format!(
                    "; {} is a PyTorch pickle, which is not read here: convert it once with \
                     `python3 -c \"import torch, safetensors.torch as s; s.save_file(torch.load('{}'), '{}')\"`",
                    pickle.display(),
                    pickle.display(),
                    weights.display()
                ),
                false => String::new(),
            };
            bail!("{}: no diffusion_pytorch_model.safetensors{hint}", unet.display());
        }
        let scheduler = [
            dir.join("scheduler").join("scheduler_config.json"),
            unet.join("scheduler_config.json"),
            unet.join("..").join("scheduler").join("scheduler_config.json"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{}: no scheduler_config.json (in the folder or in scheduler/): the noise \
                 schedule the model was trained with is needed to use it",
                dir.display()
            )
        })?;
        Ok(Self {
            config,
            weights,
            scheduler,
        })
    }
}

impl DiffusersSpec {
    /// Reads and checks a model folder's description.
    pub fn read(dir: &Path) -> Result<Self> {
        let files = DiffusersFiles::find(dir)?;
        Ok(Self {
            unet: read_unet(&files.config)?,
            schedule: read_scheduler(&files.scheduler)?,
        })
    }
}

/// A JSON file's top-level object, with keys read by name and problems
/// named by file and key.
struct Keys<'a> {
    file: &'a Path,
    map: serde_json::Map<String, Value>,
}

impl<'a> Keys<'a> {
    fn read(file: &'a Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", file.display()))?;
        match value {
            Value::Object(map) => Ok(Self { file, map }),
            _ => bail!("{}: not a JSON object", file.display()),
        }
    }

    fn refuse<T>(&self, key: &str, why: String) -> Result<T> {
        bail!("{}: {key}: {why}", self.file.display())
    }

    /// The key's value; `default` when it is absent or null.
    fn get<T: serde::de::DeserializeOwned>(&self, key: &str, default: T) -> Result<T> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => serde_json::from_value(v.clone())
                .or_else(|e| self.refuse(key, format!("{v} cannot be read ({e})"))),
        }
    }

    /// An optional value (absent or null: None).
    fn optional<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>> {
        self.get(key, None)
    }

    /// Refuses any value but `allowed` (absent or null: allowed).
    fn only(&self, key: &str, allowed: Value, what: &str) -> Result<()> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(()),
            Some(v) if *v == allowed => Ok(()),
            Some(v) => self.refuse(key, format!("{v} is not supported ({what})")),
        }
    }
}

fn read_unet(file: &Path) -> Result<DiffusersUNet> {
    let k = Keys::read(file)?;
    if let Some(class) = k.map.get("_class_name").and_then(Value::as_str)
        && class != "UNet2DModel"
    {
        return k.refuse(
            "_class_name",
            format!("{class:?}: only UNet2DModel teachers are supported"),
        );
    }
    k.only(
        "time_embedding_type",
        "positional".into(),
        "only the positional time embedding",
    )?;
    k.only("act_fn", "silu".into(), "only SiLU")?;
    k.only("downsample_type", "conv".into(), "only convolution downsampling")?;
    k.only("upsample_type", "conv".into(), "only convolution upsampling")?;
    k.only(
        "num_class_embeds",
        Value::Null,
        "class-conditional teachers are not distilled here: the lab makes one-step unconditional generators",
    )?;
    k.only("class_embed_type", Value::Null, "no class embedding")?;
    let down: Vec<String> = k.get("down_block_types", Vec::new())?;
    let up: Vec<String> = k.get("up_block_types", Vec::new())?;
    let channels: Vec<usize> = k.get("block_out_channels", Vec::new())?;
    let kinds = |key: &str, blocks: &[String], allowed: [&str; 2]| -> Result<Vec<bool>> {
        blocks
            .iter()
            .map(|b| match allowed.iter().position(|a| a == b) {
                Some(i) => Ok(i == 1),
                None => k.refuse(
                    key,
                    format!("{b:?} is not supported (only {} and {})", allowed[0], allowed[1]),
                ),
            })
            .collect()
    };
    let down_attention = kinds("down_block_types", &down, DOWN_BLOCKS)?;
    let up_attention = kinds("up_block_types", &up, UP_BLOCKS)?;
    if channels.is_empty() || down.len() != channels.len() || up.len() != channels.len() {
        return k.refuse(
            "block_out_channels",
            format!(
                "{} levels, but {} down and {} up blocks",
                channels.len(),
                down.len(),
                up.len()
            ),
        );
    }
    let mid_block = match k.map.get("mid_block_type") {
        Some(Value::Null) => false,
        None => true,
        Some(v) if v == "UNetMidBlock2D" => true,
        Some(v) => {
            return k.refuse(
                "mid_block_type",
                format!("{v} is not supported (only UNetMidBlock2D)"),
            );
        }
    };
    let scale_shift = match k.get("resnet_time_scale_shift", "default".to_string())?.as_str() {
        "default" => false,
        "scale_shift" => true,
        other => return k.refuse("resnet_time_scale_shift", format!("{other:?} is not supported")),
    };
    let size = match k.map.get("sample_size") {
        Some(Value::Array(sides)) if sides.len() == 2 && sides[0] == sides[1] => {
            sides[0].as_u64().unwrap_or(0) as usize
        }
        Some(Value::Array(sides)) => {
            return k.refuse("sample_size", format!("{sides:?}: only square images"));
        }
        _ => k.get("sample_size", 0usize)?,
    };
    if size == 0 {
        return k.refuse("sample_size", "missing: the image size is needed".into());
    }
    let unet = DiffusersUNet {
        sample_size: size,
        in_channels: k.get("in_channels", 3)?,
        out_channels: k.get("out_channels", 3)?,
        center_input_sample: k.get("center_input_sample", false)?,
        flip_sin_to_cos: k.get("flip_sin_to_cos", true)?,
        freq_shift: k.get("freq_shift", 0.0)?,
        down_attention,
        up_attention,
        layers_per_block: k.get("layers_per_block", 2)?,
        mid_block,
        mid_attention: mid_block && k.get("add_attention", true)?,
        mid_block_scale_factor: k.get("mid_block_scale_factor", 1.0)?,
        downsample_padding: k.get("downsample_padding", 1)?,
        attention_head_dim: k.get("attention_head_dim", Some(8))?,
        norm_num_groups: k.get("norm_num_groups", 32)?,
        attn_norm_num_groups: k.optional("attn_norm_num_groups")?,
        norm_eps: k.get("norm_eps", 1e-5)?,
        scale_shift,
        time_embedding_dim: k.optional("time_embedding_dim")?,
        block_out_channels: channels,
    };
    if unet.in_channels != unet.out_channels {
        return k.refuse(
            "out_channels",
            format!(
                "{} output channels for {} input channels: a denoiser's output has the input's shape",
                unet.out_channels, unet.in_channels
            ),
        );
    }
    for &c in &unet.block_out_channels {
        if unet.norm_num_groups == 0 || !c.is_multiple_of(unet.norm_num_groups) {
            return k.refuse(
                "norm_num_groups",
                format!(
                    "{} does not divide the {c} channels of a level",
                    unet.norm_num_groups
                ),
            );
        }
    }
    Ok(unet)
}

fn read_scheduler(file: &Path) -> Result<VpSchedule> {
    let k = Keys::read(file)?;
    k.only(
        "rescale_betas_zero_snr",
        false.into(),
        "zero-SNR schedules have an infinite σ",
    )?;
    let train_timesteps: usize = k.get("num_train_timesteps", 1000)?;
    let start: f64 = k.get("beta_start", 0.0001)?;
    let end: f64 = k.get("beta_end", 0.02)?;
    let given: Option<Vec<f64>> = k.optional("trained_betas")?;
    let betas = match (given, k.get("beta_schedule", "linear".to_string())?.as_str()) {
        (Some(betas), _) => Betas::Given { betas },
        (None, "linear") => Betas::Linear { start, end },
        (None, "scaled_linear") => Betas::ScaledLinear { start, end },
        (None, "squaredcos_cap_v2") => Betas::SquaredcosCapV2,
        (None, other) => {
            return k.refuse(
                "beta_schedule",
                format!("{other:?} is not supported (linear, scaled_linear, squaredcos_cap_v2)"),
            );
        }
    };
    let prediction = match k.get("prediction_type", "epsilon".to_string())?.as_str() {
        "epsilon" => Prediction::Epsilon,
        "v_prediction" => Prediction::V,
        "sample" => Prediction::Sample,
        other => {
            return k.refuse(
                "prediction_type",
                format!("{other:?} is not supported (epsilon, v_prediction, sample)"),
            );
        }
    };
    if train_timesteps < 2 {
        return k.refuse("num_train_timesteps", format!("{train_timesteps} is too few"));
    }
    if let Betas::Given { betas } = &betas
        && betas.len() != train_timesteps
    {
        return k.refuse(
            "trained_betas",
            format!("{} values for {train_timesteps} timesteps", betas.len()),
        );
    }
    Ok(VpSchedule {
        betas,
        train_timesteps,
        prediction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedules_match_diffusers_values() {
        // DDPM's linear schedule: ᾱ_0 = 1 − 1e-4; σ_999 ≈ 157 (EDM's
        // "VP" maximum for it).
        let linear = VpSchedule {
            betas: Betas::Linear {
                start: 1e-4,
                end: 0.02,
            },
            train_timesteps: 1000,
            prediction: Prediction::Epsilon,
        };
        let s = linear.sigmas();
        assert!((s[0] - (1e-4f64 / (1.0 - 1e-4)).sqrt()).abs() < 1e-6, "{}", s[0]);
        assert!((s[999] - 157.4).abs() < 1.0, "{}", s[999]);
        assert!(s.windows(2).all(|w| w[1] > w[0]));
        // The cosine schedule's ᾱ follows cos²((t/T + 0.008)/1.008 · π/2).
        let cosine = VpSchedule {
            betas: Betas::SquaredcosCapV2,
            train_timesteps: 1000,
            prediction: Prediction::Epsilon,
        };
        let a = cosine.alphas_cumprod();
        let f = |x: f64| ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
        assert!(
            (a[499] - f(0.5) / f(0.0)).abs() < 1e-4,
            "{} vs {}",
            a[499],
            f(0.5) / f(0.0)
        );
    }
}
