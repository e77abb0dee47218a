//! Image data: a stored set of images (the shipped UCI digits, MNIST-style
//! IDX files, CIFAR-10 binary batches, a folder of PNG/JPEG files) or the
//! procedural `shapes`, always as pixels in [−1, 1], (C, H, W) per image.

mod cifar;
mod digits;
mod folder;
mod idx;
mod shapes;

pub use shapes::{SHAPE_CLASSES, Shapes};

use crate::config::{DataConfig, ImageShape};
use anyhow::{Result, bail};
use rand::{Rng, RngExt};
use std::sync::Arc;

/// A finite set of images held in memory as bytes (a pixel value `v` is
/// `v / 127.5 − 1`), with optional class labels.
#[derive(Debug)]
pub struct ImageSet {
    shape: ImageShape,
    pixels: Vec<u8>,
    labels: Option<Vec<u16>>,
    classes: Vec<String>,
}

impl ImageSet {
    /// `pixels` holds `n × shape.len()` bytes; `labels`, when present, one
    /// index into `classes` per image. Checked, since loaders build it.
    pub fn new(
        shape: ImageShape,
        pixels: Vec<u8>,
        labels: Option<Vec<u16>>,
        classes: Vec<String>,
    ) -> Result<Self> {
        if shape.is_empty() || pixels.is_empty() || !pixels.len().is_multiple_of(shape.len()) {
            bail!(
                "{} pixel values do not make whole {}×{}×{} images",
                pixels.len(),
                shape.channels,
                shape.height,
                shape.width
            );
        }
        let n = pixels.len() / shape.len();
        if let Some(labels) = &labels {
            if labels.len() != n {
                bail!("{} labels for {n} images", labels.len());
            }
            if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes.len()) {
                bail!("label {bad} is not one of the {} classes", classes.len());
            }
        }
        Ok(Self {
            shape,
            pixels,
            labels,
            classes,
        })
    }

    pub fn len(&self) -> usize {
        self.pixels.len() / self.shape.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Image `i` in [−1, 1], appended to `out`.
    fn push_image(&self, i: usize, out: &mut Vec<f32>) {
        let len = self.shape.len();
        out.extend(
            self.pixels[i * len..(i + 1) * len]
                .iter()
                .map(|&v| v as f32 / 127.5 - 1.0),
        );
    }
}

/// Images drawn with their labels: `pixels` holds `n × shape.len()`
/// values in [−1, 1], image after image, each (C, H, W).
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBatch {
    pub shape: ImageShape,
    pub pixels: Vec<f32>,
    pub labels: Option<Vec<u16>>,
}

/// An image distribution to distil.
#[derive(Debug, Clone)]
pub enum Images {
    Stored { set: Arc<ImageSet>, name: String },
    Shapes(Shapes),
}

impl Images {
    /// Loads the images `config` names (files are read and checked here).
    /// `None` for the 2-D kinds.
    pub fn load(config: &DataConfig) -> Option<Result<Self>> {
        let stored = |set: Result<ImageSet>, name: String| {
            set.map(|set| Images::Stored {
                set: Arc::new(set),
                name,
            })
        };
        Some(match config {
            DataConfig::Digits { size } => stored(digits::load(*size), "UCI digits".into()),
            DataConfig::Shapes { size, channels } => Ok(Images::Shapes(Shapes::new(*size, *channels))),
            DataConfig::Idx { path, labels, size } => stored(
                idx::load(path, labels.as_deref(), *size),
                format!("IDX images {}", path.display()),
            ),
            DataConfig::Cifar10 { path, size } => {
                stored(cifar::load(path, *size), format!("CIFAR-10 {}", path.display()))
            }
            DataConfig::Folder { path, size, channels } => stored(
                folder::load(path, *size, *channels),
                format!("images in {}", path.display()),
            ),
            _ => return None,
        })
    }

    pub fn shape(&self) -> ImageShape {
        match self {
            Images::Stored { set, .. } => set.shape,
            Images::Shapes(s) => s.shape(),
        }
    }

    /// Class names, when the images are labelled.
    pub fn classes(&self) -> Option<Vec<String>> {
        match self {
            Images::Stored { set, .. } => set.labels.is_some().then(|| set.classes.clone()),
            Images::Shapes(_) => Some(SHAPE_CLASSES.iter().map(|s| s.to_string()).collect()),
        }
    }

    /// Each class's share of the data (what generated samples should match).
    pub fn class_shares(&self) -> Option<Vec<f64>> {
        match self {
            Images::Stored { set, .. } => {
                let labels = set.labels.as_ref()?;
                let mut counts = vec![0f64; set.classes.len()];
                for &l in labels {
                    counts[l as usize] += 1.0;
                }
                Some(counts.iter().map(|c| c / labels.len() as f64).collect())
            }
            Images::Shapes(_) => Some(vec![1.0 / SHAPE_CLASSES.len() as f64; SHAPE_CLASSES.len()]),
        }
    }

    /// `n` images (with replacement from a stored set, freshly drawn for
    /// `shapes`), with labels when the data has them.
    pub fn sample(&self, n: usize, rng: &mut impl Rng) -> ImageBatch {
        let shape = self.shape();
        let mut pixels = Vec::with_capacity(n * shape.len());
        let labels = match self {
            Images::Stored { set, .. } => {
                let picks: Vec<usize> = (0..n).map(|_| rng.random_range(0..set.len())).collect();
                return set.pick(&picks);
            }
            Images::Shapes(s) => Some((0..n).map(|_| s.draw(rng, &mut pixels)).collect()),
        };
        ImageBatch {
            shape,
            pixels,
            labels,
        }
    }

    /// The stored set behind the data, for held-out splits (`None` for
    /// procedural images).
    pub fn stored(&self) -> Option<&ImageSet> {
        match self {
            Images::Stored { set, .. } => Some(set),
            Images::Shapes(_) => None,
        }
    }

    pub fn describe(&self) -> String {
        let s = self.shape();
        let kind = match self {
            Images::Stored { set, name } => format!("{name} ({} images)", set.len()),
            Images::Shapes(_) => "procedural shapes".to_string(),
        };
        format!("{kind}, {}×{}×{}", s.channels, s.height, s.width)
    }
}

impl ImageSet {
    /// Images `range` in [−1, 1] with their labels.
    pub fn batch(&self, range: std::ops::Range<usize>) -> ImageBatch {
        self.pick(&range.collect::<Vec<_>>())
    }

    /// The images at `indices` in [−1, 1], with their labels.
    pub fn pick(&self, indices: &[usize]) -> ImageBatch {
        let mut pixels = Vec::with_capacity(indices.len() * self.shape.len());
        for &i in indices {
            self.push_image(i, &mut pixels);
        }
        ImageBatch {
            shape: self.shape,
            pixels,
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
        }
    }
}

/// Resizes one image (C planes of `from`×`from` values in [0, 1]) to
/// `to`×`to` with a triangle filter (the `image` crate's), returned as
/// bytes. The same size is copied as is.
fn resize_planes(planes: &[f32], channels: usize, from: (usize, usize), to: usize) -> Vec<u8> {
    let (w, h) = from;
    let mut out = Vec::with_capacity(channels * to * to);
    for c in 0..channels {
        let plane = &planes[c * w * h..(c + 1) * w * h];
        if (w, h) == (to, to) {
            out.extend(plane.iter().map(|&v| to_byte(v)));
            continue;
        }
        let buffer =
            image::ImageBuffer::<image::Luma<f32>, Vec<f32>>::from_raw(w as u32, h as u32, plane.to_vec())
                .expect("plane size matches");
        let resized = image::imageops::resize(
            &buffer,
            to as u32,
            to as u32,
            image::imageops::FilterType::Triangle,
        );
        out.extend(resized.into_raw().into_iter().map(to_byte));
    }
    out
}

fn to_byte(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Reads a whole file, gunzipping it when it starts with gzip's magic
/// bytes; errors name the file.
fn read_maybe_gz(path: &std::path::Path) -> Result<Vec<u8>> {
    use anyhow::Context;
    use std::io::Read;
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("{}: not a valid gzip file (truncated?)", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

#[cfg(test)]
mod tests;
