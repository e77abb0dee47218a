//! Score fields on a grid: what the terminal lab's third preview and the
//! run's `fields/*.json` (paper Fig. 13) show.

use super::session::Session;
use crate::data::{Point, Samples};
use crate::metrics::model_scores;
use crate::model::Denoiser;
use crate::rundir::{FIELD_GRID, ScoreField};
use anyhow::Result;

impl Session {
    /// `model`'s field (named `label`) against s_φ's, at σ.
    pub fn score_field(&self, label: String, model: &Denoiser, sigma: f32) -> Result<ScoreField> {
        let points = self.bounds().grid(FIELD_GRID.0, FIELD_GRID.1);
        let grid = Samples::from_points(&points);
        let scores = |model: &Denoiser| -> Result<Vec<Point>> {
            let s = model_scores(model, &grid, sigma as f64)?;
            Ok(s.points().expect("a score field is 2-D"))
        };
        Ok(ScoreField {
            sigma,
            target: scores(model)?,
            fake: scores(self.tracking_model())?,
            target_label: label,
            columns: FIELD_GRID.0,
            points,
        })
    }

    /// A σ at which the fields show the data's structure: a fifth of the
    /// data's spread (0.35 on the default ring, about two mode widths).
    pub fn default_field_sigma(&self) -> f32 {
        (0.2 * self.config().sigma_data()) as f32
    }
}
