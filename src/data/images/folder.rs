//! A folder of PNG/JPEG images, decoded with the `image` crate, centre
//! cropped to a square and resized. Images in sub-folders are labelled by
//! the sub-folder's name; images directly in the folder are unlabelled
//! (mixing both is refused, since half the data would have no class).

use super::{ImageSet, ImageShape, resize_planes};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub fn load(path: &Path, size: usize, channels: usize) -> Result<ImageSet> {
    let (files, classes) = list(path)?;
    let mut pixels = Vec::with_capacity(files.len() * channels * size * size);
    let mut labels = Vec::with_capacity(files.len());
    for (file, label) in &files {
        let image =
            image::open(file).with_context(|| format!("{}: not a readable PNG or JPEG", file.display()))?;
        let side = image.width().min(image.height());
        if side == 0 {
            bail!("{}: an empty image", file.display());
        }
        let square = image.crop_imm(
            (image.width() - side) / 2,
            (image.height() - side) / 2,
            side,
            side,
        );
        let side = side as usize;
        let planes: Vec<f32> = if channels == 1 {
            square.to_luma32f().into_raw()
        } else {
            // Interleaved RGB to one plane per channel.
            let rgb = square.to_rgb32f().into_raw();
            (0..3)
                .flat_map(|c| rgb.iter().skip(c).step_by(3).copied().collect::<Vec<_>>())
                .collect()
        };
        pixels.extend(resize_planes(&planes, channels, (side, side), size));
        labels.extend(*label);
    }
    let labels = (!classes.is_empty()).then_some(labels);
    ImageSet::new(ImageShape::square(channels, size), pixels, labels, classes)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the folder {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("reading the folder {}", dir.display()))?;
    entries.sort();
    Ok(entries)
}

/// The image files with their label, and the class names (sub-folders).
#[allow(clippy::type_complexity)]
fn list(path: &Path) -> Result<(Vec<(PathBuf, Option<u16>)>, Vec<String>)> {
    let entries = sorted_entries(path)?;
    let top: Vec<PathBuf> = entries
        .iter()
        .filter(|p| p.is_file() && is_image(p))
        .cloned()
        .collect();
    let dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
    let mut files: Vec<(PathBuf, Option<u16>)> = top.into_iter().map(|f| (f, None)).collect();
    let mut classes = Vec::new();
    for dir in dirs {
        let inside: Vec<PathBuf> = sorted_entries(dir)?
            .into_iter()
            .filter(|p| p.is_file() && is_image(p))
            .collect();
        if inside.is_empty() {
            continue;
        }
        let label = classes.len() as u16;
        classes.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        files.extend(inside.into_iter().map(|f| (f, Some(label))));
    }
    if files.is_empty() {
        bail!(
            "{}: no .png, .jpg or .jpeg images in it or its sub-folders",
            path.display()
        );
    }
    let labelled = files.iter().filter(|(_, l)| l.is_some()).count();
    if labelled > 0 && labelled < files.len() {
        bail!(
            "{}: {} images sit directly in the folder and {labelled} in class sub-folders; put every image in a class sub-folder, or none",
            path.display(),
            files.len() - labelled
        );
    }
    Ok((files, classes))
}
