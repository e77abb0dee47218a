//! `fields/<name>.json`: two score fields sampled on one grid, the
//! terminal lab's score-field preview and the paper's Fig. 13.

use crate::data::Point;
use serde::{Deserialize, Serialize};

/// Grid size of a score field: 25 × 13 points over the data's bounds.
pub const FIELD_GRID: (usize, usize) = (25, 13);

/// Two score fields sampled on the same grid at one σ.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreField {
    pub sigma: f32,
    /// Grid points, row by row from the bottom, `columns` per row.
    pub points: Vec<Point>,
    pub columns: usize,
    /// Name and scores of the target (or teacher).
    pub target_label: String,
    pub target: Vec<Point>,
    /// s_φ's scores.
    pub fake: Vec<Point>,
}
