//! Mode statistics of a sample under a known Gaussian mixture.

use crate::data::{GaussianMixture, Point};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeStats {
    /// Per component: its share of the samples divided by its weight
    /// (1 is exact; a sample counts for its most likely component).
    pub shares: Vec<f64>,
    /// Fraction of modes holding at least half their expected mass.
    pub coverage: f64,
    /// Largest |share − 1| over the modes: the worst relative weight error.
    pub max_weight_error: f64,
    /// Mean negative log-likelihood of the samples under the true mixture.
    pub nll: f64,
    /// Fraction of samples within 3 standard deviations of some mode's mean.
    pub precision: f64,
}

impl ModeStats {
    pub fn new(gmm: &GaussianMixture, samples: &[Point]) -> Self {
        let k = gmm.components().len();
        let n = samples.len().max(1) as f64;
        let mut counts = vec![0usize; k];
        let (mut nll, mut near) = (0.0, 0usize);
        for p in samples {
            let x = [p[0] as f64, p[1] as f64];
            counts[gmm.most_likely_component(x)] += 1;
            nll -= gmm.log_density(x, 0.0);
            let close = gmm.components().iter().any(|c| {
                let d2 = (x[0] - c.mean[0]).powi(2) + (x[1] - c.mean[1]).powi(2);
                d2 <= (3.0 * c.std).powi(2)
            });
            near += close as usize;
        }
        let shares: Vec<f64> = counts
            .iter()
            .zip(gmm.components())
            .map(|(&c, comp)| c as f64 / n / comp.weight)
            .collect();
        Self {
            coverage: shares.iter().filter(|&&s| s >= 0.5).count() as f64 / k as f64,
            max_weight_error: shares.iter().map(|s| (s - 1.0).abs()).fold(0.0, f64::max),
            nll: nll / n,
            precision: near as f64 / n,
            shares,
        }
    }

    /// The smallest share: below 0.5 a mode is as good as dropped.
    pub fn min_share(&self) -> f64 {
        self.shares.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn exact_samples_cover_every_mode_and_a_dropped_mode_is_detected() {
        let gmm = GaussianMixture::new(&GaussianMixture::ring_components(5, 2.0, 0.1));
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let xs = gmm.sample(10_000, &mut rng);
        let good = ModeStats::new(&gmm, &xs);
        assert_eq!(good.coverage, 1.0);
        assert!(good.max_weight_error < 0.1, "{good:?}");
        assert!(
            good.precision > 0.98,
            "3 std in 2-D holds 98.9%: {}",
            good.precision
        );
        // The true NLL is the entropy: about ln 5 + ln(2πe σ²) = 1.609 + (−1.77).
        assert!(
            (good.nll - (5f64.ln() + (std::f64::consts::TAU * std::f64::consts::E * 0.01).ln())).abs() < 0.05
        );

        let dropped: Vec<Point> = xs
            .iter()
            .copied()
            .filter(|p| gmm.most_likely_component([p[0] as f64, p[1] as f64]) != 2)
            .collect();
        let bad = ModeStats::new(&gmm, &dropped);
        assert_eq!(bad.coverage, 0.8);
        assert_eq!(bad.shares[2], 0.0);
        assert!(bad.max_weight_error >= 1.0);
        assert_eq!(bad.min_share(), 0.0);
        // Samples far from every mode lower precision.
        let far = vec![[10.0f32, 10.0]; 100];
        assert_eq!(ModeStats::new(&gmm, &far).precision, 0.0);
    }
}
