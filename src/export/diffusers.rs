//! A generator with a `diffusers` teacher's architecture as a `diffusers`
//! model folder: the teacher's `config.json` and scheduler config (written
//! from the run's record of them, so the run directory is all that is
//! needed), the generator's weights under diffusers' names, and
//! `one_step.json`, what turns a latent into an image.

use super::{torch_tensors, write_script};
use crate::config::{
    Activation, Betas, Config, DiffusersSpec, DiffusersUNet, Prediction, Resampler, VpSchedule,
};
use crate::files::{write_json, write_tensors};
use crate::model::{Generator, VpTable};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::Path;

/// The script `sample.py` of a `diffusers` export.
const SAMPLE_PY: &str = include_str!("sample_diffusers.py");

/// `one_step.json`: the generator `G(z) = D(σ_g z; σ_g)` spelled out for a
/// VP model (EDM's wrapping of it, Karras et al. 2022, appendix C.3):
/// `x = σ_g z`, `F = unet(c_in x, timestep)`, `image = c_skip x + c_out F`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneStep {
    pub formula: String,
    /// σ_g, in the data's units (EDM's noise level).
    pub sigma_g: f64,
    /// The training timestep whose σ_t = √((1 − ᾱ_t)/ᾱ_t) is nearest σ_g.
    pub timestep: usize,
    /// `epsilon`, `v_prediction` or `sample` (the scheduler's words).
    pub prediction_type: String,
    pub c_in: f64,
    pub c_skip: f64,
    pub c_out: f64,
    /// One latent's shape, (C, H, W): the image's.
    pub latent_shape: [usize; 3],
    /// The range of the images, as the teacher was trained on them.
    pub data_range: [f64; 2],
    /// The teacher's folder when the run started, and the generator file.
    pub teacher: Option<String>,
    pub generator: String,
}

impl OneStep {
    pub fn new(spec: &DiffusersSpec, sigma_g: f64, generator: &Path, config: &Config) -> Self {
        let table = VpTable::new(&spec.schedule);
        let (c_skip, c_out, c_in) = table.precond(sigma_g);
        let u = &spec.unet;
        Self {
            formula: "x = sigma_g * z; image = c_skip * x + c_out * unet(c_in * x, timestep).sample".into(),
            sigma_g,
            timestep: table.timestep(sigma_g),
            prediction_type: prediction_name(spec.schedule.prediction).into(),
            c_in,
            c_skip,
            c_out,
            latent_shape: [u.in_channels, u.sample_size, u.sample_size],
            data_range: [-1.0, 1.0],
            teacher: config
                .teacher
                .pretrained
                .as_ref()
                .map(|p| p.display().to_string()),
            generator: generator.display().to_string(),
        }
    }
}

/// Writes `unet/`, `scheduler/`, `one_step.json` and `sample.py`.
pub(super) fn write(
    dir: &Path,
    spec: &DiffusersSpec,
    sigma_g: f64,
    model: &Generator,
    config: &Config,
    source: &Path,
) -> Result<()> {
    let unet = dir.join("unet");
    write_json(&unet.join("config.json"), &unet_config(&spec.unet))?;
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_tensors(
        &unet.join("diffusion_pytorch_model.safetensors"),
        &torch_tensors(model)?,
        meta,
    )?;
    write_json(
        &dir.join("scheduler").join("scheduler_config.json"),
        &scheduler_config(&spec.schedule),
    )?;
    write_json(
        &dir.join("one_step.json"),
        &OneStep::new(spec, sigma_g, source, config),
    )?;
    write_script(&dir.join("sample.py"), SAMPLE_PY)
}

fn prediction_name(p: Prediction) -> &'static str {
    match p {
        Prediction::Epsilon => "epsilon",
        Prediction::V => "v_prediction",
        Prediction::Sample => "sample",
    }
}

fn activation(a: Activation) -> &'static str {
    match a {
        Activation::Silu => "silu",
        Activation::Mish => "mish",
        Activation::Gelu => "gelu",
        Activation::Relu => "relu",
    }
}

fn resampler(r: Resampler) -> &'static str {
    match r {
        Resampler::Conv => "conv",
        Resampler::Resnet => "resnet",
    }
}

/// A number as diffusers writes it: an integer when it is one.
fn number(x: f64) -> Value {
    match x.fract() == 0.0 && x.abs() < 1e15 {
        true => json!(x as i64),
        false => json!(x),
    }
}

/// The `UNet2DModel` config that builds this architecture: every key that
/// fixes its weights and forward pass, and the defaults of the rest said
/// explicitly (so that no diffusers version reads them otherwise).
pub fn unet_config(u: &DiffusersUNet) -> Value {
    let blocks = |attention: &[bool], plain: &str, with: &str| -> Vec<String> {
        attention
            .iter()
            .map(|&a| if a { with } else { plain }.to_string())
            .collect()
    };
    json!({
        "_class_name": "UNet2DModel",
        "sample_size": u.sample_size,
        "in_channels": u.in_channels,
        "out_channels": u.out_channels,
        "center_input_sample": u.center_input_sample,
        "time_embedding_type": "positional",
        "time_embedding_dim": u.time_embedding_dim,
        "freq_shift": number(u.freq_shift),
        "flip_sin_to_cos": u.flip_sin_to_cos,
        "down_block_types": blocks(&u.down_attention, "DownBlock2D", "AttnDownBlock2D"),
        "mid_block_type": if u.mid_block { json!("UNetMidBlock2D") } else { Value::Null },
        "up_block_types": blocks(&u.up_attention, "UpBlock2D", "AttnUpBlock2D"),
        "block_out_channels": u.block_out_channels,
        "layers_per_block": u.layers_per_block,
        "mid_block_scale_factor": number(u.mid_block_scale_factor),
        "downsample_padding": u.downsample_padding,
        "downsample_type": resampler(u.downsample),
        "upsample_type": resampler(u.upsample),
        "dropout": 0.0,
        "act_fn": activation(u.act_fn),
        "attention_head_dim": u.attention_head_dim,
        "norm_num_groups": u.norm_num_groups,
        "attn_norm_num_groups": u.attn_norm_num_groups,
        "norm_eps": u.norm_eps,
        "resnet_time_scale_shift": if u.scale_shift { "scale_shift" } else { "default" },
        "add_attention": u.mid_attention || !u.mid_block,
        "class_embed_type": null,
        "num_class_embeds": null,
        "num_train_timesteps": null,
    })
}

/// A `DDPMScheduler` config with the teacher's noise schedule and
/// prediction type (what `DiffusersSpec::read` needs to read the export
/// back as a teacher).
pub fn scheduler_config(s: &VpSchedule) -> Value {
    let (schedule, start, end, given) = match &s.betas {
        Betas::Linear { start, end } => ("linear", *start, *end, None),
        Betas::ScaledLinear { start, end } => ("scaled_linear", *start, *end, None),
        Betas::SquaredcosCapV2 => ("squaredcos_cap_v2", 0.0001, 0.02, None),
        Betas::Given { betas } => ("linear", 0.0001, 0.02, Some(betas.clone())),
    };
    json!({
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": s.train_timesteps,
        "beta_schedule": schedule,
        "beta_start": start,
        "beta_end": end,
        "trained_betas": given,
        "prediction_type": prediction_name(s.prediction),
        "clip_sample": true,
        "clip_sample_range": 1.0,
    })
}
