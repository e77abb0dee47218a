//! What a session gives TensorBoard beyond its log lines (which
//! `MetricsLog` writes there itself): a picture of the samples at each
//! measurement. Rank 0 only, like every file of the run.

use super::session::Session;
use crate::config::Config;
use crate::data::Samples;
use crate::rng::{host_rng, streams};
use crate::rundir::{EventLog, MetricsLog, RunDir};
use anyhow::Result;

/// Samples in each picture: an 8 × 8 grid of images, or for 2-D data a
/// scatter of as many points as a measurement draws.
const PICTURE_IMAGES: usize = 64;

/// The log of a run's leading rank, with TensorBoard's event file when
/// `log.tensorboard` asks for it (a new one on each start or resume).
pub(super) fn with_board(log: MetricsLog, config: &Config, run: &RunDir) -> Result<MetricsLog> {
    if !config.log.tensorboard {
        return Ok(log);
    }
    let board = EventLog::create(&run.tensorboard_dir(), &config.metrics.mismatch_sigmas)?;
    Ok(log.with_board(board))
}

impl Session {
    /// The generator's samples as a picture, at the current cost, from
    /// the snapshots' latents (so the pictures compare with each other and
    /// with `samples/`).
    pub(super) fn board_picture(&mut self) -> Result<()> {
        if self.log.board().is_none() {
            return Ok(());
        }
        let mut rng = host_rng(self.config.seed, streams::SNAPSHOTS);
        let n = match self.data.images() {
            Some(_) => PICTURE_IMAGES,
            None => self.evaluator.samples(),
        };
        let samples = Samples::from_tensor(&self.student.average.generate(n, &mut rng)?)?;
        let picture = crate::report::samples_picture(&samples, self.bounds)?;
        let cost = self.clock.cost;
        match self.log.board() {
            Some(board) => board.image(cost, "samples", &picture),
            None => Ok(()),
        }
    }

    /// A node switch, as text at the cost it happened.
    pub(super) fn board_switch(&mut self, from: usize, to: usize) -> Result<()> {
        let cost = self.clock.cost;
        match self.log.board() {
            Some(board) => board.text(
                cost,
                "switches",
                &format!("target node {from} → node {to} at cost {cost}"),
            ),
            None => Ok(()),
        }
    }
}
