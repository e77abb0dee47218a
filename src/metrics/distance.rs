//! Distances between two samples, in any dimension (points or images seen
//! as vectors of pixels).

use crate::data::Samples;
use rand::{Rng, RngExt};
use rand_distr::StandardNormal;

fn dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// Mean distance over all pairs across two samples.
fn mean_cross(a: &Samples, b: &Samples) -> f64 {
    let total: f64 = a.rows().map(|x| b.rows().map(|y| dist(x, y)).sum::<f64>()).sum();
    total / (a.len() * b.len()).max(1) as f64
}

/// Mean distance over distinct pairs within one sample.
fn mean_within(a: &Samples) -> f64 {
    let n = a.len();
    if n < 2 {
        return 0.0;
    }
    let rows: Vec<&[f32]> = a.rows().collect();
    let mut total = 0.0;
    for i in 0..n {
        for j in i + 1..n {
            total += dist(rows[i], rows[j]);
        }
    }
    total / (n * (n - 1) / 2) as f64
}

/// The energy distance `2 E‖X − Y‖ − E‖X − X'‖ − E‖Y − Y'‖` (Székely),
/// with unbiased within-sample terms: ≈ 0 (either sign, by sampling noise)
/// for two samples of one distribution, positive and growing as they part.
/// Quadratic in the sample sizes: keep them to a few thousand.
pub fn energy_distance(a: &Samples, b: &Samples) -> f64 {
    2.0 * mean_cross(a, b) - mean_within(a) - mean_within(b)
}

/// The sliced 1-Wasserstein distance: the mean, over `projections` random
/// directions (uniform on the unit sphere), of the 1-D Wasserstein-1
/// distance between the projected samples (computed on quantiles, so sizes
/// may differ).
pub fn sliced_wasserstein(a: &Samples, b: &Samples, projections: usize, rng: &mut impl Rng) -> f64 {
    let quantiles = a.len().max(b.len());
    let mut total = 0.0;
    for _ in 0..projections {
        let mut u: Vec<f64> = (0..a.dim()).map(|_| rng.sample(StandardNormal)).collect();
        let norm = u.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        u.iter_mut().for_each(|v| *v /= norm);
        let project = |s: &Samples| {
            let mut p: Vec<f64> = s
                .rows()
                .map(|x| x.iter().zip(&u).map(|(x, u)| *x as f64 * u).sum())
                .collect();
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
    use crate::data::{GaussianMixture, Point};
    use rand::SeedableRng;

    fn ring() -> GaussianMixture {
        GaussianMixture::new(&GaussianMixture::ring_components(8, 2.0, 0.2))
    }

    #[test]
    fn distances_vanish_for_one_distribution_and_grow_when_it_moves() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let gmm = ring();
        let a = Samples::from_points(&gmm.sample(1500, &mut rng));
        let b_points = gmm.sample(1500, &mut rng);
        let b = Samples::from_points(&b_points);
        let shift = |s: &[Point], d: f32| {
            Samples::from_points(&s.iter().map(|p| [p[0] + d, p[1]]).collect::<Vec<_>>())
        };
        let same = energy_distance(&a, &b);
        assert!(same.abs() < 0.01, "same distribution: {same}");
        // Against itself the unbiased estimate is −2/n · E‖X − X'‖: tiny.
        assert!(energy_distance(&a, &a).abs() < 0.01);
        let small = energy_distance(&a, &shift(&b_points, 0.3));
        let large = energy_distance(&a, &shift(&b_points, 1.0));
        assert!(small > 0.03 && large > 3.0 * small, "{small} {large}");
        // A sample collapsed onto the origin is far from the ring.
        let collapsed = Samples::from_points(&vec![[0.0f32, 0.0]; 1500]);
        assert!(energy_distance(&a, &collapsed) > 1.0);

        let sw_same = sliced_wasserstein(&a, &b, 64, &mut rng);
        let sw_shift = sliced_wasserstein(&a, &shift(&b_points, 1.0), 64, &mut rng);
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
        let a = Samples::from_points(&one(0.0).sample(1000, &mut rng));
        let mut last = 0.0;
        for m in [0.5, 1.0, 2.0] {
            let d = energy_distance(&a, &Samples::from_points(&one(m).sample(1000, &mut rng)));
            assert!(d > last, "not increasing at {m}: {d} ≤ {last}");
            last = d;
        }
    }
}
