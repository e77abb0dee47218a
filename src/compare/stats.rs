//! DisBack against the Diff-Instruct baselines over several seeds: final
//! metrics, the cost to reach a quality threshold, the speed-up against
//! each baseline, and the figures.
//!
//! The threshold rule, stated in every table: each run's energy distance
//! is smoothed by a trailing mean over 3 measurements; the *best* arm is
//! the one with the lowest median final (smoothed) distance; the threshold
//! lies 95% of the way from the distance at the start (the median over
//! the best arm's seeds of its first measurement, the initial generator)
//! down to the best arm's median final distance. A run reaches it at the
//! first cost where its smoothed distance is at or below it. Costs count every
//! distillation iteration: DisBack's recording iterations included.

use super::Arm;
use crate::metrics::Evaluation;
use crate::report::evaluations;
use crate::rundir::read_metrics;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One finished run, as the comparison sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunOutcome {
    pub arm: Arm,
    pub seed: u64,
    pub run_dir: PathBuf,
    /// (cost, quality measure) at each measurement: the energy distance
    /// on 2-D data, a Fréchet distance on images ([`Evaluation::quality`]).
    #[serde(alias = "energy")]
    pub quality: Vec<(usize, f64)>,
    /// (cost, the teacher's mean mismatch degree) at each measurement.
    pub mismatch: Vec<(usize, f64)>,
    pub final_eval: Evaluation,
    /// Filled in by the comparison.
    pub cost_to_threshold: Option<usize>,
}

impl RunOutcome {
    /// Reads a finished run's measurements.
    pub fn read(arm: Arm, seed: u64, run_dir: &Path) -> Result<Self> {
        let records = read_metrics(&run_dir.join("metrics.jsonl"))?;
        let evals = evaluations(&records);
        let Some((_, last)) = evals.last() else {
            bail!("{}: the run has no measurements", run_dir.display());
        };
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
        Ok(Self {
            arm,
            seed,
            run_dir: run_dir.to_path_buf(),
            quality: evals.iter().map(|(c, e)| (*c, e.quality().0)).collect(),
            mismatch: evals
                .iter()
                .map(|(c, e)| (*c, mean(&e.mismatch_teacher)))
                .collect(),
            final_eval: (*last).clone(),
            cost_to_threshold: None,
        })
    }

    fn budget(&self) -> usize {
        self.quality.last().map_or(0, |(c, _)| *c)
    }

    /// The quality curve smoothed by a trailing mean over 3 measurements.
    fn smoothed(&self) -> Vec<(usize, f64)> {
        (0..self.quality.len())
            .map(|i| {
                let window = &self.quality[i.saturating_sub(2)..=i];
                (
                    self.quality[i].0,
                    window.iter().map(|(_, e)| e).sum::<f64>() / window.len() as f64,
                )
            })
            .collect()
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

    pub(super) fn show(&self, decimals: usize) -> String {
        format!(
            "{:.d$} [{:.d$}–{:.d$}]",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArmSummary {
    pub arm: Arm,
    pub energy: Spread,
    pub sliced_w: Spread,
    /// Labelled images only.
    #[serde(default)]
    pub classifier_fd: Option<Spread>,
    #[serde(default)]
    pub min_class_share: Option<Spread>,
    /// Images only.
    #[serde(default)]
    pub pixel_fd: Option<Spread>,
    /// Mixtures only.
    pub coverage: Option<Spread>,
    pub min_share: Option<Spread>,
    pub max_weight_error: Option<Spread>,
    pub nll: Option<Spread>,
    pub precision: Option<Spread>,
    pub mismatch_teacher: Spread,
    /// Over the seeds that reached the threshold.
    pub cost_to_threshold: Option<Spread>,
    pub reached: usize,
    pub budget: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Comparison {
    pub config: String,
    pub seeds: Vec<u64>,
    pub generator_updates: usize,
    pub record_iterations: usize,
    pub threshold: f64,
    /// What the threshold is on ([`Evaluation::quality`]).
    #[serde(default = "energy_distance_name")]
    pub quality_measure: String,
    pub threshold_rule: String,
    pub arms: Vec<ArmSummary>,
    /// DisBack's speed-up against each baseline arm.
    pub speedups: Vec<Speedup>,
    pub verdict: String,
    pub runs: Vec<RunOutcome>,
}

fn energy_distance_name() -> String {
    "energy distance".into()
}

/// DisBack against one baseline arm.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Speedup {
    pub against: Arm,
    /// Per seed: the baseline's cost to the threshold over DisBack's (None
    /// where either did not reach it).
    pub per_seed: Vec<Option<f64>>,
    pub spread: Option<Spread>,
    pub verdict: String,
}

const RULE: &str = "95% of the way from the initial generator's distance to the best arm's \
                    final one (medians over seeds); a run reaches it when its distance, \
                    averaged over its last 3 measurements, is at or below it";

/// How far down from the start to the best final distance the threshold
/// lies. Not "at half the budget": once every arm has converged, that
/// distance is within the measurement noise and no run reaches it reliably.
const THRESHOLD_FRACTION: f64 = 0.95;

/// Summarises paired runs (the same seeds for every arm, DisBack among
/// them). One function on purpose: it is the threshold rule, in the order
/// the module's header states it.
pub fn compare_runs(
    config: &str,
    mut runs: Vec<RunOutcome>,
    generator_updates: usize,
    record_iterations: usize,
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
    let final_median = |rs: &[RunOutcome]| {
        Spread::of(
            &rs.iter()
                .map(|r| r.smoothed().last().map_or(f64::INFINITY, |s| s.1))
                .collect::<Vec<_>>(),
        )
        .map_or(f64::INFINITY, |s| s.median)
    };
    let best = arms
        .iter()
        .map(|&a| of(&runs, a))
        .min_by(|a, b| final_median(a).total_cmp(&final_median(b)))
        .expect("at least two arms");
    let start: Vec<f64> = best
        .iter()
        .filter_map(|r| r.quality.first().map(|e| e.1))
        .collect();
    let start = Spread::of(&start).context("no runs")?.median;
    let end = final_median(&best);
    let threshold = end + (1.0 - THRESHOLD_FRACTION) * (start - end);
    for r in &mut runs {
        r.cost_to_threshold = r
            .smoothed()
            .iter()
            .find(|(_, e)| *e <= threshold)
            .map(|(c, _)| *c);
    }
    let mut seeds: Vec<u64> = runs.iter().map(|r| r.seed).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let summaries = arms
        .iter()
        .map(|&a| summarise(a, &of(&runs, a)))
        .collect::<Result<Vec<_>>>()?;
    let speedups: Vec<Speedup> = summaries[1..]
        .iter()
        .map(|baseline| speedup_against(&runs, &seeds, &summaries[0], baseline))
        .collect();
    let verdict = speedups
        .iter()
        .map(|s| s.verdict.clone())
        .collect::<Vec<_>>()
        .join("; ");
    Ok(Comparison {
        config: config.to_string(),
        seeds,
        generator_updates,
        record_iterations,
        threshold,
        quality_measure: runs[0].final_eval.quality().1.into(),
        threshold_rule: RULE.into(),
        arms: summaries,
        speedups,
        verdict,
        runs,
    })
}

/// Per seed, the baseline's cost to the threshold over DisBack's.
fn speedup_against(
    runs: &[RunOutcome],
    seeds: &[u64],
    disback: &ArmSummary,
    baseline: &ArmSummary,
) -> Speedup {
    let cost = |seed: u64, a: Arm| {
        runs.iter()
            .find(|r| r.seed == seed && r.arm == a)?
            .cost_to_threshold
    };
    let per_seed: Vec<Option<f64>> = seeds
        .iter()
        .map(|&seed| Some(cost(seed, baseline.arm)? as f64 / cost(seed, Arm::Disback)?.max(1) as f64))
        .collect();
    let reached: Vec<f64> = per_seed.iter().flatten().copied().collect();
    let spread = Spread::of(&reached);
    Speedup {
        against: baseline.arm,
        verdict: verdict(disback, baseline, spread, reached.len(), seeds.len()),
        per_seed,
        spread,
    }
}

fn summarise(arm: Arm, runs: &[RunOutcome]) -> Result<ArmSummary> {
    let spread = |f: &dyn Fn(&Evaluation) -> f64| {
        Spread::of(&runs.iter().map(|r| f(&r.final_eval)).collect::<Vec<_>>())
    };
    let optional = |f: &dyn Fn(&Evaluation) -> Option<f64>| {
        Spread::of(&runs.iter().filter_map(|r| f(&r.final_eval)).collect::<Vec<_>>())
    };
    let modes = |f: &dyn Fn(&crate::metrics::ModeStats) -> f64| {
        let v: Vec<f64> = runs
            .iter()
            .filter_map(|r| r.final_eval.modes.as_ref().map(f))
            .collect();
        Spread::of(&v)
    };
    let costs: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.cost_to_threshold.map(|c| c as f64))
        .collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
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
        mismatch_teacher: spread(&|e| mean(&e.mismatch_teacher)).context("no runs")?,
        cost_to_threshold: Spread::of(&costs),
        reached: costs.len(),
        budget: runs.iter().map(RunOutcome::budget).max().unwrap_or(0),
    })
}

fn verdict(d: &ArmSummary, b: &ArmSummary, speedup: Option<Spread>, paired: usize, seeds: usize) -> String {
    let paired = if paired == 1 {
        "the 1 seed".to_string()
    } else {
        format!("the {paired} seeds")
    };
    let against = b.arm;
    match speedup {
        None => format!(
            "against {against}: no speed-up can be measured (DisBack reached the threshold on \
             {}/{seeds} seeds, {against} on {}/{seeds}, never both on the same seed)",
            d.reached, b.reached
        ),
        Some(s) if s.median > 1.0 => format!(
            "DisBack reached the threshold {:.2}× faster than {against} (median over {paired} \
             where both did; range {:.2}–{:.2}×; reached on {}/{seeds} vs {}/{seeds} seeds)",
            s.median, s.min, s.max, d.reached, b.reached
        ),
        Some(s) => format!(
            "DisBack is NOT faster than {against}: median speed-up {:.2}× (range {:.2}–{:.2}×, over \
             {paired} where both reached the threshold; reached on {}/{seeds} vs {}/{seeds})",
            s.median, s.min, s.max, d.reached, b.reached
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(arm: Arm, seed: u64, energies: &[f64]) -> RunOutcome {
        let offset = if arm == Arm::Disback { 200 } else { 0 };
        let eval = Evaluation {
            energy: *energies.last().unwrap(),
            sliced_w: 0.1,
            modes: None,
            classes: None,
            classifier_fd: None,
            pixel_fd: None,
            mismatch_target: vec![1.0],
            mismatch_teacher: vec![1.0],
            mismatch_data: Vec::new(),
        };
        RunOutcome {
            arm,
            seed,
            run_dir: PathBuf::new(),
            quality: energies
                .iter()
                .enumerate()
                .map(|(i, e)| (offset + 100 * i, *e))
                .collect(),
            mismatch: energies
                .iter()
                .enumerate()
                .map(|(i, _)| (offset + 100 * i, 1.0))
                .collect(),
            final_eval: eval,
            cost_to_threshold: None,
        }
    }

    #[test]
    fn the_threshold_and_speed_up_follow_the_stated_rule() {
        // DisBack falls fast, the baseline slowly; both flatten at 0.1.
        let fast = [1.0, 0.5, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1];
        let slow = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.12, 0.1];
        let runs = vec![run(Arm::Disback, 0, &fast), run(Arm::DiffInstruct, 0, &slow)];
        let c = compare_runs("toy", runs, 1000, 200).unwrap();
        // DisBack is best (final smoothed 0.1 against 0.14); the threshold
        // is 95% of the way from its start, 1.0, to 0.1: 0.145.
        assert!((c.threshold - 0.145).abs() < 1e-12, "{}", c.threshold);
        let d = c.runs.iter().find(|r| r.arm == Arm::Disback).unwrap();
        let b = c.runs.iter().find(|r| r.arm == Arm::DiffInstruct).unwrap();
        // DisBack's smoothed curve: mean(0.2, 0.1, 0.1) = 0.133 at index 4,
        // cost 200 + 400.
        assert_eq!(d.cost_to_threshold, Some(600));
        // The baseline's: mean(0.3, 0.2, 0.12) = 0.207 at 900, then
        // mean(0.2, 0.12, 0.1) = 0.14 at 1000.
        assert_eq!(b.cost_to_threshold, Some(1000));
        let s = c.speedups[0].spread.unwrap();
        assert!((s.median - 1000.0 / 600.0).abs() < 1e-12, "{s:?}");
        assert!(c.verdict.contains("1.67× faster"), "{}", c.verdict);
        assert!(c.table().contains("threshold"));
    }

    #[test]
    fn a_slower_disback_is_called_slower() {
        let quick = [1.0, 0.3, 0.1, 0.1, 0.1, 0.1];
        let slow = [1.0, 0.8, 0.6, 0.3, 0.1, 0.1, 0.1, 0.1];
        let runs = vec![
            run(Arm::Disback, 0, &slow),
            run(Arm::DiffInstruct, 0, &quick),
            run(Arm::Disback, 1, &slow),
            run(Arm::DiffInstruct, 1, &quick),
        ];
        let c = compare_runs("toy", runs, 500, 200).unwrap();
        let s = c.speedups[0].spread.unwrap();
        assert!(s.median < 1.0, "{s:?}");
        assert!(c.verdict.contains("NOT faster"), "{}", c.verdict);
        assert_eq!(c.speedups[0].per_seed.len(), 2);
    }

    #[test]
    fn each_baseline_gets_its_own_speed_up_in_one_table() {
        // Threshold 0.145; DisBack reaches it at cost 600, the baseline
        // from the teacher at 700, the fitted one at 300.
        let quick = [1.0, 0.1, 0.1, 0.1, 0.1, 0.1];
        let mid = [1.0, 0.3, 0.1, 0.1, 0.1, 0.1];
        let slow = [1.0, 0.9, 0.8, 0.6, 0.3, 0.1, 0.1, 0.1, 0.1];
        let runs = vec![
            run(Arm::Disback, 0, &mid),
            run(Arm::DiffInstruct, 0, &slow),
            run(Arm::DiffInstructFit, 0, &quick),
        ];
        let c = compare_runs("toy", runs, 500, 200).unwrap();
        assert_eq!(c.arms.len(), 3);
        let against: Vec<Arm> = c.speedups.iter().map(|s| s.against).collect();
        assert_eq!(against, vec![Arm::DiffInstruct, Arm::DiffInstructFit]);
        assert!(
            c.speedups[0].verdict.contains("faster than Diff-Instruct"),
            "{}",
            c.verdict
        );
        assert!(
            c.speedups[1]
                .verdict
                .contains("NOT faster than Diff-Instruct, fitted"),
            "{}",
            c.verdict
        );
        let table = c.table();
        assert!(table.contains("Diff-Instruct, fitted s_φ"), "{table}");
        assert_eq!(table.matches("verdict:").count(), 2, "{table}");
    }

    #[test]
    fn spreads_are_medians_and_ranges() {
        let s = Spread::of(&[3.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 10.0));
        assert!(Spread::of(&[]).is_none());
    }
}
