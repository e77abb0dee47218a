//! The mismatch degree (paper eq. 9): how far a score model's field is from
//! the data's true score where the generator puts its samples,
//! `d_mis(σ) = E_{x_0 ~ G} E_{x_σ ~ N(x_0, σ²)} ‖s(x_σ, σ) − ∇ ln q_σ(x_σ)‖`.

use crate::data::{GaussianMixture, Point, log_sum_exp};
use crate::model::{Denoiser, points_to_tensor, tensor_to_points};
use crate::rng::normal_vec;
use anyhow::Result;
use rand::Rng;

/// The true score of the noised data, exact or estimated.
#[derive(Debug, Clone)]
pub enum TrueScore {
    /// A Gaussian mixture's exact score.
    Exact(GaussianMixture),
    /// The Stable Target Field estimate from a reference batch of data
    /// (Xu et al. 2023): `Σ_i w_i (x_i − x) / σ²` with
    /// `w = softmax(−‖x − x_i‖² / 2σ²)`, computed in log space one query
    /// point at a time, so memory stays at the size of the batch.
    StableTargetField(Vec<Point>),
}

impl TrueScore {
    pub fn score(&self, x: [f64; 2], sigma: f64) -> [f64; 2] {
        match self {
            TrueScore::Exact(gmm) => gmm.score(x, sigma),
            TrueScore::StableTargetField(reference) => {
                let var = sigma * sigma;
                let logits = reference.iter().map(|r| {
                    let d2 = (x[0] - r[0] as f64).powi(2) + (x[1] - r[1] as f64).powi(2);
                    -d2 / (2.0 * var)
                });
                let lse = log_sum_exp(logits.clone());
                let mut s = [0.0; 2];
                for (r, l) in reference.iter().zip(logits) {
                    let w = (l - lse).exp();
                    s[0] += w * (r[0] as f64 - x[0]);
                    s[1] += w * (r[1] as f64 - x[1]);
                }
                [s[0] / var, s[1] / var]
            }
        }
    }
}

/// Points `x_0 + σ ε` for one σ, with ε from the host RNG.
pub fn noised(samples: &[Point], sigma: f64, rng: &mut impl Rng) -> Vec<Point> {
    let eps = normal_vec(rng, samples.len() * 2);
    samples
        .iter()
        .zip(eps.chunks_exact(2))
        .map(|(p, e)| [p[0] + sigma as f32 * e[0], p[1] + sigma as f32 * e[1]])
        .collect()
}

/// A score model's score at given points, as host vectors.
pub fn model_scores(model: &Denoiser, points: &[Point], sigma: f64) -> Result<Vec<Point>> {
    let device = model.device();
    let levels = model.levels(vec![sigma as f32; points.len()], &device)?;
    let s = model
        .score(&points_to_tensor(points, &device)?, &levels)?
        .detach();
    tensor_to_points(&s)
}

/// Mean ‖s_model − s_true‖ over already-noised points at one σ.
pub fn mismatch_at(scores: &[Point], points: &[Point], sigma: f64, truth: &TrueScore) -> f64 {
    let total: f64 = scores
        .iter()
        .zip(points)
        .map(|(s, p)| {
            let t = truth.score([p[0] as f64, p[1] as f64], sigma);
            ((s[0] as f64 - t[0]).powi(2) + (s[1] as f64 - t[1]).powi(2)).sqrt()
        })
        .sum();
    total / points.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn gmm() -> GaussianMixture {
        GaussianMixture::new(&GaussianMixture::ring_components(6, 2.0, 0.2))
    }

    #[test]
    fn stable_target_field_converges_to_the_exact_score() {
        let gmm = gmm();
        let exact = TrueScore::Exact(gmm.clone());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let queries = noised(&gmm.sample(300, &mut rng), 0.5, &mut rng);
        let exact_scores: Vec<Point> = queries
            .iter()
            .map(|p| {
                let s = exact.score([p[0] as f64, p[1] as f64], 0.5);
                [s[0] as f32, s[1] as f32]
            })
            .collect();
        let mut errors = Vec::new();
        for n in [64, 512, 8192] {
            let stf = TrueScore::StableTargetField(gmm.sample(n, &mut rng));
            // The exact score seen as a "model": its mismatch to STF.
            errors.push(mismatch_at(&exact_scores, &queries, 0.5, &stf));
        }
        assert!(errors[0] > errors[1] && errors[1] > errors[2], "{errors:?}");
        // Scores here have magnitude ~1/σ ≈ 2; at 8192 references STF is
        // within 0.1 of the exact score on average.
        assert!(errors[2] < 0.1, "{errors:?}");
    }

    #[test]
    fn exact_score_has_zero_mismatch_and_an_offset_score_its_offset() {
        let gmm = gmm();
        let truth = TrueScore::Exact(gmm.clone());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
        let pts = noised(&gmm.sample(500, &mut rng), 0.3, &mut rng);
        let exact: Vec<Point> = pts
            .iter()
            .map(|p| {
                let s = gmm.score([p[0] as f64, p[1] as f64], 0.3);
                [s[0] as f32, s[1] as f32]
            })
            .collect();
        assert!(mismatch_at(&exact, &pts, 0.3, &truth) < 1e-5);
        // A constant offset (3, 4) has norm 5 everywhere.
        let shifted: Vec<Point> = exact.iter().map(|s| [s[0] + 3.0, s[1] + 4.0]).collect();
        assert!((mismatch_at(&shifted, &pts, 0.3, &truth) - 5.0).abs() < 1e-4);
    }
}
