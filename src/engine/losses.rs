//! The losses between two log lines: summed on the host ([`LossWindow`]),
//! or still on the device until the next read ([`PendingLosses`]).

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// Sums of the losses since the last log line.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LossWindow {
    sums: [f64; 4],
    counts: [usize; 4],
}

#[derive(Debug, Clone, Copy)]
pub enum LossKind {
    Generator = 0,
    Fake = 1,
    Teacher = 2,
    Gap = 3,
}

impl LossWindow {
    pub fn add(&mut self, kind: LossKind, value: f64) {
        self.sums[kind as usize] += value;
        self.counts[kind as usize] += 1;
    }

    pub fn mean(&self, kind: LossKind) -> Option<f64> {
        let i = kind as usize;
        (self.counts[i] > 0).then(|| self.sums[i] / self.counts[i] as f64)
    }

    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// Losses of the steps since the last read, still on the device, each with
/// what it is and the iteration it came from. Read back together (one
/// transfer) before every log line and every file a run writes, so a
/// non-finite loss stops training before anything built on it is saved.
#[derive(Debug, Default)]
pub struct PendingLosses {
    origins: Vec<(LossKind, &'static str, usize)>,
    values: crate::transfer::Pending,
}

impl PendingLosses {
    /// Holds `value` (a scalar tensor), the `what` loss of `iteration`.
    pub fn push(
        &mut self,
        kind: LossKind,
        what: &'static str,
        iteration: usize,
        value: &candle_core::Tensor,
    ) -> Result<()> {
        self.origins.push((kind, what, iteration));
        self.values.push(value)
    }

    /// Adds the held losses, averaged over `team`'s ranks (each saw its
    /// share of the batch), to `window` in step order; the first one that
    /// is NaN or infinite (on any rank) is an error naming it.
    pub fn settle(&mut self, window: &mut LossWindow, team: &crate::parallel::Collective) -> Result<()> {
        let values = team.average_values(self.values.take()?)?;
        for ((kind, what, iteration), v) in std::mem::take(&mut self.origins).into_iter().zip(values) {
            if !v.is_finite() {
                anyhow::bail!(
                    "the {what} loss is {v} at iteration {iteration}: training stopped there, and \
                     nothing computed after it was saved"
                );
            }
            window.add(kind, v);
        }
        Ok(())
    }
}
