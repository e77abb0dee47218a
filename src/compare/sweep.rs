//! `disback sweep`: a whole comparison (DisBack and both Diff-Instruct
//! baselines, the same G⁰, budget and seeds) at every point of a grid of
//! settings, to find where backtracking pays. Points whose teachers'
//! settings agree share one teacher (the teacher cache is keyed by them).
//!
//! The folder holds `sweep-spec.json` (what was asked: the grid, the
//! seeds and every point's resolved config), `points/<n>-<settings>-<hash>/`
//! (one comparison folder each, named by its config's hash), and the
//! results: `sweep.json` (one row a point: its settings, each arm's cost
//! to each level, the speed-ups against both baselines, the final
//! qualities), `sweep.md` (a table) and `sweep.png` (the headline speed-up
//! per point; a heat map over two keys).
//!
//! Run again on the same folder, a sweep continues: a point whose
//! `compare.json` is there is kept as it is, and the others continue their
//! runs (finished runs kept, the rest from their checkpoints). It must be
//! the same study: a config that changed since (its file edited, another
//! `--set`) is refused with the keys that changed, because its points'
//! results would be reported as the new config's. An unreadable
//! `compare.json` is an error that names it; nothing is deleted.

use super::identity::Identity;
use super::stats::{Comparison, Spread, Unit, compare_runs};
use super::{Arm, RESULT, plan_continued, read_comparison, run_comparison};
use crate::config::Config;
use crate::files::{atomic_write, read_json, write_json};
use crate::report::{Cell, Heatmap, Panel, save};
use crate::rundir::RunLock;
use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// A sweep's result file in its folder.
pub const SWEEP_RESULT: &str = "sweep.json";
const SPEC: &str = "sweep-spec.json";
const FORMAT: u32 = 1;
/// The spec's format: 2 records each point's resolved config (1, the
/// config's name only).
const SPEC_FORMAT: u32 = 2;

/// One swept key and its values, each a TOML value as `--set` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grid {
    pub key: String,
    pub values: Vec<String>,
}

impl Grid {
    /// Parses `KEY=V1,V2,…`. Values split at commas outside brackets and
    /// quotes, so a list (`schedule.steps=[20,200,200,1580],[250,250,250,1250]`)
    /// stays one value.
    pub fn parse(spec: &str) -> Result<Self> {
        let (key, values) = spec
            .split_once('=')
            .with_context(|| format!("--grid {spec:?}: expected KEY=V1,V2,…"))?;
        let key = key.trim();
        ensure!(!key.is_empty(), "--grid {spec:?}: the key is empty");
        let (mut depth, mut quoted, mut current, mut out) = (0i32, false, String::new(), Vec::new());
        for c in values.chars() {
            match c {
                '"' => quoted = !quoted,
                '[' if !quoted => depth += 1,
                ']' if !quoted => depth -= 1,
                ',' if depth == 0 && !quoted => {
                    out.push(std::mem::take(&mut current).trim().to_string());
                    continue;
                }
                _ => {}
            }
            current.push(c);
        }
        out.push(current.trim().to_string());
        ensure!(
            depth == 0 && !quoted,
            "--grid {spec:?}: unbalanced brackets or quotes"
        );
        ensure!(
            out.iter().all(|v| !v.is_empty()),
            "--grid {spec:?}: an empty value (two commas in a row?)"
        );
        Ok(Self {
            key: key.to_string(),
            values: out,
        })
    }
}

/// Every combination of the grids' values, the first key slowest.
pub fn points(grids: &[Grid]) -> Vec<Vec<(String, String)>> {
    grids.iter().fold(vec![Vec::new()], |done, grid| {
        done.iter()
            .flat_map(|point| {
                grid.values.iter().map(move |v| {
                    let mut p = point.clone();
                    p.push((grid.key.clone(), v.clone()));
                    p
                })
            })
            .collect()
    })
}

/// What a sweep was asked for: a second run on the same folder must ask
/// the same, or its points would not be one study.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Spec {
    format: u32,
    /// The config's name and `--set`s, for the reader: what identifies the
    /// study is the grid, the seeds and the points' configs.
    config: String,
    overrides: Vec<String>,
    grid: Vec<Grid>,
    seeds: usize,
    points: Vec<PointSpec>,
}

/// One point as asked.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PointSpec {
    settings: Vec<(String, String)>,
    /// The SHA-256 of `config`: the point's identity.
    sha256: String,
    /// Its resolved config as identified (`Identity::text`), to name what
    /// changed.
    config: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sweep {
    pub format: u32,
    pub config: String,
    pub grid: Vec<Grid>,
    pub seeds: usize,
    pub quality_measure: String,
    pub rows: Vec<SweepRow>,
}

/// One point of the grid, summarised from its comparison.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SweepRow {
    pub settings: Vec<(String, String)>,
    /// The point's comparison folder, relative to the sweep's.
    pub dir: String,
    /// DisBack's speed-up at the headline level (80%, passes, stage 1
    /// counted) against each baseline.
    pub headline: Vec<(Arm, Option<Spread>)>,
    pub levels: Vec<LevelRow>,
    /// Each arm's final quality (median and range over seeds).
    pub final_quality: Vec<(Arm, Spread)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LevelRow {
    pub name: String,
    pub value: Option<f64>,
    /// Each arm's cost in passes, and how many seeds reached the level.
    pub cost: Vec<(Arm, Option<Spread>, usize)>,
    pub speedup: Vec<(Arm, Unit, Option<Spread>)>,
}

impl SweepRow {
    fn of(settings: Vec<(String, String)>, dir: String, c: &Comparison) -> Self {
        let levels = c
            .levels
            .iter()
            .enumerate()
            .map(|(i, l)| LevelRow {
                name: l.name.clone(),
                value: l.value,
                cost: c
                    .arms
                    .iter()
                    .map(|a| (a.arm, a.to_level[i].passes, a.to_level[i].reached))
                    .collect(),
                speedup: c
                    .speedups
                    .iter()
                    .filter(|s| s.level == i)
                    .map(|s| (s.against, s.unit, s.spread))
                    .collect(),
            })
            .collect();
        let final_quality = c
            .arms
            .iter()
            .filter_map(|a| {
                let q = quality_spread(c, a.arm)?;
                Some((a.arm, q))
            })
            .collect();
        Self {
            settings,
            dir,
            headline: c.headline.against.clone(),
            levels,
            final_quality,
        }
    }

    /// The headline speed-up against `arm`.
    pub fn headline_against(&self, arm: Arm) -> Option<Spread> {
        self.headline
            .iter()
            .find(|(a, _)| *a == arm)
            .and_then(|(_, s)| *s)
    }
}

/// The final quality measure's spread over an arm's runs.
fn quality_spread(c: &Comparison, arm: Arm) -> Option<Spread> {
    let values: Vec<f64> = c
        .runs
        .iter()
        .filter(|r| r.arm == arm)
        .map(|r| r.final_eval.quality().0)
        .collect();
    Spread::of(&values)
}

/// How a sweep is run.
pub struct SweepRun<'a> {
    /// The config at a point: the base config with these `--set`s on top.
    pub load: &'a dyn Fn(&[String]) -> Result<Config>,
    pub config_name: String,
    pub overrides: Vec<String>,
    pub grid: Vec<Grid>,
    pub seeds: usize,
    pub out: PathBuf,
    pub workers: usize,
}

/// Runs (or continues) a sweep; `say` hears of its progress.
pub fn run_sweep(run: &SweepRun<'_>, say: &(dyn Fn(String) + Sync)) -> Result<Sweep> {
    ensure!(
        !run.grid.is_empty(),
        "a sweep needs at least one --grid KEY=V1,V2,…"
    );
    ensure!(run.seeds > 0, "--seeds 0: a comparison needs at least one seed");
    let out = &run.out;
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let _lock = RunLock::acquire(out)?;
    let points = points(&run.grid);
    // Every point's config is checked before the first one runs.
    let configs = points
        .iter()
        .map(|p| {
            let mut sets = run.overrides.clone();
            sets.extend(p.iter().map(|(k, v)| format!("{k}={v}")));
            (run.load)(&sets).with_context(|| format!("the point {}", describe(p)))
        })
        .collect::<Result<Vec<_>>>()?;
    let spec = Spec {
        format: SPEC_FORMAT,
        config: run.config_name.clone(),
        overrides: run.overrides.clone(),
        grid: run.grid.clone(),
        seeds: run.seeds,
        points: points
            .iter()
            .zip(&configs)
            .map(|(settings, config)| {
                let identity = Identity::of(config)?;
                Ok(PointSpec {
                    settings: settings.clone(),
                    sha256: identity.hash(),
                    config: identity.text(),
                })
            })
            .collect::<Result<Vec<_>>>()?,
    };
    check_spec(out, &spec)?;
    let mut rows = Vec::new();
    let mut quality_measure = String::new();
    for (n, ((point, config), asked)) in points.iter().zip(&configs).zip(&spec.points).enumerate() {
        // Named by its config's hash: a point of another config never
        // finds this one's results.
        let dir = format!("points/{:02}-{}-{}", n + 1, slug(point), &asked.sha256[..8]);
        let folder = out.join(&dir);
        let what = format!("point {}/{} ({})", n + 1, points.len(), describe(point));
        let result = folder.join(RESULT);
        let comparison = if result.exists() {
            let done = read_comparison(&result).with_context(|| unreadable(&result, &folder))?;
            // Its runs are kept; their measurements are read again by
            // this version's rule.
            say(format!("{what}: done before, kept"));
            compare_runs(
                &done.config,
                done.runs,
                done.generator_updates,
                done.stage1_iterations,
            )?
        } else {
            let started = folder.join("teacher").exists();
            let how = if started { " continued" } else { "" };
            say(format!("{what}: {} runs{how}…", 3 * run.seeds));
            let plan = plan_continued(config, run.seeds, &folder)?;
            run_comparison(config, &plan, run.workers, say)?
        };
        let row = SweepRow::of(point.clone(), dir, &comparison);
        say(format!("{what}: headline speed-up {}", headline_words(&row)));
        quality_measure = comparison.quality_measure.clone();
        rows.push(row);
    }
    let sweep = Sweep {
        format: FORMAT,
        config: run.config_name.clone(),
        grid: run.grid.clone(),
        seeds: run.seeds,
        quality_measure,
        rows,
    };
    write_json(&out.join(SWEEP_RESULT), &sweep)?;
    atomic_write(&out.join("sweep.md"), sweep.table().as_bytes())?;
    save(&sweep.figure(), out)?;
    Ok(sweep)
}

/// What to do about a point's `compare.json` that cannot be read: it is
/// left as it is, and so are the point's runs, from which it can be made
/// again.
fn unreadable(result: &Path, folder: &Path) -> String {
    format!(
        "the point's result {} cannot be read; it and the point's runs in {} are left as they \
         are. To measure the point again from its runs (finished runs are kept, not redone), \
         move {} away and run the sweep again",
        result.display(),
        folder.display(),
        result.display()
    )
}

/// Refuses a folder that holds a sweep of another question (another grid,
/// seed count or config); records the question in a new one.
fn check_spec(out: &Path, spec: &Spec) -> Result<()> {
    let file = out.join(SPEC);
    if file.is_file() {
        let before: serde_json::Value = read_json(&file)?;
        let format = before.get("format").and_then(|f| f.as_u64());
        if format != Some(SPEC_FORMAT as u64) {
            bail!(
                "{} was written by an older disback, which recorded the config's name but not its \
                 content: its points cannot be told from those of an edited config. Choose another \
                 --out for this sweep",
                file.display()
            );
        }
        let before: Spec = serde_json::from_value(before)
            .with_context(|| format!("{}: unexpected content", file.display()))?;
        if before.grid != spec.grid || before.seeds != spec.seeds {
            bail!(
                "{} holds a sweep of another grid or seed count ({}); choose another --out",
                out.display(),
                file.display()
            );
        }
        let same = |(a, b): (&PointSpec, &PointSpec)| a.sha256 == b.sha256;
        if !before.points.iter().zip(&spec.points).all(same) {
            let changes = config_changes(&before, spec)?;
            bail!(
                "{} holds a sweep of another config: since it began, the config (its file or \
                 --set) changed {}. Its results are of the config as it was, and are left as \
                 they are. To study the changed config, choose another --out; to continue this \
                 sweep, undo the change",
                out.display(),
                changes
            );
        }
        return Ok(());
    }
    if out
        .read_dir()
        .is_ok_and(|d| d.flatten().any(|e| e.file_name() != "run.lock"))
    {
        bail!(
            "{} is not empty and holds no sweep; choose another --out",
            out.display()
        );
    }
    write_json(&file, spec)
}

/// The keys in which the points' configs changed, with their values before
/// and now: "(distill.lr: 0.0001 → 0.0002)".
fn config_changes(before: &Spec, now: &Spec) -> Result<String> {
    let mut changes = Vec::new();
    for (was, is) in before.points.iter().zip(&now.points) {
        if was.sha256 != is.sha256 {
            let old = Identity::parse(&was.config)
                .with_context(|| format!("a point's config in {SPEC}: unexpected content"))?;
            for change in old.changes_to(&Identity::parse(&is.config)?) {
                if !changes.contains(&change) {
                    changes.push(change);
                }
            }
        }
    }
    const SHOWN: usize = 8;
    let more = match changes.len() {
        n if n > SHOWN => format!("; and {} more", n - SHOWN),
        _ => String::new(),
    };
    changes.truncate(SHOWN);
    Ok(format!("({}{more})", changes.join("; ")))
}

/// "generator.sigma_g=80, schedule.policy=auto".
fn describe(point: &[(String, String)]) -> String {
    point
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A folder name for a point: its last key segments and values, in safe
/// characters.
fn slug(point: &[(String, String)]) -> String {
    let text: String = point
        .iter()
        .map(|(k, v)| format!("{}-{v}", k.rsplit('.').next().unwrap_or(k)))
        .collect::<Vec<_>>()
        .join("_");
    let safe: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    safe.chars().take(80).collect()
}

fn headline_words(row: &SweepRow) -> String {
    row.headline
        .iter()
        .map(|(arm, s)| match s {
            Some(s) => format!("{:.2}× vs {arm}", s.median),
            None => format!("— vs {arm}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl Sweep {
    /// `sweep.md`: one row a point.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# disback sweep — {}, {} seeds a point\n\nSpeed-up of DisBack = the baseline's cost / \
             DisBack's to a level, median [min–max] over seeds, in network passes with stage 1 \
             counted; the headline level is 80% of the way from G⁰ to the best final {}. Final \
             quality: median {} over seeds.\n",
            self.config, self.seeds, self.quality_measure, self.quality_measure
        );
        let keys: Vec<&str> = self.grid.iter().map(|g| g.key.as_str()).collect();
        let baselines = [Arm::DiffInstruct, Arm::DiffInstructFit];
        let mut header: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
        for b in baselines {
            header.push(format!("80% vs {b}"));
            header.push(format!("50% vs {b}"));
            header.push(format!("95% vs {b}"));
        }
        header.extend(Arm::ALL.iter().map(|a| format!("final {a}")));
        let _ = writeln!(t, "| {} |", header.join(" | "));
        let _ = writeln!(t, "|{}", "---|".repeat(header.len()));
        for row in &self.rows {
            let mut cells: Vec<String> = row.settings.iter().map(|(_, v)| v.clone()).collect();
            for b in baselines {
                for level in ["80%", "50%", "95%"] {
                    let s = row
                        .levels
                        .iter()
                        .find(|l| l.name == level)
                        .and_then(|l| l.speedup.iter().find(|(a, u, _)| *a == b && *u == Unit::Passes))
                        .and_then(|(_, _, s)| *s);
                    cells.push(s.map_or("—".into(), |s| format!("{}×", s.show(2))));
                }
            }
            for a in Arm::ALL {
                let q = row.final_quality.iter().find(|(arm, _)| *arm == a);
                cells.push(q.map_or("—".into(), |(_, s)| format!("{:.4}", s.median)));
            }
            let _ = writeln!(t, "| {} |", cells.join(" | "));
        }
        t
    }

    /// `sweep.png`: the headline speed-up against each baseline, as a heat
    /// map over the first two keys (one panel a baseline), or one row of
    /// cells per baseline over the points.
    pub fn figure(&self) -> Heatmap {
        let cell = |row: &SweepRow, arm: Arm| -> Cell {
            row.headline_against(arm).map(|s| (s.median, s.min, s.max))
        };
        let title = format!(
            "{}: DisBack's speed-up to the 80% level (network passes, stage 1 counted), {} seeds",
            self.config, self.seeds
        );
        let panels = if self.grid.len() == 2 {
            let (rows, cols) = (&self.grid[0], &self.grid[1]);
            [Arm::DiffInstruct, Arm::DiffInstructFit]
                .into_iter()
                .map(|arm| Panel {
                    title: format!("against {arm}"),
                    row_label: rows.key.clone(),
                    col_label: cols.key.clone(),
                    rows: rows.values.clone(),
                    cols: cols.values.clone(),
                    values: self
                        .rows
                        .chunks(cols.values.len())
                        .map(|line| line.iter().map(|r| cell(r, arm)).collect())
                        .collect(),
                })
                .collect()
        } else {
            let keys: Vec<&str> = self.grid.iter().map(|g| g.key.as_str()).collect();
            vec![Panel {
                title: "against each baseline".into(),
                row_label: String::new(),
                col_label: keys.join(", "),
                rows: vec!["Diff-Instruct".into(), "DI, fitted s_φ".into()],
                cols: self
                    .rows
                    .iter()
                    .map(|r| {
                        r.settings
                            .iter()
                            .map(|(_, v)| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .collect(),
                values: [Arm::DiffInstruct, Arm::DiffInstructFit]
                    .into_iter()
                    .map(|arm| self.rows.iter().map(|r| cell(r, arm)).collect())
                    .collect(),
            }]
        };
        Heatmap {
            name: "sweep".into(),
            title,
            panels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_parse_lists_and_quotes_whole() {
        let g = Grid::parse("schedule.steps=[20,200,200,1580], [250,250,250,1250]").unwrap();
        assert_eq!(g.key, "schedule.steps");
        assert_eq!(g.values, vec!["[20,200,200,1580]", "[250,250,250,1250]"]);
        let g = Grid::parse("generator.init=\"random\",teacher").unwrap();
        assert_eq!(g.values, vec!["\"random\"", "teacher"]);
        for bad in ["nokey", "=1,2", "a.b=1,,2", "a.b=[1,2"] {
            assert!(Grid::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn points_are_the_cross_product_first_key_slowest() {
        let grids = [Grid::parse("a=1,2").unwrap(), Grid::parse("b=x,y,z").unwrap()];
        let p = points(&grids);
        assert_eq!(p.len(), 6);
        assert_eq!(p[0], vec![("a".into(), "1".into()), ("b".into(), "x".into())]);
        assert_eq!(p[2], vec![("a".into(), "1".into()), ("b".into(), "z".into())]);
        assert_eq!(p[3], vec![("a".into(), "2".into()), ("b".into(), "x".into())]);
        assert_eq!(slug(&p[3]), "a-2_b-x");
        assert_eq!(
            slug(&[("schedule.steps".into(), "[20,200]".into())]),
            "steps-_20_200_"
        );
    }
}
