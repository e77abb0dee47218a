//! One picture of a generator's samples, for TensorBoard's Images tab:
//! images as a grid, 2-D points as a scatter over the data's bounds.

use super::grid::{grid_scale, image_grid};
use crate::data::{Bounds, Samples};
use anyhow::Result;
use image::{Rgb, RgbImage};

/// Side of a scatter picture, in pixels.
const SCATTER_SIDE: u32 = 256;

/// `samples` drawn: an 8-column grid of images, or for points a scatter
/// on white, each point a 2 × 2 dot, those outside `bounds` left out.
pub fn samples_picture(samples: &Samples, bounds: Bounds) -> Result<RgbImage> {
    if let Some(points) = samples.points() {
        return Ok(scatter(&points, bounds));
    }
    let side = samples.shape.get(1).copied().unwrap_or(1);
    image_grid(samples, 8, grid_scale(side))
}

fn scatter(points: &[[f32; 2]], bounds: Bounds) -> RgbImage {
    let side = SCATTER_SIDE;
    let mut picture = RgbImage::from_pixel(side, side, Rgb([255, 255, 255]));
    let pixel = |v: f32, (lo, hi): (f32, f32)| -> Option<u32> {
        let t = (v - lo) / (hi - lo);
        (0.0..1.0).contains(&t).then(|| (t * (side - 1) as f32) as u32)
    };
    for p in points {
        let (Some(x), Some(y)) = (pixel(p[0], bounds.x), pixel(p[1], bounds.y)) else {
            continue;
        };
        // y grows upward in the data, downward in the picture.
        let y = side - 1 - y;
        for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            if x + dx < side && y + dy < side {
                picture.put_pixel(x + dx, y + dy, Rgb([30, 60, 160]));
            }
        }
    }
    picture
}
