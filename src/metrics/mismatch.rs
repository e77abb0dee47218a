//! The mismatch degree (paper eq. 9): how far a score model's field is from
//! the data's true score where the generator puts its samples,
//! `d_mis(σ) = E_{x_0 ~ G} E_{x_σ ~ N(x_0, σ²)} ‖s(x_σ, σ) − ∇ ln q_σ(x_σ)‖`,
//! in any dimension (points, or images as vectors of pixels).

use crate::data::{GaussianMixture, Samples, log_sum_exp};
use crate::model::Denoiser;
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
    StableTargetField(Samples),
}

impl TrueScore {
    pub fn score(&self, x: &[f64], sigma: f64) -> Vec<f64> {
        match self {
            TrueScore::Exact(gmm) => gmm.score_at(x, sigma),
            TrueScore::StableTargetField(reference) => {
                let var = sigma * sigma;
                let logits: Vec<f64> = reference
                    .rows()
                    .map(|r| {
                        let d2: f64 = x.iter().zip(r).map(|(x, r)| (x - *r as f64).powi(2)).sum();
                        -d2 / (2.0 * var)
                    })
                    .collect();
                let lse = log_sum_exp(logits.iter().copied());
                let mut s = vec![0.0; x.len()];
                for (r, l) in reference.rows().zip(&logits) {
                    let w = (l - lse).exp();
                    for ((s, x), r) in s.iter_mut().zip(x).zip(r) {
                        *s += w * (*r as f64 - x);
                    }
                }
                s.iter().map(|s| s / var).collect()
            }
        }
    }
}

/// Samples `x_0 + σ ε` for one σ, with ε from the host RNG.
pub fn noised(samples: &Samples, sigma: f64, rng: &mut impl Rng) -> Samples {
    let eps = normal_vec(rng, samples.values.len());
    Samples {
        shape: samples.shape.clone(),
        values: samples
            .values
            .iter()
            .zip(eps)
            .map(|(x, e)| x + sigma as f32 * e)
            .collect(),
    }
}

/// A score model's score at given samples, on the host.
pub fn model_scores(model: &Denoiser, samples: &Samples, sigma: f64) -> Result<Samples> {
    let device = model.device();
    let levels = model.levels(vec![sigma as f32; samples.len()], &device)?;
    let x = samples.to_tensor(&device)?;
    let s = crate::model::frozen(|| model.score(&x, &levels))?;
    Samples::from_tensor(&s)
}

/// Mean ‖s_model − s_true‖ over already-noised samples at one σ.
pub fn mismatch_at(scores: &Samples, points: &Samples, sigma: f64, truth: &TrueScore) -> f64 {
    let total: f64 = scores
        .rows()
        .zip(points.rows())
        .map(|(s, p)| {
            let p: Vec<f64> = p.iter().map(|&v| v as f64).collect();
            let t = truth.score(&p, sigma);
            s.iter()
                .zip(&t)
                .map(|(s, t)| (*s as f64 - t).powi(2))
                .sum::<f64>()
                .sqrt()
        })
        .sum();
    total / points.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Point;
    use rand::SeedableRng;

    fn gmm() -> GaussianMixture {
        GaussianMixture::new(&GaussianMixture::ring_components(6, 2.0, 0.2))
    }

    #[test]
    fn stable_target_field_converges_to_the_exact_score() {
        let gmm = gmm();
        let exact = TrueScore::Exact(gmm.clone());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let queries = noised(&Samples::from_points(&gmm.sample(300, &mut rng)), 0.5, &mut rng);
        let exact_scores = Samples::from_points(
            &queries
                .points()
                .unwrap()
                .iter()
                .map(|p| {
                    let s = exact.score(&[p[0] as f64, p[1] as f64], 0.5);
                    [s[0] as f32, s[1] as f32]
                })
                .collect::<Vec<_>>(),
        );
        let mut errors = Vec::new();
        for n in [64, 512, 8192] {
            let stf = TrueScore::StableTargetField(Samples::from_points(&gmm.sample(n, &mut rng)));
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
        let pts = noised(&Samples::from_points(&gmm.sample(500, &mut rng)), 0.3, &mut rng);
        let exact: Vec<Point> = pts
            .points()
            .unwrap()
            .iter()
            .map(|p| {
                let s = gmm.score([p[0] as f64, p[1] as f64], 0.3);
                [s[0] as f32, s[1] as f32]
            })
            .collect();
        assert!(mismatch_at(&Samples::from_points(&exact), &pts, 0.3, &truth) < 1e-5);
        // A constant offset (3, 4) has norm 5 everywhere.
        let shifted =
            Samples::from_points(&exact.iter().map(|s| [s[0] + 3.0, s[1] + 4.0]).collect::<Vec<_>>());
        assert!((mismatch_at(&shifted, &pts, 0.3, &truth) - 5.0).abs() < 1e-4);
    }
}
