//! Images as 8-bit pixels: what the lab draws and PNG grids hold. Model
//! values live in [−1, 1]; a pixel is that range mapped onto 0–255.

use super::Samples;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};

/// A model value in [−1, 1] as a pixel byte (clamped).
pub fn to_byte(v: f32) -> u8 {
    ((v.clamp(-1.0, 1.0) + 1.0) * 127.5).round() as u8
}

/// A few images as bytes, small enough to send to the lab several times a
/// second: `len()` images of `height` × `width`, each pixel's `channels`
/// (1 or 3) bytes together, rows top to bottom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PixelImages {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
}

impl PixelImages {
    /// Image samples, (C, H, W) each with C = 1 or 3.
    pub fn from_samples(samples: &Samples) -> Result<Self> {
        let [channels, height, width] = samples.shape[..] else {
            bail!("samples of shape {:?} are not images", samples.shape);
        };
        if channels != 1 && channels != 3 {
            bail!("{channels}-channel images cannot be drawn (1 or 3 only)");
        }
        let plane = height * width;
        let mut pixels = Vec::with_capacity(samples.values.len());
        for sample in samples.rows() {
            for at in 0..plane {
                pixels.extend((0..channels).map(|c| to_byte(sample[c * plane + at])));
            }
        }
        Ok(Self {
            channels,
            height,
            width,
            pixels,
        })
    }

    pub fn len(&self) -> usize {
        self.pixels.len() / (self.channels * self.height * self.width).max(1)
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }

    /// Pixel (`x`, `y`) of image `i` as RGB (grey repeated).
    pub fn rgb(&self, i: usize, x: usize, y: usize) -> [u8; 3] {
        let at = ((i * self.height + y) * self.width + x) * self.channels;
        match self.channels {
            1 => [self.pixels[at]; 3],
            _ => [self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_map_onto_bytes_and_channels_interleave() {
        assert_eq!((to_byte(-1.0), to_byte(0.0), to_byte(1.0)), (0, 128, 255));
        assert_eq!((to_byte(-7.0), to_byte(f32::INFINITY)), (0, 255));
        // Two 3-channel 1×2 images: channel planes become interleaved pixels.
        let samples = Samples {
            shape: vec![3, 1, 2],
            values: vec![
                -1.0, 1.0, 0.0, 0.0, 1.0, -1.0, // image 0: R, G, B planes
                1.0, 1.0, 1.0, 1.0, 1.0, 1.0, // image 1: white
            ],
        };
        let p = PixelImages::from_samples(&samples).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p.rgb(0, 0, 0), [0, 128, 255]);
        assert_eq!(p.rgb(0, 1, 0), [255, 128, 0]);
        assert_eq!(p.rgb(1, 1, 0), [255; 3]);
        let points = Samples::from_points(&[[0.0, 0.0]]);
        assert!(
            PixelImages::from_samples(&points)
                .unwrap_err()
                .to_string()
                .contains("not images")
        );
    }
}
