//! The comparison's table, as `disback compare` prints it and writes it
//! to `compare.txt`: the headline first, then the rule, the final metrics,
//! each arm's cost to each level, and every speed-up.

use super::judge::{Judged, bar};
use super::stats::{ArmSummary, Comparison, Spread, Unit};
use std::fmt::Write;

/// Width of an arm's column.
const COLUMN: usize = 28;

impl Comparison {
    pub fn table(&self) -> String {
        let mut t = String::new();
        let seeds = self
            .seeds
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(t, "disback compare — {}: seeds {seeds}", self.config);
        let _ = writeln!(
            t,
            "headline: the {} level, {}: {}",
            self.headline.level,
            self.headline.unit.describe(),
            self.headline.verdict
        );
        let _ = writeln!(
            t,
            "\n{} generator updates per run; stage 1 is {} iterations (DisBack's recording, the fitted \
             baseline's fit of s_φ); cost in network passes (a forward and backward pass of the score \
             network on one distillation batch) and compute seconds",
            self.generator_updates, self.stage1_iterations
        );
        let levels: Vec<String> = self
            .levels
            .iter()
            .map(|l| match l.value {
                Some(v) => format!("{} {v:.4}", l.name),
                None => format!("{} — (none: no arm ended better than G⁰)", l.name),
            })
            .collect();
        let _ = writeln!(
            t,
            "levels of {}: {} (G⁰ {:.4}, best final {:.4}); {}",
            self.quality_measure,
            levels.join(" · "),
            self.start,
            self.best,
            self.rule
        );
        let _ = writeln!(t, "values: median [min–max] over seeds\n");
        let header: String = self
            .arms
            .iter()
            .map(|a| format!(" {:>COLUMN$}", a.arm.to_string()))
            .collect();
        let _ = writeln!(t, "{:<30}{header}", "at the end");
        self.final_rows(&mut t);
        let _ = writeln!(t, "\n{:<30}{header}", "cost to each level");
        for (i, level) in self.levels.iter().enumerate() {
            self.row(&mut t, &format!("{} (passes)", level.name), &|a| {
                show_cost(a.to_level[i].passes, a.to_level[i].reached, self.seeds.len(), 0)
            });
            self.row(&mut t, &format!("{} (seconds)", level.name), &|a| {
                a.to_level[i].seconds.map(|s| s.show(1))
            });
        }
        self.row(&mut t, "stage 1 (passes)", &|a| {
            Some(format!("{:.0}", a.stage1_passes))
        });
        self.row(&mut t, "budget (passes)", &|a| {
            Some(format!("{:.0}", a.budget_passes))
        });
        self.speedup_rows(&mut t);
        t
    }

    fn final_rows(&self, t: &mut String) {
        self.row(t, "energy distance", &|m| Some(m.energy.show(4)));
        self.row(t, "sliced Wasserstein", &|m| Some(m.sliced_w.show(4)));
        self.row(t, "classifier Fréchet dist.", &|m| {
            m.classifier_fd.map(|s| s.show(3))
        });
        self.row(t, "smallest class share", &|m| {
            m.min_class_share.map(|s| s.show(2))
        });
        self.row(t, "pixel Fréchet distance", &|m| m.pixel_fd.map(|s| s.show(3)));
        self.row(t, "mode coverage", &|m| m.coverage.map(|s| s.show(2)));
        self.row(t, "smallest mode share", &|m| m.min_share.map(|s| s.show(2)));
        self.row(t, "largest weight error", &|m| {
            m.max_weight_error.map(|s| s.show(2))
        });
        self.row(t, "NLL under the data", &|m| m.nll.map(|s| s.show(2)));
        self.row(t, "precision (≤ 3 std)", &|m| m.precision.map(|s| s.show(3)));
        self.row(t, "teacher mismatch (mean σ)", &|m| {
            Some(m.mismatch_teacher.show(3))
        });
        let seeds = self.seeds.len();
        self.row(t, "judged good (seeds)", &|m| {
            m.judged_good.map(|g| format!("{g}/{seeds}"))
        });
        let teacher = self.teacher.as_ref();
        if let Some((e, judged)) = teacher.and_then(|e| Some((e, Judged::of(e)?))) {
            let modes = e.modes.as_ref().map_or(String::new(), |m| {
                format!(
                    ", smallest mode share {:.2}, precision {:.3}",
                    m.min_share(),
                    m.precision
                )
            });
            let _ = writeln!(
                t,
                "judged by the demo's bar ({}): the teacher's own samples {} (energy {:.4}{modes})",
                bar(),
                judged.describe(),
                e.energy
            );
        }
    }

    /// DisBack's speed-up against each baseline: per level and unit, then
    /// per seed at the headline.
    fn speedup_rows(&self, t: &mut String) {
        let baselines: Vec<_> = self.arms[1..].iter().map(|a| a.arm).collect();
        let header: String = baselines
            .iter()
            .map(|a| format!(" {:>COLUMN$}", format!("vs {a}")))
            .collect();
        let _ = writeln!(
            t,
            "\nspeed-up of DisBack (baseline's cost / DisBack's, over the seeds where both reached the level)"
        );
        let _ = writeln!(t, "{:<40}{header}", "");
        for (i, level) in self.levels.iter().enumerate() {
            for unit in Unit::ALL {
                let cells: String = baselines
                    .iter()
                    .map(|&b| {
                        let cell = self
                            .speedup(b, i, unit)
                            .and_then(|s| s.spread)
                            .map_or("—".into(), |s| format!("{}×", s.show(2)));
                        format!(" {cell:>COLUMN$}")
                    })
                    .collect();
                let _ = writeln!(t, "{:<40}{cells}", format!("{}, {}", level.name, unit.describe()));
            }
        }
        let headline = self
            .levels
            .iter()
            .position(|l| l.name == self.headline.level)
            .unwrap_or(0);
        for &b in &baselines {
            let Some(s) = self.speedup(b, headline, Unit::Passes) else {
                continue;
            };
            let per_seed: Vec<String> = self
                .seeds
                .iter()
                .zip(&s.per_seed)
                .map(|(seed, x)| match x {
                    Some(x) => format!("{seed}: {x:.2}×"),
                    None => format!("{seed}: —"),
                })
                .collect();
            let _ = writeln!(t, "headline per seed against {b}: {}", per_seed.join(", "));
        }
    }

    /// A row of one value per arm; left out when no arm has one (mode rows
    /// on images, image rows on 2-D data).
    fn row(&self, t: &mut String, name: &str, f: &dyn Fn(&ArmSummary) -> Option<String>) {
        if self.arms.iter().all(|a| f(a).is_none()) {
            return;
        }
        let cells: String = self
            .arms
            .iter()
            .map(|a| format!(" {:>COLUMN$}", f(a).unwrap_or_else(|| "—".into())))
            .collect();
        let _ = writeln!(t, "{name:<30}{cells}");
    }
}

/// A cost spread with how many seeds reached the level, when not all did.
fn show_cost(cost: Option<Spread>, reached: usize, seeds: usize, decimals: usize) -> Option<String> {
    let shown = cost.map_or("never".into(), |s| s.show(decimals));
    Some(match reached == seeds {
        true => shown,
        false => format!("{shown} ({reached}/{seeds})"),
    })
}
