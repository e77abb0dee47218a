//! The binary: bad input gives a clear error and a non-zero exit, and
//! loses nothing.

mod common;

use common::{disback, stderr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Writes the tiny config (with its teacher cache in `dir`) as a file.
fn tiny_file(dir: &Path, extra: &str) -> PathBuf {
    let config = common::tiny_config(&dir.join("teachers"));
    let path = dir.join("tiny.toml");
    std::fs::write(&path, format!("{}\n{extra}", config.to_toml().unwrap())).unwrap();
    path
}

fn expect_failure(o: &Output, needles: &[&str]) {
    assert!(!o.status.success(), "should fail; stderr: {}", stderr(o));
    let e = stderr(o);
    for n in needles {
        assert!(e.contains(n), "stderr should mention {n:?}: {e}");
    }
}

#[test]
fn bad_configs_are_refused_with_the_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("unknown.toml"), "[teacher]\nstepz = 10\n").unwrap();
    expect_failure(
        &disback(&["run", "--config", "unknown.toml"], d),
        &["unknown.toml", "stepz"],
    );

    std::fs::write(d.join("bad.toml"), "[generator]\nlr = -0.5\n").unwrap();
    expect_failure(
        &disback(&["run", "--config", "bad.toml"], d),
        &["bad.toml", "generator.lr", "-0.5"],
    );

    expect_failure(
        &disback(&["run", "--config", "missing.toml"], d),
        &["missing.toml"],
    );
    expect_failure(
        &disback(&["run", "--config", "bad.toml", "--set", "nonsense"], d),
        &["section.key=value"],
    );

    std::fs::write(d.join("manual.toml"), "[schedule]\npolicy = \"manual\"\n").unwrap();
    expect_failure(
        &disback(&["run", "--config", "manual.toml"], d),
        &["manual", "terminal lab"],
    );
    // Nothing was written for any of them.
    assert!(!d.join("runs").exists());
}

#[test]
fn bad_teacher_files_are_refused_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = tiny_file(d, "");
    let o = disback(&["run", "--config", good.to_str().unwrap(), "--out", "first"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let teacher = d.join("first/teacher.safetensors");

    let bytes = std::fs::read(&teacher).unwrap();
    std::fs::write(d.join("cut.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
    let o = disback(
        &[
            "run",
            "--config",
            good.to_str().unwrap(),
            "--set",
            "teacher.file=\"cut.safetensors\"",
            "--out",
            "cut",
        ],
        d,
    );
    expect_failure(&o, &["cut.safetensors", "truncated"]);

    // A teacher of another width: refused by name, not by a shape panic.
    let o = disback(
        &[
            "run",
            "--config",
            good.to_str().unwrap(),
            "--set",
            "teacher.file=\"first/teacher.safetensors\"",
            "--set",
            "score_net.width=48",
            "--out",
            "wide",
        ],
        d,
    );
    expect_failure(&o, &["first/teacher.safetensors", "width"]);

    let o = disback(
        &[
            "run",
            "--config",
            good.to_str().unwrap(),
            "--set",
            "teacher.file=\"none.safetensors\"",
            "--out",
            "none",
        ],
        d,
    );
    expect_failure(&o, &["none.safetensors"]);
}

#[test]
fn a_run_directory_is_not_overwritten_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_file(d, "");
    let c = config.to_str().unwrap();
    assert!(disback(&["run", "--config", c, "--out", "r"], d).status.success());
    let before = std::fs::read(d.join("r/metrics.jsonl")).unwrap();
    expect_failure(
        &disback(&["run", "--config", c, "--out", "r", "--set", "seed=9"], d),
        &["already exists", "--force"],
    );
    assert_eq!(
        std::fs::read(d.join("r/metrics.jsonl")).unwrap(),
        before,
        "the first run is untouched"
    );
    let o = disback(
        &["run", "--config", c, "--out", "r", "--force", "--set", "seed=9"],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_ne!(std::fs::read(d.join("r/metrics.jsonl")).unwrap(), before);
}

#[test]
fn more_threads_than_cpus_are_cut_to_the_cpus_with_a_note() {
    // 100,000 threads failed to start (the process aborted); now the run
    // goes on the machine's CPUs and says so.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_file(d, "");
    let o = disback(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--out",
            "r",
            "--set",
            "threads=100000",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("note: threads = 100000, but this machine has"),
        "{}",
        stderr(&o)
    );
    assert!(d.join("r/generator/final.safetensors").exists());
}

#[test]
fn a_run_leaves_its_files_and_its_generator_samples() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_file(d, "");
    let o = disback(&["run", "--config", config.to_str().unwrap()], d);
    assert!(o.status.success(), "{}", stderr(&o));
    // The default run directory: runs/<name>-<time stamp>.
    let runs: Vec<PathBuf> = std::fs::read_dir(d.join("runs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let run = runs
        .iter()
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("tiny-"))
        .expect("a tiny-<stamp> run");
    for file in [
        "config.toml",
        "metrics.jsonl",
        "teacher.safetensors",
        "samples.csv",
        "generator/final.safetensors",
        "path/nodes.json",
    ] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
    for i in 0..=4 {
        assert!(
            run.join(format!("path/node-{i}.safetensors")).is_file(),
            "missing node {i}"
        );
    }
    let samples = std::fs::read_to_string(run.join("samples.csv")).unwrap();
    assert!(samples.starts_with("x,y\n"));
    assert_eq!(samples.lines().count(), 501);
    // Every metrics line has the required fields.
    for line in std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["stage", "step", "target_node", "loss_g", "loss_fake"] {
            assert!(v.get(key).is_some(), "{key} missing in {line}");
        }
    }
    // The resolved config spells out the mixture and σ_data.
    let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        resolved.contains("[[data.components]]") && resolved.contains("sigma_data"),
        "{resolved}"
    );

    // `disback sample` draws from the saved generator.
    let o = disback(
        &[
            "sample",
            "--generator",
            run.join("generator/final.safetensors").to_str().unwrap(),
            "--config",
            run.join("config.toml").to_str().unwrap(),
            "--n",
            "300",
            "--out",
            "s.csv",
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(d.join("s.csv")).unwrap().lines().count(),
        301
    );
    // A score-net file is no generator.
    let o = disback(
        &[
            "sample",
            "--generator",
            run.join("teacher.safetensors").to_str().unwrap(),
            "--config",
            run.join("config.toml").to_str().unwrap(),
            "--out",
            "t.csv",
        ],
        d,
    );
    expect_failure(&o, &["teacher.safetensors", "score-net"]);
}

#[test]
fn resume_needs_a_run_directory() {
    let dir = tempfile::tempdir().unwrap();
    expect_failure(
        &disback(&["run", "--resume", "nowhere"], dir.path()),
        &["nowhere", "not a run directory"],
    );
}

#[test]
fn sigterm_checkpoints_and_resume_finishes_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_file(d, "");
    let c = config.to_str().unwrap();
    let budget = "schedule.steps=[20, 20, 20, 3000]";
    assert!(
        disback(&["run", "--config", c, "--set", budget, "--out", "whole"], d)
            .status
            .success()
    );

    let child = Command::new(env!("CARGO_BIN_EXE_disback"))
        .args(["run", "--config", c, "--set", budget, "--out", "cut"])
        .current_dir(d)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stop it once backtracking has begun.
    let metrics = d.join("cut/metrics.jsonl");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !std::fs::read_to_string(&metrics)
        .unwrap_or_default()
        .contains("\"backtrack\"")
    {
        assert!(std::time::Instant::now() < deadline, "never reached backtracking");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    // 128 + SIGTERM: a script can tell a stop from a finish.
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("continue with: disback run --resume"),
        "{}",
        stderr(&out)
    );
    assert!(!d.join("cut/samples.csv").exists(), "stopped before the end");

    let o = disback(&["run", "--resume", "cut"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("resuming cut at iteration"));
    // (The first run trained the teacher, the second found it cached: compare
    // what came after.)
    let read = |run: &str| -> Vec<String> {
        let text = std::fs::read_to_string(d.join(run).join("metrics.jsonl")).unwrap();
        text.lines()
            .filter(|l| !l.contains("\"pretrain\""))
            .map(String::from)
            .collect()
    };
    let (cut, whole) = (read("cut"), read("whole"));
    assert_eq!(cut.len(), whole.len());
    if let Some(i) = (0..cut.len()).find(|&i| cut[i] != whole[i]) {
        panic!("line {i} differs:\n{}\n{}", cut[i], whole[i]);
    }
    assert_eq!(
        std::fs::read(d.join("cut/samples.csv")).unwrap(),
        std::fs::read(d.join("whole/samples.csv")).unwrap()
    );
}

#[test]
fn resume_refuses_a_config_or_overrides_it_would_ignore() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = disback(&["run", "--resume", "somewhere", "--config", "x.toml"], d);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
    // Only the ranks it continues on may change (tests/parallel.rs).
    let o = disback(&["run", "--resume", "somewhere", "--set", "seed=2"], d);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("--set seed=2: a resumed run keeps the config it started with"),
        "{e}"
    );
}

#[test]
fn compare_refuses_zero_seeds_and_an_occupied_folder_without_a_wrong_hint() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = disback(&["compare", "--seeds", "0"], d);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--seeds"), "{}", stderr(&o));
    std::fs::create_dir(d.join("cmp")).unwrap();
    std::fs::write(d.join("cmp/keep.txt"), "mine").unwrap();
    let o = disback(&["compare", "--out", "cmp"], d);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("already exists") && e.contains("--force"), "{e}");
    assert!(!e.contains("--resume"), "compare cannot be resumed: {e}");
    assert_eq!(std::fs::read_to_string(d.join("cmp/keep.txt")).unwrap(), "mine");
}

#[test]
fn plot_on_an_empty_log_keeps_the_plots_there() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_file(d, "");
    let o = disback(&["run", "--config", config.to_str().unwrap(), "--out", "r"], d);
    assert!(o.status.success(), "{}", stderr(&o));
    let plot = d.join("r/plots/convergence.png");
    let before = std::fs::read(&plot).unwrap();
    std::fs::write(d.join("r/metrics.jsonl"), "").unwrap();
    let o = disback(&["plot", "r"], d);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("no records"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&plot).unwrap(), before);
}

#[test]
fn the_lab_without_a_terminal_says_so_and_writes_no_escape_codes() {
    let dir = tempfile::tempdir().unwrap();
    let o = disback(&["tui", "--out", "r"], dir.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(o.stdout.is_empty(), "escape codes on a pipe: {:?}", o.stdout);
    assert!(stderr(&o).contains("needs a terminal") && stderr(&o).contains("disback run"));
    assert!(!dir.path().join("r").exists());
}

#[test]
fn show_prints_pictures_of_a_file_a_run_and_a_comparison_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let at = |p: &str| dir.path().join(p);
    let png = |path: &std::path::Path, w: u32, h: u32| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 90]))
            .save(path)
            .unwrap();
    };
    // Pictures come out as coloured blocks (no terminal: no graphics), in
    // order, each under its file name.
    png(&at("one.png"), 8, 6);
    let o = disback(&["show", "one.png", "--width", "8"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("one.png\n") && out.contains('▄'), "{out:?}");
    // A run: its newest sample grid, then its plots by name.
    png(&at("run/samples/initial.png"), 4, 4);
    std::thread::sleep(std::time::Duration::from_millis(20));
    png(&at("run/samples/at-node-2.png"), 4, 4);
    png(&at("run/plots/b.png"), 4, 4);
    png(&at("run/plots/a.png"), 4, 4);
    std::fs::write(at("run/plots/a.svg"), "<svg/>").unwrap();
    let o = disback(&["show", "run", "--width", "4"], dir.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let names: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.ends_with(".png"))
        .map(String::from)
        .collect();
    assert_eq!(
        names,
        ["run/samples/at-node-2.png", "run/plots/a.png", "run/plots/b.png"]
    );
    // A comparison: its plots only.
    png(&at("cmp/plots/distance.png"), 4, 4);
    std::fs::write(at("cmp/compare.json"), "{}").unwrap();
    let o = disback(&["show", "cmp"], dir.path());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("cmp/plots/distance.png"));
    // Missing, not an image, nothing to show: clear errors.
    let o = disback(&["show", "nothing.png"], dir.path());
    assert!(
        !o.status.success() && stderr(&o).contains("nothing.png does not exist"),
        "{}",
        stderr(&o)
    );
    std::fs::write(at("text.png"), "not a picture").unwrap();
    let o = disback(&["show", "text.png"], dir.path());
    assert!(
        stderr(&o).contains("text.png is not an image that can be read"),
        "{}",
        stderr(&o)
    );
    std::fs::create_dir(at("empty")).unwrap();
    let o = disback(&["show", "empty"], dir.path());
    assert!(stderr(&o).contains("empty holds no pictures"), "{}", stderr(&o));
}

/// `bench --against-torch` without PyTorch still times disback over the
/// grid, says PyTorch was not measured and why, and the distillation
/// iteration's copies per step are those of the path it ran; an image
/// config is refused with the reason.
#[test]
fn bench_against_torch_without_pytorch_prints_disback_alone() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_file(dir.path(), "");
    let o = Command::new(env!("CARGO_BIN_EXE_disback"))
        .args(["bench", "--against-torch", "--config"])
        .arg(&config)
        .args([
            "--seconds",
            "0.2",
            "--threads",
            "1",
            "--batches",
            "32,64",
            "--widths",
            "16",
        ])
        .env("PYTHON", dir.path().join("no-python-here"))
        .current_dir(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.contains("PyTorch was not measured"), "{out}");
    assert!(out.contains("no-python-here could not be started"), "{out}");
    // One row per cell: batch, width, threads, then disback's numbers.
    for batch in ["32", "64"] {
        let row = out
            .lines()
            .find(|l| l.split_whitespace().take(3).eq([batch, "16", "1"]))
            .unwrap_or_else(|| panic!("no row for batch {batch}: {out}"));
        // disback's numbers alone: no "ours / theirs = ratio" pairs.
        assert!(!row.contains(" / ") && !row.contains('×'), "{row}");
    }
    let images = dir.path().join("digits.toml");
    std::fs::write(&images, "[data]\nkind = \"digits\"\n").unwrap();
    let o = disback(
        &["bench", "--against-torch", "--config", images.to_str().unwrap()],
        dir.path(),
    );
    expect_failure(&o, &["2-D ResNet-MLP", "torch_mirror.py --net unet"]);
}

#[test]
fn a_mixture_in_48_dimensions_trains_and_measures_finite_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_file(d, "");
    let run = d.join("run48");
    let o = disback(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--set",
            "data.dim=48",
            "--set",
            "data.off_plane_std=0.03",
            "--out",
            run.to_str().unwrap(),
        ],
        d,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Every coordinate of every sample: 48 columns under x0 … x47.
    let samples = std::fs::read_to_string(run.join("samples.csv")).unwrap();
    let header: Vec<&str> = samples.lines().next().unwrap().split(',').collect();
    assert_eq!((header[0], header[47], header.len()), ("x0", "x47", 48));
    assert_eq!(samples.lines().count(), 501);
    assert!(samples.lines().skip(1).all(|l| l.split(',').count() == 48));
    // The resolved config keeps the embedding.
    let resolved = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        resolved.contains("dim = 48") && resolved.contains("off_plane_std = 0.03"),
        "{resolved}"
    );
    // It trained, measured, and every number measured is finite.
    let mut evals = 0;
    for line in std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let Some(eval) = v.get("eval").filter(|e| !e.is_null()) else {
            continue;
        };
        evals += 1;
        let mut numbers = Vec::new();
        collect_numbers(eval, &mut numbers);
        assert!(numbers.len() > 10, "{eval}");
        assert!(numbers.iter().all(|x| x.is_finite()), "{eval}");
        let modes = &eval["modes"];
        assert_eq!(modes["shares"].as_array().unwrap().len(), 4, "{eval}");
    }
    assert!(evals >= 2, "measured {evals} times");
    // The figures show the plane: the snapshots were drawn.
    let plots: Vec<String> = run
        .join("plots")
        .read_dir()
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(plots.iter().any(|p| p.starts_with("snapshots")), "{plots:?}");

    // Image data has no `dim`: refused, naming the field.
    let o = disback(
        &[
            "run",
            "--config",
            config.to_str().unwrap(),
            "--set",
            "data.kind=\"digits\"",
            "--set",
            "data.dim=5",
        ],
        d,
    );
    expect_failure(&o, &["dim"]);
}

fn collect_numbers(v: &serde_json::Value, out: &mut Vec<f64>) {
    match v {
        serde_json::Value::Number(n) => out.push(n.as_f64().unwrap()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| collect_numbers(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| collect_numbers(v, out)),
        // A non-finite number is written as null.
        serde_json::Value::Null => out.push(f64::NAN),
        _ => {}
    }
}
