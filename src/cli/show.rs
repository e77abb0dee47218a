//! `disback show PATH`: pictures inline in the terminal, outside the lab,
//! through viuer (kitty, iTerm2 or sixel where the terminal has them,
//! coloured blocks elsewhere). viuer writes straight to standard output,
//! which is why it is never used inside the lab's screen.

use crate::compare::{RESULT, SWEEP_RESULT};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// Shows `path`: a PNG (or JPEG), a run directory's latest sample grid and
/// its plots, a comparison directory's plots, or a sweep's figure, each
/// under its name.
/// `width` is in terminal columns (default: viuer's fit to the terminal).
pub fn show(path: &Path, width: Option<u32>) -> Result<()> {
    let pictures = pictures(path)?;
    for (i, file) in pictures.iter().enumerate() {
        let image = image::open(file)
            .with_context(|| format!("{} is not an image that can be read", file.display()))?;
        println!("{}{}", if i > 0 { "\n" } else { "" }, file.display());
        let config = viuer::Config {
            width,
            absolute_offset: false,
            ..viuer::Config::default()
        };
        viuer::print(&image, &config).with_context(|| format!("cannot print {}", file.display()))?;
    }
    Ok(())
}

/// The pictures `path` stands for, in the order to show them.
pub fn pictures(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    // A sweep: its figure.
    if path.join(SWEEP_RESULT).is_file() {
        return Ok(pngs(path)?
            .into_iter()
            .filter(|p| p.ends_with("sweep.png"))
            .collect());
    }
    let mut pictures = Vec::new();
    // A run's newest sample grid first: the generator as it is now.
    if !path.join(RESULT).is_file()
        && let Some(latest) = newest_png(&path.join("samples"))?
    {
        pictures.push(latest);
    }
    pictures.extend(pngs(&path.join("plots"))?);
    if pictures.is_empty() {
        bail!(
            "{} holds no pictures: neither samples/*.png nor plots/*.png (draw the plots with `disback plot {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(pictures)
}

/// The PNG files of a folder, by name (none if the folder is missing).
fn pngs(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Ok(Vec::new());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x.eq_ignore_ascii_case("png")))
        .collect();
    files.sort();
    Ok(files)
}

/// The most recently written PNG of a folder.
fn newest_png(dir: &Path) -> Result<Option<PathBuf>> {
    let modified = |p: &PathBuf| p.metadata().and_then(|m| m.modified()).ok();
    Ok(pngs(dir)?.into_iter().max_by_key(modified))
}

/// The line that tells a user how to see a folder's figures here.
pub fn hint(dir: &Path) -> String {
    format!("see the figures in this terminal: disback show {}", dir.display())
}
