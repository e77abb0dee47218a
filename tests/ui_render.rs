//! The terminal lab drawn into ratatui's TestBackend, for each stage, a
//! paused state, manual mode, the help overlay, each preview view and an
//! 80×24 terminal.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use disback::config::{Method, SchedulePolicy};
use disback::data::PixelImages;
use disback::data::{Bounds, GaussianMixture, Point};
use disback::engine::protocol::{
    Command, DataInfo, Event, NodeSpread, NodeStatus, NodeView, Preview, PreviewData, SessionView, Shown,
    Update,
};
use disback::metrics::{ClassStats, Evaluation};
use disback::rng::host_rng;
use disback::rundir::{MetricsRecord, ScoreField, Stage};
use disback::ui::{App, Exit, Mode, Palette, Theme, Tiling, draw};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Color;
use ratatui::style::Modifier;
use std::path::PathBuf;

fn view(stage: Stage, target: Option<usize>, statuses: [NodeStatus; 5]) -> SessionView {
    let spent = [0, 0, 120, 250, 0];
    SessionView {
        method: Method::Disback,
        stage,
        device: "CPU".into(),
        data: "Gaussian mixture, 10 modes".into(),
        run_dir: PathBuf::from("runs/gmm2d-test"),
        stage_step: 370,
        stage_total: 2000,
        iteration: 3570,
        cost: 570,
        nodes: (0..5)
            .map(|i| NodeView {
                index: i,
                status: statuses[i],
                steps: if stage >= Stage::Backtrack { spent[i] } else { 0 },
                planned: (i < 4).then_some(if i == 0 { 1250 } else { 250 }),
                spread: None,
                gap: None,
            })
            .collect(),
        target,
        policy: SchedulePolicy::Fixed,
        latest: None,
        latest_eval: None,
        failure: None,
    }
}

fn backtracking() -> SessionView {
    use NodeStatus::*;
    view(
        Stage::Backtrack,
        Some(2),
        [Recorded, Recorded, Target, Passed, Passed],
    )
}

fn ring_points(n: usize, seed: u64) -> Vec<Point> {
    GaussianMixture::new(&GaussianMixture::ring_components(10, 2.5, 0.15)).sample(n, &mut host_rng(seed, 0))
}

/// An app in `v` with some history, as the training thread would leave it.
fn app(v: SessionView) -> App {
    let mut app = App::new(Theme { color: true });
    app.on_update(Update::Started {
        view: Box::new(v.clone()),
        data: DataInfo::Plane {
            points: ring_points(800, 1),
            bounds: Bounds::around(&ring_points(800, 1)),
        },
    });
    app.on_update(Update::View {
        view: Box::new(v),
        rate: 123.0,
    });
    for i in 0..60 {
        let x = 1.0 / (1.0 + i as f64);
        let record = MetricsRecord {
            stage: Stage::Backtrack,
            step: i * 10,
            cost: i * 10,
            passes: Some(i as f64 * 43.3),
            target_node: Some(2),
            loss_g: Some(0.5 + x),
            loss_fake: Some(0.8 - 0.2 * x),
            loss_teacher: None,
            gap: Some(x),
            eval: None,
        };
        app.on_update(Update::Session(Event::Logged(Box::new(record))));
        app.mismatch.push(3.0 * x);
    }
    app.on_update(Update::Session(Event::TargetSwitched { from: Some(3), to: 2 }));
    app.on_update(Update::Preview(PreviewData::Generator(Shown::Points(
        ring_points(1500, 2),
    ))));
    app
}

fn render(app: &App, w: u16, h: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(w, h)).unwrap();
    terminal.draw(|f| draw(f, app)).unwrap();
    terminal.backend().buffer().clone()
}

fn text(buf: &Buffer) -> String {
    let area = buf.area;
    (0..area.height)
        .map(|y| (0..area.width).map(|x| buf[(x, y)].symbol()).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The row holding `needle`, and its column.
fn find(buf: &Buffer, needle: &str) -> Option<(u16, u16)> {
    text(buf).lines().enumerate().find_map(|(y, line)| {
        line.find(needle)
            .map(|byte| (line[..byte].chars().count() as u16, y as u16))
    })
}

fn braille_cells(buf: &Buffer) -> usize {
    text(buf)
        .chars()
        .filter(|c| ('\u{2801}'..='\u{28ff}').contains(c))
        .count()
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

#[test]
fn backtracking_at_80x24_shows_path_target_sparklines_and_preview() {
    let buf = render(&app(backtracking()), 80, 24);
    let screen = text(&buf);
    for needle in [
        "DisBack",
        "backtracking",
        "CPU",
        "123 it/s",
        "generator step 370/2000 on s'θ2",
    ] {
        assert!(screen.contains(needle), "missing {needle:?}:\n{screen}");
    }
    // Every node, most degraded first, with its state and steps.
    let rows: Vec<u16> = (0..5)
        .rev()
        .map(|i| find(&buf, &format!("s'θ{i}  ")).expect("node shown").1)
        .collect();
    assert!(
        rows.windows(2).all(|w| w[0] < w[1]),
        "nodes in order N..0: {rows:?}"
    );
    assert!(screen.contains("✓ s'θ4  s_φ start"));
    assert!(screen.contains("✓ s'θ3  passed      250/250"), "{screen}");
    assert!(screen.contains("● s'θ0  teacher       0/1250"), "{screen}");
    // The target: marked, and in reverse video.
    let (x, y) = find(&buf, "▶ s'θ2  TARGET").expect("the target is marked");
    assert!(buf[(x + 3, y)].modifier.contains(Modifier::REVERSED));
    assert!(screen.contains("120/250"));
    // Sparklines with their latest values.
    for needle in [
        "generator loss 0.5167",
        "fake-score loss 0.7967",
        "mismatch (target) 0.0500",
    ] {
        assert!(screen.contains(needle), "missing {needle:?}:\n{screen}");
    }
    assert!(screen.contains('█'), "sparkline bars");
    // The preview scatter and the event log.
    assert!(braille_cells(&buf) > 50, "{screen}");
    assert!(screen.contains("target switched: s'θ3 → s'θ2"));
    assert!(screen.contains("q quit"));
}

#[test]
fn the_path_panel_shows_each_node_s_distance_to_the_data_and_to_g0() {
    let mut v = backtracking();
    let spreads = [
        (0.03, 1.79),
        (0.26, 1.52),
        (0.76, 1.04),
        (1.26, 0.51),
        (1.58, 0.04),
    ];
    for (n, (to_data, to_start)) in v.nodes.iter_mut().zip(spreads) {
        n.spread = Some(NodeSpread {
            to_data,
            to_start,
            measure: "energy distance".into(),
        });
    }
    // Wide: status, steps and both distances, under their column names at
    // the panel's right edge.
    let screen = text(&render(&app(v.clone()), 130, 30));
    for row in [
        "  data    G⁰┐",
        "│✓ s'θ3  passed      250/250      1.26  0.51│",
        "│▶ s'θ2  TARGET      120/250      0.76  1.04│",
        "│● s'θ0  teacher       0/1250     0.03  1.79│",
    ] {
        assert!(screen.contains(row), "missing {row:?}:\n{screen}");
    }
    // At 80 columns the plan gives way; the status and the numbers stay.
    let screen = text(&render(&app(v), 80, 24));
    for row in [
        "  data    G⁰┐",
        "│✓ s'θ3  passed     250    1.26  0.51│",
        "│▶ s'θ2  TARGET     120    0.76  1.04│",
        "│● s'θ0  teacher      0    0.03  1.79│",
    ] {
        assert!(screen.contains(row), "missing {row:?}:\n{screen}");
    }
}

#[test]
fn each_stage_reads_right() {
    use NodeStatus::*;
    let pretrain = view(Stage::Pretrain, None, [Pending; 5]);
    let screen = text(&render(&app(pretrain), 80, 24));
    assert!(
        screen.contains("teacher pretraining") && screen.contains("Degradation path"),
        "{screen}"
    );
    assert!(screen.contains("· s'θ3  pending"));

    let record = view(
        Stage::Record,
        None,
        [Recorded, Recorded, Recording, Pending, Pending],
    );
    let screen = text(&render(&app(record), 80, 24));
    assert!(screen.contains("degradation recording"), "{screen}");
    assert!(screen.contains("◌ s'θ2  recording"));
    assert!(screen.contains("● s'θ1  recorded"));

    let done = view(Stage::Done, None, [Passed; 5]);
    let buf = render(&app(done), 80, 24);
    let screen = text(&buf);
    assert!(
        screen.contains("[DONE]") && !screen.contains("TARGET"),
        "{screen}"
    );

    let mut failed = app(backtracking());
    failed.on_update(Update::Failed("the generator loss is NaN".into()));
    let screen = text(&render(&failed, 80, 24));
    assert!(
        screen.contains("[FAILED]") && screen.contains("failed: the generator loss is NaN"),
        "{screen}"
    );
}

#[test]
fn paused_and_manual_are_flagged() {
    let mut a = app(backtracking());
    a.on_update(Update::Paused(true));
    let mut manual = backtracking();
    manual.policy = SchedulePolicy::Manual;
    a.on_update(Update::View {
        view: Box::new(manual),
        rate: 0.0,
    });
    let screen = text(&render(&a, 80, 24));
    assert!(
        screen.contains("[PAUSED]") && screen.contains("[MANUAL]"),
        "{screen}"
    );
    assert!(screen.contains("space resume"), "the footer offers resume");
    // Keys: '.' steps while paused, 'm' turns manual off again.
    assert_eq!(a.on_key(key('.')), vec![Command::Step]);
    assert_eq!(a.on_key(key('m')), vec![Command::SetManual(false)]);
    assert_eq!(a.on_key(key(' ')), vec![Command::Resume]);
}

#[test]
fn the_help_overlay_lists_every_key() {
    let mut a = app(backtracking());
    assert!(a.on_key(key('?')).is_empty());
    assert_eq!(a.mode, Mode::Help);
    let screen = text(&render(&a, 80, 24));
    for needle in [
        "Keys",
        "pause / resume",
        "one iteration while paused",
        "next target",
        "save the generator",
        "manual schedule",
        "quit",
    ] {
        assert!(screen.contains(needle), "missing {needle:?}:\n{screen}");
    }
    a.on_key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
    assert_eq!(a.mode, Mode::Normal);
}

#[test]
fn leaving_asks_detach_or_stop_while_training_runs() {
    let mut a = app(backtracking());
    assert!(a.on_key(key('q')).is_empty());
    let screen = text(&render(&a, 80, 24));
    assert!(
        screen.contains("Leave the lab?") && screen.contains("detach") && screen.contains("stop the run"),
        "{screen}"
    );
    assert!(a.on_key(key('x')).is_empty(), "any other key stays");
    assert_eq!((a.mode, a.exit), (Mode::Normal, None));
    // Stop: checkpoint, then end; the lab closes once training has.
    a.on_key(key('q'));
    assert_eq!(a.on_key(key('s')), vec![Command::Stop]);
    assert!(a.stopping && a.exit.is_none());
    // Detach (the default): nothing is sent, training goes on.
    let mut b = app(backtracking());
    b.on_key(key('q'));
    assert!(
        b.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE))
            .is_empty()
    );
    assert_eq!(b.exit, Some(Exit::Detach));
    let mut c = app(backtracking());
    assert!(c.on_key(key('d')).is_empty());
    assert_eq!(c.exit, Some(Exit::Detach));
    // Once done, q ends the run at once.
    use NodeStatus::*;
    let mut done = app(view(Stage::Done, None, [Passed; 5]));
    assert_eq!(done.on_key(key('q')), vec![Command::Quit]);
    assert_eq!(done.exit, Some(Exit::Quit));
}

#[test]
fn a_watching_lab_says_read_only_and_sends_nothing() {
    let mut a = app(backtracking());
    a.on_update(Update::Control(false));
    let screen = text(&render(&a, 100, 30));
    assert!(screen.contains("[READ-ONLY]"), "{screen}");
    assert!(a.on_key(key(' ')).is_empty());
    assert!(a.on_key(key('n')).is_empty());
    assert!(a.log.back().unwrap().text.contains("read-only"));
    // It can still leave; it is handed the steering when the other leaves.
    a.on_update(Update::Control(true));
    assert_eq!(a.on_key(key(' ')), vec![Command::Pause]);
}

#[test]
fn each_preview_view_draws() {
    let mut a = app(backtracking());
    assert_eq!(a.on_key(key('v')), vec![Command::SetPreview(Preview::Model)]);
    a.on_update(Update::Preview(PreviewData::Model {
        label: "target s'θ2".into(),
        samples: Shown::Points(ring_points(600, 3)),
    }));
    let buf = render(&a, 80, 24);
    assert!(
        text(&buf).contains("Heun samples of target s'θ2"),
        "{}",
        text(&buf)
    );
    assert!(braille_cells(&buf) > 50);

    assert_eq!(a.on_key(key('v')), vec![Command::SetPreview(Preview::ScoreField)]);
    let points = a.bounds.grid(25, 13);
    // The target points inward, s_φ to the right.
    let target: Vec<Point> = points.iter().map(|p| [-p[0], -p[1]]).collect();
    let fake = vec![[1.0, 0.0]; points.len()];
    a.on_update(Update::Preview(PreviewData::ScoreField(ScoreField {
        sigma: 0.355,
        points,
        columns: 25,
        target_label: "target s'θ2".into(),
        target,
        fake,
    })));
    let screen = text(&render(&a, 100, 30));
    assert!(screen.contains("score fields at σ = 0.355"), "{screen}");
    assert!(screen.contains("fake score s_φ") && screen.contains("target s'θ2"));
    for arrow in ['↗', '↙', '→'] {
        assert!(screen.contains(arrow), "missing {arrow}:\n{screen}");
    }
    assert_eq!(a.on_key(key(']')), vec![Command::SetFieldSigma(0.71)]);
    assert_eq!(a.on_key(key('v')), vec![Command::SetPreview(Preview::Generator)]);
}

#[test]
fn without_colour_data_and_samples_still_differ() {
    let mut a = app(backtracking());
    a.theme = Theme { color: false };
    // Samples only on the left half: the right half shows the data as dots.
    a.on_update(Update::Preview(PreviewData::Generator(Shown::Points(
        ring_points(1500, 2).into_iter().filter(|p| p[0] < 0.0).collect(),
    ))));
    let buf = render(&a, 80, 24);
    let screen = text(&buf);
    assert!(screen.contains('·') && braille_cells(&buf) > 20, "{screen}");
    // No cell carries a colour.
    let coloured = buf
        .content()
        .iter()
        .filter(|c| c.fg != ratatui::style::Color::Reset)
        .count();
    assert_eq!(coloured, 0);
}

#[test]
fn a_larger_terminal_gets_more_room() {
    let buf = render(&app(backtracking()), 160, 48);
    let screen = text(&buf);
    assert!(
        screen.contains("runs/gmm2d-test"),
        "the run directory fits:\n{screen}"
    );
    assert!(braille_cells(&buf) > braille_cells(&render(&app(backtracking()), 80, 24)));
}

#[test]
fn tiny_terminals_get_a_note_and_larger_ones_the_panels() {
    let mut a = app(backtracking());
    for (w, h) in [(20, 5), (39, 23), (80, 11)] {
        let screen = text(&render(&a, w, h));
        assert!(screen.contains("enlarge"), "{w}×{h}:\n{screen}");
        assert!(!screen.contains("Backtracking path"), "{w}×{h}:\n{screen}");
    }
    render(&a, 1, 1); // no room even for the note: nothing to assert but no panic
    for (w, h) in [(40, 12), (79, 23), (300, 100)] {
        let screen = text(&render(&a, w, h));
        assert!(!screen.contains("enlarge"), "{w}×{h}:\n{screen}");
        assert!(braille_cells(&render(&a, w, h)) > 0, "{w}×{h}: the preview");
    }
    a.on_key(key('?'));
    assert!(text(&render(&a, 30, 8)).contains("enlarge"));
    assert!(text(&render(&a, 80, 24)).contains("pause / resume training"));
    a.on_key(key('?'));
    a.on_key(key('v'));
    a.on_key(key('v'));
    let points = a.bounds.grid(25, 13);
    let vectors = vec![[0.0, 1.0]; points.len()];
    a.on_update(Update::Preview(PreviewData::ScoreField(ScoreField {
        sigma: 0.3,
        columns: 25,
        target_label: "teacher".into(),
        target: vectors.clone(),
        fake: vectors,
        points,
    })));
    // The field's arrows (all pointing up) draw at full size.
    let screen = text(&render(&a, 80, 24));
    assert!(screen.contains('↑'), "{screen}");
}

#[test]
fn the_loss_sparklines_restart_with_each_stage() {
    let mut a = App::new(Theme { color: false });
    let record = |stage, teacher: Option<f64>, g: Option<f64>| MetricsRecord {
        stage,
        step: 1,
        cost: 0,
        passes: None,
        target_node: None,
        loss_g: g,
        loss_fake: Some(0.5),
        loss_teacher: teacher,
        gap: None,
        eval: None,
    };
    for _ in 0..5 {
        a.on_update(Update::Session(Event::Logged(Box::new(record(
            Stage::Pretrain,
            Some(0.9),
            None,
        )))));
    }
    assert_eq!(a.main_loss.latest(), Some(0.9));
    a.on_update(Update::Session(Event::Logged(Box::new(record(
        Stage::Backtrack,
        None,
        Some(0.2),
    )))));
    assert_eq!(
        a.main_loss.tail(10).collect::<Vec<_>>(),
        vec![0.2],
        "teacher losses are gone"
    );
    assert_eq!(a.fake_loss.tail(10).count(), 1);
}

/// The lab on labelled 8 × 8 images: classes "0"–"9", and a generator
/// preview of one image per value, each all of that grey.
fn image_app(values: &[u8], theme: Theme) -> App {
    let mut a = App::new(theme);
    a.palette = if theme.color {
        Palette::TrueColour
    } else {
        Palette::Ramp
    };
    let mut v = backtracking();
    v.data = "UCI digits (1797 images), 1×8×8".into();
    a.on_update(Update::Started {
        view: Box::new(v),
        data: DataInfo::Images {
            classes: Some((0..10).map(|k| k.to_string()).collect()),
        },
    });
    let pixels = values.iter().flat_map(|&v| std::iter::repeat_n(v, 64)).collect();
    let images = PixelImages {
        channels: 1,
        height: 8,
        width: 8,
        pixels,
    };
    a.on_update(Update::Preview(PreviewData::Generator(Shown::Images(images))));
    a
}

/// Image pixels of grey `v` on the screen: half-block halves of it.
fn grey_pixels(buf: &Buffer, v: u8) -> usize {
    let grey = Color::Rgb(v, v, v);
    let halves = |c: &ratatui::buffer::Cell| (c.fg == grey) as usize + (c.bg == grey) as usize;
    buf.content().iter().map(halves).sum()
}

/// Twelve greys, none the frame's (110) or the background's (24).
fn twelve_greys() -> Vec<u8> {
    (0..12).map(|i| 20 * i as u8 + (i >= 6) as u8).collect()
}

#[test]
fn image_previews_are_grids_of_half_blocks_in_their_colours() {
    let greys = twelve_greys();
    let a = image_app(&greys, Theme { color: true });
    let buf = render(&a, 100, 40);
    let screen = text(&buf);
    assert!(
        screen.contains("Preview 1/3: generator (fixed latents)"),
        "{screen}"
    );
    // Each image shows whole, at one scale s: 64 s² pixels of its grey.
    let pixels: Vec<usize> = greys.iter().map(|&v| grey_pixels(&buf, v)).collect();
    let s = (1..8)
        .find(|s| 64 * s * s == pixels[1])
        .unwrap_or_else(|| panic!("{pixels:?}"));
    assert!(pixels[1..].iter().all(|&c| c == pixels[1]), "{pixels:?}");
    // The panel's inner area fits 12 of them at this scale and no larger
    // one shows 12: that is the composer's rule, checked on the screen.
    let (x, y) = find(&buf, "Preview 1/3").unwrap();
    let area = Rect::new(x, y + 1, 100 - x - 1, 40 - 2 - 10 - 1 - 8 - 2);
    let fit = Tiling::fit(12, (8, 8), (area.width as u32, 2 * area.height as u32)).unwrap();
    assert_eq!(
        (fit.scale as usize, fit.shown(12)),
        (s, 12),
        "{fit:?} in {area:?}"
    );
    // The first image is black, which nothing else on screen is.
    assert_eq!(grey_pixels(&buf, 0), 64 * s * s);
}

#[test]
fn the_class_coverage_chart_shows_the_given_shares() {
    let mut a = image_app(&[0, 50, 100, 150], Theme { color: true });
    let shares = vec![1.0, 0.0, 0.5, 1.2, 1.0, 1.0, 0.9, 1.1, 1.0, 1.3];
    let mut v = a.view.clone().unwrap();
    v.latest_eval = Some(Evaluation {
        energy: 0.1,
        sliced_w: 0.1,
        modes: None,
        classes: Some(ClassStats {
            shares: shares.clone(),
            coverage: 0.9,
            max_share_error: 1.0,
        }),
        classifier_fd: Some(12.5),
        pixel_fd: Some(0.8),
        mismatch_target: vec![],
        mismatch_teacher: vec![],
        mismatch_data: vec![],
    });
    a.on_update(Update::View {
        view: Box::new(v),
        rate: 3.0,
    });
    let buf = render(&a, 100, 40);
    let screen = text(&buf);
    assert!(screen.contains("Classes: 90% covered · worst ±100%"), "{screen}");
    // The bars' values, in class order along one row, and the labels below.
    let (_, values_row) = find(&buf, "130").expect("the 1.3 share's value");
    let values = screen.lines().nth(values_row as usize).unwrap();
    let order: Vec<usize> = ["100", "50", "120", "90", "110", "130"]
        .iter()
        .map(|v| values.find(v).unwrap_or_else(|| panic!("{v} in {values:?}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{values}");
    let labels = screen.lines().nth(values_row as usize + 1).unwrap();
    let at: Vec<usize> = (0..10)
        .map(|k| {
            labels
                .find(&format!(" {k} "))
                .unwrap_or_else(|| panic!("{k}: {labels}"))
        })
        .collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{labels}");
    // The dropped class is an empty column; the half-share one is flagged.
    let column = labels.find(" 1 ").unwrap() + 1;
    let column = labels[..column].chars().count() as u16;
    for row in values_row - 3..=values_row {
        assert_eq!(
            buf[(column, row)].symbol(),
            " ",
            "class 1's bar is empty:\n{screen}"
        );
    }
    let at = |v: &str| values[..values.find(v).unwrap()].chars().count() as u16;
    assert_eq!(
        buf[(at("50"), values_row)].fg,
        Color::Yellow,
        "a half share is a warning"
    );
    assert_eq!(buf[(at("90"), values_row)].fg, Color::Green);
}

#[test]
fn without_colour_images_use_the_character_ramp() {
    let a = image_app(&[255, 200, 150, 100, 50, 0], Theme { color: false });
    let buf = render(&a, 100, 40);
    let screen = text(&buf);
    // In even brightness bins.
    for run in [
        "@@@@@@@@@@@@@@@@",
        "################",
        "++++++++++++++++",
        "----------------",
        "................",
    ] {
        assert!(screen.contains(run), "{run}\n{screen}");
    }
    assert!(!screen.contains('▀'), "no half-blocks without colour");
    assert!(
        buf.content()
            .iter()
            .all(|c| c.fg == Color::Reset && c.bg == Color::Reset),
        "no colour anywhere"
    );
}

#[test]
fn v_cycles_image_views_and_nodes_open_by_number_or_cursor() {
    let mut a = image_app(&[0, 50, 100, 150], Theme { color: true });
    assert_eq!(a.on_key(key('v')), vec![Command::SetPreview(Preview::Model)]);
    assert_eq!(a.on_key(key('v')), vec![Command::SetPreview(Preview::Data)]);
    assert_eq!(a.on_key(key('v')), vec![Command::SetPreview(Preview::Generator)]);
    // Node 1 is recorded; node 7 does not exist.
    assert_eq!(a.on_key(key('1')), vec![Command::SetPreview(Preview::Node(1))]);
    let screen = text(&render(&a, 100, 40));
    assert!(screen.contains("Preview: … node s'θ1, Heun"), "{screen}");
    assert!(a.on_key(key('7')).is_empty());
    assert!(a.log.back().unwrap().text.contains("no node s'θ7"));
    // The cursor appears on the target (2), then moves; enter opens it.
    a.node_cursor = None;
    let arrow = |code| KeyEvent::new(code, KeyModifiers::NONE);
    assert!(a.on_key(arrow(KeyCode::Down)).is_empty());
    assert_eq!(a.node_cursor, Some(2));
    a.on_key(arrow(KeyCode::Down));
    a.on_key(arrow(KeyCode::Up));
    a.on_key(arrow(KeyCode::Up));
    assert_eq!(a.node_cursor, Some(3));
    assert_eq!(
        a.on_key(arrow(KeyCode::Enter)),
        vec![Command::SetPreview(Preview::Node(3))]
    );
    // Esc goes back to the generator; so does v.
    assert_eq!(
        a.on_key(arrow(KeyCode::Esc)),
        vec![Command::SetPreview(Preview::Generator)]
    );
}

/// `disback bench`'s lab, fed by a thread that plays a run: the error it
/// ends with and what it sends back.
fn bench_lab_against(script: Vec<(u64, Update)>) -> (String, Vec<Command>) {
    let (measured, sent) = bench_lab_rate(script, std::time::Duration::from_secs(60));
    let error = format!("{:#}", measured.expect_err("the played run never reaches a rate"));
    (error, sent)
}

/// The rate the bench's lab measures over `time` of a played run.
fn bench_lab_rate(
    script: Vec<(u64, Update)>,
    time: std::time::Duration,
) -> (anyhow::Result<f64>, Vec<Command>) {
    use disback::engine::protocol::Link;
    let (commands, sent) = std::sync::mpsc::channel();
    let (updates, received) = tokio::sync::mpsc::unbounded_channel();
    let player = std::thread::spawn(move || {
        for (pause_ms, update) in script {
            std::thread::sleep(std::time::Duration::from_millis(pause_ms));
            let _ = updates.send(update);
        }
        // Keep the link open a moment: the lab must see the last update.
        std::thread::sleep(std::time::Duration::from_millis(300));
    });
    let link = Link {
        commands,
        updates: received,
        carrier: None,
    };
    let measured = disback::ui::backtracking_rate_with_lab(link, time);
    player.join().unwrap();
    (measured, sent.try_iter().collect())
}

#[test]
fn the_bench_lab_measures_a_run_slower_than_its_window() {
    // One backtracking iteration every 700 ms, measured over 1 s: the old
    // window ended at 1 s with one iteration seen and said 1.0 it/s (and 0
    // for a run slower than the window).
    let mut script = vec![(0, at(Stage::Backtrack, 11))];
    script.extend((12..=16).map(|i| (700, at(Stage::Backtrack, i))));
    let (measured, sent) = bench_lab_rate(script, std::time::Duration::from_secs(1));
    let rate = measured.expect("the run moved");
    assert!((rate - 1.0 / 0.7).abs() < 0.15, "{rate} it/s, not ~1.43");
    assert_eq!(sent, vec![Command::Quit]);
}

fn at(stage: Stage, iteration: usize) -> Update {
    let mut v = backtracking();
    (v.stage, v.iteration) = (stage, iteration);
    Update::View {
        view: Box::new(v),
        rate: 0.0,
    }
}

#[test]
fn the_bench_lab_skips_each_stage_once_and_ends_when_training_stops() {
    let script = vec![
        (0, at(Stage::Pretrain, 1)),
        (200, at(Stage::Pretrain, 2)),
        (200, at(Stage::Pretrain, 3)),
        (200, at(Stage::Record, 4)),
        (200, at(Stage::Record, 5)),
        (200, Update::Stopped),
    ];
    let (error, sent) = bench_lab_against(script);
    // A skip per frame would have sent about a dozen.
    assert_eq!(sent, vec![Command::Skip, Command::Skip]);
    assert!(
        error.contains("training stopped before the measurement ended"),
        "{error}"
    );
}

#[test]
fn the_bench_lab_reports_a_failed_run_and_a_closed_link() {
    let failed = vec![
        (0, at(Stage::Pretrain, 1)),
        (100, Update::Failed("loss is NaN".into())),
    ];
    let (error, _) = bench_lab_against(failed);
    assert!(
        error.contains("training failed during the bench: loss is NaN"),
        "{error}"
    );
    let (error, sent) = bench_lab_against(Vec::new());
    assert!(error.contains("closed its link"), "{error}");
    assert!(sent.is_empty());
}
