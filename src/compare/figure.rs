//! The comparison's figures: each arm's convergence against network
//! passes (stage 1 included) with seed bands and the headline level (the
//! paper's Fig. 1), and the teacher's mismatch degree at the generator's
//! samples (Fig. 4).

use super::Arm;
use super::stats::{Comparison, Measured, RunOutcome, Spread};
use crate::report::{Curves, Line, save};
use anyhow::Result;
use std::path::{Path, PathBuf};

pub fn plot_comparison(dir: &Path, c: &Comparison) -> Result<Vec<PathBuf>> {
    let band = |arm: Arm, pick: fn(&Measured) -> f64| -> Line {
        let runs: Vec<&RunOutcome> = c.runs.iter().filter(|r| r.arm == arm).collect();
        let n = runs.iter().map(|r| r.curve.len()).min().unwrap_or(0);
        let mut points = Vec::with_capacity(n);
        let mut band = Vec::with_capacity(n);
        for i in 0..n {
            let values: Vec<f64> = runs.iter().map(|r| pick(&r.curve[i])).collect();
            let s = Spread::of(&values).expect("at least one run");
            let passes = runs[0].curve[i].passes;
            points.push((passes, s.median));
            band.push((passes, s.min, s.max));
        }
        Line {
            label: format!("{arm} (median, band: min–max over {} seeds)", runs.len()),
            points,
            band,
        }
    };
    let arms: Vec<Arm> = c.arms.iter().map(|a| a.arm).collect();
    let headline = c.levels.iter().find(|l| l.name == c.headline.level);
    let convergence = Curves {
        name: "compare-convergence".into(),
        title: format!("{}: DisBack vs Diff-Instruct", c.config),
        x_label: "network passes (stage 1 included)".into(),
        y_label: format!("{} to the data", c.quality_measure),
        lines: arms.iter().map(|&a| band(a, |m| m.quality)).collect(),
        log_x: false,
        log_y: true,
        marks: Vec::new(),
        reference: headline.and_then(|l| Some((l.value?, format!("{} level {:.4}", l.name, l.value?)))),
    };
    let mismatch = Curves {
        name: "compare-mismatch".into(),
        title: format!("{}: teacher's mismatch degree at generator samples", c.config),
        x_label: "network passes".into(),
        y_label: "E‖s_θ − ∇log q_σ‖ (mean over σ)".into(),
        lines: arms.iter().map(|&a| band(a, |m| m.mismatch)).collect(),
        log_x: false,
        log_y: true,
        marks: Vec::new(),
        reference: None,
    };
    let mut written = save(&convergence, dir)?;
    written.extend(save(&mismatch, dir)?);
    Ok(written)
}
