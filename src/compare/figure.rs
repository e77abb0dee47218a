//! The comparison's figures: convergence and mismatch degree per arm,
//! with seed bands.

use super::Arm;
use super::stats::{Comparison, RunOutcome, Spread};
use crate::report::{Curves, Line, save};
use anyhow::Result;
use std::path::{Path, PathBuf};

/// The comparison's figures: every arm's convergence with seed bands and
/// the threshold (paper Fig. 1), and their mismatch degree (Fig. 4).
pub fn plot_comparison(dir: &Path, c: &Comparison) -> Result<Vec<PathBuf>> {
    let band = |m: Arm, pick: &dyn Fn(&RunOutcome) -> &Vec<(usize, f64)>| -> Line {
        let runs: Vec<&RunOutcome> = c.runs.iter().filter(|r| r.arm == m).collect();
        let n = runs.iter().map(|r| pick(r).len()).min().unwrap_or(0);
        let mut points = Vec::with_capacity(n);
        let mut band = Vec::with_capacity(n);
        for i in 0..n {
            let values: Vec<f64> = runs.iter().map(|r| pick(r)[i].1).collect();
            let s = Spread::of(&values).expect("at least one run");
            let cost = pick(runs[0])[i].0 as f64;
            points.push((cost, s.median));
            band.push((cost, s.min, s.max));
        }
        Line {
            label: format!("{m} (median, band: min–max over {} seeds)", runs.len()),
            points,
            band,
        }
    };
    let methods: Vec<Arm> = c.arms.iter().map(|a| a.arm).collect();
    let convergence = Curves {
        name: "compare-convergence".into(),
        title: format!("{}: DisBack vs Diff-Instruct", c.config),
        x_label: "cost (recording iterations + generator updates)".into(),
        y_label: format!("{} to the data", c.quality_measure),
        lines: methods.iter().map(|&m| band(m, &|r| &r.quality)).collect(),
        log_x: false,
        log_y: true,
        marks: Vec::new(),
        reference: Some((c.threshold, format!("threshold {:.4}", c.threshold))),
    };
    let mismatch = Curves {
        name: "compare-mismatch".into(),
        title: format!("{}: teacher's mismatch degree at generator samples", c.config),
        x_label: "cost".into(),
        y_label: "E‖s_θ − ∇log q_σ‖ (mean over σ)".into(),
        lines: methods.iter().map(|&m| band(m, &|r| &r.mismatch)).collect(),
        log_x: false,
        log_y: true,
        marks: Vec::new(),
        reference: None,
    };
    let mut written = save(&convergence, dir)?;
    written.extend(save(&mismatch, dir)?);
    Ok(written)
}
