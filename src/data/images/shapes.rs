//! Procedural images: one shape per image (disc, square, triangle, ring,
//! cross) at a random place, size and grey level (or colour), on a black
//! background. Unlimited data with an exact class for every image, drawn
//! from the caller's seeded RNG, so a run's data is fixed by its seed.

use super::ImageShape;
use rand::{Rng, RngExt};

pub const SHAPE_CLASSES: [&str; 5] = ["disc", "square", "triangle", "ring", "cross"];

/// Sub-pixel samples per axis: edges are anti-aliased by coverage.
const SUPERSAMPLE: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shapes {
    size: usize,
    channels: usize,
}

impl Shapes {
    pub fn new(size: usize, channels: usize) -> Self {
        Self { size, channels }
    }

    pub fn shape(&self) -> ImageShape {
        ImageShape::square(self.channels, self.size)
    }

    /// Draws one image into `out` (values in [−1, 1], (C, H, W)) and
    /// returns its class.
    pub fn draw(&self, rng: &mut impl Rng, out: &mut Vec<f32>) -> u16 {
        let class = rng.random_range(0..SHAPE_CLASSES.len());
        // Half-size from 22% to 40% of the image, centre anywhere the
        // shape stays inside; coordinates are in units of the image side.
        let half = rng.random_range(0.22..0.40f32);
        let cx = rng.random_range(half..1.0 - half);
        let cy = rng.random_range(half..1.0 - half);
        let turn = rng.random_range(0.0..std::f32::consts::TAU);
        let colour: Vec<f32> = if self.channels == 1 {
            vec![rng.random_range(0.4..1.0f32)]
        } else {
            // A bright colour: one channel full, the others random.
            let full = rng.random_range(0..self.channels);
            (0..self.channels)
                .map(|c| {
                    if c == full {
                        1.0
                    } else {
                        rng.random_range(0.0..1.0f32)
                    }
                })
                .collect()
        };
        let n = self.size;
        let mut coverage = vec![0f32; n * n];
        let step = 1.0 / (n * SUPERSAMPLE) as f32;
        for (i, cell) in coverage.iter_mut().enumerate() {
            let (row, col) = (i / n, i % n);
            let mut hits = 0;
            for sy in 0..SUPERSAMPLE {
                for sx in 0..SUPERSAMPLE {
                    let x = (col * SUPERSAMPLE + sx) as f32 * step + step / 2.0 - cx;
                    let y = (row * SUPERSAMPLE + sy) as f32 * step + step / 2.0 - cy;
                    hits += inside(class, x / half, y / half, turn) as usize;
                }
            }
            *cell = hits as f32 / (SUPERSAMPLE * SUPERSAMPLE) as f32;
        }
        for c in &colour {
            out.extend(coverage.iter().map(|&v| 2.0 * v * c - 1.0));
        }
        class as u16
    }
}

/// Whether the point (x, y), in units of the shape's half-size around its
/// centre, lies inside shape `class` (triangles and squares turned by
/// `turn`, so that orientation varies as position does).
fn inside(class: usize, x: f32, y: f32, turn: f32) -> bool {
    let (s, c) = turn.sin_cos();
    let (u, v) = (c * x + s * y, -s * x + c * y);
    let r = (x * x + y * y).sqrt();
    match class {
        0 => r <= 1.0,
        1 => u.abs().max(v.abs()) <= 0.75,
        2 => {
            // An equilateral triangle inscribed in the unit circle.
            (0..3).all(|k| {
                let a = turn + std::f32::consts::TAU * k as f32 / 3.0;
                x * a.cos() + y * a.sin() >= -0.5
            })
        }
        3 => (0.6..=1.0).contains(&r),
        _ => (x.abs() <= 0.25 && y.abs() <= 1.0) || (y.abs() <= 0.25 && x.abs() <= 1.0),
    }
}
