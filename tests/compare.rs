//! `disback compare` and `disback plot` on a tiny budget: the table, the
//! JSON, and figures that decode to images of the stated size.

mod common;

use std::path::Path;
use std::process::Command;

fn png_size(path: &Path) -> (u32, u32) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap();
    let info = reader.info();
    (info.width, info.height)
}

fn disback(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_disback"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

#[test]
fn compare_prints_the_table_and_writes_json_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // From a random generator, fast and measured without its average, so
    // that 60 updates have somewhere to go: the teacher-initialised G⁰
    // already sits near the data, the default average (0.99) barely moves
    // in 60 updates, and a comparison where no arm ends better than G⁰ has
    // no level to reach.
    let mut config = common::tiny_config(&d.join("teachers"));
    config.generator.init = disback::config::GeneratorInit::Random;
    config.generator.lr = 3e-3;
    config.distill.generator_ema = 0.0;
    std::fs::write(d.join("tiny.toml"), config.to_toml().unwrap()).unwrap();

    let o = disback(
        &["compare", "--config", "tiny.toml", "--seeds", "2", "--out", "cmp"],
        d,
    );
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    // How the 6 runs share the machine: at most one per core.
    let cores = std::thread::available_parallelism().unwrap().get();
    let spread = format!(
        "running 6 runs into {}",
        d.join("cmp").canonicalize().unwrap().display()
    );
    assert!(
        stderr.contains(&format!(
            "{spread}: {} at a time on the CPU, 1 thread each",
            cores.min(6)
        )),
        "{stderr}"
    );
    // The headline comes first: the 80% level, in network passes with
    // stage 1 counted.
    assert!(
        stdout
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("headline: the 80% level, network passes, stage 1 counted"),
        "{stdout}"
    );
    for needle in [
        "DisBack",
        "Diff-Instruct",
        "Diff-Instruct, fitted s_φ",
        "levels of energy distance: 50% ",
        "Diff-Instruct's final",
        "energy distance",
        "mode coverage",
        "cost to each level",
        "80% (passes)",
        "80% (seconds)",
        "stage 1 (passes)",
        "speed-up of DisBack",
        "80%, network passes, without stage 1",
        "headline per seed against Diff-Instruct: 3:",
        "seeds 3, 4",
        "stage 1 is 20 iterations",
        "judged good (seeds)",
        "judged by the demo's bar (every mode ≥ 0.5 of its weight, precision ≥ 0.7, energy ≤ 0.02)",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?}:\n{stdout}");
    }
    // The tiny teacher (60 steps) is itself far from the data: the table
    // says so, beside the arms' judge, with what fell short.
    assert!(
        stdout.contains("the teacher's own samples fail: ") && stdout.contains("energy distance 0."),
        "{stdout}"
    );

    let text = std::fs::read_to_string(d.join("cmp/compare.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(
        text.find("\"headline\"").unwrap() < text.find("\"format\"").unwrap(),
        "the headline is written first"
    );
    assert_eq!(json["seeds"], serde_json::json!([3, 4]));
    assert_eq!(json["runs"].as_array().unwrap().len(), 6);
    assert_eq!(json["arms"].as_array().unwrap().len(), 3);
    assert_eq!(json["levels"].as_array().unwrap().len(), 4);
    let start = json["start"].as_f64().unwrap();
    let level_80 = json["levels"][1]["value"].as_f64().expect("an 80% level");
    assert!(
        level_80 < start,
        "the 80% level {level_80} is not below G⁰'s {start}"
    );
    // Two baselines × four levels × three units.
    assert_eq!(json["speedups"].as_array().unwrap().len(), 24);
    assert_eq!(json["generator_updates"], 60);
    assert!(
        json["teacher"]["energy"].as_f64().unwrap() > 0.02,
        "{}",
        json["teacher"]
    );
    // Every run was measured in passes and seconds; DisBack's and the
    // fitted baseline's stage 1 cost passes, the plain baseline's none.
    for run in json["runs"].as_array().unwrap() {
        let first = &run["curve"][0];
        assert!(first["seconds"].as_f64().is_some(), "{run}");
        let stage1 = run["stage1"]["passes"].as_f64().unwrap();
        match run["arm"].as_str().unwrap() {
            "diff-instruct" => assert_eq!(stage1, 0.0),
            _ => assert!(stage1 > 0.0, "{run}"),
        }
    }
    // The same teacher for every run.
    for run in [
        "disback-seed3",
        "disback-seed4",
        "diff-instruct-seed3",
        "diff-instruct-seed4",
        "diff-instruct-fit-seed3",
    ] {
        let text = std::fs::read_to_string(d.join("cmp").join(run).join("config.toml")).unwrap();
        assert!(text.contains("cmp/teacher/teacher.safetensors"), "{run}: {text}");
    }
    let base = std::fs::read_to_string(d.join("cmp/diff-instruct-seed3/config.toml")).unwrap();
    assert!(
        base.contains("method = \"diff-instruct\"")
            && base.contains("steps = [60]")
            && base.contains("baseline_fake_init = \"teacher\""),
        "{base}"
    );
    let fit = std::fs::read_to_string(d.join("cmp/diff-instruct-fit-seed3/config.toml")).unwrap();
    assert!(
        fit.contains("baseline_fake_init = \"fit\"") && fit.contains("steps = [60]"),
        "{fit}"
    );

    for name in ["compare-convergence", "compare-mismatch"] {
        assert_eq!(
            png_size(&d.join(format!("cmp/plots/{name}.png"))),
            (900, 600),
            "{name}"
        );
        let svg = std::fs::read_to_string(d.join(format!("cmp/plots/{name}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("DisBack"), "{name}.svg");
    }
    // Each run drew its own figures.
    let run = d.join("cmp/disback-seed3/plots");
    for name in ["convergence", "mismatch-over-training", "mismatch-vs-sigma"] {
        assert_eq!(png_size(&run.join(format!("{name}.png"))), (900, 600), "{name}");
    }
    // Snapshots: G⁰, after nodes 3, 2, 1, and the final generator.
    assert_eq!(png_size(&run.join("snapshots.png")), (1500, 330));
    // Fields: teacher and s_φ, at the start and the end.
    assert_eq!(png_size(&run.join("score-fields.png")), (900, 840));

    // `plot` redraws both kinds of folder.
    std::fs::remove_dir_all(d.join("cmp/plots")).unwrap();
    std::fs::remove_file(run.join("snapshots.png")).unwrap();
    assert!(disback(&["plot", "cmp"], d).status.success());
    assert!(disback(&["plot", "cmp/disback-seed3"], d).status.success());
    assert_eq!(png_size(&d.join("cmp/plots/compare-convergence.png")), (900, 600));
    assert_eq!(png_size(&run.join("snapshots.png")), (1500, 330));

    let o = disback(&["plot", "nowhere"], d);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("nowhere"));
}

#[test]
fn compare_needs_a_disback_config() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut config = common::tiny_config(&d.join("teachers"));
    config.method = disback::config::Method::DiffInstruct;
    config.schedule.steps = vec![50];
    std::fs::write(d.join("di.toml"), config.to_toml().unwrap()).unwrap();
    let o = disback(
        &["compare", "--config", "di.toml", "--seeds", "1", "--out", "cmp"],
        d,
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("DisBack config"));
}
