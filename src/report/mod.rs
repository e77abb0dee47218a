//! Figures with plotters, from a run's (or a comparison's) files alone, so
//! `disback plot RUN_DIR` can redraw them any time. Every figure is written
//! as PNG and SVG, atomically. Text is drawn with an embedded font by a
//! pure-Rust rasteriser: nothing is needed from the system.

mod figures;
mod grid;
mod heatmap;
mod picture;

pub use figures::plot_run;
pub(crate) use figures::{Curves, Line, evaluations};
pub use grid::{write_image_grid, write_image_samples};
pub(crate) use heatmap::{Cell, Heatmap, Panel};
pub use picture::samples_picture;

use crate::files::atomic_write;
use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::{Path, PathBuf};

/// The font every figure uses, registered once.
pub(crate) fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| ())
            .expect("the embedded DejaVu Sans is a valid font");
    });
}

/// A figure that can be drawn on any plotters backend.
pub(crate) trait Figure {
    /// File name without extension.
    fn name(&self) -> &str;
    /// Pixel size of the PNG (and the SVG's view box).
    fn size(&self) -> (u32, u32) {
        (900, 600)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static;
}

/// Maps a plotters error (generic over the backend) into anyhow.
pub(crate) fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing failed: {e:?}")
}

/// Writes `figure` as `dir/<name>.png` and `dir/<name>.svg`.
pub(crate) fn save(figure: &impl Figure, dir: &Path) -> Result<Vec<PathBuf>> {
    register_font();
    let (w, h) = figure.size();
    let mut pixels = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        figure.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    let png_path = dir.join(format!("{}.png", figure.name()));
    atomic_write(&png_path, &encode_png(&pixels, w, h)?)?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(plot_err)?;
        figure.draw(&root)?;
        root.present().map_err(plot_err)?;
    }
    let svg_path = dir.join(format!("{}.svg", figure.name()));
    atomic_write(&svg_path, svg.as_bytes())?;
    Ok(vec![png_path, svg_path])
}

fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, w, h);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().context("encoding PNG")?;
        writer.write_image_data(rgb).context("encoding PNG")?;
    }
    Ok(out)
}

/// The palette: one colour per series, readable in print.
pub(crate) const COLORS: [RGBColor; 5] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

/// Positive values' range for a log axis, padded a little.
pub(crate) fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0 && v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return 1e-3..1.0;
    }
    (lo / 1.5)..(hi * 1.5).max(lo * 2.0)
}
