//! Score fields on a grid: what the terminal lab's third preview and the
//! run's `fields/*.json` (paper Fig. 13) show.

use super::session::Session;
use crate::data::{Point, Samples};
use crate::metrics::model_scores;
use crate::model::Denoiser;
use crate::rundir::{FIELD_GRID, ScoreField};
use anyhow::Result;

impl Session {
    /// `model`'s field (named `label`) against s_φ's, at σ. For a mixture
    /// in more dimensions: on the plane (its grid carried there by Q), the
    /// scores' part along it (Qᵀ s).
    pub fn score_field(&self, label: String, model: &Denoiser, sigma: f32) -> Result<ScoreField> {
        let points = self.bounds().grid(FIELD_GRID.0, FIELD_GRID.1);
        let embedding = self.data().plane().map(|p| p.embedding().clone());
        let grid = match &embedding {
            Some(e) if !e.is_plane() => {
                let mut values = Vec::with_capacity(points.len() * e.dim());
                for p in &points {
                    e.lift_onto([p[0] as f64, p[1] as f64], &mut values);
                }
                Samples {
                    shape: vec![e.dim()],
                    values,
                }
            }
            _ => Samples::from_points(&points),
        };
        let scores = |model: &Denoiser| -> Result<Vec<Point>> {
            let s = model_scores(model, &grid, sigma as f64)?;
            self.plane_points(&s)
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
