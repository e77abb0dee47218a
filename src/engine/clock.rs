//! Counting an iteration on the session's clock, and the log line (with a
//! measurement when due) written as each one is counted.

use super::losses::LossKind;
use super::phase::Moment;
use super::protocol::Event;
use super::session::Session;
use crate::metrics::Evaluation;
use crate::rundir::{MetricsRecord, Stage};
use anyhow::Result;

impl Session {
    /// Counts one iteration and writes its log line (with a measurement
    /// during backtracking, every `metrics.every` steps) when due. Runs after
    /// the update and before any stage transition it causes.
    pub(super) fn advance_clock(&mut self, may_evaluate: bool) -> Result<()> {
        self.advance_clock_on(None, may_evaluate)
    }

    pub(super) fn advance_clock_on(&mut self, target: Option<usize>, may_evaluate: bool) -> Result<()> {
        self.clock.stage_step += 1;
        self.clock.iteration += 1;
        let every = self.config.metrics.every;
        let due = self.phase.stage() == Stage::Backtrack
            && every > 0
            && self.clock.stage_step.is_multiple_of(every);
        let measure = may_evaluate && due;
        let eval = if measure {
            // Losses first: a measurement of broken weights is no result.
            // Rank 0 measures; every rank settles (the losses are averaged
            // over the ranks).
            self.settle()?;
            match self.leads() {
                true => Some(self.timed_evaluate()?),
                false => None,
            }
        } else {
            None
        };
        if measure || self.clock.stage_step.is_multiple_of(self.config.log.every) {
            self.log_line_on(target, eval)?;
        }
        Ok(())
    }

    /// Writes a log line from the window (skipped when nothing happened
    /// since the last one, unless there is a measurement to record).
    pub(super) fn log_line(&mut self, eval: Option<Evaluation>) -> Result<()> {
        let target = self.phase.backtracker().map(|b| b.schedule.target());
        self.log_line_on(target, eval)
    }

    fn log_line_on(&mut self, target: Option<usize>, eval: Option<Evaluation>) -> Result<()> {
        self.settle()?;
        let w = &self.window;
        if eval.is_none() && w.mean(LossKind::Teacher).or(w.mean(LossKind::Fake)).is_none() {
            return Ok(());
        }
        let stage = self.phase.stage();
        let record = MetricsRecord {
            stage,
            step: self.clock.stage_step,
            cost: self.clock.cost,
            passes: (stage != Stage::Pretrain).then_some(self.clock.passes),
            target_node: target.filter(|_| self.phase.stage() == Stage::Backtrack),
            loss_g: w.mean(LossKind::Generator),
            loss_fake: w.mean(LossKind::Fake),
            loss_teacher: w.mean(LossKind::Teacher),
            gap: w.mean(LossKind::Gap),
            eval,
        };
        self.log.append(&record)?;
        self.board_record(&record)?;
        if let Some(e) = &record.eval {
            self.latest_eval = Some(e.clone());
            self.timeline.push(Moment {
                cost: self.clock.cost,
                passes: self.clock.passes,
                seconds: self.clock.seconds,
            });
        }
        self.latest = Some(record.clone());
        self.window.clear();
        self.pending.push(Event::Logged(Box::new(record)));
        Ok(())
    }
}
