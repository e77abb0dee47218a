//! `disback export RUN_DIR [--generator FILE] --out DIR`.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The run directory.
    pub run: PathBuf,
    /// The generator to export (default: the run's generator/final.safetensors).
    #[arg(long)]
    pub generator: Option<PathBuf>,
    /// The folder to write (new): a diffusers model folder for a diffusers
    /// teacher, else the weights and a PyTorch sample.py.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn export(args: ExportArgs) -> Result<()> {
    let done = crate::export::export(&args.run, args.generator.as_deref(), &args.out)?;
    let dir = done.dir.display();
    eprintln!(
        "exported {} ({}) to {dir}\n  draw images: python {dir}/sample.py --latents {dir}/check.safetensors --out grid.png",
        done.generator.display(),
        done.kind,
    );
    Ok(())
}
