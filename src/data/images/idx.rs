//! MNIST-format IDX files (plain or gzipped), as MNIST and Fashion-MNIST
//! ship them: an image file of unsigned bytes (magic 0x00000803, dimensions
//! n, rows, columns) and an optional label file (magic 0x00000801, n).

use super::{ImageSet, ImageShape, read_maybe_gz, resize_planes};
use anyhow::{Result, bail};
use std::path::Path;

pub fn load(images: &Path, labels: Option<&Path>, size: usize) -> Result<ImageSet> {
    let (n, rows, cols, body) = read_images(images)?;
    let mut pixels = Vec::with_capacity(n * size * size);
    let image_len = rows * cols;
    for i in 0..n {
        let image = &body[i * image_len..(i + 1) * image_len];
        let planes: Vec<f32> = if rows == cols {
            image.iter().map(|&v| v as f32 / 255.0).collect()
        } else {
            centre_square(image, rows, cols)
        };
        let side = rows.min(cols);
        pixels.extend(resize_planes(&planes, 1, (side, side), size));
    }
    let (labels, classes) = match labels {
        Some(path) => {
            let labels = read_labels(path, n)?;
            let classes = (0..=labels.iter().copied().max().unwrap_or(0))
                .map(|c| c.to_string())
                .collect();
            (Some(labels), classes)
        }
        None => (None, Vec::new()),
    };
    ImageSet::new(ImageShape::square(1, size), pixels, labels, classes)
}

fn centre_square(image: &[u8], rows: usize, cols: usize) -> Vec<f32> {
    let side = rows.min(cols);
    let (top, left) = ((rows - side) / 2, (cols - side) / 2);
    (0..side)
        .flat_map(|r| (0..side).map(move |c| image[(top + r) * cols + left + c] as f32 / 255.0))
        .collect()
}

/// The header's dimensions after checking the magic number and the size.
fn header(path: &Path, bytes: &[u8], kind: u8, dims: usize) -> Result<Vec<usize>> {
    let what = if dims == 3 { "image" } else { "label" };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 || bytes[3] as usize != dims {
        bail!(
            "{}: not an IDX {what} file (its first bytes should be 00 00 08 {dims:02x}, unsigned bytes with {dims} dimension(s){})",
            path.display(),
            if kind == 0x03 {
                "; is this the label file?"
            } else {
                "; is this the image file?"
            }
        );
    }
    let end = 4 + 4 * dims;
    if bytes.len() < end {
        bail!("{}: truncated inside its header", path.display());
    }
    let dims: Vec<usize> = bytes[4..end]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = end + dims.iter().product::<usize>();
    if bytes.len() != expected {
        bail!(
            "{}: {} bytes, but its header ({dims:?}) needs {expected}{}",
            path.display(),
            bytes.len(),
            if bytes.len() < expected {
                " (truncated?)"
            } else {
                ""
            }
        );
    }
    Ok(dims)
}

fn read_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    let dims = header(path, &bytes, 0x03, 3)?;
    let (n, rows, cols) = (dims[0], dims[1], dims[2]);
    if n == 0 || rows < 4 || cols < 4 {
        bail!(
            "{}: {n} images of {rows}×{cols}: nothing to train on",
            path.display()
        );
    }
    Ok((n, rows, cols, bytes[16..].to_vec()))
}

fn read_labels(path: &Path, images: usize) -> Result<Vec<u16>> {
    let bytes = read_maybe_gz(path)?;
    let dims = header(path, &bytes, 0x01, 1)?;
    if dims[0] != images {
        bail!("{}: {} labels for {images} images", path.display(), dims[0]);
    }
    Ok(bytes[8..].iter().map(|&b| b as u16).collect())
}
