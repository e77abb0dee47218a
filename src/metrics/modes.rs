//! Mode statistics of a sample under a known Gaussian mixture, in the
//! mixture's `dim` dimensions.

use crate::data::{GaussianMixture, Samples};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModeStats {
    /// Per component: its share of the samples divided by its weight
    /// (1 is exact; a sample counts for its most likely component, by the
    /// exact posterior in `dim` dimensions).
    pub shares: Vec<f64>,
    /// Fraction of modes holding at least half their expected mass.
    pub coverage: f64,
    /// Largest |share − 1| over the modes: the worst relative weight error.
    pub max_weight_error: f64,
    /// Mean negative log-likelihood of the samples under the true mixture
    /// (in `dim` dimensions; with no off-plane spread the law has no
    /// density there, and this is the plane's, at the samples' Qᵀ x).
    pub nll: f64,
    /// Fraction of samples inside some mode's typical region: within 3
    /// standard deviations of its mean in 2-D, the ellipse that holds
    /// 1 − e^{−4.5} ≈ 98.9% of the mode's mass; in `dim` dimensions the
    /// same on the plane, and no farther off it than the data (see
    /// [`TypicalRegion`]).
    pub precision: f64,
}

impl ModeStats {
    pub fn new(gmm: &GaussianMixture, samples: &Samples) -> Self {
        let k = gmm.components().len();
        let n = samples.len().max(1) as f64;
        let region = TypicalRegion::new(gmm);
        let mut counts = vec![0usize; k];
        let (mut nll, mut near) = (0.0, 0usize);
        // One buffer for every sample: the 2-D path allocates nothing per sample.
        let mut x = Vec::with_capacity(samples.dim());
        for row in samples.rows() {
            x.clear();
            x.extend(row.iter().map(|&v| v as f64));
            counts[gmm.most_likely_component_at(&x)] += 1;
            nll -= region.log_density(gmm, &x);
            near += region.holds(gmm, &x) as usize;
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

/// Where a sample counts as near a mode, for [`ModeStats::precision`].
/// In 2-D: within 3 s_k of μ_k, the ellipse holding p = 1 − e^{−4.5} of
/// the mode. In `dim` dimensions the same rule on the plane (Qᵀ x within
/// 3 s_k of μ_k), and beside it a check that the sample is no farther off
/// the plane than the data: ‖x − Q Qᵀ x‖²/off² at most the χ²_{dim−2}
/// quantile of [`OFF_PLANE_MASS`]. One χ²_dim ellipsoid over both would
/// let the dim − 2 off-plane terms lend their budget to the plane's two:
/// in 48-D samples spread evenly round the ring between the modes would
/// count as near one. Exact samples score p × 0.999 ≈ 98.8%. Without
/// off-plane spread the distance from the plane is measured in the mode's
/// own s_k (within 3), as the 2-D rule measures every distance.
struct TypicalRegion {
    /// The squared off-plane distance allowed, in units of off² (None in
    /// 2-D, or without off-plane spread).
    off_plane_radius2: Option<f64>,
}

/// The share of the data's off-plane spread the off-plane check keeps.
const OFF_PLANE_MASS: f64 = 0.999;

/// The mass of a 2-D mode within 3 standard deviations.
#[cfg(test)]
fn three_sigma_mass() -> f64 {
    1.0 - (-4.5f64).exp()
}

impl TypicalRegion {
    fn new(gmm: &GaussianMixture) -> Self {
        let e = gmm.embedding();
        let off_plane_radius2 = (!e.is_plane() && e.off_plane_std() > 0.0)
            .then(|| chi_square_quantile(gmm.dim() - 2, OFF_PLANE_MASS));
        Self { off_plane_radius2 }
    }

    fn holds(&self, gmm: &GaussianMixture, x: &[f64]) -> bool {
        let e = gmm.embedding();
        let (u, off2) = match e.is_plane() {
            true => ([x[0], x[1]], 0.0),
            false => e.split(x),
        };
        let off_plane_ok = |std: f64| match self.off_plane_radius2 {
            Some(radius2) => off2 / e.off_plane_std().powi(2) <= radius2,
            None => off2 <= (3.0 * std).powi(2),
        };
        gmm.components().iter().any(|c| {
            let in_plane = (u[0] - c.mean[0]).powi(2) + (u[1] - c.mean[1]).powi(2);
            in_plane <= (3.0 * c.std).powi(2) && off_plane_ok(c.std)
        })
    }

    /// ln q_0(x), or the plane's at Qᵀ x where the law has no density.
    fn log_density(&self, gmm: &GaussianMixture, x: &[f64]) -> f64 {
        let e = gmm.embedding();
        match e.is_plane() || e.off_plane_std() > 0.0 {
            true => gmm.log_density_at(x, 0.0),
            false => gmm.log_density(e.split(x).0, 0.0),
        }
    }
}

/// The `p` quantile of the χ² law with `dof` degrees of freedom, by
/// bisection on its distribution function P(dof/2, x/2).
fn chi_square_quantile(dof: usize, p: f64) -> f64 {
    let a = dof as f64 / 2.0;
    let cdf = |x: f64| lower_gamma_regularised(a, x / 2.0);
    let mut hi = dof as f64 + 20.0;
    while cdf(hi) < p {
        hi *= 2.0;
    }
    let mut lo = 0.0;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        match cdf(mid) < p {
            true => lo = mid,
            false => hi = mid,
        }
    }
    0.5 * (lo + hi)
}

/// The regularised lower incomplete gamma function P(a, x), for a a
/// multiple of ½, by its power series (x^a e^{−x} / Γ(a + 1)) Σ x^n / ((a+1)…(a+n)).
fn lower_gamma_regularised(a: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let (mut term, mut sum) = (1.0, 1.0);
    let mut n = 1.0;
    while term > 1e-17 * sum {
        term *= x / (a + n);
        sum += term;
        n += 1.0;
    }
    (a * x.ln() - x - ln_gamma_half(a + 1.0) + sum.ln()).exp()
}

/// ln Γ(a) for a a positive multiple of ½: Γ(a + 1) = a Γ(a) from Γ(1) = 1
/// or Γ(½) = √π.
fn ln_gamma_half(a: f64) -> f64 {
    let (mut t, mut lg) = match (2.0 * a).round() as u64 % 2 {
        0 => (1.0, 0.0),
        _ => (0.5, 0.5 * std::f64::consts::PI.ln()),
    };
    while t < a - 0.25 {
        lg += t.ln();
        t += 1.0;
    }
    lg
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
        let good = ModeStats::new(&gmm, &Samples::from_points(&xs));
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

        let dropped: Vec<crate::data::Point> = xs
            .iter()
            .copied()
            .filter(|p| gmm.most_likely_component([p[0] as f64, p[1] as f64]) != 2)
            .collect();
        let bad = ModeStats::new(&gmm, &Samples::from_points(&dropped));
        assert_eq!(bad.coverage, 0.8);
        assert_eq!(bad.shares[2], 0.0);
        assert!(bad.max_weight_error >= 1.0);
        assert_eq!(bad.min_share(), 0.0);
        // Samples far from every mode lower precision.
        let far = vec![[10.0f32, 10.0]; 100];
        assert_eq!(ModeStats::new(&gmm, &Samples::from_points(&far)).precision, 0.0);
    }

    #[test]
    fn the_chi_square_quantile_gives_the_two_dimensional_three_sigma_rule() {
        assert!((chi_square_quantile(2, three_sigma_mass()) - 9.0).abs() < 1e-9);
        // χ²₁'s 0.9545 quantile is 2² (two standard deviations of one normal).
        let two_sd = 0.954_499_736_103_641_6;
        assert!((chi_square_quantile(1, two_sd) - 4.0).abs() < 1e-6);
        // The median of χ²_k is near k (1 − 2/(9k))³.
        let k: f64 = 48.0;
        let median = chi_square_quantile(48, 0.5);
        assert!(
            (median - k * (1.0 - 2.0 / (9.0 * k)).powi(3)).abs() < 0.01,
            "{median}"
        );
    }

    #[test]
    fn exact_samples_in_many_dimensions_keep_the_two_dimensional_scores() {
        use crate::config::PlaneEmbedding;
        let components = GaussianMixture::ring_components(5, 2.0, 0.1);
        for (dim, off) in [(12, 0.05), (48, 0.03)] {
            let e = PlaneEmbedding {
                dim,
                off_plane_std: off,
                seed: 1,
            };
            let gmm = GaussianMixture::embedded(&components, e);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let xs = Samples {
                shape: vec![dim],
                values: gmm.sample_values(10_000, &mut rng),
            };
            let good = ModeStats::new(&gmm, &xs);
            assert_eq!(good.coverage, 1.0);
            assert!(good.max_weight_error < 0.1, "{good:?}");
            assert!(
                (good.precision - three_sigma_mass() * OFF_PLANE_MASS).abs() < 0.005,
                "dim {dim}: {}",
                good.precision
            );
            // NLL is the entropy: the plane's plus (dim − 2)/2 ln(2πe off²).
            let entropy = 5f64.ln()
                + (std::f64::consts::TAU * std::f64::consts::E * 0.01).ln()
                + 0.5 * (dim - 2) as f64 * (std::f64::consts::TAU * std::f64::consts::E * off * off).ln();
            assert!(
                (good.nll - entropy).abs() < 0.1,
                "dim {dim}: {} vs {entropy}",
                good.nll
            );
            // Pushed off the plane by 10 off-plane σ along one direction
            // orthogonal to it, every sample leaves its mode's region.
            let normal = orthogonal_direction(&gmm);
            let mut pushed = xs.clone();
            for row in pushed.values.chunks_exact_mut(dim) {
                for (x, n) in row.iter_mut().zip(&normal) {
                    *x += (10.0 * off * (dim as f64).sqrt() * n) as f32;
                }
            }
            assert!(ModeStats::new(&gmm, &pushed).precision < 0.01);
        }
    }

    /// Points at angles spread evenly round a ring of `radius` on the
    /// plane, each with exact off-plane noise of `off`: no clusters at all.
    fn even_ring(gmm: &GaussianMixture, radius: f64, n: usize, off: f64) -> Samples {
        let dim = gmm.dim();
        let normal = match dim {
            2 => vec![0.0; 2],
            _ => orthogonal_direction(gmm),
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut values = Vec::with_capacity(n * dim);
        for i in 0..n {
            let angle = std::f64::consts::TAU * i as f64 / n as f64;
            let mut x = Vec::new();
            gmm.embedding()
                .lift_onto([radius * angle.cos(), radius * angle.sin()], &mut x);
            // Off the plane along one normal: the squared distance of
            // dim − 2 exact off-plane draws, as a χ² of that many dof.
            let chi2: f64 = (0..dim - 2)
                .map(|_| {
                    rand_distr::Distribution::<f64>::sample(&rand_distr::StandardNormal, &mut rng).powi(2)
                })
                .sum();
            let r = off * chi2.sqrt();
            values.extend(x.iter().zip(&normal).map(|(x, n)| x + (r * n) as f32));
        }
        Samples {
            shape: vec![dim],
            values,
        }
    }

    #[test]
    fn samples_spread_round_the_ring_between_the_modes_are_as_imprecise_in_48_d_as_in_2_d() {
        use crate::config::PlaneEmbedding;
        // The demo's ring: the share of a circle within 3 s of one of 10
        // modes is 10 · 2 asin(0.45 / 2.5) / 2π ≈ 0.576.
        let components = GaussianMixture::ring_components(10, 2.5, 0.15);
        let expected = 10.0 * 2.0 * (0.45f64 / 2.5).asin() / std::f64::consts::TAU;
        let flat = GaussianMixture::new(&components);
        let in_2d = ModeStats::new(&flat, &even_ring(&flat, 2.5, 20_000, 0.0)).precision;
        assert!((in_2d - expected).abs() < 0.005, "2-D: {in_2d} vs {expected}");
        for off in [0.03, 0.0] {
            let e = PlaneEmbedding {
                dim: 48,
                off_plane_std: off,
                seed: 2,
            };
            let gmm = GaussianMixture::embedded(&components, e);
            let stats = ModeStats::new(&gmm, &even_ring(&gmm, 2.5, 20_000, off));
            assert!(
                (stats.precision - expected).abs() < 0.01,
                "48-D, off-plane σ {off}: {} vs {expected}",
                stats.precision
            );
        }
    }

    #[test]
    fn without_off_plane_spread_exact_samples_score_the_two_dimensional_mass_and_leaving_the_plane_fails() {
        use crate::config::PlaneEmbedding;
        let components = GaussianMixture::ring_components(5, 2.0, 0.1);
        let e = PlaneEmbedding {
            dim: 20,
            off_plane_std: 0.0,
            seed: 4,
        };
        let gmm = GaussianMixture::embedded(&components, e);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let xs = Samples {
            shape: vec![20],
            values: gmm.sample_values(10_000, &mut rng),
        };
        let exact = ModeStats::new(&gmm, &xs).precision;
        assert!((exact - three_sigma_mass()).abs() < 0.005, "{exact}");
        // 4 s_k off the plane: out, though every in-plane part is exact.
        let normal = orthogonal_direction(&gmm);
        let mut pushed = xs.clone();
        for row in pushed.values.chunks_exact_mut(20) {
            row.iter_mut()
                .zip(&normal)
                .for_each(|(x, n)| *x += (0.4 * n) as f32);
        }
        assert!(ModeStats::new(&gmm, &pushed).precision < 0.01);
    }

    /// A unit vector orthogonal to the mixture's plane.
    fn orthogonal_direction(gmm: &GaussianMixture) -> Vec<f64> {
        let q = gmm.embedding().q();
        let mut v: Vec<f64> = (0..q.len()).map(|i| if i == 0 { 1.0 } else { 0.0 }).collect();
        for a in 0..2 {
            let along: f64 = q.iter().zip(&v).map(|(r, v)| r[a] * v).sum();
            v.iter_mut().zip(q).for_each(|(v, r)| *v -= along * r[a]);
        }
        let norm = v.iter().map(|v| v * v).sum::<f64>().sqrt();
        v.iter().map(|v| v / norm).collect()
    }
}
