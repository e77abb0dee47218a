//! The figures of one run: convergence and mismatch over training (paper
//! Figs. 1 and 4), mismatch against σ (Fig. 11), generator snapshots
//! (Fig. 12) and score fields (Fig. 13).

use super::{COLORS, Figure, log_range, plot_err, register_font, save};
use crate::config::Config;
use crate::data::{Bounds, PlaneData, Point};
use crate::files::atomic_write;
use crate::files::read_json;
use crate::metrics::Evaluation;
use crate::rng::{host_rng, streams};
use crate::rundir::{MetricsRecord, RunDir, ScoreField, Stage, read_metrics, read_points_csv};
use anyhow::Result;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf32;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::{Path, PathBuf};

/// A line with an optional band (low, high) around it.
pub(crate) struct Line {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub band: Vec<(f64, f64, f64)>,
}

/// A line chart; the workhorse of every curve figure.
pub(crate) struct Curves {
    pub name: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub lines: Vec<Line>,
    pub log_x: bool,
    pub log_y: bool,
    /// Vertical markers (x, label), e.g. target switches.
    pub marks: Vec<(f64, String)>,
    /// A horizontal reference (y, label), e.g. a quality threshold.
    pub reference: Option<(f64, String)>,
}

impl Curves {
    fn values(&self, pick: impl Fn(&(f64, f64)) -> f64) -> Vec<f64> {
        let mut v: Vec<f64> = self
            .lines
            .iter()
            .flat_map(|l| l.points.iter().map(&pick))
            .collect();
        for l in &self.lines {
            for &(x, lo, hi) in &l.band {
                v.extend([pick(&(x, lo)), pick(&(x, hi))]);
            }
        }
        v
    }

    fn x_range(&self) -> std::ops::Range<f64> {
        let xs = self.values(|p| p.0);
        if self.log_x {
            return log_range(xs.into_iter());
        }
        let (lo, hi) = xs.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
        if lo.is_finite() && hi > lo {
            lo..hi
        } else {
            0.0..1.0
        }
    }

    fn y_range(&self) -> std::ops::Range<f64> {
        let mut ys = self.values(|p| p.1);
        if let Some((y, _)) = self.reference {
            ys.push(y);
        }
        if self.log_y {
            return log_range(ys.into_iter());
        }
        let (lo, hi) = ys.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
        if !lo.is_finite() {
            return 0.0..1.0;
        }
        let pad = 0.05 * (hi - lo).max(1e-9);
        (lo - pad)..(hi + pad)
    }

    /// Draws the chart on any plotters backend and axis kind. One function
    /// because plotters' chart builder is generic over both: split, every
    /// part would repeat these bounds.
    fn draw_on<DB, X, Y>(&self, root: &DrawingArea<DB, Shift>, x: X, y: Y) -> Result<()>
    where
        DB: DrawingBackend,
        DB::ErrorType: 'static,
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let (x_lo, x_hi, y_lo, y_hi) = {
            let (xr, yr) = (self.x_range(), self.y_range());
            (xr.start, xr.end, yr.start, yr.end)
        };
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(x, y)
            .map_err(plot_err)?;
        chart
            .configure_mesh()
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 14))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(plot_err)?;
        for (i, line) in self.lines.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            if !line.band.is_empty() {
                let mut polygon: Vec<(f64, f64)> = line.band.iter().map(|&(x, lo, _)| (x, lo)).collect();
                polygon.extend(line.band.iter().rev().map(|&(x, _, hi)| (x, hi)));
                chart
                    .draw_series(std::iter::once(Polygon::new(polygon, color.mix(0.18).filled())))
                    .map_err(plot_err)?;
            }
            chart
                .draw_series(LineSeries::new(
                    line.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(plot_err)?
                .label(&line.label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        for (x, label) in &self.marks {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(*x, y_lo), (*x, y_hi)],
                    BLACK.mix(0.35).stroke_width(1),
                )))
                .map_err(plot_err)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    label.clone(),
                    (*x, y_hi),
                    ("sans-serif", 13),
                )))
                .map_err(plot_err)?;
        }
        if let Some((y, label)) = &self.reference {
            let style = BLACK.mix(0.6).stroke_width(1);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x_lo, *y), (x_hi, *y)],
                    style,
                )))
                .map_err(plot_err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(plot_err)?;
        Ok(())
    }
}

impl Figure for Curves {
    fn name(&self) -> &str {
        &self.name
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let (x, y) = (self.x_range(), self.y_range());
        match (self.log_x, self.log_y) {
            (false, false) => self.draw_on(root, x, y),
            (false, true) => self.draw_on(root, x, y.log_scale()),
            (true, false) => self.draw_on(root, x.log_scale(), y),
            (true, true) => self.draw_on(root, x.log_scale(), y.log_scale()),
        }
    }
}

/// An axis label: whole numbers without decimals, others with few digits.
fn tick(v: &f64) -> String {
    if v.abs() >= 1.0 && (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Measurements of a run during backtracking, with their cost.
pub(crate) fn evaluations(records: &[MetricsRecord]) -> Vec<(usize, &Evaluation)> {
    records
        .iter()
        .filter(|r| matches!(r.stage, Stage::Backtrack | Stage::Done))
        .filter_map(|r| r.eval.as_ref().map(|e| (r.cost, e)))
        .collect()
}

/// (cost, new target) wherever the target changed.
fn switches(records: &[MetricsRecord]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut last = None;
    for r in records.iter().filter(|r| r.stage == Stage::Backtrack) {
        if let Some(t) = r.target_node {
            if last.is_some_and(|l| l != t) {
                out.push((r.cost, t));
            }
            last = Some(t);
        }
    }
    out
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Draws every figure of a run into its `plots/` folder. Long because it
/// is the list of figures, one short block each (paper Figs. 1, 4, 11, 12,
/// 13), in the order they appear in `plots/`.
pub fn plot_run(root: &Path) -> Result<Vec<PathBuf>> {
    let run = RunDir::open(root)?;
    let config = Config::load_run(&run.config())?;
    let records = read_metrics(&run.metrics())?;
    let dir = run.plots_dir();
    if records.is_empty() {
        anyhow::bail!(
            "{} holds no records yet, so there is nothing to plot; {} was left as it is",
            run.metrics().display(),
            dir.display()
        );
    }
    let evals = evaluations(&records);
    let marks: Vec<(f64, String)> = switches(&records)
        .into_iter()
        .map(|(c, t)| (c as f64, format!(" s'θ{t}")))
        .collect();
    let mut written = Vec::new();

    let series = |label: &str, f: &dyn Fn(&Evaluation) -> Option<f64>| Line {
        label: label.into(),
        points: evals
            .iter()
            .filter_map(|(c, e)| f(e).map(|v| (*c as f64, v)))
            .collect(),
        band: Vec::new(),
    };
    let convergence = Curves {
        name: "convergence".into(),
        title: format!("{} ({}): distance to the data", config.run_name(), config.method),
        x_label: "cost (recording iterations + generator updates)".into(),
        y_label: "distance".into(),
        lines: vec![
            series("energy distance", &|e| Some(e.energy)),
            series("sliced Wasserstein", &|e| Some(e.sliced_w)),
        ],
        log_x: false,
        log_y: true,
        marks: marks.clone(),
        reference: None,
    };
    written.extend(save(&convergence, &dir)?);

    let over_training = Curves {
        name: "mismatch-over-training".into(),
        title: "mismatch degree over training (mean over σ)".into(),
        x_label: "cost".into(),
        y_label: "E‖s − ∇log q_σ‖".into(),
        lines: vec![
            series("current target", &|e| mean(&e.mismatch_target)),
            series("teacher", &|e| mean(&e.mismatch_teacher)),
        ],
        log_x: false,
        log_y: true,
        marks,
        reference: None,
    };
    written.extend(save(&over_training, &dir)?);

    if let (Some((_, first)), Some((_, last))) = (evals.first(), evals.last()) {
        let sigmas = &config.metrics.mismatch_sigmas;
        let against_sigma = |label: &str, values: &[f64]| Line {
            label: label.into(),
            points: sigmas.iter().copied().zip(values.iter().copied()).collect(),
            band: Vec::new(),
        };
        let data = if last.mismatch_data.is_empty() {
            &first.mismatch_data
        } else {
            &last.mismatch_data
        };
        let by_sigma = Curves {
            name: "mismatch-vs-sigma".into(),
            title: "teacher's mismatch degree against σ".into(),
            x_label: "σ".into(),
            y_label: "E‖s_θ − ∇log q_σ‖".into(),
            lines: vec![
                against_sigma("at initial generator samples", &first.mismatch_teacher),
                against_sigma("at final generator samples", &last.mismatch_teacher),
                against_sigma("at data samples (the floor)", data),
            ],
            log_x: true,
            log_y: true,
            marks: Vec::new(),
            reference: None,
        };
        written.extend(save(&by_sigma, &dir)?);
    }

    // An image run's snapshots are sample grids: one strip of them.
    let Some(plane) = PlaneData::new(&config.data) else {
        written.extend(image_snapshots(&run, &dir)?);
        return Ok(written);
    };
    let background = plane.sample(2000, &mut host_rng(0, streams::BACKGROUND));
    let bounds = Bounds::around(&background);
    let snapshots = Snapshots::read(&run, &plane, background.clone(), bounds)?;
    if !snapshots.panels.is_empty() {
        written.extend(save(&snapshots, &dir)?);
    }
    let fields = Fields::read(&run, background, bounds)?;
    if !fields.panels.is_empty() {
        written.extend(save(&fields, &dir)?);
    }
    Ok(written)
}

/// The moments a run keeps generator snapshots of, in order, with their
/// captions: the initial generator, leaving each target (most degraded
/// first), the end.
fn snapshot_moments() -> impl Iterator<Item = (String, String)> {
    let nodes = (0..32)
        .rev()
        .map(|node| (format!("at-node-{node}"), format!("after target s'θ{node}")));
    std::iter::once(("initial".to_string(), "initial generator G⁰".to_string()))
        .chain(nodes)
        .chain(std::iter::once((
            "final".to_string(),
            "final generator".to_string(),
        )))
}

/// The image analogue of Fig. 12: the run's sample grids (`samples/*.png`,
/// all from the same latents) side by side under captions, as
/// `plots/snapshots.png`. A PNG only: an SVG of every pixel as a
/// rectangle would be megabytes.
fn image_snapshots(run: &RunDir, dir: &Path) -> Result<Option<PathBuf>> {
    const CAPTION: u32 = 30;
    const MARGIN: u32 = 10;
    let mut panels = Vec::new();
    for (name, caption) in snapshot_moments() {
        let file = run.snapshot_grid(&name);
        if file.exists() {
            let grid = image::open(&file)
                .map_err(|e| anyhow::anyhow!("cannot read the snapshot {}: {e}", file.display()))?
                .to_rgb8();
            panels.push((caption, grid));
        }
    }
    if panels.is_empty() {
        return Ok(None);
    }
    let width = panels.iter().map(|(_, g)| g.width() + MARGIN).sum::<u32>() + MARGIN;
    let height = CAPTION + MARGIN + panels.iter().map(|(_, g)| g.height()).max().unwrap_or(0);
    let mut strip = image::RgbImage::from_pixel(width, height, image::Rgb([255, 255, 255]));
    let mut x = MARGIN;
    let mut captions = Vec::new();
    for (caption, grid) in &panels {
        image::imageops::replace(&mut strip, grid, x as i64, CAPTION as i64);
        captions.push((caption.clone(), x + grid.width() / 2));
        x += grid.width() + MARGIN;
    }
    register_font();
    {
        let (w, h) = strip.dimensions();
        let root = BitMapBackend::with_buffer(strip.as_mut(), (w, h)).into_drawing_area();
        let style = TextStyle::from(("sans-serif", 16).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (caption, centre) in captions {
            root.draw_text(&caption, &style, (centre as i32, 8))
                .map_err(plot_err)?;
        }
        root.present().map_err(plot_err)?;
    }
    let path = dir.join("snapshots.png");
    let mut bytes = std::io::Cursor::new(Vec::new());
    strip.write_to(&mut bytes, image::ImageFormat::Png)?;
    atomic_write(&path, bytes.get_ref())?;
    Ok(Some(path))
}

/// Generator samples over the data at moments of the run (Fig. 12).
struct Snapshots {
    panels: Vec<(String, Vec<Point>)>,
    data: Vec<Point>,
    bounds: Bounds,
}

impl Snapshots {
    /// The run's sample files, each projected onto the data's plane (its
    /// own coordinates, Qᵀ x, for a mixture in more dimensions).
    fn read(run: &RunDir, plane: &PlaneData, data: Vec<Point>, bounds: Bounds) -> Result<Self> {
        let read = |file: &std::path::Path| -> Result<Vec<Point>> {
            let samples = read_points_csv(file)?;
            if samples.dim() != plane.dim() {
                anyhow::bail!(
                    "{}: points of {} values, but the run's data has {}",
                    file.display(),
                    samples.dim(),
                    plane.dim()
                );
            }
            Ok(samples.rows().map(|x| plane.embedding().project(x)).collect())
        };
        let mut panels = Vec::new();
        for (name, caption) in snapshot_moments().filter(|(name, _)| name != "final") {
            let file = run.snapshot(&name);
            if file.exists() {
                panels.push((caption, read(&file)?));
            }
        }
        if run.samples().exists() {
            let mut last = read(&run.samples())?;
            last.truncate(2000);
            panels.push(("final generator".to_string(), last));
        }
        Ok(Self { panels, data, bounds })
    }
}

fn scatter_panel<'a, DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    bounds: Bounds,
) -> Result<ChartContext<'a, DB, Cartesian2d<RangedCoordf32, RangedCoordf32>>>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(6)
        .build_cartesian_2d(bounds.x.0..bounds.x.1, bounds.y.0..bounds.y.1)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_axes()
        .draw()
        .map_err(plot_err)?;
    Ok(chart)
}

impl Figure for Snapshots {
    fn name(&self) -> &str {
        "snapshots"
    }

    fn size(&self) -> (u32, u32) {
        (300 * self.panels.len().max(1) as u32, 330)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let areas = root.split_evenly((1, self.panels.len()));
        for (area, (title, samples)) in areas.iter().zip(&self.panels) {
            let mut chart = scatter_panel(area, title, self.bounds)?;
            let grey = RGBColor(170, 170, 170).filled();
            chart
                .draw_series(self.data.iter().map(|p| Circle::new((p[0], p[1]), 1, grey)))
                .map_err(plot_err)?;
            chart
                .draw_series(
                    samples
                        .iter()
                        .map(|p| Circle::new((p[0], p[1]), 1, COLORS[0].filled())),
                )
                .map_err(plot_err)?;
        }
        Ok(())
    }
}

/// The teacher's and s_φ's score fields as arrows (Fig. 13).
struct Fields {
    panels: Vec<(String, Vec<Point>, Vec<Point>, RGBColor)>,
    data: Vec<Point>,
    bounds: Bounds,
}

impl Fields {
    fn read(run: &RunDir, data: Vec<Point>, bounds: Bounds) -> Result<Self> {
        let mut panels = Vec::new();
        for (moment, name) in [("start of backtracking", "initial"), ("end", "final")] {
            let file = run.field(name);
            if !file.exists() {
                continue;
            }
            let f: ScoreField = read_json(&file)?;
            panels.push((
                format!("teacher, σ = {:.2} ({moment})", f.sigma),
                f.points.clone(),
                f.target,
                COLORS[1],
            ));
            panels.push((
                format!("s_φ, σ = {:.2} ({moment})", f.sigma),
                f.points,
                f.fake,
                COLORS[0],
            ));
        }
        Ok(Self { panels, data, bounds })
    }
}

impl Figure for Fields {
    fn name(&self) -> &str {
        "score-fields"
    }

    fn size(&self) -> (u32, u32) {
        (900, 420 * self.panels.len().div_ceil(2) as u32)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>
    where
        DB::ErrorType: 'static,
    {
        let areas = root.split_evenly((self.panels.len().div_ceil(2), 2));
        for (area, (title, points, vectors, color)) in areas.iter().zip(&self.panels) {
            let mut chart = scatter_panel(area, title, self.bounds)?;
            let grey = RGBColor(200, 200, 200).filled();
            chart
                .draw_series(self.data.iter().map(|p| Circle::new((p[0], p[1]), 1, grey)))
                .map_err(plot_err)?;
            // Arrow length grows with the square root of the score's size,
            // the longest spanning about one grid cell: scores grow fast
            // away from the data, and linear arrows would hide the
            // structure near it.
            let cell = (self.bounds.x.1 - self.bounds.x.0) / 25.0;
            let longest = vectors.iter().map(|v| v[0].hypot(v[1])).fold(1e-12f32, f32::max);
            let style = color.stroke_width(1);
            for (p, v) in points.iter().zip(vectors) {
                let norm = v[0].hypot(v[1]).max(1e-12);
                let length = 0.9 * cell * (norm / longest).sqrt();
                let tip = (p[0] + v[0] / norm * length, p[1] + v[1] / norm * length);
                let (dx, dy) = (tip.0 - p[0], tip.1 - p[1]);
                let head = |turn: f32| {
                    let (s, c) = turn.sin_cos();
                    (tip.0 - 0.3 * (dx * c - dy * s), tip.1 - 0.3 * (dx * s + dy * c))
                };
                let shape = vec![(p[0], p[1]), tip, head(0.5), tip, head(-0.5)];
                chart
                    .draw_series(std::iter::once(PathElement::new(shape, style)))
                    .map_err(plot_err)?;
            }
        }
        Ok(())
    }
}
