//! A grid of ratios as coloured cells: a sweep's speed-ups, one panel per
//! baseline, rows and columns the values of the swept settings. Colours
//! diverge at 1 (red below: slower; blue above: faster), on a log scale
//! clipped at ¼× and 4×, and every cell is written out, so the figure
//! reads without its colours too.

use super::{Figure, plot_err};
use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A cell: the median ratio and its range over seeds, or nothing measured.
pub type Cell = Option<(f64, f64, f64)>;

pub struct Panel {
    pub title: String,
    pub row_label: String,
    pub col_label: String,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    /// `values[r][c]`.
    pub values: Vec<Vec<Cell>>,
}

pub struct Heatmap {
    pub name: String,
    pub title: String,
    pub panels: Vec<Panel>,
}

/// The colour of a ratio: white at 1, deepening to red toward ¼× and to
/// blue toward 4×.
fn colour(ratio: f64) -> RGBColor {
    let t = (ratio.log2() / 2.0).clamp(-1.0, 1.0);
    let mix = |to: (f64, f64, f64)| {
        let a = t.abs();
        let c = |v: f64| (255.0 + a * (v - 255.0)).round() as u8;
        RGBColor(c(to.0), c(to.1), c(to.2))
    };
    if t < 0.0 {
        mix((214.0, 39.0, 40.0))
    } else {
        mix((31.0, 119.0, 180.0))
    }
}

impl Figure for Heatmap {
    fn name(&self) -> &str {
        &self.name
    }

    fn size(&self) -> (u32, u32) {
        ((560 * self.panels.len() as u32).max(900), 520)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let centred = |size| {
            TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(HPos::Center, VPos::Center))
        };
        let (w, _) = root.dim_in_pixel();
        root.draw_text(&self.title, &centred(20), (w as i32 / 2, 18))
            .map_err(plot_err)?;
        let body = root.margin(40, 10, 10, 10);
        let areas = body.split_evenly((1, self.panels.len().max(1)));
        for (panel, area) in self.panels.iter().zip(areas) {
            draw_panel(panel, &area)?;
        }
        Ok(())
    }
}

fn draw_panel<DB: DrawingBackend>(p: &Panel, area: &DrawingArea<DB, Shift>) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let text =
        |size| TextStyle::from(("sans-serif", size).into_font()).pos(Pos::new(HPos::Center, VPos::Center));
    let right = TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
    let (w, h) = area.dim_in_pixel();
    let (w, h) = (w as i32, h as i32);
    area.draw_text(&p.title, &text(16), (w / 2, 10))
        .map_err(plot_err)?;
    // Room for the row labels on the left and the column labels below.
    let (left, top, bottom) = (110, 30, 60);
    let (rows, cols) = (p.rows.len().max(1) as i32, p.cols.len().max(1) as i32);
    let cell_w = (w - left - 10) / cols;
    let cell_h = (h - top - bottom) / rows;
    for (r, row) in p.values.iter().enumerate() {
        let y = top + r as i32 * cell_h;
        area.draw_text(&p.rows[r], &right, (left - 8, y + cell_h / 2))
            .map_err(plot_err)?;
        for (c, cell) in row.iter().enumerate() {
            let x = left + c as i32 * cell_w;
            let fill = cell.map_or(RGBColor(235, 235, 235), |(m, _, _)| colour(m));
            area.draw(&Rectangle::new([(x, y), (x + cell_w, y + cell_h)], fill.filled()))
                .map_err(plot_err)?;
            area.draw(&Rectangle::new(
                [(x, y), (x + cell_w, y + cell_h)],
                BLACK.stroke_width(1),
            ))
            .map_err(plot_err)?;
            let (centre_x, centre_y) = (x + cell_w / 2, y + cell_h / 2);
            let (main, range) = match cell {
                Some((m, lo, hi)) => (format!("{m:.2}×"), format!("{lo:.2}–{hi:.2}")),
                None => ("—".into(), "not reached".into()),
            };
            area.draw_text(&main, &text(18), (centre_x, centre_y - 9))
                .map_err(plot_err)?;
            area.draw_text(&range, &text(12), (centre_x, centre_y + 11))
                .map_err(plot_err)?;
        }
    }
    for (c, label) in p.cols.iter().enumerate() {
        let x = left + c as i32 * cell_w + cell_w / 2;
        area.draw_text(label, &text(13), (x, top + rows * cell_h + 14))
            .map_err(plot_err)?;
    }
    area.draw_text(
        &p.col_label,
        &text(14),
        ((left + w) / 2, top + rows * cell_h + 40),
    )
    .map_err(plot_err)?;
    area.draw_text(&p.row_label, &right, (left - 8, top - 12))
        .map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_diverge_at_one() {
        assert_eq!(colour(1.0), RGBColor(255, 255, 255));
        let slow = colour(0.25);
        assert_eq!(slow, RGBColor(214, 39, 40));
        let fast = colour(8.0);
        assert_eq!(fast, RGBColor(31, 119, 180), "clipped at 4×");
        let a_bit_faster = colour(1.5);
        assert!(a_bit_faster.2 > a_bit_faster.0, "bluish");
    }
}
