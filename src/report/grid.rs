//! Image samples as one PNG grid: what `samples/*.png`, `disback sample`
//! and the snapshot strip show.

use crate::data::{Samples, to_byte};
use crate::files::atomic_write;
use anyhow::{Result, bail};
use std::path::Path;

/// Gap between images, in output pixels (mid grey, so black and white
/// images both stand out).
const GAP: u32 = 2;

/// Images (values in [−1, 1], each (C, H, W) with C = 1 or 3) as an RGB
/// picture of `columns` per row, each pixel drawn `scale` × `scale`.
pub fn image_grid(samples: &Samples, columns: usize, scale: u32) -> Result<image::RgbImage> {
    let [channels, height, width] = samples.shape[..] else {
        bail!("samples of shape {:?} are not images", samples.shape);
    };
    if channels != 1 && channels != 3 {
        bail!("{channels}-channel images cannot be drawn (1 or 3 only)");
    }
    let n = samples.len().max(1);
    let columns = columns.clamp(1, n);
    let rows = n.div_ceil(columns);
    let (cell_w, cell_h) = (width as u32 * scale + GAP, height as u32 * scale + GAP);
    let mut picture = image::RgbImage::from_pixel(
        columns as u32 * cell_w + GAP,
        rows as u32 * cell_h + GAP,
        image::Rgb([128, 128, 128]),
    );
    let plane = height * width;
    for (i, sample) in samples.rows().enumerate() {
        let (x0, y0) = (
            GAP + (i % columns) as u32 * cell_w,
            GAP + (i / columns) as u32 * cell_h,
        );
        for y in 0..height {
            for x in 0..width {
                let value = |c: usize| to_byte(sample[c * plane + y * width + x]);
                let rgb = if channels == 1 {
                    [value(0); 3]
                } else {
                    [value(0), value(1), value(2)]
                };
                for dy in 0..scale {
                    for dx in 0..scale {
                        picture.put_pixel(
                            x0 + x as u32 * scale + dx,
                            y0 + y as u32 * scale + dy,
                            image::Rgb(rgb),
                        );
                    }
                }
            }
        }
    }
    Ok(picture)
}

/// The scale that makes an image side about 48 output pixels (8×8 digits
/// drawn 6×, 32×32 images 2×, never below 1).
pub fn grid_scale(side: usize) -> u32 {
    (48 / side.max(1)).max(1) as u32
}

/// Writes `samples` as a PNG grid (a square-ish one), atomically.
pub fn write_image_grid(path: &Path, samples: &Samples) -> Result<()> {
    let columns = (samples.len() as f64).sqrt().ceil() as usize;
    let side = samples.shape.get(1).copied().unwrap_or(1);
    let picture = image_grid(samples, columns, grid_scale(side))?;
    let mut bytes = std::io::Cursor::new(Vec::new());
    picture.write_to(&mut bytes, image::ImageFormat::Png)?;
    atomic_write(path, bytes.get_ref())
}

/// Writes image samples where `out` says: a `.png` file gets a grid, a
/// `.safetensors` file the (N, C, H, W) tensor `samples`, anything else is
/// a folder that gets one PNG per image at its own size
/// (`sample-00000.png`, …). Returns what was written, for the message.
pub fn write_image_samples(out: &Path, samples: &Samples) -> Result<String> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => {
            write_image_grid(out, samples)?;
            Ok(format!("a grid of {} images", samples.len()))
        }
        Some("safetensors") => {
            let tensor = samples.to_tensor(&candle_core::Device::Cpu)?;
            let meta = std::collections::HashMap::from([("format".into(), "disback-samples".into())]);
            crate::files::write_tensors(out, &[("samples".into(), tensor)], meta)?;
            Ok(format!("{} images as one tensor", samples.len()))
        }
        _ => {
            std::fs::create_dir_all(out)
                .map_err(|e| anyhow::anyhow!("cannot create the folder {}: {e}", out.display()))?;
            for (i, sample) in samples.rows().enumerate() {
                let one = Samples {
                    shape: samples.shape.clone(),
                    values: sample.to_vec(),
                };
                let picture = image_grid(&one, 1, 1)?;
                // Without the grid's border: the image at its own size.
                let inner = image::imageops::crop_imm(
                    &picture,
                    GAP,
                    GAP,
                    picture.width() - 2 * GAP,
                    picture.height() - 2 * GAP,
                )
                .to_image();
                let mut bytes = std::io::Cursor::new(Vec::new());
                inner.write_to(&mut bytes, image::ImageFormat::Png)?;
                atomic_write(&out.join(format!("sample-{i:05}.png")), bytes.get_ref())?;
            }
            Ok(format!("{} PNG images", samples.len()))
        }
    }
}
