//! `disback sweep` on the tiny config: every point of the grid compared,
//! the results written, a second run keeping finished points and redoing
//! the rest, and a folder of another sweep refused.

mod common;

use common::{disback, stderr};

/// How many points a finished sweep kept from before.
fn kept(o: &std::process::Output) -> usize {
    assert!(o.status.success(), "{}", stderr(o));
    stderr(o).matches("done before, kept").count()
}

#[test]
fn a_sweep_compares_every_point_and_continues_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = common::tiny_config(&d.join("teachers"));
    std::fs::write(d.join("tiny.toml"), config.to_toml().unwrap()).unwrap();
    let args = [
        "sweep",
        "--config",
        "tiny.toml",
        "--grid",
        "generator.sigma_g=0.5,20",
        "--grid",
        "schedule.steps=[5,5,5,45],[2,2,2,54]",
        "--seeds",
        "1",
        "--out",
        "sw",
    ];
    let o = disback(&args, d);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    // Four points, each a comparison of three runs.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("sw/sweep.json")).unwrap()).unwrap();
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(
        rows[1]["settings"],
        serde_json::json!([["generator.sigma_g", "0.5"], ["schedule.steps", "[2,2,2,54]"]])
    );
    for row in rows {
        let dir = d.join("sw").join(row["dir"].as_str().unwrap());
        assert!(dir.join("compare.json").is_file(), "{}", dir.display());
        assert_eq!(row["headline"].as_array().unwrap().len(), 2, "{row}");
        assert_eq!(row["levels"].as_array().unwrap().len(), 4, "{row}");
    }
    assert!(
        table.contains("| `generator.sigma_g` | `schedule.steps` |"),
        "{table}"
    );
    assert!(d.join("sw/sweep.md").is_file() && d.join("sw/sweep.png").is_file());
    // The points with one teacher setting share one teacher.
    assert_eq!(std::fs::read_dir(d.join("teachers")).unwrap().count(), 1);

    // Again: every point is kept. With one point's result gone, only that
    // one is measured again, from its runs, which are kept.
    let o = disback(&args, d);
    assert_eq!(kept(&o), 4, "{}", stderr(&o));
    let redo = d
        .join("sw")
        .join(rows[2]["dir"].as_str().unwrap())
        .join("compare.json");
    std::fs::remove_file(&redo).unwrap();
    let o = disback(&args, d);
    assert_eq!(kept(&o), 3, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("point 3/4 (generator.sigma_g=20, schedule.steps=[5,5,5,45]): 3 runs continued"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        stderr(&o).matches("finished before, kept").count(),
        3,
        "{}",
        stderr(&o)
    );
    assert!(redo.is_file());

    // Another grid into the same folder is refused, by name.
    let mut other = args.to_vec();
    other[4] = "generator.sigma_g=1";
    let o = disback(&other, d);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("holds a sweep of another grid or seed count"),
        "{}",
        stderr(&o)
    );
    // A bad grid names itself.
    let o = disback(
        &["sweep", "--config", "tiny.toml", "--grid", "seed", "--out", "x"],
        d,
    );
    assert!(
        !o.status.success() && stderr(&o).contains("--grid \"seed\""),
        "{}",
        stderr(&o)
    );
}

/// The tiny config, one grid point (`generator.sigma_g=0.5`), one seed:
/// the sweep's arguments, in `d` with its config file `tiny.toml`.
fn one_point_sweep(d: &std::path::Path, schedule: &[usize]) -> Vec<String> {
    let mut config = common::tiny_config(&d.join("teachers"));
    config.schedule.steps = schedule.to_vec();
    std::fs::write(d.join("tiny.toml"), config.to_toml().unwrap()).unwrap();
    [
        "sweep",
        "--config",
        "tiny.toml",
        "--grid",
        "generator.sigma_g=0.5",
        "--seeds",
        "1",
        "--jobs",
        "1",
        "--out",
        "sw",
    ]
    .map(String::from)
    .to_vec()
}

fn run(args: &[String], d: &std::path::Path) -> std::process::Output {
    disback(&args.iter().map(String::as_str).collect::<Vec<_>>(), d)
}

/// The one point's folder in the sweep `sw`.
fn point_dir(d: &std::path::Path) -> std::path::PathBuf {
    let mut points: Vec<_> = std::fs::read_dir(d.join("sw/points"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(points.len(), 1, "{points:?}");
    points.pop().unwrap()
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => files.extend(walk(&path)),
            false => files.push(path),
        }
    }
    files
}

/// Every run's log in a point, by run folder.
fn run_logs(point: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut logs: Vec<_> = std::fs::read_dir(point)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("metrics.jsonl").is_file() && !p.ends_with("teacher"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(p.join("metrics.jsonl")).unwrap())
        })
        .collect();
    logs.sort();
    logs
}

#[test]
fn an_edited_config_is_refused_by_what_changed_and_an_unreadable_result_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let args = one_point_sweep(d, &[5, 5, 5, 45]);
    let o = run(&args, d);
    assert!(o.status.success(), "{}", stderr(&o));
    let sweep_json = std::fs::read(d.join("sw/sweep.json")).unwrap();

    // The file edited: the same --out is refused, by the key that changed,
    // and nothing of the old study is reported or touched.
    let text = std::fs::read_to_string(d.join("tiny.toml")).unwrap();
    let mut edited: toml::Table = toml::from_str(&text).unwrap();
    edited["generator"]["lr"] = toml::Value::Float(0.000125);
    std::fs::write(d.join("tiny.toml"), toml::to_string(&edited).unwrap()).unwrap();
    let o = run(&args, d);
    assert!(
        !o.status.success(),
        "an edited config was taken for the old one:\n{}",
        stderr(&o)
    );
    let said = stderr(&o);
    assert!(said.contains("holds a sweep of another config"), "{said}");
    assert!(
        said.contains("generator.lr: ") && said.contains(" → 0.000125"),
        "{said}"
    );
    assert!(said.contains("choose another --out"), "{said}");
    assert!(!said.contains("done before, kept"), "{said}");
    assert_eq!(std::fs::read(d.join("sw/sweep.json")).unwrap(), sweep_json);
    // So is another --set of the same file.
    std::fs::write(d.join("tiny.toml"), &text).unwrap();
    let mut set = args.clone();
    set.extend(["--set".into(), "distill.batch=32".into()]);
    let o = run(&set, d);
    assert!(
        !o.status.success() && stderr(&o).contains("distill.batch: 64 → 32"),
        "{}",
        stderr(&o)
    );
    // Undone, the sweep is the same study again: kept.
    let o = run(&args, d);
    assert_eq!(kept(&o), 1, "{}", stderr(&o));

    // A truncated result is named; it and the point's runs stay.
    let point = point_dir(d);
    let result = point.join("compare.json");
    let bytes = std::fs::read(&result).unwrap();
    std::fs::write(&result, &bytes[..bytes.len() / 2]).unwrap();
    let logs = run_logs(&point);
    assert_eq!(
        logs.len(),
        3,
        "{:?}",
        logs.iter().map(|l| &l.0).collect::<Vec<_>>()
    );
    let o = run(&args, d);
    assert!(
        !o.status.success(),
        "a truncated result was redone:\n{}",
        stderr(&o)
    );
    let said = stderr(&o);
    let named = result.strip_prefix(d).unwrap().display().to_string();
    assert!(said.contains(&format!("{named} cannot be read")), "{said}");
    assert!(said.contains(&format!("move {named} away")), "{said}");
    assert_eq!(std::fs::read(&result).unwrap(), &bytes[..bytes.len() / 2]);
    assert_eq!(run_logs(&point), logs, "the point's runs were touched");
    // Moved away, as the error says: measured again from the same runs,
    // none of them trained again.
    std::fs::rename(&result, d.join("truncated.json")).unwrap();
    let o = run(&args, d);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o).matches("finished before, kept").count(),
        3,
        "{}",
        stderr(&o)
    );
    assert_eq!(run_logs(&point), logs);
    assert!(result.is_file());
}

#[test]
fn an_interrupted_point_keeps_its_finished_runs_and_continues_the_others() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Long enough for a checkpoint (every 25 iterations) well before the
    // end of a run.
    let args = one_point_sweep(d, &[20, 20, 20, 340]);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_disback"))
        .args(&args)
        .current_dir(d)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // One job at a time: DisBack's run first. Once it is done, the sweep is
    // stopped as soon as the next run has a checkpoint.
    let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut said = String::new();
    while !said.contains("DisBack seed 3: done") {
        said += &lines.next().expect("the sweep goes on").unwrap();
        said += "\n";
    }
    let point = point_dir(d);
    let next = point.join("diff-instruct-seed3/state/latest.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !next.is_file() {
        assert!(std::time::Instant::now() < deadline, "no checkpoint:\n{said}");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!point.join("compare.json").exists());
    let disback_log = std::fs::read(point.join("disback-seed3/metrics.jsonl")).unwrap();

    // A checkpoint that cannot be read is named; the run is not started
    // over and keeps its files.
    let latest = std::fs::read(&next).unwrap();
    std::fs::write(&next, &latest[..latest.len() / 2]).unwrap();
    let cut = point.join("diff-instruct-seed3");
    let files = |dir: &std::path::Path| {
        let mut names: Vec<_> = walk(dir)
            .into_iter()
            .map(|p| (p.clone(), std::fs::read(p).unwrap()))
            .collect();
        names.sort();
        names
    };
    let before = files(&cut);
    let o = run(&args, d);
    let said = stderr(&o);
    assert!(!o.status.success(), "a damaged checkpoint was run over:\n{said}");
    assert!(said.contains("latest.json") && said.contains("move "), "{said}");
    assert_eq!(files(&cut), before, "the run's files were touched");
    std::fs::write(&next, &latest).unwrap();

    let o = run(&args, d);
    assert!(o.status.success(), "{}", stderr(&o));
    let said = stderr(&o);
    assert!(said.contains("DisBack seed 3: finished before, kept"), "{said}");
    let resumed = said.lines().find(|l| l.contains("Diff-Instruct seed 3: done at"));
    assert!(
        resumed.is_some_and(|l| l.contains("(continued from iteration")),
        "{said}"
    );
    assert!(
        said.contains("Diff-Instruct, fitted s_φ seed 3: done at"),
        "{said}"
    );
    assert_eq!(
        std::fs::read(point.join("disback-seed3/metrics.jsonl")).unwrap(),
        disback_log
    );
    assert!(point.join("compare.json").is_file());
}
