//! What an iteration costs, in network passes: the unit the comparisons
//! count in, beside measured seconds, so that a recording iteration is not
//! counted like a generator iteration (one network's update against a
//! generator update, two frozen evaluations and s_φ's updates).
//!
//! One pass is a forward and a backward pass of the score network on one
//! distillation batch (`distill.batch` samples). A forward pass alone is a
//! third of that (a backward costs about two forwards); work on B samples
//! counts B / `distill.batch`; the generator counts by its size against the
//! score network's (1 when it is the score network, as a teacher-initialised
//! one is; its share of the parameters for the toy's MLP, whose
//! multiply-adds per sample are its parameter count, as the ResNet-MLP's
//! are). Teacher pretraining is shared by every arm and not counted.

use crate::config::Config;

const FORWARD: f64 = 1.0 / 3.0;

/// Passes per iteration of each stage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PassCost {
    /// One recording iteration (or one step of the baseline's fit of s_φ to
    /// G⁰): G⁰ forward, then s'_θ forward and backward, on `record.batch`.
    pub recording: f64,
    /// One generator iteration: G forward and backward, the target and s_φ
    /// forward, then per s_φ update G forward and s_φ forward and backward.
    pub generator: f64,
}

impl PassCost {
    /// `generator_share`: the generator's size as a share of the score
    /// network's.
    pub fn new(config: &Config, generator_share: f64) -> Self {
        let g = generator_share;
        let record_batches = config.record.batch as f64 / config.distill.batch as f64;
        let fake_steps = config.distill.fake_steps_per_generator_step as f64;
        Self {
            recording: record_batches * (g * FORWARD + 1.0),
            generator: g + 2.0 * FORWARD + fake_steps * (g * FORWARD + 1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_count_each_network_evaluation() {
        // Teacher-initialised generator (share 1), equal batches, two s_φ
        // updates: recording 1/3 + 1; a generator step 1 + 2/3 + 2 (1/3 + 1).
        let mut c = Config::default();
        c.record.batch = 256;
        c.distill.batch = 256;
        c.distill.fake_steps_per_generator_step = 2;
        let p = PassCost::new(&c, 1.0);
        assert!((p.recording - 4.0 / 3.0).abs() < 1e-12);
        assert!((p.generator - (1.0 + 2.0 / 3.0 + 2.0 * 4.0 / 3.0)).abs() < 1e-12);
        // A recording batch twice the distillation's costs twice as much; a
        // small generator costs its share.
        c.record.batch = 512;
        c.distill.fake_steps_per_generator_step = 1;
        let p = PassCost::new(&c, 0.25);
        assert!((p.recording - 2.0 * (0.25 / 3.0 + 1.0)).abs() < 1e-12);
        assert!((p.generator - (0.25 + 2.0 / 3.0 + 0.25 / 3.0 + 1.0)).abs() < 1e-12);
    }
}
