//! The comparison's table, as `disback compare` prints it and writes it
//! to `compare.txt`.

use super::stats::{ArmSummary, Comparison};
use std::fmt::Write;

impl Comparison {
    /// The table `disback compare` prints: a flat list of rows, kept
    /// together so the layout reads top to bottom like the output.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let seeds = self
            .seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            t,
            "disback compare — {}: seeds {seeds}; {} generator updates per run; DisBack's cost \
             includes {} recording iterations",
            self.config, self.generator_updates, self.record_iterations
        );
        let _ = writeln!(
            t,
            "quality threshold: {} ≤ {:.4}; {}",
            self.quality_measure, self.threshold, self.threshold_rule
        );
        let _ = writeln!(t, "values: median [min–max] over seeds, at the end of each run\n");
        let header: String = self
            .arms
            .iter()
            .map(|a| format!(" {:>26}", a.arm.to_string()))
            .collect();
        let _ = writeln!(t, "{:<28}{header}", "");
        // A row no arm has a value for (mode rows on images, image rows on
        // 2-D data) is left out.
        let row = |t: &mut String, name: &str, f: &dyn Fn(&ArmSummary) -> Option<String>| {
            if self.arms.iter().all(|m| f(m).is_none()) {
                return;
            }
            let cells: String = self
                .arms
                .iter()
                .map(|m| format!(" {:>26}", f(m).unwrap_or_else(|| "—".into())))
                .collect();
            let _ = writeln!(t, "{name:<28}{cells}");
        };
        row(&mut t, "energy distance", &|m| Some(m.energy.show(4)));
        row(&mut t, "sliced Wasserstein", &|m| Some(m.sliced_w.show(4)));
        row(&mut t, "classifier Fréchet dist.", &|m| {
            m.classifier_fd.map(|s| s.show(3))
        });
        row(&mut t, "smallest class share", &|m| {
            m.min_class_share.map(|s| s.show(2))
        });
        row(&mut t, "pixel Fréchet distance", &|m| {
            m.pixel_fd.map(|s| s.show(3))
        });
        row(&mut t, "mode coverage", &|m| m.coverage.map(|s| s.show(2)));
        row(&mut t, "smallest mode share", &|m| m.min_share.map(|s| s.show(2)));
        row(&mut t, "largest weight error", &|m| {
            m.max_weight_error.map(|s| s.show(2))
        });
        row(&mut t, "NLL under the data", &|m| m.nll.map(|s| s.show(2)));
        row(&mut t, "precision (≤ 3 std)", &|m| {
            m.precision.map(|s| s.show(3))
        });
        row(&mut t, "teacher mismatch (mean σ)", &|m| {
            Some(m.mismatch_teacher.show(3))
        });
        row(&mut t, "cost to threshold", &|m| {
            m.cost_to_threshold.map(|s| s.show(0))
        });
        row(&mut t, "seeds reaching it", &|m| {
            Some(format!("{}/{}", m.reached, self.seeds.len()))
        });
        row(&mut t, "cost budget", &|m| Some(m.budget.to_string()));
        for s in &self.speedups {
            let per_seed: Vec<String> = self
                .seeds
                .iter()
                .zip(&s.per_seed)
                .map(|(seed, x)| match x {
                    Some(x) => format!("{seed}: {x:.2}×"),
                    None => format!("{seed}: —"),
                })
                .collect();
            let _ = writeln!(
                t,
                "\nspeed-up per seed ({}'s cost / DisBack's): {}",
                s.against,
                per_seed.join(", ")
            );
            let _ = writeln!(t, "verdict: {}", s.verdict);
        }
        t
    }
}
