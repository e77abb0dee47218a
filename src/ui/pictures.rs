//! Image samples in the terminal: a grid of images composed to fit a panel
//! exactly, drawn as Unicode half-blocks (two pixels a cell, in true colour
//! or the 256-colour palette) or, without colour, as a greyscale character
//! ramp. Terminals with a graphics protocol get real pixels instead (see
//! `graphics.rs`), composed by the same code.
//!
//! The half-blocks are drawn here rather than by ratatui-image's fallback
//! because that one resamples with a triangle filter: an 8 × 8 digit blurs
//! into its neighbours. Here every image pixel lands on whole cells.

use crate::data::PixelImages;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::Widget;

/// How image pixels become cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Palette {
    /// Half-blocks in 24-bit colour.
    TrueColour,
    /// Half-blocks in the 256-colour palette (its grey ramp and colour cube).
    Indexed,
    /// A character from a brightness ramp per cell, for the mean of its
    /// two pixels: `NO_COLOR` and 16-colour terminals.
    Ramp,
}

impl Palette {
    /// From the environment: `NO_COLOR` or a terminal that is not known to
    /// have 256 colours gets the ramp; `COLORTERM=truecolor` (or `24bit`)
    /// true colour.
    pub fn from_env(colour: bool) -> Self {
        let var = |name| std::env::var(name).unwrap_or_default().to_ascii_lowercase();
        Self::pick(colour, &var("COLORTERM"), &var("TERM"))
    }

    fn pick(colour: bool, colorterm: &str, term: &str) -> Self {
        if !colour {
            Palette::Ramp
        } else if colorterm == "truecolor" || colorterm == "24bit" || term.contains("direct") {
            Palette::TrueColour
        } else if term.contains("256") {
            Palette::Indexed
        } else {
            Palette::Ramp
        }
    }

    /// Picture pixels per cell, across and down: two, one over the other,
    /// which keeps pixels square (a cell is about twice as tall as wide)
    /// and fits an 8 × 8 digit in four rows.
    pub fn pixels_per_cell(self) -> (u32, u32) {
        (1, 2)
    }
}

/// Gap between images, in image pixels (at scale 1).
const GAP: u32 = 1;
/// Below this many images a larger scale is not worth it.
const ENOUGH: usize = 16;

/// How images are laid out in a picture: `columns` × `rows` of them, each
/// pixel drawn `scale` × `scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tiling {
    pub columns: usize,
    pub rows: usize,
    pub scale: u32,
}

impl Tiling {
    /// The layout of up to `n` images of `w` × `h` in `px_w` × `px_h`
    /// picture pixels: the largest scale that still shows [`ENOUGH`]
    /// images (or all of them), then as many images as fit. None if not
    /// even one fits.
    pub fn fit(n: usize, (w, h): (usize, usize), (px_w, px_h): (u32, u32)) -> Option<Self> {
        let at = |scale: u32| {
            let columns = ((px_w.saturating_sub(GAP)) / (w as u32 * scale + GAP)) as usize;
            let rows = ((px_h.saturating_sub(GAP)) / (h as u32 * scale + GAP)) as usize;
            let rows = rows.min(n.div_ceil(columns.max(1)));
            Tiling { columns, rows, scale }
        };
        let shown = |t: &Tiling| (t.columns * t.rows).min(n);
        let mut best = at(1);
        if shown(&best) == 0 {
            return None;
        }
        for scale in 2.. {
            let t = at(scale);
            if shown(&t) < ENOUGH.min(n) {
                break;
            }
            best = t;
        }
        Some(best)
    }

    pub fn shown(&self, n: usize) -> usize {
        (self.columns * self.rows).min(n)
    }
}

/// Around and between images in colour: a mid grey, so that black and
/// white images both stand out, on a dark background.
pub const FRAME: image::Rgb<u8> = image::Rgb([110, 110, 110]);
const BACKGROUND: image::Rgb<u8> = image::Rgb([24, 24, 24]);

/// The picture of `images` filling exactly `px_w` × `px_h` pixels: the
/// grid centred, images on a `frame` of that colour. Only the background
/// when not one image fits.
pub fn compose(images: &PixelImages, (px_w, px_h): (u32, u32), frame: image::Rgb<u8>) -> image::RgbImage {
    let mut picture = image::RgbImage::from_pixel(px_w, px_h, BACKGROUND);
    let (w, h) = (images.width, images.height);
    let Some(t) = Tiling::fit(images.len(), (w, h), (px_w, px_h)) else {
        return picture;
    };
    let shown = t.shown(images.len());
    let rows = shown.div_ceil(t.columns);
    let (cell_w, cell_h) = (w as u32 * t.scale + GAP, h as u32 * t.scale + GAP);
    let (grid_w, grid_h) = (t.columns as u32 * cell_w + GAP, rows as u32 * cell_h + GAP);
    let (x0, y0) = ((px_w - grid_w) / 2, (px_h - grid_h) / 2);
    for y in y0..y0 + grid_h {
        for x in x0..x0 + grid_w {
            picture.put_pixel(x, y, frame);
        }
    }
    for i in 0..shown {
        let left = x0 + GAP + (i % t.columns) as u32 * cell_w;
        let top = y0 + GAP + (i / t.columns) as u32 * cell_h;
        for y in 0..h as u32 * t.scale {
            for x in 0..w as u32 * t.scale {
                let rgb = images.rgb(i, (x / t.scale) as usize, (y / t.scale) as usize);
                picture.put_pixel(left + x, top + y, image::Rgb(rgb));
            }
        }
    }
    picture
}

/// The picture of `images` for a panel of `area` cells in `palette`. The
/// ramp has no frame: any grey would read as some image's brightness, so
/// blank gaps (the background's level) part the images.
pub fn compose_for(images: &PixelImages, area: Rect, palette: Palette) -> image::RgbImage {
    let (per_x, per_y) = palette.pixels_per_cell();
    let size = (area.width as u32 * per_x, area.height as u32 * per_y);
    let frame = match palette {
        Palette::Ramp => BACKGROUND,
        _ => FRAME,
    };
    compose(images, size, frame)
}

/// A composed picture drawn cell by cell in `palette` (see
/// [`compose_for`] for the picture's size).
pub struct CellPicture<'a> {
    pub picture: &'a image::RgbImage,
    pub palette: Palette,
}

/// Darkest to brightest.
const RAMP: &[char] = &[' ', '.', ':', '-', '=', '+', '*', '#', '%', '@'];

impl Widget for CellPicture<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let (per_x, per_y) = self.palette.pixels_per_cell();
        for row in 0..area.height {
            for col in 0..area.width {
                let (x, y) = (col as u32 * per_x, row as u32 * per_y);
                if x >= self.picture.width() || y + per_y > self.picture.height() {
                    continue;
                }
                let cell = &mut buf[(area.x + col, area.y + row)];
                let top = self.picture.get_pixel(x, y).0;
                match self.palette {
                    Palette::Ramp => {
                        let bottom = self.picture.get_pixel(x, y + 1).0;
                        let light = (luminance(top) + luminance(bottom)) / 2.0;
                        // Even bins over 0–255: the background is blank.
                        let level = (light * RAMP.len() as f32 / 256.0) as usize;
                        cell.set_char(RAMP[level.min(RAMP.len() - 1)])
                            .set_style(Style::reset().remove_modifier(Modifier::all()));
                    }
                    _ => {
                        let bottom = self.picture.get_pixel(x, y + 1).0;
                        let colour = |rgb: [u8; 3]| match self.palette {
                            Palette::TrueColour => Color::Rgb(rgb[0], rgb[1], rgb[2]),
                            _ => Color::Indexed(indexed(rgb)),
                        };
                        // A plain cell where both halves agree: the same
                        // look in fewer bytes, and a readable text capture.
                        let symbol = if top == bottom { ' ' } else { '▀' };
                        cell.set_char(symbol).set_fg(colour(top)).set_bg(colour(bottom));
                    }
                }
            }
        }
    }
}

fn luminance([r, g, b]: [u8; 3]) -> f32 {
    0.2126 * r as f32 + 0.7152 * g as f32 + 0.0722 * b as f32
}

/// The nearest of the 256-colour palette's 24 greys (232–255) for grey
/// pixels, else of its 6 × 6 × 6 colour cube (16–231).
pub fn indexed([r, g, b]: [u8; 3]) -> u8 {
    if r == g && g == b {
        // Greys 232 + k are 8 + 10 k; black and white are the cube's corners.
        return match r {
            0..=3 => 16,
            247..=255 => 231,
            v => 232 + ((v as f32 - 8.0) / 10.0).round().clamp(0.0, 23.0) as u8,
        };
    }
    let level = |v: u8| match v {
        0..=47 => 0,
        48..=114 => 1,
        v => (v as u32 - 35) / 40,
    } as u8;
    16 + 36 * level(r) + 6 * level(g) + level(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` grey images of `side` × `side`, image i all of value 10 i.
    fn greys(n: usize, side: usize) -> PixelImages {
        let pixels = (0..n)
            .flat_map(|i| std::iter::repeat_n(10 * i as u8, side * side))
            .collect();
        PixelImages {
            channels: 1,
            height: side,
            width: side,
            pixels,
        }
    }

    #[test]
    fn the_palette_follows_the_environment() {
        assert_eq!(Palette::pick(false, "truecolor", "xterm-256color"), Palette::Ramp);
        assert_eq!(Palette::pick(true, "truecolor", "xterm"), Palette::TrueColour);
        assert_eq!(Palette::pick(true, "", "xterm-256color"), Palette::Indexed);
        assert_eq!(Palette::pick(true, "", "screen-256color"), Palette::Indexed);
        assert_eq!(Palette::pick(true, "", "xterm"), Palette::Ramp);
        assert_eq!(Palette::pick(true, "", "linux"), Palette::Ramp);
    }

    #[test]
    fn tiling_prefers_enough_images_then_the_largest_scale() {
        // 64 digits of 8 × 8 in 80 × 40 pixels: tiles of 9 px, 8 across
        // and 4 down at scale 1; scale 2 would show 4 × 2 = 8 < 16.
        let t = Tiling::fit(64, (8, 8), (80, 40)).unwrap();
        assert_eq!((t.columns, t.rows, t.scale), (8, 4, 1));
        // Plenty of room: 16 still fit at scale 3 (25 px a tile), while
        // scale 4 (33 px) would show 9.
        let t = Tiling::fit(64, (8, 8), (110, 110)).unwrap();
        assert_eq!((t.scale, t.columns, t.rows), (3, 4, 4));
        // Rows stop where the images do.
        let t = Tiling::fit(5, (8, 8), (200, 200)).unwrap();
        assert_eq!(t.shown(5), 5);
        assert!(t.rows * t.columns >= 5 && (t.rows - 1) * t.columns < 5);
        assert!(Tiling::fit(64, (8, 8), (8, 8)).is_none());
    }

    #[test]
    fn a_composed_picture_puts_each_pixel_in_place() {
        let images = greys(3, 2);
        // 3 images of 2 × 2 at scale 1 in 10 × 5: cells of 3 px, a grid of
        // 3·3 + 1 = 10 by 3 + 1 = 4, centred (x0 = 0, y0 = 0).
        let p = compose(&images, (10, 5), FRAME);
        assert_eq!(p.dimensions(), (10, 5));
        assert_eq!(p.get_pixel(0, 0).0, [110; 3], "frame");
        assert_eq!(p.get_pixel(1, 1).0, [0; 3], "image 0");
        assert_eq!(p.get_pixel(2, 2).0, [0; 3], "image 0");
        assert_eq!(p.get_pixel(4, 1).0, [10; 3], "image 1");
        assert_eq!(p.get_pixel(8, 2).0, [20; 3], "image 2");
        assert_eq!(p.get_pixel(3, 1).0, [110; 3], "gap");
        assert_eq!(p.get_pixel(5, 4).0, [24; 3], "background");
    }

    #[test]
    fn half_blocks_carry_two_pixels_a_cell() {
        // One 2 × 2 image whose top row is black and bottom row white.
        let images = PixelImages {
            channels: 1,
            height: 2,
            width: 2,
            pixels: vec![0, 0, 255, 255],
        };
        let area = Rect::new(0, 0, 4, 2); // 4 × 4 picture pixels
        let picture = compose_for(&images, area, Palette::TrueColour);
        assert_eq!(picture.dimensions(), (4, 4));
        let mut buf = Buffer::empty(area);
        CellPicture {
            picture: &picture,
            palette: Palette::TrueColour,
        }
        .render(area, &mut buf);
        // The image sits at (1, 1)–(2, 2): cell (1, 0) has frame over
        // black, cell (1, 1) white over frame.
        let cell = &buf[(1, 0)];
        assert_eq!(cell.symbol(), "▀");
        assert_eq!(
            (cell.fg, cell.bg),
            (Color::Rgb(110, 110, 110), Color::Rgb(0, 0, 0))
        );
        let cell = &buf[(1, 1)];
        assert_eq!(
            (cell.fg, cell.bg),
            (Color::Rgb(255, 255, 255), Color::Rgb(110, 110, 110))
        );
    }

    #[test]
    fn the_256_colour_palette_and_the_ramp_keep_the_order_of_brightness() {
        assert_eq!(indexed([0, 0, 0]), 16);
        assert_eq!(indexed([255, 255, 255]), 231);
        assert_eq!(indexed([8, 8, 8]), 232);
        assert_eq!(indexed([238, 238, 238]), 255);
        assert_eq!(indexed([128, 128, 128]), 244);
        assert_eq!(indexed([255, 0, 0]), 196);
        let greys: Vec<u8> = (0..=255).step_by(5).map(|v| indexed([v; 3])).collect();
        let order = |i: u8| match i {
            16 => 0,
            231 => 100,
            g => g as i32 - 231,
        };
        assert!(greys.windows(2).all(|w| order(w[0]) <= order(w[1])), "{greys:?}");
        // The ramp: white is '@', black ' '.
        let images = PixelImages {
            channels: 1,
            height: 1,
            width: 2,
            pixels: vec![255, 0],
        };
        let area = Rect::new(0, 0, 6, 3);
        let picture = compose_for(&images, area, Palette::Ramp);
        let mut buf = Buffer::empty(area);
        CellPicture {
            picture: &picture,
            palette: Palette::Ramp,
        }
        .render(area, &mut buf);
        let row: String = (0..6).map(|x| buf[(x, 1)].symbol().to_string()).collect();
        assert_eq!(row, " @@   ", "gap, white ×2, black ×2, gap");
    }
}
