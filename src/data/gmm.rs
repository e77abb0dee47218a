//! An isotropic Gaussian mixture in the plane: sampler, exact density and the
//! exact score of every noised version `q_σ = Σ π_k N(μ_k, (s_k² + σ²) I)`.
//! This is the project's ground truth: tests and metrics lean on it.
//!
//! The plane may sit in `dim` dimensions ([`Embedding`]): x = Q u + off-plane
//! noise. Every noised component is then N(Q μ_k, Q (s_k² + σ²) Qᵀ +
//! (off² + σ²)(I − Q Qᵀ)): the density splits into the plane's mixture at
//! u = Qᵀ x times one Gaussian in the distance from the plane that all
//! components share, so posteriors depend on u alone and the score is
//! Q ∇_u ln q_σ(u) − (x − Q u) / (off² + σ²). The `*_at` methods take
//! points of `dim` values; the others the plane's coordinates.

use super::Point;
use super::embed::Embedding;
use crate::config::{ComponentConfig, PlaneEmbedding};
use rand::RngExt;
use rand_distr::{Distribution, StandardNormal, weighted::WeightedAliasIndex};

#[derive(Debug, Clone, PartialEq)]
pub struct Component {
    pub mean: [f64; 2],
    pub std: f64,
    /// Normalised: the weights of a mixture sum to one.
    pub weight: f64,
}

#[derive(Debug, Clone)]
pub struct GaussianMixture {
    components: Vec<Component>,
    picker: WeightedAliasIndex<f64>,
    embedding: Embedding,
}

impl GaussianMixture {
    /// Builds a mixture in the plane from config components (weights are
    /// normalised). The config is validated before this is called.
    pub fn new(components: &[ComponentConfig]) -> Self {
        Self::embedded(components, PlaneEmbedding::PLANE)
    }

    /// The same, its plane in `embedding.dim` dimensions.
    pub fn embedded(components: &[ComponentConfig], embedding: PlaneEmbedding) -> Self {
        let total: f64 = components.iter().map(|c| c.weight).sum();
        let components: Vec<Component> = components
            .iter()
            .map(|c| Component {
                mean: c.mean,
                std: c.std,
                weight: c.weight / total,
            })
            .collect();
        let picker = WeightedAliasIndex::new(components.iter().map(|c| c.weight).collect())
            .expect("validated weights are positive and finite");
        Self {
            components,
            picker,
            embedding: Embedding::new(embedding),
        }
    }

    /// How the plane sits in `dim` dimensions.
    pub fn embedding(&self) -> &Embedding {
        &self.embedding
    }

    /// Values per sample: the embedding's dimension.
    pub fn dim(&self) -> usize {
        self.embedding.dim()
    }

    /// `modes` equal components evenly spaced on a circle, the first on the
    /// positive x axis.
    pub fn ring_components(modes: usize, radius: f64, std: f64) -> Vec<ComponentConfig> {
        (0..modes)
            .map(|k| {
                let angle = std::f64::consts::TAU * k as f64 / modes as f64;
                ComponentConfig {
                    mean: [radius * angle.cos(), radius * angle.sin()],
                    std,
                    weight: 1.0,
                }
            })
            .collect()
    }

    /// `modes` random components from `seed` (see `DataConfig::Random`):
    /// means in [−3, 3]², std log-uniform in [0.08, 0.3], weight
    /// log-uniform in [1, 3], any two means at least 3 (s_i + s_j) apart.
    pub fn random_components(modes: usize, seed: u64) -> Vec<ComponentConfig> {
        let mut rng = crate::rng::host_rng(seed, crate::rng::streams::RANDOM_MIXTURE);
        let log_uniform = |rng: &mut crate::rng::HostRng, lo: f64, hi: f64| {
            (lo.ln() + rng.random::<f64>() * (hi / lo).ln()).exp()
        };
        let mut out: Vec<ComponentConfig> = Vec::with_capacity(modes);
        while out.len() < modes {
            let std = log_uniform(&mut rng, 0.08, 0.3);
            let mean = [rng.random_range(-3.0..3.0), rng.random_range(-3.0..3.0)];
            let apart = out.iter().all(|c| {
                let d = ((c.mean[0] - mean[0]).powi(2) + (c.mean[1] - mean[1]).powi(2)).sqrt();
                d >= 3.0 * (c.std + std)
            });
            if apart {
                let weight = log_uniform(&mut rng, 1.0, 3.0);
                out.push(ComponentConfig { mean, std, weight });
            }
        }
        out
    }

    pub fn components(&self) -> &[Component] {
        &self.components
    }

    /// `n` samples in `dim` dimensions, one after another. In the plane
    /// (dim = 2) these are exactly [`GaussianMixture::sample`]'s points.
    pub fn sample_values(&self, n: usize, rng: &mut impl rand::Rng) -> Vec<f32> {
        if self.embedding.is_plane() {
            return self.sample(n, rng).into_flattened();
        }
        let dim = self.dim();
        let mut out = Vec::with_capacity(n * dim);
        let mut scratch = Vec::with_capacity(dim);
        for _ in 0..n {
            let c = &self.components[self.picker.sample(rng)];
            let e0: f64 = rng.sample(StandardNormal);
            let e1: f64 = rng.sample(StandardNormal);
            let start = out.len();
            self.embedding
                .lift_onto([c.mean[0] + c.std * e0, c.mean[1] + c.std * e1], &mut out);
            self.embedding
                .add_off_plane_noise(&mut out[start..], rng, &mut scratch);
        }
        out
    }

    /// `n` samples of the plane's mixture, in the plane's coordinates.
    pub fn sample(&self, n: usize, rng: &mut impl rand::Rng) -> Vec<Point> {
        (0..n)
            .map(|_| {
                let c = &self.components[self.picker.sample(rng)];
                let e0: f64 = rng.sample(StandardNormal);
                let e1: f64 = rng.sample(StandardNormal);
                [(c.mean[0] + c.std * e0) as f32, (c.mean[1] + c.std * e1) as f32]
            })
            .collect()
    }

    /// Log-density of each component of `q_σ` at `x`, including its weight:
    /// `ln π_k + ln N(x; μ_k, (s_k² + σ²) I)`.
    fn component_log_densities(&self, x: [f64; 2], sigma: f64) -> impl Iterator<Item = f64> + Clone + '_ {
        self.components.iter().map(move |c| {
            let var = c.std * c.std + sigma * sigma;
            let d2 = sq(x[0] - c.mean[0]) + sq(x[1] - c.mean[1]);
            c.weight.ln() - d2 / (2.0 * var) - (std::f64::consts::TAU * var).ln()
        })
    }

    /// Exact `ln q_σ(x)`.
    pub fn log_density(&self, x: [f64; 2], sigma: f64) -> f64 {
        log_sum_exp(self.component_log_densities(x, sigma))
    }

    /// Posterior probability of each component given `x` under `q_σ`.
    pub fn responsibilities(&self, x: [f64; 2], sigma: f64) -> Vec<f64> {
        let logs: Vec<f64> = self.component_log_densities(x, sigma).collect();
        let lse = log_sum_exp(logs.iter().copied());
        logs.into_iter().map(|l| (l - lse).exp()).collect()
    }

    /// Exact `∇ ln q_σ(x) = Σ_k r_k(x) (μ_k − x) / (s_k² + σ²)`.
    pub fn score(&self, x: [f64; 2], sigma: f64) -> [f64; 2] {
        let r = self.responsibilities(x, sigma);
        let mut s = [0.0; 2];
        for (c, r) in self.components.iter().zip(r) {
            let var = c.std * c.std + sigma * sigma;
            for d in 0..2 {
                s[d] += r * (c.mean[d] - x[d]) / var;
            }
        }
        s
    }

    /// Exact EDM denoiser `D(x; σ) = E[x_0 | x_σ = x] = x + σ² ∇ ln q_σ(x)`.
    pub fn denoise(&self, x: [f64; 2], sigma: f64) -> [f64; 2] {
        let s = self.score(x, sigma);
        [x[0] + sigma * sigma * s[0], x[1] + sigma * sigma * s[1]]
    }

    /// The component a noiseless point most likely came from.
    pub fn most_likely_component(&self, x: [f64; 2]) -> usize {
        self.component_log_densities(x, 0.0)
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(k, _)| k)
            .expect("a mixture has at least one component")
    }

    /// Variance off the plane at noise level σ: off² + σ² (0 only for a
    /// law without off-plane spread at σ = 0, which has no density in
    /// `dim` dimensions).
    fn off_plane_var(&self, sigma: f64) -> f64 {
        sq(self.embedding.off_plane_std()) + sigma * sigma
    }

    /// Exact `ln q_σ(x)` at a point of `dim` values: the plane's at u = Qᵀ x
    /// plus the shared off-plane Gaussian. −∞ off the plane (+∞ on it) when
    /// off² + σ² = 0.
    pub fn log_density_at(&self, x: &[f64], sigma: f64) -> f64 {
        if self.embedding.is_plane() {
            return self.log_density([x[0], x[1]], sigma);
        }
        let (u, off2) = self.embedding.split(x);
        let var = self.off_plane_var(sigma);
        if var == 0.0 {
            return if off2 == 0.0 {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            };
        }
        let rest = (self.dim() - 2) as f64;
        self.log_density(u, sigma) - off2 / (2.0 * var) - 0.5 * rest * (std::f64::consts::TAU * var).ln()
    }

    /// Exact `∇ ln q_σ(x)` at a point of `dim` values:
    /// `Q ∇_u ln q_σ(u) − (x − Q u) / (off² + σ²)`.
    pub fn score_at(&self, x: &[f64], sigma: f64) -> Vec<f64> {
        if self.embedding.is_plane() {
            return self.score([x[0], x[1]], sigma).to_vec();
        }
        let (u, _) = self.embedding.split(x);
        let s = self.score(u, sigma);
        let var = self.off_plane_var(sigma);
        self.embedding
            .q()
            .iter()
            .zip(x)
            .map(|(row, x)| {
                let on_plane = row[0] * u[0] + row[1] * u[1];
                row[0] * s[0] + row[1] * s[1] - (x - on_plane) / var
            })
            .collect()
    }

    /// The component a noiseless point of `dim` values most likely came
    /// from (the exact posterior: the off-plane factor is every
    /// component's, so it is the plane's answer at Qᵀ x).
    pub fn most_likely_component_at(&self, x: &[f64]) -> usize {
        let u = match self.embedding.is_plane() {
            true => [x[0], x[1]],
            false => self.embedding.split(x).0,
        };
        self.most_likely_component(u)
    }

    /// Exact standard deviation per coordinate, averaged over the `dim`
    /// coordinates: `sqrt(Σ_d Var[x_d] / dim)`; Q keeps the plane's total
    /// variance and the off-plane noise adds off² in each of dim − 2
    /// directions.
    pub fn std(&self) -> f64 {
        let mut var = 0.0;
        for d in 0..2 {
            let mean: f64 = self.components.iter().map(|c| c.weight * c.mean[d]).sum();
            let second: f64 = self
                .components
                .iter()
                .map(|c| c.weight * (c.std * c.std + c.mean[d] * c.mean[d]))
                .sum();
            var += second - mean * mean;
        }
        let dim = self.dim();
        let off = (dim - 2) as f64 * sq(self.embedding.off_plane_std());
        ((var + off) / dim as f64).sqrt()
    }
}

fn sq(x: f64) -> f64 {
    x * x
}

/// `ln Σ exp(a_i)` without overflow.
pub fn log_sum_exp(values: impl Iterator<Item = f64> + Clone) -> f64 {
    let max = values.clone().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + values.map(|v| (v - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn two_modes() -> GaussianMixture {
        GaussianMixture::new(&[
            ComponentConfig {
                mean: [1.0, 0.5],
                std: 0.3,
                weight: 1.0,
            },
            ComponentConfig {
                mean: [-1.5, 2.0],
                std: 0.6,
                weight: 3.0,
            },
        ])
    }

    #[test]
    fn score_is_the_gradient_of_the_log_density() {
        let gmm = two_modes();
        let h = 1e-5;
        for &sigma in &[0.0, 0.05, 0.5, 3.0] {
            for &x in &[[0.0, 0.0], [1.2, 0.4], [-2.0, 1.0], [-0.3, 1.1]] {
                let s = gmm.score(x, sigma);
                for d in 0..2 {
                    let (mut xp, mut xm) = (x, x);
                    xp[d] += h;
                    xm[d] -= h;
                    let fd = (gmm.log_density(xp, sigma) - gmm.log_density(xm, sigma)) / (2.0 * h);
                    let tol = 1e-6 * (1.0 + fd.abs());
                    assert!(
                        (s[d] - fd).abs() < tol,
                        "σ={sigma} x={x:?} d={d}: {} vs {fd}",
                        s[d]
                    );
                }
            }
        }
    }

    #[test]
    fn density_integrates_to_one() {
        let gmm = two_modes();
        let (lo, hi, n) = (-6.0, 6.0, 600);
        let h = (hi - lo) / n as f64;
        let mut total = 0.0;
        for i in 0..n {
            for j in 0..n {
                let x = [lo + (i as f64 + 0.5) * h, lo + (j as f64 + 0.5) * h];
                total += gmm.log_density(x, 0.2).exp() * h * h;
            }
        }
        assert!((total - 1.0).abs() < 1e-3, "integral {total}");
    }

    #[test]
    fn samples_follow_weights_and_moments() {
        let gmm = two_modes();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let xs = gmm.sample(40_000, &mut rng);
        let share = xs
            .iter()
            .filter(|p| gmm.most_likely_component([p[0] as f64, p[1] as f64]) == 1)
            .count() as f64
            / xs.len() as f64;
        assert!((share - 0.75).abs() < 0.01, "share {share}");
        let mean_x = xs.iter().map(|p| p[0] as f64).sum::<f64>() / xs.len() as f64;
        assert!(
            (mean_x - (0.25 * 1.0 + 0.75 * -1.5)).abs() < 0.02,
            "mean {mean_x}"
        );
        let var: f64 = (0..2)
            .map(|d| {
                let m = xs.iter().map(|p| p[d] as f64).sum::<f64>() / xs.len() as f64;
                xs.iter().map(|p| sq(p[d] as f64 - m)).sum::<f64>() / xs.len() as f64
            })
            .sum();
        assert!(((var / 2.0).sqrt() - gmm.std()).abs() < 0.02);
    }

    #[test]
    fn denoiser_of_one_gaussian_is_linear_shrinkage() {
        let gmm = GaussianMixture::new(&[ComponentConfig {
            mean: [1.0, -1.0],
            std: 0.5,
            weight: 1.0,
        }]);
        // E[x0 | x] = μ + s²/(s²+σ²) (x − μ)
        let (x, sigma) = ([3.0, 1.0], 1.0);
        let d = gmm.denoise(x, sigma);
        let k = 0.25 / 1.25;
        assert!((d[0] - (1.0 + k * 2.0)).abs() < 1e-12);
        assert!((d[1] - (-1.0 + k * 2.0)).abs() < 1e-12);
    }

    #[test]
    fn random_mixtures_are_seeded_separated_and_varied() {
        let a = GaussianMixture::random_components(8, 5);
        assert_eq!(a, GaussianMixture::random_components(8, 5));
        assert_ne!(a, GaussianMixture::random_components(8, 6));
        for (i, c) in a.iter().enumerate() {
            assert!(c.mean.iter().all(|m| (-3.0..3.0).contains(m)));
            assert!((0.08..=0.3).contains(&c.std) && (1.0..=3.0).contains(&c.weight));
            for d in &a[..i] {
                let gap = ((c.mean[0] - d.mean[0]).powi(2) + (c.mean[1] - d.mean[1]).powi(2)).sqrt();
                assert!(
                    gap >= 3.0 * (c.std + d.std),
                    "modes {i} and another {gap:.2} apart"
                );
            }
        }
        let spread = |f: fn(&ComponentConfig) -> f64| {
            let v: Vec<f64> = a.iter().map(f).collect();
            v.iter().cloned().fold(f64::MIN, f64::max) / v.iter().cloned().fold(f64::MAX, f64::min)
        };
        assert!(spread(|c| c.weight) > 1.3 && spread(|c| c.std) > 1.3, "{a:?}");
    }

    fn embedded(dim: usize, off_plane_std: f64) -> GaussianMixture {
        let c = |mean, std, weight| ComponentConfig { mean, std, weight };
        GaussianMixture::embedded(
            &[c([1.0, 0.5], 0.3, 1.0), c([-1.5, 2.0], 0.6, 3.0)],
            PlaneEmbedding {
                dim,
                off_plane_std,
                seed: 11,
            },
        )
    }

    /// A few points of `dim` values, off the plane too.
    fn points(dim: usize) -> Vec<Vec<f64>> {
        (0..4)
            .map(|i| {
                (0..dim)
                    .map(|d| ((i * 7 + d * 3) % 11) as f64 * 0.25 - 1.2)
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_score_in_dim_dimensions_is_the_gradient_of_the_log_density() {
        let h = 1e-5;
        // With off-plane spread every σ has a density; without, σ > 0.
        for (dim, off, sigmas) in [
            (7, 0.2, &[0.0, 0.05, 0.5, 3.0][..]),
            (5, 0.0, &[0.05, 0.5, 3.0][..]),
        ] {
            let gmm = embedded(dim, off);
            for &sigma in sigmas {
                for x in points(dim) {
                    let s = gmm.score_at(&x, sigma);
                    assert_eq!(s.len(), dim);
                    for d in 0..dim {
                        let (mut xp, mut xm) = (x.clone(), x.clone());
                        xp[d] += h;
                        xm[d] -= h;
                        let fd =
                            (gmm.log_density_at(&xp, sigma) - gmm.log_density_at(&xm, sigma)) / (2.0 * h);
                        assert!(
                            (s[d] - fd).abs() < 1e-5 * (1.0 + fd.abs()),
                            "dim {dim}, off {off}, σ={sigma} x={x:?} d={d}: {} vs {fd}",
                            s[d]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn on_the_plane_without_off_plane_spread_the_score_is_the_planes_carried_by_q() {
        let gmm = embedded(9, 0.0);
        let plane = two_modes();
        for &sigma in &[0.05, 0.5, 3.0] {
            for u in [[0.0, 0.0], [1.2, 0.4], [-2.0, 1.0]] {
                let mut x = Vec::new();
                gmm.embedding().lift_onto(u, &mut x);
                // From the f32 lift: the plane's point within rounding.
                let x: Vec<f64> = x.iter().map(|&v| v as f64).collect();
                let (u, _) = gmm.embedding().split(&x);
                let s2 = plane.score(u, sigma);
                for (d, (s, row)) in gmm
                    .score_at(&x, sigma)
                    .iter()
                    .zip(gmm.embedding().q())
                    .enumerate()
                {
                    let want = row[0] * s2[0] + row[1] * s2[1];
                    assert!(
                        (s - want).abs() < 1e-4 * (1.0 + want.abs()),
                        "σ={sigma} d={d}: {s} vs {want}"
                    );
                }
                // And the posterior is the plane's.
                assert_eq!(gmm.most_likely_component_at(&x), plane.most_likely_component(u));
            }
        }
    }

    #[test]
    fn in_two_dimensions_the_samples_are_todays_bit_for_bit() {
        // Today's sampler: a component by the alias table, then two normals.
        let gmm = embedded(2, 0.0);
        let (mut a, mut b) = (
            rand_chacha::ChaCha8Rng::seed_from_u64(5),
            rand_chacha::ChaCha8Rng::seed_from_u64(5),
        );
        let ours = gmm.sample_values(500, &mut a);
        let picker = WeightedAliasIndex::new(vec![0.25, 0.75]).unwrap();
        let means = [[1.0, 0.5], [-1.5, 2.0]];
        let stds = [0.3, 0.6];
        let today: Vec<f32> = (0..500)
            .flat_map(|_| {
                let k = picker.sample(&mut b);
                let e0: f64 = b.sample(StandardNormal);
                let e1: f64 = b.sample(StandardNormal);
                [
                    (means[k][0] + stds[k] * e0) as f32,
                    (means[k][1] + stds[k] * e1) as f32,
                ]
            })
            .collect();
        assert_eq!(
            ours.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            today.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(gmm.std(), two_modes().std());
    }

    #[test]
    fn samples_in_dim_dimensions_have_the_analytic_mean_and_covariance() {
        let (dim, off) = (6, 0.1);
        let gmm = embedded(dim, off);
        let n = 80_000;
        let xs = gmm.sample_values(n, &mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
        assert_eq!(xs.len(), n * dim);
        // The plane's moments: m = Σ π μ, C = Σ π (s² I + μ μᵀ) − m mᵀ.
        let c = gmm.components();
        let m: Vec<f64> = (0..2)
            .map(|a| c.iter().map(|c| c.weight * c.mean[a]).sum())
            .collect();
        let c2 = |a: usize, b: usize| -> f64 {
            let eye = if a == b { 1.0 } else { 0.0 };
            c.iter()
                .map(|c| c.weight * (c.std * c.std * eye + c.mean[a] * c.mean[b]))
                .sum::<f64>()
                - m[a] * m[b]
        };
        let q = gmm.embedding().q();
        let mean: Vec<f64> = q.iter().map(|r| r[0] * m[0] + r[1] * m[1]).collect();
        // Q C Qᵀ + off² (I − Q Qᵀ).
        let cov = |i: usize, j: usize| -> f64 {
            let mut v = 0.0;
            for a in 0..2 {
                for b in 0..2 {
                    v += q[i][a] * c2(a, b) * q[j][b];
                }
            }
            let qq = q[i][0] * q[j][0] + q[i][1] * q[j][1];
            v + off * off * (if i == j { 1.0 } else { 0.0 } - qq)
        };
        let rows: Vec<&[f32]> = xs.chunks_exact(dim).collect();
        let sample_mean: Vec<f64> = (0..dim)
            .map(|i| rows.iter().map(|r| r[i] as f64).sum::<f64>() / n as f64)
            .collect();
        for i in 0..dim {
            assert!(
                (sample_mean[i] - mean[i]).abs() < 0.02,
                "mean[{i}] {} vs {}",
                sample_mean[i],
                mean[i]
            );
            for j in 0..dim {
                let s = rows
                    .iter()
                    .map(|r| (r[i] as f64 - sample_mean[i]) * (r[j] as f64 - sample_mean[j]))
                    .sum::<f64>()
                    / n as f64;
                assert!((s - cov(i, j)).abs() < 0.03, "cov[{i}][{j}] {s} vs {}", cov(i, j));
            }
        }
        // σ_data: the per-coordinate standard deviation over all dim.
        let trace: f64 = (0..dim).map(|i| cov(i, i)).sum();
        assert!((gmm.std() - (trace / dim as f64).sqrt()).abs() < 1e-12);
    }
}
