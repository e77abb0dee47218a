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
    // one runs again.
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
        stderr(&o).contains("point 3/4 (generator.sigma_g=20, schedule.steps=[5,5,5,45]): 3 runs"),
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
        stderr(&o).contains("holds a sweep of another config, grid or seed count"),
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
