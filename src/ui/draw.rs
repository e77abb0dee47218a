//! Drawing the lab: a header, the degradation path, sparklines, the
//! preview, the event log and the keys, laid out for 80×24 and up.

use super::app::{App, LogKind, Mode, Series};
use super::graphics::Graphics;
use super::pictures::{CellPicture, compose_for};
use super::plot::{FieldGlyphs, Scatter};
use crate::data::PixelImages;
use crate::engine::protocol::{NodeStatus, NodeView, Preview, PreviewData, SessionView, Shown, short_number};
use crate::rundir::Stage;
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Borders, Clear, Paragraph, Sparkline};

/// Below this size the panels cannot show anything useful.
pub const MIN_SIZE: (u16, u16) = (40, 12);

/// Draws the lab with image previews in cells (half-blocks or the ramp).
pub fn draw(frame: &mut Frame, app: &App) {
    draw_with(frame, app, None);
}

/// Draws the lab; `graphics`, when the terminal has a protocol, draws image
/// previews in real pixels.
pub fn draw_with(frame: &mut Frame, app: &App, graphics: Option<&mut Graphics>) {
    let area = frame.area();
    if area.width < MIN_SIZE.0 || area.height < MIN_SIZE.1 {
        let note = format!(
            "disback: enlarge the terminal to at least {}×{} (it is {}×{}); q quits",
            MIN_SIZE.0, MIN_SIZE.1, area.width, area.height
        );
        let text = Paragraph::new(note).wrap(ratatui::widgets::Wrap { trim: true });
        frame.render_widget(text, area);
        return;
    }
    let [header, middle, log, footer] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Min(8),
        Constraint::Length(log_height(frame.area().height)),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_header(frame, header, app);
    // A measured path needs room for its two distance columns.
    let measured = app
        .view
        .as_ref()
        .is_some_and(|v| v.nodes.iter().any(|n| n.spread.is_some()));
    let left_width = (frame.area().width * 35 / 100)
        .max(if measured { 38 } else { 30 })
        .min(frame.area().width / 2);
    let [left, preview] =
        Layout::horizontal([Constraint::Length(left_width), Constraint::Min(20)]).areas(middle);
    let path_height = app.view.as_ref().map_or(3, |v| v.nodes.len() as u16 + 2);
    let [path, charts] = Layout::vertical([Constraint::Length(path_height), Constraint::Min(6)]).areas(left);
    draw_path(frame, path, app);
    draw_charts(frame, charts, app);
    let coverage_height = 8;
    match &app.classes {
        Some(classes) if preview.height >= coverage_height + 8 => {
            let [preview, coverage] =
                Layout::vertical([Constraint::Min(8), Constraint::Length(coverage_height)]).areas(preview);
            draw_preview(frame, preview, app, graphics);
            draw_coverage(frame, coverage, app, classes);
        }
        _ => draw_preview(frame, preview, app, graphics),
    }
    draw_log(frame, log, app);
    draw_footer(frame, footer, app);
    match app.mode {
        Mode::Help => draw_help(frame, app),
        Mode::ConfirmQuit => draw_confirm(frame, app),
        Mode::Normal => {}
    }
}

fn log_height(total: u16) -> u16 {
    match total {
        0..=24 => 5,
        25..=40 => 7,
        _ => 10,
    }
}

fn block<'a>(title: impl Into<Line<'a>>, app: &App) -> Block<'a> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(app.theme.dim())
        .title(title.into().style(app.theme.title()))
}

fn draw_header(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let Some(v) = &app.view else {
        frame.render_widget(
            Paragraph::new(Span::styled(" disback — starting…", t.title())),
            area,
        );
        return;
    };
    let mut first = vec![
        Span::styled(format!(" {} ", v.method), t.title()),
        Span::styled("· ", t.dim()),
        Span::styled(v.stage.to_string(), stage_style(v.stage, app)),
        Span::styled(" · ", t.dim()),
        Span::styled(v.device.clone(), t.label()),
        Span::styled(" · ", t.dim()),
        Span::styled(format!("{:.0} it/s", app.rate), t.value()),
        Span::styled(" · ", t.dim()),
        Span::styled(clock(app.elapsed.as_secs()), t.label()),
    ];
    let flags: [(bool, &str, Style); 5] = [
        (!app.control, "READ-ONLY", t.warn()),
        (app.paused, "PAUSED", t.warn()),
        (app.manual(), "MANUAL", t.warn()),
        (v.stage == Stage::Done && app.failure.is_none(), "DONE", t.good()),
        (app.failure.is_some(), "FAILED", t.bad()),
    ];
    for (on, label, style) in flags {
        if on {
            first.push(Span::raw(" "));
            first.push(Span::styled(
                format!("[{label}]"),
                style.add_modifier(Modifier::REVERSED),
            ));
        }
    }
    let second = Line::from(vec![
        Span::styled(format!(" {} · ", v.data), t.label()),
        Span::styled(stage_progress(v), t.value()),
        Span::styled(format!(" · iteration {} · ", v.iteration), t.dim()),
        Span::styled(v.run_dir.display().to_string(), t.dim()),
    ]);
    frame.render_widget(Paragraph::new(vec![Line::from(first), second]), area);
}

fn stage_style(stage: Stage, app: &App) -> Style {
    match stage {
        Stage::Done => app.theme.good().add_modifier(Modifier::BOLD),
        _ => app.theme.warn(),
    }
}

fn stage_progress(v: &SessionView) -> String {
    let what = match v.stage {
        Stage::Pretrain => "teacher step",
        Stage::Record => "recording iteration",
        Stage::Backtrack | Stage::Done => "generator step",
    };
    let on = v.target.map(|t| format!(" on s'θ{t}")).unwrap_or_default();
    format!("{what} {}/{}{on}", v.stage_step, v.stage_total)
}

fn clock(secs: u64) -> String {
    format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

fn draw_path(frame: &mut Frame, area: Rect, app: &App) {
    let title = match app.view.as_ref().map(|v| v.stage) {
        Some(Stage::Pretrain) | Some(Stage::Record) => "Degradation path",
        _ => "Backtracking path",
    };
    let width = area.width.saturating_sub(2);
    let lines: Vec<Line> = app
        .view
        .as_ref()
        .map(|v| {
            v.nodes
                .iter()
                .rev()
                .map(|n| node_line(n, v, app, width))
                .collect()
        })
        .unwrap_or_default();
    let hint = Span::styled(" ↑↓ ⏎ preview a node ", app.theme.dim());
    let mut frame_block = block(title, app).title_bottom(Line::from(hint).right_aligned());
    // The distance columns, named above them: the denoiser's (fn) from
    // the teacher and from G⁰'s fitted copy, the samples' from the data
    // and from G⁰'s.
    let nodes = app.view.as_ref().map_or(&[][..], |v| &v.nodes[..]);
    let mut names = String::new();
    if nodes.iter().any(|n| n.gap.is_some()) {
        names.push_str(" fn θ0 fn G⁰");
    }
    if nodes.iter().any(|n| n.spread.is_some()) {
        names.push_str("  data    G⁰");
    }
    if !names.is_empty() {
        frame_block = frame_block.title(Line::from(Span::styled(names, app.theme.dim())).right_aligned());
    }
    frame.render_widget(Paragraph::new(lines).block(frame_block), area);
}

/// A node's row: its glyph and name, its status, the generator steps on it
/// and the plan, and its distances to the data and to G⁰. A panel too
/// narrow for all of it leaves out the plan.
fn node_line<'a>(n: &NodeView, v: &SessionView, app: &App, width: u16) -> Line<'a> {
    let t = &app.theme;
    let last = v.nodes.len().saturating_sub(1);
    let (glyph, status, style) = match n.status {
        NodeStatus::Pending => ("·", "pending", t.dim()),
        NodeStatus::Recording => ("◌", "recording", t.warn()),
        NodeStatus::Recorded if n.index == 0 => ("●", "teacher", t.label()),
        NodeStatus::Recorded => ("●", "recorded", t.label()),
        NodeStatus::Target => ("▶", "TARGET", t.target()),
        NodeStatus::Passed if n.index == last && n.planned.is_none() => ("✓", "s_φ start", t.dim()),
        NodeStatus::Passed => ("✓", "passed", t.good()),
    };
    let steps = match n.planned {
        Some(p) if v.stage >= Stage::Backtrack => format!("{:>5}/{p}", n.steps),
        _ => String::new(),
    };
    let name = format!("{glyph} s'θ{:<2} ", n.index);
    let mut distances = String::new();
    if let Some(g) = &n.gap {
        let to_start = g.to_start.map_or("·".to_string(), short_number);
        distances += &format!(" {:>5} {:>5}", short_number(g.to_teacher), to_start);
    }
    if let Some(s) = &n.spread {
        distances += &format!(" {:>5} {:>5}", short_number(s.to_data), short_number(s.to_start));
    }
    let text = if distances.is_empty() {
        format!("{name}{status:<9} {steps}")
    } else {
        // The distances end at the panel's right edge, under their names in
        // its title.
        let room = (width as usize).saturating_sub(distances.chars().count());
        let full = format!("{name}{status:<9} {steps}");
        // Too narrow for the plan: the steps spent alone.
        let spent = match n.planned {
            Some(_) if v.stage >= Stage::Backtrack => format!("{:>5}", n.steps),
            _ => String::new(),
        };
        let left = match full.chars().count() < room {
            true => full,
            false => format!("{name}{status:<9}{spent}"),
        };
        format!("{left:<room$}{distances}")
    };
    // The cursor of ↑ ↓ is underlined (the row keeps its meaning's style).
    let style = match app.node_cursor {
        Some(i) if i == n.index => style.add_modifier(Modifier::UNDERLINED),
        _ => style,
    };
    Line::from(Span::styled(text, style))
}

fn draw_charts(frame: &mut Frame, area: Rect, app: &App) {
    let outer = block("Training", app);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let main_name = if app.stage() == Some(Stage::Pretrain) {
        "teacher loss"
    } else {
        "generator loss"
    };
    let fake_name = if app.stage() == Some(Stage::Record) {
        "s'θ loss on G⁰"
    } else {
        "fake-score loss"
    };
    let mut series = vec![
        (main_name, &app.main_loss),
        (fake_name, &app.fake_loss),
        ("mismatch (target)", &app.mismatch),
    ];
    if app.images {
        let name = if app.classes.is_some() {
            "classifier FD"
        } else {
            "pixel FD"
        };
        series.push((name, &app.quality));
    }
    let n = series.len() as u32;
    let rows = Layout::vertical(vec![Constraint::Ratio(1, n); n as usize]).split(inner);
    for (i, ((name, s), row)) in series.iter().zip(rows.iter()).enumerate() {
        draw_series(frame, *row, name, s, i, app);
    }
}

fn draw_series(frame: &mut Frame, area: Rect, name: &str, series: &Series, i: usize, app: &App) {
    let [label, spark] = Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
    let latest = series.latest().map_or("—".to_string(), |v| format!("{v:.4}"));
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled(format!("{name} "), app.theme.label()),
            Span::styled(latest, app.theme.value()),
        ])),
        label,
    );
    if spark.height == 0 || series.is_empty() {
        return;
    }
    let values: Vec<f64> = series.tail(spark.width as usize).collect();
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    // Scaled between the window's min and max, so small changes show.
    let scaled: Vec<u64> = values
        .iter()
        .map(|v| 1 + ((v - lo) / (hi - lo).max(1e-12) * 99.0) as u64)
        .collect();
    frame.render_widget(
        Sparkline::default()
            .data(&scaled)
            .max(100)
            .style(app.theme.series(i)),
        spark,
    );
}

fn draw_preview(frame: &mut Frame, area: Rect, app: &App, graphics: Option<&mut Graphics>) {
    let views = if app.images {
        "generator · model · data"
    } else {
        "generator · model · field"
    };
    let position = match app.preview {
        Preview::Generator => " 1/3",
        Preview::Model => " 2/3",
        Preview::Data | Preview::ScoreField => " 3/3",
        Preview::Node(_) => "",
    };
    let outer = block(format!("Preview{position}: {}", preview_title(app)), app)
        .title_bottom(Line::from(Span::styled(format!(" v: {views} "), app.theme.dim())).right_aligned());
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    match app.preview_data.as_ref() {
        Some(PreviewData::ScoreField(f)) => draw_fields(frame, inner, f, app),
        Some(data) => match data.samples() {
            Some(Shown::Points(samples)) => {
                let scatter = Scatter {
                    data: &app.data,
                    samples,
                    bounds: app.bounds,
                    theme: app.theme,
                };
                frame.render_widget(scatter, inner);
            }
            Some(Shown::Images(images)) => draw_images(frame, inner, images, app, graphics),
            None => {}
        },
        None => {}
    }
    if app.preview == Preview::ScoreField && inner.height > 2 {
        let hint = Line::from(Span::styled(" [ ] halve / double σ ", app.theme.dim()));
        let top = Rect {
            y: area.y,
            height: 1,
            ..area
        };
        frame.render_widget(Paragraph::new(hint).right_aligned(), top);
    }
}

/// What the preview shows, in words (after "…" while its data is on the
/// way).
fn preview_title(app: &App) -> String {
    let waiting = app.preview_data.is_none();
    let what = match (app.preview, &app.preview_data) {
        (Preview::Generator, _) if app.images => "generator (fixed latents)".to_string(),
        (Preview::Generator, _) => "generator samples over the data".to_string(),
        (Preview::Model, Some(PreviewData::Model { label, .. })) => format!("Heun samples of {label}"),
        (Preview::Model, _) => "Heun samples of the target".to_string(),
        (Preview::Data, _) => "data (reference)".to_string(),
        (Preview::ScoreField, Some(PreviewData::ScoreField(f))) => {
            format!("score fields at σ = {:.3}", f.sigma)
        }
        (Preview::ScoreField, _) => "score fields".to_string(),
        (Preview::Node(0), _) => "node s'θ0 (teacher), Heun · esc".to_string(),
        (Preview::Node(i), _) => format!("node s'θ{i}, Heun · esc"),
    };
    // The mark goes in front, where a narrow panel does not cut it off.
    if waiting { format!("… {what}") } else { what }
}

fn draw_images(
    frame: &mut Frame,
    area: Rect,
    images: &PixelImages,
    app: &App,
    graphics: Option<&mut Graphics>,
) {
    if area.is_empty() {
        return;
    }
    match graphics {
        Some(g) => g.draw(frame, area, images, app.preview_frame),
        None => {
            let picture = compose_for(images, area, app.palette);
            let cells = CellPicture {
                picture: &picture,
                palette: app.palette,
            };
            frame.render_widget(cells, area);
        }
    }
}

fn draw_fields(frame: &mut Frame, inner: Rect, f: &crate::rundir::ScoreField, app: &App) {
    let [labels, grids] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
    let halves = Layout::horizontal([Constraint::Ratio(1, 2); 2]).split(grids);
    let label_halves = Layout::horizontal([Constraint::Ratio(1, 2); 2]).split(labels);
    let target_style = app.theme.warn().remove_modifier(Modifier::BOLD);
    for (k, (name, vectors, style)) in [
        (f.target_label.as_str(), &f.target, target_style),
        ("fake score s_φ", &f.fake, app.theme.fake()),
    ]
    .into_iter()
    .enumerate()
    {
        frame.render_widget(
            Paragraph::new(Span::styled(format!(" {name}"), style)),
            label_halves[k],
        );
        let glyphs = FieldGlyphs {
            points: &f.points,
            vectors,
            columns: f.columns,
            style,
        };
        frame.render_widget(glyphs, halves[k]);
    }
}

/// Each class's share of the generated images against its share of the
/// data (100 = the same), from the latest measurement: a dropped class is
/// an empty bar, the image analogue of a dropped mode.
fn draw_coverage(frame: &mut Frame, area: Rect, app: &App, classes: &[String]) {
    let t = &app.theme;
    let stats = app
        .view
        .as_ref()
        .and_then(|v| v.latest_eval.as_ref())
        .and_then(|e| e.classes.as_ref());
    let title = match stats {
        Some(s) => format!(
            "Classes: {:.0}% covered · worst ±{:.0}% · 100 = data",
            100.0 * s.coverage,
            100.0 * s.max_share_error
        ),
        None => "Classes (after the first measurement)".to_string(),
    };
    let outer = block(title, app);
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let Some(stats) = stats else {
        return;
    };
    let n = stats.shares.len().max(1) as u16;
    // Bars as wide as the panel allows, one column apart.
    let width = ((inner.width + 1) / n).saturating_sub(1).clamp(1, 6);
    let bars: Vec<Bar> = stats
        .shares
        .iter()
        .enumerate()
        .map(|(k, &share)| {
            let percent = (100.0 * share).round() as u64;
            let style = match share {
                s if s < 0.5 => t.bad(),
                s if (s - 1.0).abs() > 0.25 => t.warn(),
                _ => t.good(),
            };
            let name = classes.get(k).map_or(k.to_string(), |c| c.clone());
            Bar::default()
                .value(percent)
                .text_value(percent.to_string())
                .label(Line::from(name.chars().take(width as usize).collect::<String>()))
                .style(style)
                .value_style(style.add_modifier(Modifier::REVERSED))
        })
        .collect();
    let top = stats.shares.iter().fold(1.0f64, |a, &b| a.max(b));
    let chart = BarChart::default()
        .data(BarGroup::default().bars(&bars))
        .bar_width(width)
        .bar_gap(1)
        .max((100.0 * top).ceil() as u64);
    frame.render_widget(chart, inner);
}

fn draw_log(frame: &mut Frame, area: Rect, app: &App) {
    let height = area.height.saturating_sub(2) as usize;
    let t = &app.theme;
    let lines: Vec<Line> = app
        .log
        .iter()
        .skip(app.log.len().saturating_sub(height))
        .map(|l| {
            let style = match l.kind {
                LogKind::Info => t.label(),
                LogKind::Good => t.good(),
                LogKind::Warn => t.warn(),
                LogKind::Error => t.bad(),
            };
            Line::from(vec![
                Span::styled(format!("{} ", clock(l.at.as_secs())), t.dim()),
                Span::styled(l.text.clone(), style),
            ])
        })
        .collect();
    frame.render_widget(Paragraph::new(lines).block(block("Events", app)), area);
}

const KEYS: [(&str, &str); 9] = [
    ("space", "pause"),
    (".", "step"),
    ("n", "next"),
    ("s", "save"),
    ("v", "view"),
    ("m", "manual"),
    ("?", "help"),
    ("d", "detach"),
    ("q", "quit"),
];

fn draw_footer(frame: &mut Frame, area: Rect, app: &App) {
    let t = &app.theme;
    let mut spans = vec![Span::raw(" ")];
    for (key, what) in KEYS {
        let what = match key {
            "space" if app.paused => "resume",
            _ => what,
        };
        spans.push(Span::styled(key, t.key()));
        spans.push(Span::styled(format!(" {what}  "), t.label()));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn centered(frame: &Frame, width: u16, height: u16) -> Rect {
    let a = frame.area();
    let (w, h) = (width.min(a.width), height.min(a.height));
    Rect::new(a.x + (a.width - w) / 2, a.y + (a.height - h) / 2, w, h)
}

const HELP: [(&str, &str); 14] = [
    ("space", "pause / resume training"),
    (".", "one iteration while paused"),
    ("n", "next checkpoint: next target; while recording, end the"),
    ("", "path here; while pretraining, keep the teacher as it is"),
    ("s", "save the generator into the run directory"),
    (
        "v",
        "preview: generator · Heun samples of the target · score fields",
    ),
    ("[ ]", "score fields: halve / double σ"),
    ("m", "manual schedule: stay on each target until n"),
    ("d", "detach: close the lab, training goes on in the background"),
    ("q", "while training: detach, or stop the run (checkpoint, then"),
    ("", "end); once it is over: end it and close"),
    ("Ctrl-C", "detach at once"),
    ("", "Come back: disback attach [RUN_DIR]; list: disback ls;"),
    ("", "stop from a script: disback stop RUN_DIR"),
];

fn draw_help(frame: &mut Frame, app: &App) {
    let t = &app.theme;
    let area = centered(frame, 76, HELP.len() as u16 + 2);
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(format!("{k:>7}  "), t.key()),
                Span::styled(*what, t.label()),
            ])
        })
        .collect();
    frame.render_widget(Clear, area);
    frame.render_widget(
        Paragraph::new(lines).block(block("Keys — ? or Esc to close", app)),
        area,
    );
}

fn draw_confirm(frame: &mut Frame, app: &App) {
    let t = &app.theme;
    let area = centered(frame, 60, 6);
    let text = vec![
        Line::from(Span::styled("Training is still running.", t.value())),
        Line::from(vec![
            Span::styled("d", t.key()),
            Span::styled(" or ", t.label()),
            Span::styled("Enter", t.key()),
            Span::styled(" detach: training goes on; attach again later", t.label()),
        ]),
        Line::from(vec![
            Span::styled("s", t.key()),
            Span::styled(" stop the run: checkpoint, then end (resumable)", t.label()),
        ]),
        Line::from(vec![
            Span::styled("any other key", t.key()),
            Span::styled(" stay", t.label()),
        ]),
    ];
    frame.render_widget(Clear, area);
    frame.render_widget(Paragraph::new(text).block(block("Leave the lab?", app)), area);
}
