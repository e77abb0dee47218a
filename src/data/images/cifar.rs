//! CIFAR-10's binary batches: records of one label byte (0..9) and 3,072
//! pixel bytes (the red, green and blue 32×32 planes). `path` is one batch
//! file or the folder holding `data_batch_1.bin` … `data_batch_5.bin`.

use super::{ImageSet, ImageShape, resize_planes};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

const RECORD: usize = 1 + 3 * 32 * 32;
const CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

pub fn load(path: &Path, size: usize) -> Result<ImageSet> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for file in batch_files(path)? {
        let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            bail!(
                "{}: {} bytes is not a whole number of CIFAR-10 records ({RECORD} bytes each; truncated?)",
                file.display(),
                bytes.len()
            );
        }
        for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
            if record[0] > 9 {
                bail!("{}: record {i} has label {}, not 0..9", file.display(), record[0]);
            }
            labels.push(record[0] as u16);
            let planes: Vec<f32> = record[1..].iter().map(|&v| v as f32 / 255.0).collect();
            pixels.extend(resize_planes(&planes, 3, (32, 32), size));
        }
    }
    let classes = CLASSES.iter().map(|c| c.to_string()).collect();
    ImageSet::new(ImageShape::square(3, size), pixels, Some(labels), classes)
}

/// The training batches of a folder, or the one file given.
fn batch_files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        if !path.exists() {
            bail!("{}: no such file or folder", path.display());
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let files: Vec<PathBuf> = (1..=5)
        .map(|i| path.join(format!("data_batch_{i}.bin")))
        .filter(|f| f.exists())
        .collect();
    if files.is_empty() {
        bail!(
            "{}: no data_batch_1.bin … data_batch_5.bin inside (the CIFAR-10 binary version)",
            path.display()
        );
    }
    Ok(files)
}
