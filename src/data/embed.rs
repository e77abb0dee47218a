//! A mixture's plane inside `dim` dimensions: the fixed orthonormal map Q
//! (dim × 2, Qᵀ Q = I) that carries the plane's coordinates u to x = Q u,
//! and isotropic Gaussian noise off the plane. Every component then stays
//! an exact Gaussian, with mean Q μ_k and covariance
//! Q Σ_k Qᵀ + off² (I − Q Qᵀ), so the exact density and score survive.

use super::Point;
use crate::config::PlaneEmbedding;
use crate::rng::{host_rng, streams};
use rand::RngExt;
use rand_distr::StandardNormal;

#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// Q row by row: `dim` rows of the plane's two coordinates.
    q: Vec<[f64; 2]>,
    off_plane_std: f64,
}

impl Embedding {
    /// Q from `e.seed`: Gram–Schmidt on a seeded Gaussian dim × 2 matrix
    /// (a uniformly random plane). For dim = 2 Q is the identity, so a 2-D
    /// mixture is exactly the plane it always was.
    pub fn new(e: PlaneEmbedding) -> Self {
        if e.dim == 2 {
            return Self {
                q: vec![[1.0, 0.0], [0.0, 1.0]],
                off_plane_std: e.off_plane_std,
            };
        }
        let mut rng = host_rng(e.seed, streams::PLANE_EMBEDDING);
        let mut a: Vec<f64> = (0..e.dim).map(|_| rng.sample(StandardNormal)).collect();
        let mut b: Vec<f64> = (0..e.dim).map(|_| rng.sample(StandardNormal)).collect();
        normalise(&mut a);
        // Twice: one pass leaves rounding in b's overlap with a.
        for _ in 0..2 {
            let along = dot(&a, &b);
            b.iter_mut().zip(&a).for_each(|(b, a)| *b -= along * a);
        }
        normalise(&mut b);
        Self {
            q: a.into_iter().zip(b).map(|(a, b)| [a, b]).collect(),
            off_plane_std: e.off_plane_std,
        }
    }

    pub fn dim(&self) -> usize {
        self.q.len()
    }

    pub fn off_plane_std(&self) -> f64 {
        self.off_plane_std
    }

    /// Whether this is the plane itself (dim = 2, Q = I).
    pub fn is_plane(&self) -> bool {
        self.q.len() == 2
    }

    /// Q, row by row.
    pub fn q(&self) -> &[[f64; 2]] {
        &self.q
    }

    /// The plane's coordinates Qᵀ x of `x`, and its squared distance from
    /// the plane ‖x − Q Qᵀ x‖².
    pub fn split(&self, x: &[f64]) -> ([f64; 2], f64) {
        let mut u = [0.0; 2];
        for (row, x) in self.q.iter().zip(x) {
            u[0] += row[0] * x;
            u[1] += row[1] * x;
        }
        let off: f64 = self
            .q
            .iter()
            .zip(x)
            .map(|(row, x)| (x - row[0] * u[0] - row[1] * u[1]).powi(2))
            .sum();
        (u, off)
    }

    /// Qᵀ x: where a sample shows in pictures of the plane.
    pub fn project(&self, x: &[f32]) -> Point {
        if self.is_plane() {
            return [x[0], x[1]];
        }
        let mut u = [0.0f64; 2];
        for (row, x) in self.q.iter().zip(x) {
            u[0] += row[0] * *x as f64;
            u[1] += row[1] * *x as f64;
        }
        [u[0] as f32, u[1] as f32]
    }

    /// Q u, appended to `out`: a point of the plane in `dim` dimensions.
    pub fn lift_onto(&self, u: [f64; 2], out: &mut Vec<f32>) {
        out.extend(self.q.iter().map(|row| (row[0] * u[0] + row[1] * u[1]) as f32));
    }

    /// Adds one draw of the off-plane noise N(0, off² (I − Q Qᵀ)) to
    /// `sample` (`dim` values): isotropic noise in `dim` dimensions with its
    /// part along the plane removed. `scratch` is reused between samples.
    pub fn add_off_plane_noise(&self, sample: &mut [f32], rng: &mut impl rand::Rng, scratch: &mut Vec<f64>) {
        if self.off_plane_std == 0.0 {
            return;
        }
        scratch.clear();
        scratch.extend((0..self.dim()).map(|_| rng.sample::<f64, _>(StandardNormal)));
        let mut along = [0.0; 2];
        for (row, e) in self.q.iter().zip(scratch.iter()) {
            along[0] += row[0] * e;
            along[1] += row[1] * e;
        }
        for ((x, row), e) in sample.iter_mut().zip(&self.q).zip(scratch.iter()) {
            let off = e - row[0] * along[0] - row[1] * along[1];
            *x = (*x as f64 + self.off_plane_std * off) as f32;
        }
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(a, b)| a * b).sum()
}

fn normalise(v: &mut [f64]) {
    let norm = dot(v, v).sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedding(dim: usize, seed: u64) -> Embedding {
        Embedding::new(PlaneEmbedding {
            dim,
            off_plane_std: 0.1,
            seed,
        })
    }

    #[test]
    fn q_is_orthonormal_seeded_and_the_identity_in_two_dimensions() {
        for dim in [3, 7, 48] {
            let e = embedding(dim, 4);
            let q = e.q();
            assert_eq!(q.len(), dim);
            for (i, j) in [(0, 0), (0, 1), (1, 1)] {
                let g: f64 = q.iter().map(|r| r[i] * r[j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((g - want).abs() < 1e-12, "dim {dim}: (QᵀQ)[{i}{j}] = {g}");
            }
            assert_eq!(e, embedding(dim, 4), "the same seed gives the same plane");
            assert_ne!(e, embedding(dim, 5), "another seed turns it");
        }
        assert_eq!(embedding(2, 9).q(), &[[1.0, 0.0], [0.0, 1.0]]);
    }

    #[test]
    fn split_and_lift_undo_each_other_on_the_plane() {
        let e = embedding(10, 1);
        let mut x = Vec::new();
        e.lift_onto([0.7, -1.3], &mut x);
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (u, off) = e.split(&x64);
        assert!((u[0] - 0.7).abs() < 1e-6 && (u[1] + 1.3).abs() < 1e-6, "{u:?}");
        assert!(off < 1e-12, "{off}");
        let p = e.project(&x);
        assert!((p[0] - 0.7).abs() < 1e-6 && (p[1] + 1.3).abs() < 1e-6);
    }
}
