//! `disback export`: a run's one-step generator in a form other tools
//! load. A generator distilled from a `diffusers` teacher has the teacher's
//! architecture, so it becomes a `diffusers` model folder that
//! `UNet2DModel.from_pretrained` loads; the project's own networks become a
//! safetensors file and a `sample.py` that rebuilds them in plain PyTorch.
//! Either way the folder holds `check.safetensors`: latents `z` and the
//! images (or points) disback draws from them, so anyone can verify it.
//!
//! ```text
//! diffusers teacher                 own networks
//! unet/config.json                  generator.safetensors (PyTorch layouts)
//! unet/diffusion_pytorch_model…     generator.json (architecture, σ_g)
//! scheduler/scheduler_config.json   sample.py
//! one_step.json, sample.py          check.safetensors
//! check.safetensors
//! ```

mod diffusers;
mod torch;

pub use diffusers::{OneStep, scheduler_config, unet_config};
pub use torch::Architecture;

use crate::config::{Config, GeneratorSpec, NetSpec};
use crate::files::write_tensors;
use crate::model::{Generator, frozen};
use crate::rng::host_rng;
use crate::rundir::RunDir;
use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Latents (and their samples) in `check.safetensors`: enough to see a
/// grid, few enough to check in a second.
pub const CHECK_SAMPLES: usize = 16;

/// The seed of the check latents (any fixed one: the file holds them).
const CHECK_SEED: u64 = 38;

/// The file that verifies an export: `z` and disback's samples `images`.
pub const CHECK_FILE: &str = "check.safetensors";

/// What `export` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Exported {
    pub dir: PathBuf,
    /// "diffusers UNet2DModel" or the project's network in words.
    pub kind: String,
    pub generator: PathBuf,
}

/// Exports the generator of the run in `run_dir` (default
/// `generator/final.safetensors`, else `generator`) into the new folder
/// `out`, atomically: everything is written into a temporary folder beside
/// it, which is renamed to `out` once complete.
pub fn export(run_dir: &Path, generator: Option<&Path>, out: &Path) -> Result<Exported> {
    let run = RunDir::open(run_dir)?;
    let config = crate::data::resolve(Config::load_run(&run.config())?)?;
    let file = generator_file(&run, generator)?;
    if out.exists() {
        bail!(
            "{} already exists: export writes a new folder (choose another --out, or remove it)",
            out.display()
        );
    }
    let spec = config.generator_spec();
    let model = Generator::new(&spec, &Device::Cpu, &mut host_rng(0, 0))?;
    model
        .load(&file)
        .with_context(|| format!("{} is not this run's generator", file.display()))?;
    let temp = temporary_folder(out)?;
    let moved = write_folder(&temp, &config, &spec, &model, &file).and_then(|kind| {
        std::fs::rename(&temp, out)
            .with_context(|| format!("cannot move the export into {}", out.display()))?;
        Ok(kind)
    });
    let kind = match moved {
        Ok(kind) => kind,
        Err(e) => {
            // Nothing half-written is left behind.
            let _ = std::fs::remove_dir_all(&temp);
            return Err(e);
        }
    };
    Ok(Exported {
        dir: out.to_path_buf(),
        kind,
        generator: file,
    })
}

/// The generator to export: the one asked for, or the run's final one.
/// A run without one is refused by name, with what to do.
fn generator_file(run: &RunDir, asked: Option<&Path>) -> Result<PathBuf> {
    if let Some(file) = asked {
        if !file.is_file() {
            bail!("{}: no such generator file", file.display());
        }
        return Ok(file.to_path_buf());
    }
    let last = run.generator_dir().join("final.safetensors");
    if !last.is_file() {
        bail!(
            "{} has no generator yet ({} does not exist: the run has not finished); \
             export one it saved on the way with --generator {}/at-node-<i>.safetensors or \
             saved-<cost>.safetensors, or finish it with `disback run --resume {}`",
            run.root().display(),
            last.display(),
            run.generator_dir().display(),
            run.root().display()
        );
    }
    Ok(last)
}

/// A fresh folder beside `out` (so the rename stays on one file system).
fn temporary_folder(out: &Path) -> Result<PathBuf> {
    let name = out
        .file_name()
        .with_context(|| format!("{}: not a folder name", out.display()))?
        .to_string_lossy();
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let temp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    if temp.exists() {
        std::fs::remove_dir_all(&temp).with_context(|| format!("cannot clear {}", temp.display()))?;
    }
    std::fs::create_dir(&temp).with_context(|| format!("cannot create {}", temp.display()))?;
    Ok(temp)
}

/// Writes every file of the export into `dir`; returns what it exported.
fn write_folder(
    dir: &Path,
    config: &Config,
    spec: &GeneratorSpec,
    model: &Generator,
    source: &Path,
) -> Result<String> {
    write_check(dir, model)?;
    match spec {
        GeneratorSpec::Denoiser {
            net: NetSpec::Diffusers(teacher),
            sigma_g,
            ..
        } => {
            diffusers::write(dir, teacher, *sigma_g, model, config, source)?;
            Ok("diffusers UNet2DModel".into())
        }
        _ => {
            torch::write(dir, spec, model, source)?;
            Ok(match spec {
                GeneratorSpec::Mlp(_) => "MLP generator".into(),
                GeneratorSpec::Denoiser { net, .. } => format!("{net} at one noise level"),
            })
        }
    }
}

/// `check.safetensors`: fixed latents `z` and the generator's samples for
/// them: `images` in the data's range, [−1, 1], or 2-D points `samples`.
fn write_check(dir: &Path, model: &Generator) -> Result<()> {
    let z = model.latents(CHECK_SAMPLES, &mut host_rng(CHECK_SEED, 0))?;
    let drawn = frozen(|| model.forward(&z))?;
    let key = match drawn.rank() {
        2 => "samples",
        _ => "images",
    };
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_tensors(
        &dir.join(CHECK_FILE),
        &[("z".into(), z), (key.into(), drawn)],
        meta,
    )
}

/// A parameter in PyTorch's layout: linear weights (in, out) here are
/// (out, in) there, and biases are plain vectors (here rows, or
/// (1, C, 1, 1) for convolutions). The inverse of what
/// `model::load_diffusers_weights` does on reading.
fn torch_layout(name: &str, t: &Tensor) -> Result<Tensor> {
    Ok(if t.rank() == 2 && name.ends_with(".weight") {
        t.t()?.contiguous()?
    } else if name.ends_with(".bias") {
        t.flatten_all()?
    } else {
        t.clone()
    })
}

/// Every parameter of `model` in PyTorch's layout, under its own name
/// (which for a `diffusers` network is diffusers' name).
fn torch_tensors(model: &Generator) -> Result<Vec<(String, Tensor)>> {
    model
        .params()
        .tensors()
        .into_iter()
        .map(|(name, t)| Ok((name.clone(), torch_layout(&name, &t.to_device(&Device::Cpu)?)?)))
        .collect()
}

/// A Python script, executable.
fn write_script(path: &Path, text: &str) -> Result<()> {
    crate::files::atomic_write(path, text.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}
