//! The bar a 2-D mixture's generator must clear, the demo's: every mode
//! holds at least half its weight, at least 70% of the samples lie within 3
//! std of a mode (precision), and the energy distance to the data is at
//! most 0.02. Applied to each arm's final samples and to the teacher's own,
//! so that a failure is seen to be the generator's or the teacher's (a
//! generator distilled from a teacher that fails the bar cannot be expected
//! to clear it).

use crate::metrics::Evaluation;
use serde::{Deserialize, Serialize};

/// The smallest share of its weight every mode must hold.
pub const MIN_SHARE: f64 = 0.5;
/// The smallest fraction of samples within 3 std of a mode.
pub const MIN_PRECISION: f64 = 0.7;
/// The largest energy distance to the data.
pub const MAX_ENERGY: f64 = 0.02;

/// One set of samples against the bar.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judged {
    pub good: bool,
    /// What fell short ("mode 3 holds 0.42 of its weight"), empty when good.
    pub failures: Vec<String>,
}

impl Judged {
    /// The bar applied to `e`; None where it does not apply (no mixture).
    pub fn of(e: &Evaluation) -> Option<Self> {
        let modes = e.modes.as_ref()?;
        let mut failures: Vec<String> = modes
            .shares
            .iter()
            .enumerate()
            .filter(|(_, s)| **s < MIN_SHARE)
            .map(|(k, s)| format!("mode {k} holds {s:.2} of its weight"))
            .collect();
        if modes.precision < MIN_PRECISION {
            failures.push(format!("precision {:.3}", modes.precision));
        }
        if e.energy > MAX_ENERGY {
            failures.push(format!("energy distance {:.4}", e.energy));
        }
        Some(Self {
            good: failures.is_empty(),
            failures,
        })
    }

    /// "pass" or "fail: mode 3 holds 0.42 of its weight; precision 0.650".
    pub fn describe(&self) -> String {
        match self.good {
            true => "pass".into(),
            false => format!("fail: {}", self.failures.join("; ")),
        }
    }
}

/// The bar, in words, for tables.
pub fn bar() -> String {
    format!("every mode ≥ {MIN_SHARE} of its weight, precision ≥ {MIN_PRECISION}, energy ≤ {MAX_ENERGY}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ModeStats;

    fn evaluation(shares: Vec<f64>, precision: f64, energy: f64) -> Evaluation {
        Evaluation {
            energy,
            sliced_w: 0.0,
            modes: Some(ModeStats {
                shares,
                coverage: 1.0,
                max_weight_error: 0.0,
                nll: 0.0,
                precision,
            }),
            classes: None,
            classifier_fd: None,
            pixel_fd: None,
            mismatch_target: Vec::new(),
            mismatch_teacher: Vec::new(),
            mismatch_data: Vec::new(),
            measured: String::new(),
        }
    }

    #[test]
    fn the_bar_names_what_fell_short() {
        let good = Judged::of(&evaluation(vec![0.5, 1.2], 0.7, 0.02)).unwrap();
        assert!(good.good && good.describe() == "pass", "{good:?}");
        let bad = Judged::of(&evaluation(vec![1.1, 0.42, 0.9], 0.65, 0.03)).unwrap();
        assert!(!bad.good);
        assert_eq!(
            bad.describe(),
            "fail: mode 1 holds 0.42 of its weight; precision 0.650; energy distance 0.0300"
        );
        let mut images = evaluation(vec![], 1.0, 0.0);
        images.modes = None;
        assert_eq!(Judged::of(&images), None);
    }
}
