//! When stage 2 moves from one target to the next.
//!
//! Targets run from the most degraded useful node (N−1; node N is where s_φ
//! starts, so it would give no signal) back to the teacher (node 0). The
//! rules, per policy:
//! - `fixed`: exactly `steps[i]` generator steps on target i.
//! - `auto`: the gap (mean ‖D_fake − D_target‖) is averaged over windows of
//!   `window` steps; a window that is not at least `min_improvement` (a
//!   fraction) below the previous one is a stall; after `patience` stalls in
//!   a row, and at least `min_steps` on the target, it switches. It switches
//!   after `steps[i]` steps at the latest.
//! - `manual`: never switches by itself; [`BacktrackSchedule::skip`] does.
//!
//! The teacher is always last. It runs until the total generator steps reach
//! the budget (the sum of `steps`) and it has had at least its own entry, so
//! early `auto` switches hand their unused steps to the teacher and the run
//! always ends on the teacher.

use crate::config::{ScheduleConfig, SchedulePolicy};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Stay,
    /// Move from node `from` to node `to`.
    Switch {
        from: usize,
        to: usize,
    },
    Finish,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AutoRule {
    window: usize,
    min_improvement: f64,
    patience: usize,
    min_steps: usize,
}

/// The stall detector of the `auto` policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Stall {
    sum: f64,
    count: usize,
    previous: Option<f64>,
    stalls: usize,
}

impl Stall {
    fn observe(&mut self, gap: f64, rule: &AutoRule) {
        self.sum += gap;
        self.count += 1;
        if self.count < rule.window {
            return;
        }
        let mean = self.sum / self.count as f64;
        if let Some(prev) = self.previous {
            if mean > prev * (1.0 - rule.min_improvement) {
                self.stalls += 1;
            } else {
                self.stalls = 0;
            }
        }
        self.previous = Some(mean);
        self.sum = 0.0;
        self.count = 0;
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BacktrackSchedule {
    /// Node indices in visiting order; the last is 0, the teacher.
    targets: Vec<usize>,
    steps: Vec<usize>,
    budget: usize,
    policy: SchedulePolicy,
    /// The policy to return to when manual mode is turned off.
    base_policy: SchedulePolicy,
    rule: AutoRule,
    /// Index into `targets` of the current target.
    position: usize,
    /// Generator steps taken with each target (same order as `targets`).
    spent: Vec<usize>,
    /// Generator steps taken in all: the sum of `spent`.
    total: usize,
    stall: Stall,
}

impl BacktrackSchedule {
    /// A schedule over a path with `nodes` recorded nodes after the teacher
    /// (0 for Diff-Instruct: the teacher is the only target). Uses the last
    /// `max(nodes, 1)` entries of `config.steps`: all of them normally, fewer
    /// when recording was cut short.
    pub fn new(nodes: usize, config: &ScheduleConfig) -> Self {
        let count = nodes.max(1);
        let targets: Vec<usize> = (0..count).rev().collect();
        let steps = config.steps[config.steps.len() - count..].to_vec();
        let base_policy = match config.policy {
            SchedulePolicy::Manual => SchedulePolicy::Fixed,
            p => p,
        };
        Self {
            budget: steps.iter().sum(),
            spent: vec![0; count],
            targets,
            steps,
            policy: config.policy,
            base_policy,
            rule: AutoRule {
                window: config.window,
                min_improvement: config.min_improvement,
                patience: config.patience,
                min_steps: config.min_steps,
            },
            position: 0,
            total: 0,
            stall: Stall::default(),
        }
    }

    /// The current target's node index.
    pub fn target(&self) -> usize {
        self.targets[self.position]
    }

    pub fn targets(&self) -> &[usize] {
        &self.targets
    }

    /// Position of the current target in [`Self::targets`].
    pub fn position(&self) -> usize {
        self.position
    }

    /// Generator steps spent on each target so far.
    pub fn spent(&self) -> &[usize] {
        &self.spent
    }

    /// Planned steps per target (for manual targets, a guide only).
    pub fn planned(&self) -> &[usize] {
        &self.steps
    }

    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Generator steps taken on all targets.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn policy(&self) -> SchedulePolicy {
        self.policy
    }

    pub fn on_teacher(&self) -> bool {
        self.position + 1 == self.targets.len()
    }

    /// Turns manual mode on (no automatic switches) or back off.
    pub fn set_manual(&mut self, on: bool) {
        self.policy = if on {
            SchedulePolicy::Manual
        } else {
            self.base_policy
        };
    }

    /// How many more per-step gaps the `auto` rule needs before its window
    /// closes; `None` when no rule reads them (other policies, the
    /// teacher). The caller keeps gaps on the device until then and hands
    /// them over together ([`Self::observe_gaps`]): one read per window.
    pub fn gaps_needed(&self) -> Option<usize> {
        (self.policy == SchedulePolicy::Auto && !self.on_teacher())
            .then(|| self.rule.window - self.stall.count)
    }

    /// Feeds per-step gaps, in step order, to the `auto` rule. Partial
    /// windows are kept (and saved with the schedule), so feeding a window
    /// in pieces, as a checkpoint does, decides the same as feeding it whole.
    pub fn observe_gaps(&mut self, gaps: &[f64]) {
        for &gap in gaps {
            self.stall.observe(gap, &self.rule);
        }
    }

    /// Accounts one generator step (its gap already observed when the
    /// `auto` rule needed it), and says what comes next.
    pub fn record_step(&mut self) -> Decision {
        self.total += 1;
        self.spent[self.position] += 1;
        let on_target = self.spent[self.position];
        if self.on_teacher() {
            let own = self.steps[self.position];
            return if on_target >= own && self.total >= self.budget {
                Decision::Finish
            } else {
                Decision::Stay
            };
        }
        let cap = self.steps[self.position];
        let switch = match self.policy {
            SchedulePolicy::Fixed => on_target >= cap,
            SchedulePolicy::Auto => {
                on_target >= cap
                    || (self.stall.stalls >= self.rule.patience && on_target >= self.rule.min_steps)
            }
            SchedulePolicy::Manual => false,
        };
        if switch { self.advance() } else { Decision::Stay }
    }

    /// Moves to the next target now; `None` when already on the teacher.
    pub fn skip(&mut self) -> Option<Decision> {
        (!self.on_teacher()).then(|| self.advance())
    }

    fn advance(&mut self) -> Decision {
        let from = self.target();
        self.position += 1;
        self.stall = Stall::default();
        Decision::Switch {
            from,
            to: self.target(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(policy: SchedulePolicy, steps: Vec<usize>) -> ScheduleConfig {
        ScheduleConfig {
            policy,
            steps,
            window: 10,
            min_improvement: 0.05,
            patience: 2,
            min_steps: 30,
        }
    }

    /// Runs a schedule to the end, returning the switches and total steps.
    /// Gaps are handed over as the backtracker does: held until the rule's
    /// window needs them.
    fn run(s: &mut BacktrackSchedule, gap: impl Fn(usize) -> f64) -> (Vec<(usize, usize)>, usize) {
        let mut switches = Vec::new();
        let mut held = Vec::new();
        for step in 0..100_000 {
            if let Some(needed) = s.gaps_needed() {
                held.push(gap(step));
                if held.len() >= needed {
                    s.observe_gaps(&std::mem::take(&mut held));
                }
            }
            let decision = s.record_step();
            if matches!(decision, Decision::Switch { .. }) {
                held.clear();
            }
            match decision {
                Decision::Stay => {}
                Decision::Switch { from, to } => switches.push((from, to)),
                Decision::Finish => return (switches, step + 1),
            }
        }
        panic!("schedule never finished");
    }

    #[test]
    fn fixed_visits_every_node_down_to_the_teacher() {
        let mut s = BacktrackSchedule::new(4, &config(SchedulePolicy::Fixed, vec![5, 6, 7, 20]));
        assert_eq!(s.targets(), &[3, 2, 1, 0]);
        let (switches, total) = run(&mut s, |_| 1.0);
        assert_eq!(switches, vec![(3, 2), (2, 1), (1, 0)]);
        assert_eq!(total, 38);
        assert_eq!(s.spent(), &[5, 6, 7, 20]);
        assert_eq!(s.target(), 0);
    }

    #[test]
    fn auto_switches_on_a_stall_and_gives_the_rest_to_the_teacher() {
        let mut s = BacktrackSchedule::new(2, &config(SchedulePolicy::Auto, vec![500, 100]));
        // A flat gap stalls from the second window on: switch once both
        // `patience` stalls and `min_steps` are reached (step 30).
        let (switches, total) = run(&mut s, |_| 1.0);
        assert_eq!(switches, vec![(1, 0)]);
        assert_eq!(s.spent(), &[30, 570]);
        assert_eq!(total, 600, "the budget is kept");
    }

    #[test]
    fn auto_stays_while_the_gap_keeps_falling() {
        let mut s = BacktrackSchedule::new(2, &config(SchedulePolicy::Auto, vec![200, 100]));
        // Falls 10% per window of 10: never stalls, so the cap decides.
        let (_, _) = run(&mut s, |step| 0.9f64.powi((step / 10) as i32));
        assert_eq!(s.spent(), &[200, 100]);
    }

    #[test]
    fn manual_waits_for_skip_and_still_ends_on_the_teacher() {
        let mut s = BacktrackSchedule::new(3, &config(SchedulePolicy::Manual, vec![5, 5, 8]));
        for _ in 0..50 {
            assert_eq!(s.record_step(), Decision::Stay);
        }
        assert_eq!(s.skip(), Some(Decision::Switch { from: 2, to: 1 }));
        assert_eq!(s.skip(), Some(Decision::Switch { from: 1, to: 0 }));
        assert_eq!(s.skip(), None, "no target after the teacher");
        let (_, teacher_steps) = run(&mut s, |_| 1.0);
        assert_eq!(teacher_steps, 8, "the teacher gets at least its own entry");
        // Leaving manual mode restores the configured policy's behaviour.
        let mut s = BacktrackSchedule::new(2, &config(SchedulePolicy::Fixed, vec![5, 5]));
        s.set_manual(true);
        for _ in 0..7 {
            assert_eq!(s.record_step(), Decision::Stay);
        }
        s.set_manual(false);
        assert_eq!(s.record_step(), Decision::Switch { from: 1, to: 0 });
    }

    /// A window fed in pieces (as around a checkpoint) counts as one.
    #[test]
    fn gaps_fed_in_pieces_decide_as_fed_whole() {
        let gaps = |step: usize| {
            if step < 20 {
                1.0 / (1 + step / 10) as f64
            } else {
                0.5
            }
        };
        let mut whole = BacktrackSchedule::new(2, &config(SchedulePolicy::Auto, vec![500, 100]));
        let expected = run(&mut whole, gaps);
        let mut pieces = BacktrackSchedule::new(2, &config(SchedulePolicy::Auto, vec![500, 100]));
        let mut switches = Vec::new();
        for step in 0..600 {
            if pieces.gaps_needed().is_some() {
                pieces.observe_gaps(&[gaps(step)]);
            }
            if let Decision::Switch { from, to } = pieces.record_step() {
                switches.push((from, to));
            }
        }
        assert_eq!((switches, 600), expected);
        assert_eq!(pieces.spent(), whole.spent());
    }

    #[test]
    fn a_cut_short_path_keeps_the_teacher_entry() {
        let s = BacktrackSchedule::new(2, &config(SchedulePolicy::Fixed, vec![5, 6, 7, 20]));
        assert_eq!(s.targets(), &[1, 0]);
        assert_eq!(s.planned(), &[7, 20]);
        let s = BacktrackSchedule::new(0, &config(SchedulePolicy::Fixed, vec![30]));
        assert_eq!(s.targets(), &[0]);
    }
}
