//! The U-Net behind every score model on images: DDPM++/EDM style, small.
//!
//! ```text
//! emb = silu(W₂ silu(W₁ fourier(c_noise)))
//! h = conv_in(x)                                  skips: [h]
//! level l = 0 … L−1:  blocks × ResBlock(h, emb)   each pushed to skips
//!                     stride-2 conv (not last)    pushed to skips
//! middle:             ResBlock, [attention], ResBlock
//! level l = L−1 … 0:  (blocks + 1) × ResBlock(cat(h, skips.pop()), emb)
//!                     nearest ×2 + conv (not first)
//! out = conv_out(silu(norm(h)))                   zero-initialised
//! ```
//!
//! ResBlock: `(skip(x) + conv₂(silu(norm₂(conv₁(silu(norm₁ x)) · (1 + s) + t)))) / √2`
//! with `(s, t)` a per-channel scale and shift from the embedding, and conv₂
//! zero-initialised so every block starts as (a scaled) identity.

use super::layers::{Conv2d, GroupNorm, Linear, silu};
use super::params::{ParamBuilder, Params};
use crate::config::ImageShape;
use crate::config::UNetConfig;
use crate::kernels;
use anyhow::{Result, ensure};
use candle_core::Tensor;
use rand::Rng;

#[derive(Debug)]
struct ResBlock {
    norm1: GroupNorm,
    conv1: Conv2d,
    /// Embedding → per-channel (scale, shift).
    emb: Linear,
    norm2: GroupNorm,
    conv2: Conv2d,
    /// A 1×1 convolution where the channel count changes.
    skip: Option<Conv2d>,
}

impl ResBlock {
    fn new<R: Rng>(
        b: &mut ParamBuilder<'_, R>,
        name: &str,
        (input, output): (usize, usize),
        emb_width: usize,
        groups: usize,
    ) -> Result<Self> {
        Ok(Self {
            norm1: GroupNorm::new(b, &format!("{name}.norm1"), input, groups)?,
            conv1: Conv2d::new(b, &format!("{name}.conv1"), (input, output), 3, 1, 1.0)?,
            emb: Linear::new(b, &format!("{name}.emb"), (emb_width, 2 * output), 1.0)?,
            norm2: GroupNorm::new(b, &format!("{name}.norm2"), output, groups)?,
            conv2: Conv2d::new(b, &format!("{name}.conv2"), (output, output), 3, 1, 0.0)?,
            skip: (input != output)
                .then(|| Conv2d::new(b, &format!("{name}.skip"), (input, output), 1, 1, 1.0))
                .transpose()?,
        })
    }

    fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(&silu(&self.norm1.forward(x)?)?)?;
        let (batch, channels) = (h.dim(0)?, h.dim(1)?);
        let params = self.emb.forward(emb)?.reshape((batch, 2, channels, 1, 1))?;
        let scale = (params.narrow(1, 0, 1)?.squeeze(1)? + 1.0)?;
        let shift = params.narrow(1, 1, 1)?.squeeze(1)?;
        let h = h.broadcast_mul(&scale)?.broadcast_add(&shift)?;
        let h = self.conv2.forward(&silu(&self.norm2.forward(&h)?)?)?;
        let skip = match &self.skip {
            Some(conv) => conv.forward(x)?,
            None => x.clone(),
        };
        Ok(((skip + h)? * std::f64::consts::FRAC_1_SQRT_2)?)
    }
}

/// Single-head self-attention over the pixels of a (B, C, H, W) map, with a
/// residual connection and a zero-initialised output projection.
#[derive(Debug)]
struct Attention {
    norm: GroupNorm,
    qkv: Conv2d,
    out: Conv2d,
}

impl Attention {
    fn new<R: Rng>(b: &mut ParamBuilder<'_, R>, name: &str, channels: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(b, &format!("{name}.norm"), channels, groups)?,
            qkv: Conv2d::new(b, &format!("{name}.qkv"), (channels, 3 * channels), 1, 1, 1.0)?,
            out: Conv2d::new(b, &format!("{name}.out"), (channels, channels), 1, 1, 0.0)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (batch, channels, height, width) = x.dims4()?;
        let qkv = self
            .qkv
            .forward(&self.norm.forward(x)?)?
            .reshape((batch, 3, channels, height * width))?;
        let part = |i| qkv.narrow(1, i, 1).and_then(|t| t.squeeze(1));
        let (q, k, v) = (part(0)?, part(1)?, part(2)?);
        // (B, HW, HW): pixel i attends to pixel j.
        let logits = q.transpose(1, 2)?.contiguous()?.matmul(&k)?;
        let weights = kernels::scaled_softmax(&logits, 1.0 / (channels as f64).sqrt())?;
        let mixed = v.matmul(&weights.transpose(1, 2)?.contiguous()?)?;
        let mixed = mixed.reshape((batch, channels, height, width))?;
        Ok(((x + self.out.forward(&mixed)?)? * std::f64::consts::FRAC_1_SQRT_2)?)
    }
}

#[derive(Debug)]
pub struct UNet {
    pub config: UNetConfig,
    pub image: ImageShape,
    emb1: Linear,
    emb2: Linear,
    conv_in: Conv2d,
    /// Per level: its blocks, then the downsampling conv (all but the last).
    down: Vec<(Vec<ResBlock>, Option<Conv2d>)>,
    middle: (ResBlock, Option<Attention>, ResBlock),
    /// Per level, from the lowest: its blocks, then the upsampling conv
    /// (all but the first level).
    up: Vec<(Vec<ResBlock>, Option<Conv2d>)>,
    norm_out: GroupNorm,
    conv_out: Conv2d,
    params: Params,
}

impl UNet {
    pub fn new<R: Rng>(config: &UNetConfig, image: ImageShape, b: ParamBuilder<'_, R>) -> Result<Self> {
        let levels = config.multipliers.len();
        ensure!(levels >= 1, "the U-Net needs at least one level");
        ensure!(
            image.height.is_multiple_of(1 << (levels - 1)) && image.width.is_multiple_of(1 << (levels - 1)),
            "a {levels}-level U-Net needs an image side divisible by {}",
            1 << (levels - 1)
        );
        let mut b = b;
        let g = config.groups;
        let e = 4 * config.channels;
        let width = |l: usize| config.channels * config.multipliers[l];
        let emb1 = Linear::new(&mut b, "emb.fc1", (config.emb_dim, e), 1.0)?;
        let emb2 = Linear::new(&mut b, "emb.fc2", (e, e), 1.0)?;
        let conv_in = Conv2d::new(&mut b, "conv_in", (image.channels, width(0)), 3, 1, 1.0)?;
        let mut skips = vec![width(0)];
        let mut current = width(0);
        let mut down = Vec::with_capacity(levels);
        for l in 0..levels {
            let mut blocks = Vec::with_capacity(config.blocks);
            for i in 0..config.blocks {
                blocks.push(ResBlock::new(
                    &mut b,
                    &format!("down.{l}.{i}"),
                    (current, width(l)),
                    e,
                    g,
                )?);
                current = width(l);
                skips.push(current);
            }
            let sample = (l + 1 < levels)
                .then(|| Conv2d::new(&mut b, &format!("down.{l}.down"), (current, current), 3, 2, 1.0))
                .transpose()?;
            if sample.is_some() {
                skips.push(current);
            }
            down.push((blocks, sample));
        }
        let middle = (
            ResBlock::new(&mut b, "mid.0", (current, current), e, g)?,
            config
                .attention
                .then(|| Attention::new(&mut b, "mid.attn", current, g))
                .transpose()?,
            ResBlock::new(&mut b, "mid.1", (current, current), e, g)?,
        );
        let mut up = Vec::with_capacity(levels);
        for l in (0..levels).rev() {
            let mut blocks = Vec::with_capacity(config.blocks + 1);
            for i in 0..=config.blocks {
                let skip = skips.pop().expect("one skip per up block");
                blocks.push(ResBlock::new(
                    &mut b,
                    &format!("up.{l}.{i}"),
                    (current + skip, width(l)),
                    e,
                    g,
                )?);
                current = width(l);
            }
            let sample = (l > 0)
                .then(|| Conv2d::new(&mut b, &format!("up.{l}.up"), (current, current), 3, 1, 1.0))
                .transpose()?;
            up.push((blocks, sample));
        }
        let norm_out = GroupNorm::new(&mut b, "norm_out", current, g)?;
        let conv_out = Conv2d::new(&mut b, "conv_out", (current, image.channels), 3, 1, 0.0)?;
        Ok(Self {
            config: config.clone(),
            image,
            emb1,
            emb2,
            conv_in,
            down,
            middle,
            up,
            norm_out,
            conv_out,
            params: b.finish(),
        })
    }

    /// `x`: (B, C, H, W) already scaled by c_in; `emb`: (B, emb_dim).
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let emb = silu(&self.emb2.forward(&silu(&self.emb1.forward(emb)?)?)?)?;
        let mut h = self.conv_in.forward(x)?;
        let mut skips = vec![h.clone()];
        for (blocks, sample) in &self.down {
            for block in blocks {
                h = block.forward(&h, &emb)?;
                skips.push(h.clone());
            }
            if let Some(conv) = sample {
                h = conv.forward(&h)?;
                skips.push(h.clone());
            }
        }
        let (first, attention, second) = &self.middle;
        h = first.forward(&h, &emb)?;
        if let Some(attention) = attention {
            h = attention.forward(&h)?;
        }
        h = second.forward(&h, &emb)?;
        for (blocks, sample) in &self.up {
            for block in blocks {
                let skip = skips.pop().expect("one skip per up block");
                h = block.forward(&Tensor::cat(&[&h, &skip], 1)?, &emb)?;
            }
            if let Some(conv) = sample {
                let (_, _, height, width) = h.dims4()?;
                h = conv.forward(&h.upsample_nearest2d(2 * height, 2 * width)?)?;
            }
        }
        self.conv_out.forward(&silu(&self.norm_out.forward(&h)?)?)
    }

    pub fn params(&self) -> &Params {
        &self.params
    }
}
