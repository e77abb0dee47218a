//! DisBack against the Diff-Instruct baselines over several seeds: final
//! metrics, each arm's cost to several quality levels, and DisBack's
//! speed-up against each baseline, in network passes and in seconds, with
//! stage 1 counted and without.
//!
//! The rule, stated in every table:
//! - each run's quality (energy distance on 2-D data, a Fréchet distance on
//!   images) is smoothed by a trailing mean over 3 measurements;
//! - `start` is G⁰'s quality (the median first measurement: every arm
//!   starts from the same G⁰), `best` the best arm's median final smoothed
//!   quality; the level p lies p of the way from `start` to `best`, for p =
//!   50%, 80% and 95%; the last level is Diff-Instruct's own median final
//!   smoothed quality (what the baseline reaches with the whole budget);
//! - a run reaches a level where its smoothed curve first gets there, the
//!   cost interpolated between the two measurements around the crossing;
//! - cost is in network passes (`engine::PassCost`) and in compute seconds
//!   (this comparison's processes, all arms side by side), counting stage 1
//!   (DisBack's recording, the fitted baseline's fit of s_φ) unless a row
//!   says "without stage 1";
//! - a speed-up is, per seed, the baseline's cost over DisBack's, where both
//!   reached the level; the headline is the 80% level in passes with stage
//!   1 counted, as the paper counts it.

use super::Arm;
use super::judge::Judged;
use crate::engine::Moment;
use crate::metrics::{Evaluation, ModeStats};
use crate::report::evaluations;
use crate::rundir::read_metrics;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The `compare.json` this version writes (and reads back for `plot`).
pub const FORMAT: u32 = 2;

/// The fractions of the way from G⁰ to the best final quality that are
/// levels, and which one is the headline.
const FRACTIONS: [f64; 3] = [0.5, 0.8, 0.95];
const HEADLINE_LEVEL: usize = 1;

/// One measurement of a run, in every unit of cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub cost: usize,
    pub passes: f64,
    /// None where the run's seconds are not known (read back from files
    /// alone).
    pub seconds: Option<f64>,
    pub quality: f64,
    /// The teacher's mean mismatch degree over σ at the generator's samples.
    pub mismatch: f64,
}

/// A cost in both units.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spent {
    pub passes: f64,
    pub seconds: Option<f64>,
}

/// One finished run, as the comparison sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    pub arm: Arm,
    pub seed: u64,
    pub run_dir: PathBuf,
    pub curve: Vec<Measured>,
    /// What came before stage 2: DisBack's recording, the fitted baseline's
    /// fit of s_φ to G⁰, nothing for the baseline from the teacher.
    pub stage1: Spent,
    pub final_eval: Evaluation,
    /// Filled in by the comparison: the cost to each level (in the order
    /// of [`Comparison::levels`]), where the run reached it.
    #[serde(default)]
    pub reached: Vec<Option<Spent>>,
}

impl RunOutcome {
    /// Reads a finished run's measurements; `timeline` (the session's, when
    /// the run was made in this process) adds their seconds.
    pub fn read(arm: Arm, seed: u64, run_dir: &Path, timeline: Option<&[Moment]>) -> Result<Self> {
        let records = read_metrics(&run_dir.join("metrics.jsonl"))?;
        let passes_at: Vec<(usize, f64)> = records
            .iter()
            .filter(|r| r.eval.is_some())
            .map(|r| (r.cost, r.passes.unwrap_or(f64::NAN)))
            .collect();
        if passes_at.iter().any(|(_, p)| p.is_nan()) {
            bail!(
                "{}: its metrics predate network-pass counting; run the comparison again",
                run_dir.display()
            );
        }
        let evals = evaluations(&records);
        let Some((_, last)) = evals.last() else {
            bail!("{}: the run has no measurements", run_dir.display());
        };
        let seconds_at = |cost: usize| timeline?.iter().find(|m| m.cost == cost).map(|m| m.seconds);
        let curve: Vec<Measured> = evals
            .iter()
            .zip(&passes_at)
            .map(|((cost, e), (_, passes))| Measured {
                cost: *cost,
                passes: *passes,
                seconds: seconds_at(*cost),
                quality: e.quality().0,
                mismatch: e.mismatch_teacher_mean().unwrap_or(f64::NAN),
            })
            .collect();
        let first = curve[0];
        Ok(Self {
            arm,
            seed,
            run_dir: run_dir.to_path_buf(),
            stage1: Spent {
                passes: first.passes,
                seconds: first.seconds,
            },
            final_eval: (*last).clone(),
            curve,
            reached: Vec::new(),
        })
    }

    /// The budget in passes: where the last measurement was taken.
    fn budget(&self) -> f64 {
        self.curve.last().map_or(0.0, |m| m.passes)
    }

    /// The quality curve smoothed by a trailing mean over 3 measurements.
    fn smoothed(&self) -> Vec<f64> {
        (0..self.curve.len())
            .map(|i| {
                let window = &self.curve[i.saturating_sub(2)..=i];
                window.iter().map(|m| m.quality).sum::<f64>() / window.len() as f64
            })
            .collect()
    }

    fn final_smoothed(&self) -> f64 {
        self.smoothed().last().copied().unwrap_or(f64::INFINITY)
    }

    /// Where the smoothed curve first gets to `level`, interpolated between
    /// the measurements on either side.
    fn cost_to(&self, level: f64) -> Option<Spent> {
        let s = self.smoothed();
        let i = s.iter().position(|&q| q <= level)?;
        let here = self.curve[i];
        if i == 0 {
            return Some(Spent {
                passes: here.passes,
                seconds: here.seconds,
            });
        }
        let before = self.curve[i - 1];
        let t = ((s[i - 1] - level) / (s[i - 1] - s[i])).clamp(0.0, 1.0);
        let between = |a: f64, b: f64| a + t * (b - a);
        Some(Spent {
            passes: between(before.passes, here.passes),
            seconds: before.seconds.zip(here.seconds).map(|(a, b)| between(a, b)),
        })
    }
}

/// Median and range over seeds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} [{:.d$}–{:.d$}]",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// A quality a run may reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Level {
    /// "50%", "80%", "95%", or "Diff-Instruct's final".
    pub name: String,
    /// None where there is no such level: no arm ended better than G⁰
    /// (every run diverged), or Diff-Instruct ended no better than it.
    pub value: Option<f64>,
}

/// One arm's cost to one level, over the seeds that reached it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LevelCost {
    pub passes: Option<Spread>,
    pub seconds: Option<Spread>,
    pub reached: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmSummary {
    pub arm: Arm,
    pub energy: Spread,
    pub sliced_w: Spread,
    /// Labelled images only.
    pub classifier_fd: Option<Spread>,
    pub min_class_share: Option<Spread>,
    /// Images only.
    pub pixel_fd: Option<Spread>,
    /// Mixtures only.
    pub coverage: Option<Spread>,
    pub min_share: Option<Spread>,
    pub max_weight_error: Option<Spread>,
    pub nll: Option<Spread>,
    pub precision: Option<Spread>,
    pub mismatch_teacher: Spread,
    /// Mixtures only: the seeds whose final samples clear the demo's bar
    /// (`judge`).
    #[serde(default)]
    pub judged_good: Option<usize>,
    /// Cost to each level, in the order of [`Comparison::levels`].
    pub to_level: Vec<LevelCost>,
    /// Stage 1's cost (DisBack's recording, the fitted baseline's fit).
    pub stage1_passes: f64,
    pub budget_passes: f64,
}

/// How a speed-up is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unit {
    /// Network passes, stage 1 counted.
    Passes,
    /// Network passes from the start of stage 2.
    PassesWithoutStage1,
    /// Compute seconds, stage 1 counted.
    Seconds,
}

impl Unit {
    pub const ALL: [Unit; 3] = [Unit::Passes, Unit::PassesWithoutStage1, Unit::Seconds];

    pub fn describe(self) -> &'static str {
        match self {
            Unit::Passes => "network passes, stage 1 counted",
            Unit::PassesWithoutStage1 => "network passes, without stage 1",
            Unit::Seconds => "seconds, stage 1 counted",
        }
    }

    /// A run's cost to a level in this unit.
    fn of(self, run: &RunOutcome, spent: &Spent) -> Option<f64> {
        match self {
            Unit::Passes => Some(spent.passes),
            Unit::PassesWithoutStage1 => Some(spent.passes - run.stage1.passes),
            Unit::Seconds => spent.seconds,
        }
    }
}

/// DisBack against one baseline, at one level, in one unit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Speedup {
    pub against: Arm,
    /// Index into [`Comparison::levels`].
    pub level: usize,
    pub unit: Unit,
    /// Per seed: the baseline's cost over DisBack's (None where either did
    /// not reach the level).
    pub per_seed: Vec<Option<f64>>,
    pub spread: Option<Spread>,
}

/// The number `compare` prints first: DisBack's speed-up against each
/// baseline at the headline level, in passes with stage 1 counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Headline {
    pub level: String,
    pub unit: Unit,
    pub against: Vec<(Arm, Option<Spread>)>,
    pub verdict: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub headline: Headline,
    pub format: u32,
    pub config: String,
    pub seeds: Vec<u64>,
    pub generator_updates: usize,
    pub stage1_iterations: usize,
    /// What the levels are on ([`Evaluation::quality`]).
    pub quality_measure: String,
    /// G⁰'s quality and the best arm's final one.
    pub start: f64,
    pub best: f64,
    pub levels: Vec<Level>,
    pub rule: String,
    pub arms: Vec<ArmSummary>,
    pub speedups: Vec<Speedup>,
    pub runs: Vec<RunOutcome>,
    /// The shared teacher's own samples, measured (where the comparison
    /// trained or loaded it; not re-read from runs).
    #[serde(default)]
    pub teacher: Option<Evaluation>,
}

const RULE: &str = "levels 50%, 80% and 95% of the way from G⁰'s quality to the best arm's \
                    final one (medians over seeds), and Diff-Instruct's own final quality; a \
                    run reaches a level where its quality, averaged over its last 3 \
                    measurements, first gets there (interpolated between measurements)";

/// Summarises paired runs (the same seeds for every arm, DisBack among
/// them), by the rule in the module's header.
pub fn compare_runs(
    config: &str,
    mut runs: Vec<RunOutcome>,
    generator_updates: usize,
    stage1_iterations: usize,
) -> Result<Comparison> {
    let of = |runs: &[RunOutcome], a: Arm| runs.iter().filter(|r| r.arm == a).cloned().collect::<Vec<_>>();
    let arms: Vec<Arm> = Arm::ALL
        .into_iter()
        .filter(|&a| !of(&runs, a).is_empty())
        .collect();
    let disback = of(&runs, Arm::Disback);
    if disback.is_empty() || arms.len() < 2 || arms.iter().any(|&a| of(&runs, a).len() != disback.len()) {
        bail!("a comparison needs DisBack and a baseline, with the same seeds for every arm");
    }
    let median = |values: Vec<f64>| Spread::of(&values).map_or(f64::INFINITY, |s| s.median);
    let final_median = |rs: &[RunOutcome]| median(rs.iter().map(RunOutcome::final_smoothed).collect());
    let best = arms
        .iter()
        .map(|&a| final_median(&of(&runs, a)))
        .fold(f64::INFINITY, f64::min);
    let start = median(runs.iter().map(|r| r.curve[0].quality).collect());
    // Levels lie between G⁰ and a better quality: when no arm ended better
    // than G⁰ (every run diverged) there is no level to reach.
    let below_start = |q: f64| (q < start).then_some(q);
    let mut levels: Vec<Level> = FRACTIONS
        .iter()
        .map(|p| Level {
            name: format!("{:.0}%", 100.0 * p),
            value: below_start(best).map(|b| b + (1.0 - p) * (start - b)),
        })
        .collect();
    let baseline = of(&runs, Arm::DiffInstruct);
    if !baseline.is_empty() {
        levels.push(Level {
            name: "Diff-Instruct's final".into(),
            value: below_start(final_median(&baseline)),
        });
    }
    for r in &mut runs {
        r.reached = levels
            .iter()
            .map(|l| l.value.and_then(|v| r.cost_to(v)))
            .collect();
    }
    let mut seeds: Vec<u64> = runs.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let summaries = arms
        .iter()
        .map(|&a| summarise(a, &of(&runs, a), levels.len()))
        .collect::<Result<Vec<_>>>()?;
    let mut speedups = Vec::new();
    for &against in &arms[1..] {
        for level in 0..levels.len() {
            for unit in Unit::ALL {
                speedups.push(speedup(&runs, &seeds, against, level, unit));
            }
        }
    }
    let headline = headline(&speedups, &levels, &summaries, seeds.len());
    Ok(Comparison {
        headline,
        format: FORMAT,
        config: config.to_string(),
        seeds,
        generator_updates,
        stage1_iterations,
        quality_measure: runs[0].final_eval.quality().1.into(),
        start,
        best,
        levels,
        rule: RULE.into(),
        arms: summaries,
        speedups,
        runs,
        teacher: None,
    })
}

/// Per seed, the baseline's cost to `level` over DisBack's, in `unit`.
fn speedup(runs: &[RunOutcome], seeds: &[u64], against: Arm, level: usize, unit: Unit) -> Speedup {
    let cost = |seed: u64, arm: Arm| {
        let run = runs.iter().find(|r| r.seed == seed && r.arm == arm)?;
        unit.of(run, run.reached[level].as_ref()?)
    };
    let per_seed: Vec<Option<f64>> = seeds
        .iter()
        .map(|&seed| {
            let (b, d) = (cost(seed, against)?, cost(seed, Arm::Disback)?);
            (d > 0.0).then(|| b / d)
        })
        .collect();
    let both: Vec<f64> = per_seed.iter().flatten().copied().collect();
    Speedup {
        against,
        level,
        unit,
        spread: Spread::of(&both),
        per_seed,
    }
}

fn headline(speedups: &[Speedup], levels: &[Level], arms: &[ArmSummary], seeds: usize) -> Headline {
    let level = &levels[HEADLINE_LEVEL];
    let at_headline: Vec<&Speedup> = speedups
        .iter()
        .filter(|s| s.level == HEADLINE_LEVEL && s.unit == Unit::Passes)
        .collect();
    let reached = |arm: Arm| {
        arms.iter()
            .find(|a| a.arm == arm)
            .map_or(0, |a| a.to_level[HEADLINE_LEVEL].reached)
    };
    let verdicts: Vec<String> = at_headline
        .iter()
        .map(|s| {
            let against = s.against;
            let counts = format!(
                "reached on {}/{seeds} vs {}/{seeds} seeds",
                reached(Arm::Disback),
                reached(against)
            );
            if level.value.is_none() {
                return format!("against {against}: no arm ended better than G⁰, so there is no level to reach");
            }
            match s.spread {
                None => format!("against {against}: no speed-up can be measured ({counts}, never both on one seed)"),
                Some(x) if x.median >= 1.0 => format!(
                    "DisBack reached the {} level {:.2}× as fast as {against} (median, range {:.2}–{:.2}×; {counts})",
                    level.name, x.median, x.min, x.max
                ),
                Some(x) => format!(
                    "DisBack is NOT faster than {against} to the {} level: {:.2}× (median, range {:.2}–{:.2}×; {counts})",
                    level.name, x.median, x.min, x.max
                ),
            }
        })
        .collect();
    Headline {
        level: level.name.clone(),
        unit: Unit::Passes,
        against: at_headline.iter().map(|s| (s.against, s.spread)).collect(),
        verdict: verdicts.join("; "),
    }
}

fn summarise(arm: Arm, runs: &[RunOutcome], levels: usize) -> Result<ArmSummary> {
    let spread = |f: &dyn Fn(&Evaluation) -> f64| {
        Spread::of(&runs.iter().map(|r| f(&r.final_eval)).collect::<Vec<_>>())
    };
    let optional = |f: &dyn Fn(&Evaluation) -> Option<f64>| {
        Spread::of(&runs.iter().filter_map(|r| f(&r.final_eval)).collect::<Vec<_>>())
    };
    let modes = |f: &dyn Fn(&ModeStats) -> f64| {
        let v: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.final_eval.modes.as_ref().map(f))
            .collect();
        Spread::of(&v)
    };
    let to_level = (0..levels)
        .map(|l| {
            let reached: Vec<&Spent> = runs.iter().filter_map(|r| r.reached[l].as_ref()).collect();
            LevelCost {
                passes: Spread::of(&reached.iter().map(|s| s.passes).collect::<Vec<_>>()),
                seconds: Spread::of(&reached.iter().filter_map(|s| s.seconds).collect::<Vec<_>>()),
                reached: reached.len(),
            }
        })
        .collect();
    let median = |v: Vec<f64>| Spread::of(&v).map_or(0.0, |s| s.median);
    Ok(ArmSummary {
        arm,
        energy: spread(&|e| e.energy).context("no runs")?,
        sliced_w: spread(&|e| e.sliced_w).context("no runs")?,
        classifier_fd: optional(&|e| e.classifier_fd),
        min_class_share: optional(&|e| {
            (e.classes.as_ref()).map(|c| c.shares.iter().copied().fold(f64::INFINITY, f64::min))
        }),
        pixel_fd: optional(&|e| e.pixel_fd),
        coverage: modes(&|m| m.coverage),
        min_share: modes(&|m| m.min_share()),
        max_weight_error: modes(&|m| m.max_weight_error),
        nll: modes(&|m| m.nll),
        precision: modes(&|m| m.precision),
        mismatch_teacher: spread(&|e| e.mismatch_teacher_mean().unwrap_or(f64::NAN)).context("no runs")?,
        judged_good: runs
            .iter()
            .map(|r| Judged::of(&r.final_eval))
            .collect::<Option<Vec<_>>>()
            .map(|j| j.iter().filter(|j| j.good).count()),
        to_level,
        stage1_passes: median(runs.iter().map(|r| r.stage1.passes).collect()),
        budget_passes: median(runs.iter().map(RunOutcome::budget).collect()),
    })
}

impl Comparison {
    /// The speed-up against `against` at `level` in `unit`.
    pub fn speedup(&self, against: Arm, level: usize, unit: Unit) -> Option<&Speedup> {
        self.speedups
            .iter()
            .find(|s| s.against == against && s.level == level && s.unit == unit)
    }

    /// The arm's summary.
    pub fn arm(&self, arm: Arm) -> Option<&ArmSummary> {
        self.arms.iter().find(|a| a.arm == arm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run measured every 100 generator steps, each step 4 passes and a
    /// hundredth of a second, after `stage1` passes (and as many hundredths
    /// of a second) of stage 1.
    pub(crate) fn run(arm: Arm, seed: u64, stage1: f64, qualities: &[f64]) -> RunOutcome {
        let eval = Evaluation {
            energy: *qualities.last().unwrap(),
            sliced_w: 0.1,
            modes: None,
            classes: None,
            classifier_fd: None,
            pixel_fd: None,
            mismatch_target: vec![1.0],
            mismatch_teacher: vec![1.0],
            mismatch_data: Vec::new(),
            measured: String::new(),
        };
        let curve: Vec<Measured> = qualities
            .iter()
            .enumerate()
            .map(|(i, &quality)| Measured {
                cost: 100 * i,
                passes: stage1 + 400.0 * i as f64,
                seconds: Some((stage1 + 100.0 * i as f64) / 100.0),
                quality,
                mismatch: 1.0,
            })
            .collect();
        RunOutcome {
            arm,
            seed,
            run_dir: PathBuf::new(),
            stage1: Spent {
                passes: stage1,
                seconds: Some(stage1 / 100.0),
            },
            curve,
            final_eval: eval,
            reached: Vec::new(),
        }
    }

    #[test]
    fn levels_costs_and_speed_ups_follow_the_stated_rule() {
        // DisBack falls fast after 200 passes of stage 1, the baseline
        // slowly; both flatten at 0.1.
        let fast = [1.0, 0.5, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1];
        let slow = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.12, 0.1, 0.1];
        let runs = vec![
            run(Arm::Disback, 0, 200.0, &fast),
            run(Arm::DiffInstruct, 0, 0.0, &slow),
        ];
        let c = compare_runs("toy", runs, 1000, 200).unwrap();
        // start 1.0; best final (smoothed) 0.1; the 80% level 0.28.
        assert_eq!(c.start, 1.0);
        assert!((c.best - 0.1).abs() < 1e-12, "{}", c.best);
        assert!(
            (c.levels[1].value.unwrap() - 0.28).abs() < 1e-12,
            "{:?}",
            c.levels
        );
        let d = c.runs.iter().find(|r| r.arm == Arm::Disback).unwrap();
        // DisBack's smoothed curve: 1, 0.75, 0.567, 0.267 (index 3): the
        // crossing is (0.567 − 0.28) / (0.567 − 0.267) = 0.956 of the way
        // from index 2 (1,000 passes) to 3 (1,400).
        let expected = 1000.0 + 400.0 * (0.5666666666666667 - 0.28) / 0.3;
        let reached = d.reached[1].unwrap();
        assert!((reached.passes - expected).abs() < 1e-9, "{reached:?}");
        // Seconds interpolate the same way (a hundredth of a pass here).
        assert!((reached.seconds.unwrap() - (expected - 200.0) / 400.0 - 2.0).abs() < 1e-9);
        // The baseline's smoothed curve crosses 0.28 between 3,200 and
        // 3,600 passes: mean(0.5, 0.4, 0.3) = 0.4 at 7, mean(0.4, 0.3,
        // 0.2) = 0.3 at 8, mean(0.3, 0.2, 0.12) = 0.207 at 9.
        let b = c.runs.iter().find(|r| r.arm == Arm::DiffInstruct).unwrap();
        let b80 = 3200.0 + 400.0 * (0.3 - 0.28) / (0.3 - 0.20666666666666667);
        assert!((b.reached[1].unwrap().passes - b80).abs() < 1e-9);
        // The headline: 80%, passes, stage 1 counted.
        let s = c.headline.against[0].1.unwrap();
        assert!((s.median - b80 / expected).abs() < 1e-9, "{s:?}");
        assert!(
            c.headline.verdict.contains("as fast as Diff-Instruct"),
            "{}",
            c.headline.verdict
        );
        // Without stage 1, DisBack's cost loses its 200 passes.
        let without = c
            .speedup(Arm::DiffInstruct, 1, Unit::PassesWithoutStage1)
            .unwrap();
        assert!((without.spread.unwrap().median - b80 / (expected - 200.0)).abs() < 1e-9);
        // The last level is the baseline's own final quality.
        assert_eq!(c.levels[3].name, "Diff-Instruct's final");
        assert!(
            (c.levels[3].value.unwrap() - 0.32 / 3.0).abs() < 1e-12,
            "{:?}",
            c.levels
        );
    }

    #[test]
    fn a_slower_disback_is_called_slower() {
        let quick = [1.0, 0.3, 0.1, 0.1, 0.1, 0.1];
        let slow = [1.0, 0.8, 0.6, 0.3, 0.1, 0.1, 0.1, 0.1];
        let runs = vec![
            run(Arm::Disback, 0, 200.0, &slow),
            run(Arm::DiffInstruct, 0, 0.0, &quick),
            run(Arm::Disback, 1, 200.0, &slow),
            run(Arm::DiffInstruct, 1, 0.0, &quick),
        ];
        let c = compare_runs("toy", runs, 500, 200).unwrap();
        let s = c.headline.against[0].1.unwrap();
        assert!(s.median < 1.0, "{s:?}");
        assert!(
            c.headline.verdict.contains("NOT faster"),
            "{}",
            c.headline.verdict
        );
        assert_eq!(
            c.speedup(Arm::DiffInstruct, 1, Unit::Passes)
                .unwrap()
                .per_seed
                .len(),
            2
        );
    }

    #[test]
    fn a_level_never_reached_gives_no_speed_up() {
        // The baseline never gets below 0.5: no run of it reaches 80%.
        let good = [1.0, 0.4, 0.1, 0.1, 0.1];
        let stuck = [1.0, 0.6, 0.55, 0.5, 0.5];
        let runs = vec![
            run(Arm::Disback, 0, 0.0, &good),
            run(Arm::DiffInstruct, 0, 0.0, &stuck),
        ];
        let c = compare_runs("toy", runs, 400, 0).unwrap();
        assert_eq!(c.arm(Arm::DiffInstruct).unwrap().to_level[1].reached, 0);
        assert!(c.headline.against[0].1.is_none());
        assert!(
            c.headline.verdict.contains("no speed-up can be measured"),
            "{}",
            c.headline.verdict
        );
    }

    #[test]
    fn runs_that_all_get_worse_reach_no_level() {
        let worse = [1.0, 1.5, 2.0, 2.5, 2.5];
        let runs = vec![
            run(Arm::Disback, 0, 0.0, &worse),
            run(Arm::DiffInstruct, 0, 0.0, &worse),
        ];
        let c = compare_runs("toy", runs, 400, 0).unwrap();
        assert!(c.levels.iter().all(|l| l.value.is_none()), "{:?}", c.levels);
        assert!(c.headline.against[0].1.is_none());
        assert!(
            c.headline.verdict.contains("no arm ended better than G⁰"),
            "{}",
            c.headline.verdict
        );
    }

    #[test]
    fn spreads_are_medians_and_ranges() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert!(Spread::of(&[]).is_none());
    }
}
