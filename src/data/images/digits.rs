//! The UCI 8×8 handwritten digits (1,797 images, 10 classes), compiled into
//! the binary from `assets/digits/` (CC BY 4.0, attribution there).

use super::{ImageSet, ImageShape, resize_planes};
use anyhow::{Context, Result, bail};
use std::io::Read;

const FILE: &str = "assets/digits/digits.csv.gz";
static GZ: &[u8] = include_bytes!("../../../assets/digits/digits.csv.gz");

/// The shipped digits, resized from 8×8 to `size`×`size`.
pub fn load(size: usize) -> Result<ImageSet> {
    let mut text = String::new();
    flate2::read::GzDecoder::new(GZ)
        .read_to_string(&mut text)
        .with_context(|| format!("{FILE}: not valid gzipped text"))?;
    parse(&text, size).with_context(|| format!("reading {FILE}"))
}

/// Lines of 64 pixel values (0..16, row-major) and a label (0..9).
pub(super) fn parse(text: &str, size: usize) -> Result<ImageSet> {
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let values: Vec<&str> = line.trim().split(',').collect();
        if values.len() != 65 {
            bail!(
                "line {}: {} values, expected 64 pixels and a label",
                n + 1,
                values.len()
            );
        }
        let number = |s: &str, max: u16, what: &str| -> Result<u16> {
            match s.trim().parse::<u16>() {
                Ok(v) if v <= max => Ok(v),
                _ => bail!("line {}: {what} {s:?} is not an integer from 0 to {max}", n + 1),
            }
        };
        let mut planes = Vec::with_capacity(64);
        for v in &values[..64] {
            planes.push(number(v, 16, "pixel")? as f32 / 16.0);
        }
        labels.push(number(values[64], 9, "label")?);
        pixels.extend(resize_planes(&planes, 1, (8, 8), size));
    }
    if labels.is_empty() {
        bail!("no images");
    }
    let classes = (0..10).map(|d| d.to_string()).collect();
    ImageSet::new(ImageShape::square(1, size), pixels, Some(labels), classes)
}
