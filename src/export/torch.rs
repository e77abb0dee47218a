//! The project's own generators for PyTorch: the weights in PyTorch's
//! layouts under this project's names (`generator.safetensors`), the
//! architecture and noise level (`generator.json`), and a `sample.py` that
//! rebuilds the network from them in plain PyTorch.

use super::{torch_tensors, write_script};
use crate::config::{GeneratorSpec, MlpGeneratorSpec, NetSpec, ScoreNetConfig, UNetConfig};
use crate::files::{write_json, write_tensors};
use crate::model::Generator;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

const SAMPLE_PY: &str = include_str!("sample_disback.py");

/// `generator.json`: which network, its settings, and for a denoiser the
/// noise level it is called at, `G(z) = D(σ_g z; σ_g)`, with EDM's
/// preconditioning of σ_data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "network", rename_all = "kebab-case")]
pub enum Architecture {
    /// `G(z) = MLP(σ_init z)`, z of `latent_dim` values → a point of `dim`.
    MlpGenerator(MlpGeneratorSpec),
    /// The ResNet-MLP denoiser on points (of `net.dim` values, 2 unless said).
    MlpDenoiser {
        net: ScoreNetConfig,
        sigma_g: f64,
        sigma_data: f64,
    },
    /// The U-Net denoiser on images (C, H, W) in [−1, 1].
    UnetDenoiser {
        net: UNetConfig,
        image: [usize; 3],
        sigma_g: f64,
        sigma_data: f64,
    },
}

impl Architecture {
    pub fn of(spec: &GeneratorSpec) -> Result<Self> {
        Ok(match spec {
            GeneratorSpec::Mlp(mlp) => Architecture::MlpGenerator(mlp.clone()),
            GeneratorSpec::Denoiser {
                net,
                sigma_data,
                sigma_g,
                ..
            } => match net {
                NetSpec::Mlp(net) => Architecture::MlpDenoiser {
                    net: net.clone(),
                    sigma_g: *sigma_g,
                    sigma_data: *sigma_data,
                },
                NetSpec::UNet { image, config } => Architecture::UnetDenoiser {
                    net: config.clone(),
                    image: [image.channels, image.height, image.width],
                    sigma_g: *sigma_g,
                    sigma_data: *sigma_data,
                },
                NetSpec::Diffusers(_) => bail!("a diffusers generator is exported as a diffusers folder"),
            },
        })
    }
}

/// Writes `generator.safetensors`, `generator.json` and `sample.py`.
pub(super) fn write(dir: &Path, spec: &GeneratorSpec, model: &Generator, source: &Path) -> Result<()> {
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        ("source".to_string(), source.display().to_string()),
    ]);
    write_tensors(&dir.join("generator.safetensors"), &torch_tensors(model)?, meta)?;
    write_json(&dir.join("generator.json"), &Architecture::of(spec)?)?;
    write_script(&dir.join("sample.py"), SAMPLE_PY)
}
