//! Two small widgets drawn cell by cell: a braille scatter of samples over
//! the data, and a glyph grid of a score field. Written by hand because the
//! scatter must tell data from samples without colour (NO_COLOR), which a
//! single-marker canvas cannot.

use super::theme::Theme;
use crate::data::{Bounds, Point};
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::widgets::Widget;

/// The view rectangle for `bounds` in an area of `w`×`h` cells, widened in
/// one direction so that the plane is not stretched (a cell is about twice
/// as tall as it is wide).
pub fn fit(bounds: Bounds, w: u16, h: u16) -> Bounds {
    let (w, h) = (w.max(1) as f32, h.max(1) as f32);
    let span_x = bounds.x.1 - bounds.x.0;
    let span_y = bounds.y.1 - bounds.y.0;
    let want = w / (2.0 * h); // x span per y span for square pixels
    let (sx, sy) = if span_x / span_y < want {
        (span_y * want, span_y)
    } else {
        (span_x, span_x / want)
    };
    let cx = (bounds.x.0 + bounds.x.1) / 2.0;
    let cy = (bounds.y.0 + bounds.y.1) / 2.0;
    Bounds {
        x: (cx - sx / 2.0, cx + sx / 2.0),
        y: (cy - sy / 2.0, cy + sy / 2.0),
    }
}

/// Braille dots of points, one byte of dot bits per cell.
fn rasterise(points: &[Point], view: Bounds, w: u16, h: u16) -> Vec<u8> {
    const BITS: [[u8; 4]; 2] = [[0x01, 0x02, 0x04, 0x40], [0x08, 0x10, 0x20, 0x80]];
    let (w, h) = (w as usize, h as usize);
    let mut cells = vec![0u8; w * h];
    let (dots_x, dots_y) = (2 * w, 4 * h);
    for p in points {
        let fx = (p[0] - view.x.0) / (view.x.1 - view.x.0);
        let fy = (view.y.1 - p[1]) / (view.y.1 - view.y.0); // 0 at the top
        if !(0.0..1.0).contains(&fx) || !(0.0..1.0).contains(&fy) {
            continue;
        }
        let (dx, dy) = ((fx * dots_x as f32) as usize, (fy * dots_y as f32) as usize);
        cells[(dy / 4) * w + dx / 2] |= BITS[dx % 2][dy % 4];
    }
    cells
}

/// Samples (bright) over data (dim). Without colour, data-only cells show
/// `·` and cells with samples show their braille dots.
pub struct Scatter<'a> {
    pub data: &'a [Point],
    pub samples: &'a [Point],
    pub bounds: Bounds,
    pub theme: Theme,
}

impl Widget for Scatter<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.is_empty() {
            return;
        }
        let view = fit(self.bounds, area.width, area.height);
        let data = rasterise(self.data, view, area.width, area.height);
        let samples = rasterise(self.samples, view, area.width, area.height);
        for row in 0..area.height {
            for col in 0..area.width {
                let i = (row as usize) * area.width as usize + col as usize;
                let (symbol, style) = match (samples[i], data[i]) {
                    (0, 0) => continue,
                    (0, d) if self.theme.color => (braille(d), self.theme.data()),
                    (0, _) => ('·', self.theme.dim()),
                    (s, _) => (braille(s), self.theme.samples()),
                };
                buf[(area.x + col, area.y + row)]
                    .set_char(symbol)
                    .set_style(style);
            }
        }
    }
}

fn braille(bits: u8) -> char {
    char::from_u32(0x2800 + bits as u32).expect("braille block")
}

/// A vector field on a grid as arrows: direction by glyph, strength by
/// weight (a dot where the field is under 5% of its largest value).
pub struct FieldGlyphs<'a> {
    /// Grid points, row by row from the bottom (as `Bounds::grid` makes).
    pub points: &'a [Point],
    pub vectors: &'a [Point],
    pub columns: usize,
    pub style: Style,
}

impl Widget for FieldGlyphs<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.is_empty() || self.columns == 0 || self.vectors.is_empty() {
            return;
        }
        let rows = self.points.len() / self.columns;
        let norm = |v: &Point| (v[0] * v[0] + v[1] * v[1]).sqrt();
        let largest = self.vectors.iter().map(norm).fold(0.0f32, f32::max).max(1e-12);
        for (k, v) in self.vectors.iter().enumerate() {
            let (i, j) = (k % self.columns, k / self.columns);
            // Spread the grid over the area; row 0 is at the bottom.
            let x = area.x + ((i as f32 + 0.5) * area.width as f32 / self.columns as f32) as u16;
            let y = area.y + area.height - 1 - ((j as f32 + 0.5) * area.height as f32 / rows as f32) as u16;
            let strength = norm(v) / largest;
            let (glyph, style) = if strength < 0.05 {
                ('·', self.style.add_modifier(Modifier::DIM))
            } else if strength > 0.5 {
                (arrow(*v), self.style.add_modifier(Modifier::BOLD))
            } else {
                (arrow(*v), self.style)
            };
            if x < area.right() && y < area.bottom() {
                buf[(x, y)].set_char(glyph).set_style(style);
            }
        }
    }
}

/// The arrow among eight closest to a direction (y up).
fn arrow(v: Point) -> char {
    const ARROWS: [char; 8] = ['→', '↗', '↑', '↖', '←', '↙', '↓', '↘'];
    let angle = v[1].atan2(v[0]);
    let sector = ((angle / (std::f32::consts::PI / 4.0)).round() as i32).rem_euclid(8);
    ARROWS[sector as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrows_point_the_right_way() {
        assert_eq!(arrow([1.0, 0.0]), '→');
        assert_eq!(arrow([0.0, 1.0]), '↑');
        assert_eq!(arrow([-1.0, -1.0]), '↙');
        assert_eq!(arrow([0.3, -1.0]), '↓');
    }

    #[test]
    fn fitting_keeps_the_plane_square() {
        let b = Bounds {
            x: (-1.0, 1.0),
            y: (-1.0, 1.0),
        };
        // 40×10 cells: 40 wide, 20 tall in width units → x span doubles.
        let v = fit(b, 40, 10);
        assert!((v.x.1 - v.x.0 - 4.0).abs() < 1e-5 && (v.y.1 - v.y.0 - 2.0).abs() < 1e-5);
        let v = fit(b, 10, 20);
        assert!((v.x.1 - v.x.0 - 2.0).abs() < 1e-5 && (v.y.1 - v.y.0 - 8.0).abs() < 1e-5);
    }

    #[test]
    fn rasterising_sets_the_right_dots() {
        let view = Bounds {
            x: (0.0, 1.0),
            y: (0.0, 1.0),
        };
        // One cell, 2×4 dots: top-left and bottom-right.
        let cells = rasterise(&[[0.1, 0.9], [0.9, 0.1], [5.0, 5.0]], view, 1, 1);
        assert_eq!(cells, vec![0x01 | 0x80]);
    }
}
