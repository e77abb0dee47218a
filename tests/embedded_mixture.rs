//! A mixture on a plane in `dim` dimensions against a dense multivariate
//! normal built by hand: the covariance Q s² Qᵀ + off² (I − Q Qᵀ) + σ² I
//! written out entry by entry, its inverse and determinant by Gaussian
//! elimination. Independent of the code's split into plane and off-plane
//! parts, so a wrong noise convolution of the off-plane variance
//! (off + σ, or off² + σ) fails here.

use disback::config::{ComponentConfig, PlaneEmbedding};
use disback::data::GaussianMixture;

/// ln N(x; mean, cov) and its gradient, by elimination on `cov`.
fn dense_normal(x: &[f64], mean: &[f64], cov: &[Vec<f64>]) -> (f64, Vec<f64>) {
    let n = x.len();
    // Solve cov · y = (x − mean) and take ln det from the pivots.
    let mut a: Vec<Vec<f64>> = cov.to_vec();
    let mut b: Vec<f64> = x.iter().zip(mean).map(|(x, m)| x - m).collect();
    let mut log_det = 0.0;
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap();
        a.swap(col, pivot);
        b.swap(col, pivot);
        log_det += a[col][col].abs().ln();
        for row in col + 1..n {
            let f = a[row][col] / a[col][col];
            let (upper, lower) = a.split_at_mut(row);
            for (target, pivot) in lower[0][col..].iter_mut().zip(&upper[col][col..]) {
                *target -= f * pivot;
            }
            b[row] -= f * b[col];
        }
    }
    let mut y = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| a[row][k] * y[k]).sum();
        y[row] = (b[row] - s) / a[row][row];
    }
    let quad: f64 = x.iter().zip(mean).zip(&y).map(|((x, m), y)| (x - m) * y).sum();
    let log_p = -0.5 * (quad + log_det + n as f64 * std::f64::consts::TAU.ln());
    (log_p, y.iter().map(|v| -v).collect())
}

#[test]
fn density_and_score_at_every_noise_level_match_a_dense_normal() {
    let (dim, off, std) = (5, 0.2, 0.3);
    let component = ComponentConfig {
        mean: [0.7, -0.4],
        std,
        weight: 1.0,
    };
    let e = PlaneEmbedding {
        dim,
        off_plane_std: off,
        seed: 9,
    };
    let gmm = GaussianMixture::embedded(&[component], e);
    let q = gmm.embedding().q().to_vec();
    let mean: Vec<f64> = q.iter().map(|r| r[0] * 0.7 + r[1] * -0.4).collect();
    for sigma in [0.0, 0.05, 0.5, 2.0] {
        let cov: Vec<Vec<f64>> = (0..dim)
            .map(|i| {
                (0..dim)
                    .map(|j| {
                        let qq = q[i][0] * q[j][0] + q[i][1] * q[j][1];
                        let eye = if i == j { 1.0 } else { 0.0 };
                        std * std * qq + off * off * (eye - qq) + sigma * sigma * eye
                    })
                    .collect()
            })
            .collect();
        for k in 0..4 {
            let x: Vec<f64> = (0..dim)
                .map(|i| mean[i] + 0.3 * ((i * 7 + k * 3) as f64).sin())
                .collect();
            let (log_p, score) = dense_normal(&x, &mean, &cov);
            let got = gmm.log_density_at(&x, sigma);
            assert!(
                (got - log_p).abs() < 1e-9,
                "σ {sigma}: ln p {got} vs dense {log_p}"
            );
            let got = gmm.score_at(&x, sigma);
            for (g, s) in got.iter().zip(&score) {
                assert!(
                    (g - s).abs() < 1e-8 * (1.0 + s.abs()),
                    "σ {sigma}: score {got:?} vs dense {score:?}"
                );
            }
        }
    }
}
