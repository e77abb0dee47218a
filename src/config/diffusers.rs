//! A pretrained `diffusers` model as a plain description: the `UNet2DModel`
//! architecture of its `config.json`, read and checked here as diffusers
//! reads it (null, absent and every default included), and the noise
//! schedule of its scheduler's `scheduler_config.json` (`vp.rs`): the files
//! only, the weights are the model's business. What this lab cannot build
//! is refused with the file, the key and the value.

use super::keys::Keys;
use super::vp::VpSchedule;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Block types this lab builds (`UNetRes…` names are diffusers' aliases of
/// the same blocks).
const DOWN_BLOCKS: [&str; 2] = ["DownBlock2D", "AttnDownBlock2D"];
const UP_BLOCKS: [&str; 2] = ["UpBlock2D", "AttnUpBlock2D"];

/// The nonlinearity of the residual blocks (`act_fn`; the time embedding's
/// own and the output's are always SiLU in diffusers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// SiLU, also called swish.
    #[default]
    Silu,
    Mish,
    /// The exact (erf) GELU.
    Gelu,
    Relu,
}

/// How an attention block changes the resolution at the end of a level
/// (`downsample_type`, `upsample_type`; plain blocks always convolve).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Resampler {
    /// A stride-2 convolution down; nearest-neighbour ×2, then a
    /// convolution, up.
    #[default]
    Conv,
    /// A residual block that average-pools (down) or repeats pixels (up)
    /// after its first norm.
    Resnet,
}

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
    /// Channels per attention head; None (`"attention_head_dim": null`):
    /// one head over all of a block's channels.
    pub attention_head_dim: Option<usize>,
    pub norm_num_groups: usize,
    /// The middle attention's norm groups (None: `norm_num_groups`, or no
    /// norm at all with `scale_shift`, as diffusers decides).
    pub attn_norm_num_groups: Option<usize>,
    pub norm_eps: f64,
    /// `resnet_time_scale_shift = "scale_shift"`: the time embedding
    /// scales and shifts each block's second norm (else it is added).
    pub scale_shift: bool,
    pub time_embedding_dim: Option<usize>,
    // The later settings are left out where they are the default, so that
    // runs written before them (whose files carry this description) still
    // resume.
    #[serde(default, skip_serializing_if = "is_default")]
    pub act_fn: Activation,
    /// The resampling of attention blocks (`downsample_type`,
    /// `upsample_type`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub downsample: Resampler,
    #[serde(default, skip_serializing_if = "is_default")]
    pub upsample: Resampler,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// One block of a U-Net as `disback teacher` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockSummary {
    /// diffusers' name of the block (`down_blocks.1`).
    pub name: String,
    /// Its type (`AttnDownBlock2D`).
    pub kind: &'static str,
    /// Channels in and out.
    pub channels: (usize, usize),
    /// Residual layers.
    pub layers: usize,
    /// Attention heads × channels per head, if it attends.
    pub heads: Option<(usize, usize)>,
    /// Group-norm groups of its residual layers and of its attention
    /// (None: the attention has no norm).
    pub groups: usize,
    pub attention_groups: Option<usize>,
}

impl DiffusersUNet {
    /// The channels of each attention head in a block of `channels`
    /// channels: `attention_head_dim`, or all of them (null).
    pub fn head_dim(&self, channels: usize) -> usize {
        self.attention_head_dim.unwrap_or(channels)
    }

    /// The middle attention's norm groups, None for no norm (diffusers'
    /// `UNetMidBlock2D` rule).
    pub fn mid_attention_groups(&self) -> Option<usize> {
        match (self.attn_norm_num_groups, self.scale_shift) {
            (Some(g), _) => Some(g),
            (None, false) => Some(self.norm_num_groups),
            (None, true) => None,
        }
    }

    /// The time embedding's width: `time_embedding_dim`, or four times
    /// the first level's channels.
    pub fn time_embed_dim(&self) -> usize {
        self.time_embedding_dim.unwrap_or(4 * self.block_out_channels[0])
    }

    /// The blocks in the order the forward pass runs them.
    pub fn blocks(&self) -> Vec<BlockSummary> {
        let ch = &self.block_out_channels;
        let levels = ch.len();
        let heads = |attends: bool, c: usize| {
            attends.then(|| (c.checked_div(self.head_dim(c)).unwrap_or(0), self.head_dim(c)))
        };
        let groups = self.norm_num_groups;
        let mut blocks = Vec::new();
        for (i, &attends) in self.down_attention.iter().enumerate() {
            let input = ch[i.saturating_sub(1)];
            blocks.push(BlockSummary {
                name: format!("down_blocks.{i}"),
                kind: DOWN_BLOCKS[usize::from(attends)],
                channels: (input, ch[i]),
                layers: self.layers_per_block,
                heads: heads(attends, ch[i]),
                groups,
                attention_groups: attends.then_some(groups),
            });
        }
        if self.mid_block {
            let c = ch[levels - 1];
            blocks.push(BlockSummary {
                name: "mid_block".into(),
                kind: "UNetMidBlock2D",
                channels: (c, c),
                layers: 2,
                heads: heads(self.mid_attention, c),
                groups,
                attention_groups: self.mid_attention_groups().filter(|_| self.mid_attention),
            });
        }
        for (i, &attends) in self.up_attention.iter().enumerate() {
            let (input, output) = (ch[levels - i.max(1)], ch[levels - 1 - i]);
            blocks.push(BlockSummary {
                name: format!("up_blocks.{i}"),
                kind: UP_BLOCKS[usize::from(attends)],
                channels: (input, output),
                layers: self.layers_per_block + 1,
                heads: heads(attends, output),
                groups,
                attention_groups: attends.then_some(groups),
            });
        }
        blocks
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
            schedule: super::vp::read_scheduler(&files.scheduler)?,
        })
    }
}

/// diffusers' `UNet2DModel` defaults, for keys a config leaves out.
const DEFAULT_DOWN: [&str; 4] = [
    "DownBlock2D",
    "AttnDownBlock2D",
    "AttnDownBlock2D",
    "AttnDownBlock2D",
];
const DEFAULT_UP: [&str; 4] = ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"];
const DEFAULT_CHANNELS: [usize; 4] = [224, 448, 672, 896];

/// Whether each block of `key` attends (the second of `allowed`).
fn block_kinds(k: &Keys, key: &str, default: [&str; 4], allowed: [&str; 2]) -> Result<Vec<bool>> {
    let blocks: Vec<String> = k.get(key, default.map(String::from).to_vec())?;
    blocks
        .iter()
        .map(|b| {
            let name = b.strip_prefix("UNetRes").unwrap_or(b);
            match allowed.iter().position(|a| *a == name) {
                Some(i) => Ok(i == 1),
                None => k.refuse(
                    key,
                    format!("{b:?} is not supported (only {} and {})", allowed[0], allowed[1]),
                ),
            }
        })
        .collect()
}

/// `sample_size`: the side of the square images (diffusers allows none,
/// for any size; the lab needs the size).
fn read_size(k: &Keys) -> Result<usize> {
    let size = match k.map.get("sample_size") {
        Some(Value::Array(sides)) if sides.len() == 2 && sides[0] == sides[1] => {
            sides[0].as_u64().unwrap_or(0) as usize
        }
        Some(Value::Array(sides)) => {
            return k.refuse("sample_size", format!("{sides:?}: only square images"));
        }
        None | Some(Value::Null) => 0,
        _ => k.get("sample_size", 0usize)?,
    };
    match size {
        0 => k.refuse(
            "sample_size",
            "missing: the image size is needed (add it to config.json)".into(),
        ),
        size => Ok(size),
    }
}

pub(super) fn read_unet(file: &Path) -> Result<DiffusersUNet> {
    let k = Keys::read(file)?;
    if let Some(class) = k.map.get("_class_name").and_then(Value::as_str)
        && class != "UNet2DModel"
    {
        return k.refuse(
            "_class_name",
            format!("{class:?}: only UNet2DModel teachers are supported"),
        );
    }
    k.choice("time_embedding_type", "positional", &["positional"])?;
    let act_fn = match k.get("act_fn", "silu".to_string())?.to_lowercase().as_str() {
        "silu" | "swish" => Activation::Silu,
        "mish" => Activation::Mish,
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        other => {
            return k.refuse(
                "act_fn",
                format!("{other:?} is not supported (silu, swish, mish, gelu, relu)"),
            );
        }
    };
    let class_conditional = "class-conditional teachers are not distilled here: the lab makes one-step \
                             unconditional generators";
    k.absent("num_class_embeds", class_conditional)?;
    k.absent("class_embed_type", class_conditional)?;
    let down_attention = block_kinds(&k, "down_block_types", DEFAULT_DOWN, DOWN_BLOCKS)?;
    let up_attention = block_kinds(&k, "up_block_types", DEFAULT_UP, UP_BLOCKS)?;
    let channels: Vec<usize> = k.get("block_out_channels", DEFAULT_CHANNELS.to_vec())?;
    if channels.is_empty() || down_attention.len() != channels.len() || up_attention.len() != channels.len() {
        return k.refuse(
            "block_out_channels",
            format!(
                "{} levels, but {} down and {} up blocks",
                channels.len(),
                down_attention.len(),
                up_attention.len()
            ),
        );
    }
    // diffusers builds its UNetMidBlock2D for any name but null.
    let mid_block = !matches!(k.map.get("mid_block_type"), Some(Value::Null));
    let scale_shift =
        k.choice("resnet_time_scale_shift", "default", &["default", "scale_shift"])? == "scale_shift";
    let resampler = |key: &str| -> Result<Resampler> {
        // diffusers reads null as "conv" (`downsample_type or "conv"`).
        match k.map.get(key) {
            Some(Value::Null) => Ok(Resampler::Conv),
            _ => Ok(match k.choice(key, "conv", &["conv", "resnet"])?.as_str() {
                "conv" => Resampler::Conv,
                _ => Resampler::Resnet,
            }),
        }
    };
    let attention_head_dim = match k.map.get("attention_head_dim") {
        Some(Value::Null) => None,
        _ => Some(k.get("attention_head_dim", 8usize)?),
    };
    let unet = DiffusersUNet {
        sample_size: read_size(&k)?,
        in_channels: k.get("in_channels", 3)?,
        out_channels: k.get("out_channels", 3)?,
        center_input_sample: k.flag("center_input_sample", false)?,
        flip_sin_to_cos: k.flag("flip_sin_to_cos", true)?,
        freq_shift: k.get("freq_shift", 0.0)?,
        down_attention,
        up_attention,
        layers_per_block: k.get("layers_per_block", 2)?,
        mid_block,
        mid_attention: mid_block && k.flag("add_attention", true)?,
        mid_block_scale_factor: k.get("mid_block_scale_factor", 1.0)?,
        downsample_padding: k.get("downsample_padding", 1)?,
        attention_head_dim,
        norm_num_groups: k.get("norm_num_groups", 32)?,
        attn_norm_num_groups: k.optional("attn_norm_num_groups")?,
        norm_eps: k.get("norm_eps", 1e-5)?,
        scale_shift,
        // diffusers' `time_embedding_dim or …`: 0 is the default too.
        time_embedding_dim: k.optional("time_embedding_dim")?.filter(|&d: &usize| d > 0),
        act_fn,
        downsample: resampler("downsample_type")?,
        upsample: resampler("upsample_type")?,
        block_out_channels: channels,
    };
    // Dropout is a training device: the network is the same without it.
    let _: f64 = k.get("dropout", 0.0)?;
    check_unet(&k, &unet)?;
    Ok(unet)
}

/// What diffusers would build differently or not at all, by key.
fn check_unet(k: &Keys, unet: &DiffusersUNet) -> Result<()> {
    if unet.in_channels != unet.out_channels {
        return k.refuse(
            "out_channels",
            format!(
                "{} output channels for {} input channels: a denoiser's output has the input's shape",
                unet.out_channels, unet.in_channels
            ),
        );
    }
    let halvings = unet.block_out_channels.len() - 1;
    if !unet.sample_size.is_multiple_of(1 << halvings) {
        return k.refuse(
            "sample_size",
            format!(
                "{} is not divisible by 2^{halvings} (the images are halved {halvings} times)",
                unet.sample_size
            ),
        );
    }
    if unet.layers_per_block == 0 {
        return k.refuse("layers_per_block", "0: every block has a layer".into());
    }
    let divides = |key: &str, groups: usize, c: usize| -> Result<()> {
        match groups > 0 && c.is_multiple_of(groups) {
            true => Ok(()),
            false => k.refuse(
                key,
                format!("{groups} does not divide the {c} channels of a level"),
            ),
        }
    };
    for &c in &unet.block_out_channels {
        divides("norm_num_groups", unet.norm_num_groups, c)?;
    }
    let last = unet.block_out_channels[unet.block_out_channels.len() - 1];
    if unet.mid_attention
        && let Some(g) = unet.attn_norm_num_groups
    {
        divides("attn_norm_num_groups", g, last)?;
    }
    for block in unet.blocks() {
        if let Some((heads, dim)) = block.heads
            && (heads == 0 || heads * dim != block.channels.1)
        {
            return k.refuse(
                "attention_head_dim",
                format!(
                    "{dim} does not divide the {} channels of {} (heads of unequal size are not built here)",
                    block.channels.1, block.name
                ),
            );
        }
    }
    Ok(())
}
