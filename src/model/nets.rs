//! The network shapes: behind every score model (teacher, path nodes, fake
//! score) a ResNet-MLP for 2-D data or a U-Net for images ([`ScoreNet`]),
//! and the MLP one-step generator of the 2-D toy.

use super::diffusers::DiffusersUNet2D;
use super::layers::Linear;
use super::params::{ParamBuilder, Params};
use super::unet::UNet;
use crate::config::{DiffusersSpec, MlpGeneratorSpec, NetSpec, ScoreNetConfig, VpSchedule};
use anyhow::Result;
use candle_core::Tensor;
use rand::Rng;

/// The raw network `F(c_in x, emb(c_noise))` of a denoiser.
#[derive(Debug)]
pub enum ScoreNet {
    Mlp(MlpNet),
    /// Boxed: it is several times the MLP's size.
    UNet(Box<UNet>),
    /// A pretrained `diffusers` U-Net, with the schedule it was trained on.
    Diffusers {
        net: Box<DiffusersUNet2D>,
        schedule: VpSchedule,
    },
}

impl ScoreNet {
    pub fn new<R: Rng>(spec: &NetSpec, b: ParamBuilder<'_, R>) -> Result<Self> {
        Ok(match spec {
            NetSpec::Mlp(config) => ScoreNet::Mlp(MlpNet::new(config, b)?),
            NetSpec::UNet { image, config } => ScoreNet::UNet(Box::new(UNet::new(config, *image, b)?)),
            NetSpec::Diffusers(spec) => ScoreNet::Diffusers {
                net: Box::new(DiffusersUNet2D::new(&spec.unet, b)?),
                schedule: spec.schedule.clone(),
            },
        })
    }

    pub fn spec(&self) -> NetSpec {
        match self {
            ScoreNet::Mlp(net) => NetSpec::Mlp(net.config.clone()),
            ScoreNet::UNet(net) => NetSpec::UNet {
                image: net.image,
                config: net.config.clone(),
            },
            ScoreNet::Diffusers { net, schedule } => NetSpec::Diffusers(Box::new(DiffusersSpec {
                unet: net.spec.clone(),
                schedule: schedule.clone(),
            })),
        }
    }

    /// `x` scaled by c_in, (B, dim) or (B, C, H, W); `emb`: (B, emb_dim),
    /// or for a `diffusers` U-Net the (B, 1) timesteps.
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        match self {
            ScoreNet::Mlp(net) => net.forward(x, emb),
            ScoreNet::UNet(net) => net.forward(x, emb),
            ScoreNet::Diffusers { net, .. } => net.forward(x, emb),
        }
    }

    /// Size of the Fourier embedding of the noise level (a `diffusers`
    /// U-Net embeds its timesteps itself).
    pub fn emb_dim(&self) -> usize {
        match self {
            ScoreNet::Mlp(net) => net.config.emb_dim,
            ScoreNet::UNet(net) => net.config.emb_dim,
            ScoreNet::Diffusers { .. } => 0,
        }
    }

    pub fn params(&self) -> &Params {
        match self {
            ScoreNet::Mlp(net) => net.params(),
            ScoreNet::UNet(net) => net.params(),
            ScoreNet::Diffusers { net, .. } => net.params(),
        }
    }
}

/// The denoiser's raw network `F(c_in x, emb(c_noise))`: an input layer on
/// `[x, emb]`, residual blocks that each see the noise embedding again, and
/// a zero-initialised output layer (so an untrained denoiser is `c_skip x`).
///
/// Block: `h ← h + W₂ silu(W₁ silu(h) + E emb)`. No normalisation layer:
/// candle's LayerNorm has no backward pass, and at these depths the net
/// trains well without one.
#[derive(Debug)]
pub struct MlpNet {
    pub config: ScoreNetConfig,
    input: Linear,
    blocks: Vec<(Linear, Linear, Linear)>,
    output: Linear,
    params: Params,
}

impl MlpNet {
    pub fn new<R: Rng>(config: &ScoreNetConfig, b: ParamBuilder<'_, R>) -> Result<Self> {
        let mut b = b;
        let w = config.width;
        let input = Linear::new(&mut b, "input", (config.dim + config.emb_dim, w), 1.0)?;
        let blocks = (0..config.blocks)
            .map(|i| {
                Ok((
                    Linear::new(&mut b, &format!("blocks.{i}.fc1"), (w, w), 1.0)?,
                    Linear::new(&mut b, &format!("blocks.{i}.emb"), (config.emb_dim, w), 1.0)?,
                    Linear::new(&mut b, &format!("blocks.{i}.fc2"), (w, w), 1.0)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let output = Linear::new(&mut b, "output", (w, config.dim), 0.0)?;
        Ok(Self {
            config: config.clone(),
            input,
            blocks,
            output,
            params: b.finish(),
        })
    }

    /// `x`: (B, dim) already scaled by c_in; `emb`: (B, emb_dim).
    pub fn forward(&self, x: &Tensor, emb: &Tensor) -> Result<Tensor> {
        let mut h = self.input.forward(&Tensor::cat(&[x, emb], 1)?)?;
        for (fc1, proj, fc2) in &self.blocks {
            let inner = fc1.forward_silu_onto(&h, &proj.forward(emb)?)?;
            h = fc2.forward_silu_onto(&inner, &h)?;
        }
        self.output.forward_silu(&h)
    }

    pub fn params(&self) -> &Params {
        &self.params
    }
}

/// The one-step generator: an MLP on `σ_init · z` with SiLU activations.
#[derive(Debug)]
pub struct GeneratorNet {
    pub spec: MlpGeneratorSpec,
    layers: Vec<Linear>,
    params: Params,
}

impl GeneratorNet {
    pub fn new<R: Rng>(config: &MlpGeneratorSpec, b: ParamBuilder<'_, R>) -> Result<Self> {
        let mut b = b;
        let mut layers = Vec::with_capacity(config.depth + 1);
        let mut input = config.latent_dim;
        for i in 0..config.depth {
            layers.push(Linear::new(
                &mut b,
                &format!("layers.{i}"),
                (input, config.width),
                1.0,
            )?);
            input = config.width;
        }
        layers.push(Linear::new(&mut b, "output", (input, config.dim), 1.0)?);
        Ok(Self {
            spec: config.clone(),
            layers,
            params: b.finish(),
        })
    }

    /// `z`: (B, latent_dim) standard normal; returns (B, dim) samples.
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        // A SiLU between layers: each layer after the first takes the
        // SiLU of the one before.
        let (first, rest) = self.layers.split_first().expect("at least one layer");
        let mut h = first.forward(&z.affine(self.spec.sigma_init, 0.0)?)?;
        for layer in rest {
            h = layer.forward_silu(&h)?;
        }
        Ok(h)
    }

    pub fn params(&self) -> &Params {
        &self.params
    }
}
