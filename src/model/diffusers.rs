//! A `diffusers` `UNet2DModel` (the DDPM family's U-Net) in candle, so that
//! a model people already have can be the teacher: the same layers, the
//! same forward pass, parameters named as `diffusers` names them, and a
//! strict loader from its `diffusion_pytorch_model.safetensors`. The
//! network is differentiable, as every score model here must be (the path's
//! nodes and s_φ are trained copies of the teacher); dropout, a training
//! device of the original, is left out.
//!
//! Its input is the VP model's noisy sample and its timestep; the
//! preconditioning that makes it an EDM denoiser is in `edm.rs`.

use super::layers::{Conv2d, GroupNorm, Linear, attend, silu};
use super::params::{ParamBuilder, Params};
use crate::config::{Activation, DiffusersUNet, Resampler};
use crate::transfer::upload;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use rand::Rng;
use std::collections::HashMap;
use std::path::Path;

#[derive(Debug)]
struct Resnet {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    shortcut: Option<Conv2d>,
    scale_shift: bool,
    output_scale: f64,
    act: Activation,
    /// A resampling block's change of resolution, after the first norm.
    resample: Option<Scale>,
}

/// How a resampling residual block changes the resolution.
#[derive(Debug, Clone, Copy)]
enum Scale {
    /// 2 × 2 average pooling.
    Down,
    /// Each pixel repeated 2 × 2.
    Up,
}

impl Scale {
    fn apply(self, x: &Tensor) -> Result<Tensor> {
        let (_, _, height, width) = x.dims4()?;
        Ok(match self {
            Scale::Down => x.avg_pool2d(2)?,
            Scale::Up => x.upsample_nearest2d(2 * height, 2 * width)?,
        })
    }
}

/// `x / by`, skipping the division by 1 (diffusers' default output scale
/// and rescale): on the CPU candle's division is a serial pass over the
/// activation each way, for nothing.
fn divided(x: Tensor, by: f64) -> Result<Tensor> {
    Ok(if by == 1.0 { x } else { (x / by)? })
}

/// A residual block's nonlinearity (diffusers' `act_fn`).
fn activate(act: Activation, x: &Tensor) -> Result<Tensor> {
    Ok(match act {
        Activation::Silu => silu(x)?,
        Activation::Mish => {
            // softplus(x) = max(x, 0) + ln(1 + e^−|x|): no overflow, and a
            // finite gradient everywhere.
            let softplus = (x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
            (x * softplus.tanh()?)?
        }
        Activation::Gelu => x.gelu_erf()?,
        Activation::Relu => x.relu()?,
    })
}

impl Resnet {
    fn new<R: Rng>(
        b: &mut ParamBuilder<'_, R>,
        name: &str,
        (input, output): (usize, usize),
        u: &DiffusersUNet,
        output_scale: f64,
    ) -> Result<Self> {
        let (groups, eps, temb) = (u.norm_num_groups, u.norm_eps, u.time_embed_dim());
        let time_out = if u.scale_shift { 2 * output } else { output };
        Ok(Self {
            norm1: GroupNorm::with_eps(b, &format!("{name}.norm1"), input, groups, eps)?,
            conv1: Conv2d::new(b, &format!("{name}.conv1"), (input, output), 3, 1, 1.0)?,
            time_emb_proj: Linear::new(b, &format!("{name}.time_emb_proj"), (temb, time_out), 1.0)?,
            norm2: GroupNorm::with_eps(b, &format!("{name}.norm2"), output, groups, eps)?,
            conv2: Conv2d::new(b, &format!("{name}.conv2"), (output, output), 3, 1, 1.0)?,
            shortcut: (input != output)
                .then(|| Conv2d::new(b, &format!("{name}.conv_shortcut"), (input, output), 1, 1, 1.0))
                .transpose()?,
            scale_shift: u.scale_shift,
            output_scale,
            act: u.act_fn,
            resample: None,
        })
    }

    /// `temb_act`: the time embedding through the blocks' nonlinearity
    /// (every block takes it).
    fn forward(&self, x: &Tensor, temb_act: &Tensor) -> Result<Tensor> {
        let h = activate(self.act, &self.norm1.forward(x)?)?;
        let (x, h) = match self.resample {
            Some(scale) => (scale.apply(x)?, scale.apply(&h)?),
            None => (x.clone(), h),
        };
        let h = self.conv1.forward(&h)?;
        let t = self.time_emb_proj.forward(temb_act)?.unsqueeze(2)?.unsqueeze(3)?;
        let h = match self.scale_shift {
            false => self.norm2.forward(&h.broadcast_add(&t)?)?,
            true => {
                let half = t.dim(1)? / 2;
                let (scale, shift) = (t.narrow(1, 0, half)?, t.narrow(1, half, half)?);
                self.norm2
                    .forward(&h)?
                    .broadcast_mul(&(scale + 1.0)?)?
                    .broadcast_add(&shift)?
            }
        };
        let h = self.conv2.forward(&activate(self.act, &h)?)?;
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(&x)?,
            None => x,
        };
        divided((skip + h)?, self.output_scale)
    }
}

/// Self-attention over an image's pixels, with a residual connection
/// (diffusers' `Attention` as its U-Nets build it).
#[derive(Debug)]
struct Attention {
    norm: Option<GroupNorm>,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    rescale: f64,
}

impl Attention {
    fn new<R: Rng>(
        b: &mut ParamBuilder<'_, R>,
        name: &str,
        channels: usize,
        u: &DiffusersUNet,
        groups: Option<usize>,
        rescale: f64,
    ) -> Result<Self> {
        let head_dim = u.head_dim(channels);
        if head_dim == 0 || !channels.is_multiple_of(head_dim) {
            bail!("attention_head_dim {head_dim} does not divide the {channels} channels of {name}");
        }
        let linear = |b: &mut ParamBuilder<'_, R>, part: &str| {
            Linear::new(b, &format!("{name}.{part}"), (channels, channels), 1.0)
        };
        Ok(Self {
            norm: groups
                .map(|g| GroupNorm::with_eps(b, &format!("{name}.group_norm"), channels, g, u.norm_eps))
                .transpose()?,
            to_q: linear(b, "to_q")?,
            to_k: linear(b, "to_k")?,
            to_v: linear(b, "to_v")?,
            to_out: linear(b, "to_out.0")?,
            heads: channels / head_dim,
            rescale,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, channels, height, width) = x.dims4()?;
        let pixels = height * width;
        let h = match &self.norm {
            Some(norm) => norm.forward(x)?,
            None => x.clone(),
        };
        // (B, C, HW) → rows of (B·HW, C) for the projections.
        let rows = h
            .reshape((batch, channels, pixels))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch * pixels, channels))?;
        let out = attend(
            &self.to_q.forward(&rows)?,
            &self.to_k.forward(&rows)?,
            &self.to_v.forward(&rows)?,
            batch,
            self.heads,
        )?;
        let out = self
            .to_out
            .forward(&out)?
            .reshape((batch, pixels, channels))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, channels, height, width))?;
        divided((out + x)?, self.rescale)
    }
}

/// One level of the U-Net: residual blocks (each with attention or not),
/// then a change of resolution (none on the last level).
#[derive(Debug)]
struct Level {
    resnets: Vec<Resnet>,
    attentions: Vec<Attention>,
    resample: Option<Resample>,
}

#[derive(Debug)]
enum Resample {
    /// A stride-2 convolution.
    DownConv(Conv2d),
    /// Nearest-neighbour ×2, then a convolution.
    UpConv(Conv2d),
    /// A residual block that pools or repeats pixels itself.
    Resnet(Resnet),
}

impl Resample {
    /// A level's resampler: `kind` in an attention block, a convolution
    /// in a plain one (diffusers' `DownBlock2D` and `UpBlock2D` take no
    /// `downsample_type`/`upsample_type`).
    fn new<R: Rng>(
        b: &mut ParamBuilder<'_, R>,
        u: &DiffusersUNet,
        name: &str,
        channels: usize,
        (scale, kind): (Scale, Resampler),
    ) -> Result<Self> {
        Ok(match (kind, scale) {
            (Resampler::Resnet, _) => {
                let mut resnet = Resnet::new(b, &format!("{name}.0"), (channels, channels), u, 1.0)?;
                resnet.resample = Some(scale);
                Resample::Resnet(resnet)
            }
            (Resampler::Conv, Scale::Down) => {
                let conv = Conv2d::new(b, &format!("{name}.0.conv"), (channels, channels), 3, 2, 1.0)?;
                Resample::DownConv(conv.with_padding(u.downsample_padding))
            }
            (Resampler::Conv, Scale::Up) => Resample::UpConv(Conv2d::new(
                b,
                &format!("{name}.0.conv"),
                (channels, channels),
                3,
                1,
                1.0,
            )?),
        })
    }

    fn forward(&self, h: &Tensor, temb_act: &Tensor) -> Result<Tensor> {
        match self {
            Resample::DownConv(conv) => conv.forward(h),
            Resample::UpConv(conv) => conv.forward(&Scale::Up.apply(h)?),
            Resample::Resnet(resnet) => resnet.forward(h, temb_act),
        }
    }
}

impl Level {
    /// Layer `j` of the block `block` (`down_blocks.1`): its resnet from
    /// `channels.0` to `channels.1`, and in an attention block its attention.
    fn build<R: Rng>(
        b: &mut ParamBuilder<'_, R>,
        u: &DiffusersUNet,
        block: &str,
        layers: impl Iterator<Item = (usize, usize)>,
        attention: bool,
    ) -> Result<Self> {
        let mut level = Level {
            resnets: Vec::new(),
            attentions: Vec::new(),
            resample: None,
        };
        for (j, (from, to)) in layers.enumerate() {
            level.resnets.push(Resnet::new(
                b,
                &format!("{block}.resnets.{j}"),
                (from, to),
                u,
                1.0,
            )?);
            if attention {
                let name = format!("{block}.attentions.{j}");
                let groups = Some(u.norm_num_groups);
                level
                    .attentions
                    .push(Attention::new(b, &name, to, u, groups, 1.0)?);
            }
        }
        Ok(level)
    }
}

#[derive(Debug)]
pub struct DiffusersUNet2D {
    pub spec: DiffusersUNet,
    /// The sinusoidal embedding's frequencies as a (1, half) row.
    frequencies: Tensor,
    time_1: Linear,
    time_2: Linear,
    conv_in: Conv2d,
    down: Vec<Level>,
    mid: Option<(Resnet, Option<Attention>, Resnet)>,
    up: Vec<Level>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    params: Params,
}

impl DiffusersUNet2D {
    pub fn new<R: Rng>(u: &DiffusersUNet, b: ParamBuilder<'_, R>) -> Result<Self> {
        let mut b = b;
        let ch = &u.block_out_channels;
        let (first, levels) = (ch[0], ch.len());
        let temb = u.time_embed_dim();
        let frequencies = frequency_row(first, u.freq_shift, b.device())?;
        let time_1 = Linear::new(&mut b, "time_embedding.linear_1", (first, temb), 1.0)?;
        let time_2 = Linear::new(&mut b, "time_embedding.linear_2", (temb, temb), 1.0)?;
        let conv_in = Conv2d::new(&mut b, "conv_in", (u.in_channels, first), 3, 1, 1.0)?;
        let mut down = Vec::new();
        let mut output = first;
        for (i, &attention) in u.down_attention.iter().enumerate() {
            let input = output;
            output = ch[i];
            let block = format!("down_blocks.{i}");
            let layers = (0..u.layers_per_block).map(|j| (if j == 0 { input } else { output }, output));
            let mut level = Level::build(&mut b, u, &block, layers, attention)?;
            if i + 1 < levels {
                let kind = if attention { u.downsample } else { Resampler::Conv };
                let name = format!("{block}.downsamplers");
                level.resample = Some(Resample::new(&mut b, u, &name, output, (Scale::Down, kind))?);
            }
            down.push(level);
        }
        let last = ch[levels - 1];
        let mid = match u.mid_block {
            false => None,
            true => {
                let scale = u.mid_block_scale_factor;
                let groups = u.mid_attention_groups();
                let first = Resnet::new(&mut b, "mid_block.resnets.0", (last, last), u, scale)?;
                let attention = u
                    .mid_attention
                    .then(|| Attention::new(&mut b, "mid_block.attentions.0", last, u, groups, scale))
                    .transpose()?;
                let second = Resnet::new(&mut b, "mid_block.resnets.1", (last, last), u, scale)?;
                Some((first, attention, second))
            }
        };
        let reversed: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up = Vec::new();
        let mut output = reversed[0];
        for (i, &attention) in u.up_attention.iter().enumerate() {
            let previous = output;
            output = reversed[i];
            let input = reversed[(i + 1).min(levels - 1)];
            let block = format!("up_blocks.{i}");
            let count = u.layers_per_block + 1;
            // Each resnet takes the previous output beside a skip from the
            // way down; the last skip has the channels of the matching down
            // block's input.
            let layers = (0..count).map(|j| {
                let skip = if j + 1 == count { input } else { output };
                let from = if j == 0 { previous } else { output };
                (from + skip, output)
            });
            let mut level = Level::build(&mut b, u, &block, layers, attention)?;
            if i + 1 < levels {
                let kind = if attention { u.upsample } else { Resampler::Conv };
                let name = format!("{block}.upsamplers");
                level.resample = Some(Resample::new(&mut b, u, &name, output, (Scale::Up, kind))?);
            }
            up.push(level);
        }
        let norm_out = GroupNorm::with_eps(&mut b, "conv_norm_out", first, u.norm_num_groups, u.norm_eps)?;
        let conv_out = Conv2d::new(&mut b, "conv_out", (first, u.out_channels), 3, 1, 1.0)?;
        Ok(Self {
            spec: u.clone(),
            frequencies,
            time_1,
            time_2,
            conv_in,
            down,
            mid,
            up,
            norm_out,
            conv_out,
            params: b.finish(),
        })
    }

    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The network's raw prediction for noisy samples `x` (B, C, H, W) at
    /// timesteps `t` (a (B, 1) column; fractional ones are allowed, as in
    /// `diffusers`).
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let u = &self.spec;
        let x = match u.center_input_sample {
            true => x.affine(2.0, -1.0)?,
            false => x.clone(),
        };
        let angles = t.reshape((t.elem_count(), 1))?.broadcast_mul(&self.frequencies)?;
        let (sin, cos) = (angles.sin()?, angles.cos()?);
        let sinusoid = match u.flip_sin_to_cos {
            true => Tensor::cat(&[cos, sin], 1)?,
            false => Tensor::cat(&[sin, cos], 1)?,
        };
        // An odd width gets a zero last column, as in diffusers.
        let sinusoid = match u.block_out_channels[0] % 2 {
            1 => Tensor::cat(&[&sinusoid, &sinusoid.narrow(1, 0, 1)?.zeros_like()?], 1)?,
            _ => sinusoid,
        };
        let temb = self.time_2.forward_silu(&self.time_1.forward(&sinusoid)?)?;
        let temb_act = activate(u.act_fn, &temb)?;
        let mut h = self.conv_in.forward(&x)?;
        let mut skips = vec![h.clone()];
        for level in &self.down {
            for (j, resnet) in level.resnets.iter().enumerate() {
                h = resnet.forward(&h, &temb_act)?;
                if let Some(attention) = level.attentions.get(j) {
                    h = attention.forward(&h)?;
                }
                skips.push(h.clone());
            }
            if let Some(resample) = &level.resample {
                h = resample.forward(&h, &temb_act)?;
                skips.push(h.clone());
            }
        }
        if let Some((first, attention, second)) = &self.mid {
            h = first.forward(&h, &temb_act)?;
            if let Some(attention) = attention {
                h = attention.forward(&h)?;
            }
            h = second.forward(&h, &temb_act)?;
        }
        for level in &self.up {
            for (j, resnet) in level.resnets.iter().enumerate() {
                let skip = skips.pop().context("the U-Net's skip connections ran out")?;
                h = resnet.forward(&Tensor::cat(&[&h, &skip], 1)?, &temb_act)?;
                if let Some(attention) = level.attentions.get(j) {
                    h = attention.forward(&h)?;
                }
            }
            if let Some(resample) = &level.resample {
                h = resample.forward(&h, &temb_act)?;
            }
        }
        self.conv_out.forward(&silu(&self.norm_out.forward(&h)?)?)
    }
}

/// `exp(−ln(10000) · k / (half − shift))` for k < half, as a (1, half) row:
/// diffusers' sinusoidal timestep embedding.
fn frequency_row(dim: usize, shift: f64, device: &Device) -> Result<Tensor> {
    let half = dim / 2;
    let row: Vec<f32> = (0..half)
        .map(|k| (-(10_000f64.ln()) * k as f64 / (half as f64 - shift)).exp() as f32)
        .collect();
    upload(row, (1, half), device)
}

/// Reads a `diffusers` weights file into `params`, strictly: every tensor
/// of the file is used and every parameter is set, each of its shape
/// (linear weights are stored transposed here, biases as rows). A missing,
/// extra or misshapen tensor is named, and nothing is changed then.
pub fn load_diffusers_weights(params: &Params, file: &Path) -> Result<()> {
    let tensors = candle_core::safetensors::load(file, &Device::Cpu)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let mut mapped = HashMap::new();
    let mut problems = Vec::new();
    for (name, var) in params.iter() {
        let Some(t) = tensors.get(name) else {
            problems.push(format!("{name} is missing"));
            continue;
        };
        let want = var.dims();
        let t = t.to_dtype(DType::F32)?;
        // diffusers' layouts: Linear (out, in) → ours (in, out); biases
        // (out) → ours (1, out) or (1, out, 1, 1).
        let t = if t.rank() == 2 && name.ends_with(".weight") {
            t.t()?.contiguous()?
        } else if name.ends_with(".bias") && t.elem_count() == var.elem_count() {
            t.reshape(want)?
        } else {
            t
        };
        if t.dims() != want {
            problems.push(format!(
                "{name} has shape {:?}, the model needs {want:?}",
                tensors[name].dims()
            ));
            continue;
        }
        mapped.insert(name.to_string(), t);
    }
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|k| params.iter().all(|(n, _)| n != k.as_str()))
        .collect();
    extra.sort();
    problems.extend(
        extra
            .iter()
            .map(|k| format!("{k} is not a parameter of this model")),
    );
    if !problems.is_empty() {
        problems.sort();
        bail!(
            "{} does not match its config.json (nothing was loaded): {}",
            file.display(),
            problems.join("; ")
        );
    }
    params.load_from(&mapped, &file.display().to_string())
}
