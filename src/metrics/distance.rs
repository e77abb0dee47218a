//! Distances between two samples of 2-D points.

use crate::data::Point;
use rand::Rng;
use rand_distr::{Distribution, UnitCircle};

fn dist(a: &Point, b: &Point) -> f64 {
    let dx = a[0] as f64 - b[0] as f64;
    let dy = a[1] as f64 - b[1] as f64;
    (dx * dx + dy * dy).sqrt()
}

/// Mean distance over all pairs across two samples.
fn mean_cross(a: &[Point], b: &[Point]) -> f64 {
    let total: f64 = a.iter().map(|x| b.iter().map(|y| dist(x, y)).sum::<f64>()).sum();
    total / (a.len() * b.len()) as f64
}

/// Mean distance over distinct pairs within one sample.
fn mean_within(a: &[Point]) -> f64 {
    let n = a.len();
    if n < 2 {
        return 0.0;
    }
    let mut total = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            total += dist(&a[i], &a[j]);
        }
    }
    total / (n * (n - 1) / 2) as f64
}

/// The energy distance `2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖` (Székely),
/// with unbiased within-sample terms: ≈ 0 (either sign, by sampling noise)
/// for two samples of one distribution, positive and growing as they part.
/// Quadratic in the sample sizes: keep them to a few thousand.
pub fn energy_distance(a: &[Point], b: &[Point]) -> f64 {
    2.0 * mean_cross(a, b) - mean_within(a) - mean_within(b)
}

/// The sliced 1-Wasserstein distance: the mean, over `projections` random
/// directions, of the 1-D Wasserstein-1 distance between the projected
/// samples (computed on quantiles, so sizes may differ).
pub fn sliced_wasserstein(a: &[Point], b: &[Point], projections: usize, rng: &mut impl Rng) -> f64 {
    let quantiles = a.len().max(b.len());
    let mut total = 0.0;
    for _ in 0..projections {
        let [u, v]: [f64; 2] = UnitCircle.sample(rng);
        let project = |s: &[Point]| {
            let mut p: Vec<f64> = s.iter().map(|x| x[0] as f64 * u + x[1] as f64 * v).collect();
            p.sort_by(f64::total_cmp);
            p
        };
        let (pa, pb) = (project(a), project(b));
        let at = |p: &[f64], q: f64| p[((q * p.len() as f64) as usize).min(p.len() - 1)];
        let w: f64 = (0..quantiles)
            .map(|i| {
                let q = (i as f64 + 0.5) / quantiles as f64;
                (at(&pa, q) - at(&pb, q)).abs()
            })
            .sum();
        total += w / quantiles as f64;
    }
    total / projections as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ComponentConfig;
    use crate::data::GaussianMixture;
    use rand::SeedableRng;

    fn ring() -> GaussianMixture {
        GaussianMixture::new(&GaussianMixture::ring_components(8, 2.0, 0.2))
    }

    #[test]
    fn distances_vanish_for_one_distribution_and_grow_when_it_moves() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let gmm = ring();
        let a = gmm.sample(1500, &mut rng);
        let b = gmm.sample(1500, &mut rng);
        let shift = |s: &[Point], d: f32| s.iter().map(|p| [p[0] + d, p[1]]).collect::<Vec<_>>();
        let same = energy_distance(&a, &b);
        assert!(same.abs() < 0.01, "same distribution: {same}");
        // Against itself the unbiased estimate is −2/n · E‖X − X'‖: tiny.
        assert!(energy_distance(&a, &a).abs() < 0.01);
        let small = energy_distance(&a, &shift(&b, 0.3));
        let large = energy_distance(&a, &shift(&b, 1.0));
        assert!(small > 0.03 && large > 3.0 * small, "{small} {large}");
        // A sample collapsed onto the origin is far from the ring.
        let collapsed = vec![[0.0f32, 0.0]; 1500];
        assert!(energy_distance(&a, &collapsed) > 1.0);

        let sw_same = sliced_wasserstein(&a, &b, 64, &mut rng);
        let sw_shift = sliced_wasserstein(&a, &shift(&b, 1.0), 64, &mut rng);
        assert!(sw_same < 0.05, "{sw_same}");
        // A shift by d along x moves each projection by |d cos θ|: mean 2d/π.
        assert!((sw_shift - 2.0 / std::f64::consts::PI).abs() < 0.1, "{sw_shift}");
        assert!(sliced_wasserstein(&a, &collapsed, 64, &mut rng) > 1.0);
    }

    #[test]
    fn energy_distance_of_two_gaussians_matches_the_closed_form_ordering() {
        // Two unit Gaussians a distance apart: the distance grows with it.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let one = |m: f64| {
            GaussianMixture::new(&[ComponentConfig {
                mean: [m, 0.0],
                std: 1.0,
                weight: 1.0,
            }])
        };
        let a = one(0.0).sample(1000, &mut rng);
        let mut last = 0.0;
        for m in [0.5, 1.0, 2.0] {
            let d = energy_distance(&a, &one(m).sample(1000, &mut rng));
            assert!(d > last, "not increasing at {m}: {d} ≤ {last}");
            last = d;
        }
    }
}
