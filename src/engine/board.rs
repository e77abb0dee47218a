//! What a session shows TensorBoard: each log line's numbers, node
//! switches as text, and a picture of the samples at each measurement.
//! Rank 0 only, like every file of the run.

use super::session::Session;
use crate::data::Samples;
use crate::rng::{host_rng, streams};
use crate::rundir::{EventLog, MetricsRecord};
use anyhow::Result;

/// Samples in each picture: an 8 × 8 grid of images, or for 2-D data a
/// scatter of as many points as a measurement draws.
const PICTURE_IMAGES: usize = 64;

impl Session {
    /// Opens TensorBoard's event file when `log.tensorboard` asks for it
    /// (a new one on each start or resume).
    pub(super) fn open_board(&mut self) -> Result<()> {
        if self.config.log.tensorboard && self.leads() {
            let sigmas = &self.config.metrics.mismatch_sigmas;
            self.board = Some(EventLog::create(&self.run.tensorboard_dir(), sigmas)?);
        }
        Ok(())
    }

    /// A log line, and after a measurement the picture.
    pub(super) fn board_record(&mut self, record: &MetricsRecord) -> Result<()> {
        let Some(board) = &mut self.board else {
            return Ok(());
        };
        board.record(record)?;
        match record.eval {
            Some(_) => self.board_picture(),
            None => Ok(()),
        }
    }

    /// The generator's samples as a picture, at the current cost, from
    /// the snapshots' latents (so the pictures compare with each other and
    /// with `samples/`).
    fn board_picture(&mut self) -> Result<()> {
        let mut rng = host_rng(self.config.seed, streams::SNAPSHOTS);
        let n = match self.data.images() {
            Some(_) => PICTURE_IMAGES,
            None => self.evaluator.samples(),
        };
        let mut samples = Samples::from_tensor(&self.student.average.generate(n, &mut rng)?)?;
        if let Some(points) = self.data.plane_points(&samples) {
            samples = Samples::from_points(&points);
        }
        let picture = crate::report::samples_picture(&samples, self.bounds)?;
        let cost = self.clock.cost;
        match &mut self.board {
            Some(board) => board.image(cost, "samples", &picture),
            None => Ok(()),
        }
    }

    /// A node switch, as text at the cost it happened.
    pub(super) fn board_switch(&mut self, from: usize, to: usize) -> Result<()> {
        let cost = self.clock.cost;
        match &mut self.board {
            Some(board) => board.text(
                cost,
                "switches",
                &format!("target node {from} → node {to} at cost {cost}"),
            ),
            None => Ok(()),
        }
    }
}
