//! Image metrics that need no download: a small classifier trained once per
//! labelled data set (and cached like the teacher), giving
//! - **class coverage**: each class's share of generated samples against
//!   the data's, the image analogue of mode coverage;
//! - a **Fréchet distance on the classifier's features** (its 64-wide
//!   penultimate layer): Inception FID's formula on this project's own
//!   features, so its values are comparable only between runs on the same
//!   data with the same classifier.
//!
//! Unlabelled images get the same Fréchet distance on their pixels,
//! average-pooled to at most 8 × 8 per channel ([`pooled_pixels`]).

use crate::config::{DataConfig, ImageShape};
use crate::data::{Dataset, Samples};
use crate::model::{Conv2d, Linear, ParamBuilder, Params};
use crate::optim::Adam;
use crate::rng::host_rng;
use anyhow::{Context, Result, bail};
use candle_core::{D, Device, Tensor};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Width of the feature layer the Fréchet distance is computed on.
pub const FEATURES: usize = 64;
const TRAIN_STEPS: usize = 300;
const BATCH: usize = 128;
/// Share of a stored data set held out to measure the classifier.
const HELD_OUT: f64 = 0.2;

/// conv 3×3 → SiLU → stride-2 conv → SiLU → stride-2 conv → SiLU → mean
/// over pixels → dense (the features) → SiLU → dense (class logits).
pub struct Classifier {
    convs: [Conv2d; 3],
    features: Linear,
    logits: Linear,
    params: Params,
    image: ImageShape,
    classes: usize,
    /// Accuracy on held-out images, measured when it was trained.
    pub accuracy: f64,
    /// Why a cached classifier was not used (a damaged or mismatched file),
    /// for the run to say so; `None` when the cache was fine or absent.
    pub cache_problem: Option<String>,
}

/// How one measurement's generated images split over the classes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassStats {
    /// Per class: its share of the generated samples divided by its share
    /// of the data (1 is exact).
    pub shares: Vec<f64>,
    /// Fraction of classes holding at least half their expected share.
    pub coverage: f64,
    /// Largest |share − 1| over the classes.
    pub max_share_error: f64,
}

impl Classifier {
    fn new(image: ImageShape, classes: usize, device: &Device) -> Result<Self> {
        let mut rng = host_rng(0, crate::rng::streams::CLASSIFIER);
        let mut b = ParamBuilder::new(device, &mut rng);
        let c = image.channels;
        let convs = [
            Conv2d::new(&mut b, "conv1", (c, 16), 3, 1, 1.0)?,
            Conv2d::new(&mut b, "conv2", (16, 64), 3, 2, 1.0)?,
            Conv2d::new(&mut b, "conv3", (64, 64), 3, 2, 1.0)?,
        ];
        let features = Linear::new(&mut b, "features", (64, FEATURES), 1.0)?;
        let logits = Linear::new(&mut b, "logits", (FEATURES, classes), 1.0)?;
        Ok(Self {
            convs,
            features,
            logits,
            params: b.finish(),
            image,
            classes,
            accuracy: 0.0,
            cache_problem: None,
        })
    }

    /// (features (B, 64), logits (B, classes)) of a (B, C, H, W) batch.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let mut h = x.clone();
        for conv in &self.convs {
            h = conv.forward(&h)?.silu()?;
        }
        let pooled = h.flatten_from(2)?.mean(D::Minus1)?;
        let features = self.features.forward(&pooled)?;
        let logits = self.logits.forward(&features.silu()?)?;
        Ok((features, logits))
    }

    /// The name of a data set's classifier in the cache (beside the
    /// teachers): a hash of the data's settings alone.
    pub fn cache_key(data: &DataConfig) -> String {
        use sha2::{Digest, Sha256};
        let shape = serde_json::json!({ "format": 1, "data": data });
        let digest = Sha256::digest(shape.to_string().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// The data's classifier: from the cache in `cache_dir`, or trained now
    /// (a minute or less on the CPU) and cached. `None` for 2-D data and
    /// unlabelled images.
    pub fn for_data(data: &Dataset, cache_dir: &Path, key: &str, device: &Device) -> Result<Option<Self>> {
        let Some(images) = data.images() else {
            return Ok(None);
        };
        let Some(classes) = images.classes() else {
            return Ok(None);
        };
        let mut model = Self::new(images.shape(), classes.len(), device)?;
        let file = classifier_file(cache_dir, key);
        let mut problem = None;
        if file.exists() {
            match model.load(&file) {
                Ok(()) => return Ok(Some(model)),
                Err(e) => {
                    problem = Some(format!(
                        "ignoring the classifier cache: {e:#}; training a new one"
                    ))
                }
            }
        }
        model.train(data, device)?;
        model.save(&file)?;
        model.cache_problem = problem;
        Ok(Some(model))
    }

    /// Cross-entropy training with Adam; stored sets hold out their last
    /// fifth (in a fixed shuffled order) to measure the accuracy.
    fn train(&mut self, data: &Dataset, device: &Device) -> Result<()> {
        let images = data.images().expect("image data");
        let mut rng = host_rng(0, crate::rng::streams::CLASSIFIER);
        let (train, held_out) = split(images, &mut rng);
        let mut opt = Adam::new(&self.params, 2e-3)?;
        for step in 0..TRAIN_STEPS {
            let batch = train.draw(BATCH, &mut rng);
            let x = batch.0.to_tensor(device)?;
            let labels = Tensor::from_vec(batch.1, BATCH, device)?;
            let (_, logits) = self.forward(&x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
            // Halve the rate for the last third: a steadier end.
            opt.lr = if step < 2 * TRAIN_STEPS / 3 { 2e-3 } else { 1e-3 };
            opt.step(&loss.backward()?)?;
        }
        let (x, labels) = held_out.draw(2000, &mut rng);
        let predicted = self.predict(&x)?;
        let right = predicted.iter().zip(&labels).filter(|(p, l)| p == l).count();
        self.accuracy = right as f64 / labels.len().max(1) as f64;
        Ok(())
    }

    /// Predicted classes of images, in chunks.
    pub fn predict(&self, samples: &Samples) -> Result<Vec<u32>> {
        Ok(self.run(samples)?.1)
    }

    /// (features as rows, predicted classes).
    fn run(&self, samples: &Samples) -> Result<(Vec<Vec<f64>>, Vec<u32>)> {
        let device = self.params.device();
        let (mut features, mut classes) = (Vec::new(), Vec::new());
        let dim = samples.dim();
        for chunk in samples.values.chunks(256 * dim) {
            let part = Samples {
                shape: samples.shape.clone(),
                values: chunk.to_vec(),
            };
            let (f, logits) = self.forward(&part.to_tensor(&device)?)?;
            let f: Vec<Vec<f32>> = f.to_vec2()?;
            features.extend(
                f.into_iter()
                    .map(|r| r.into_iter().map(f64::from).collect::<Vec<_>>()),
            );
            classes.extend(logits.argmax(D::Minus1)?.to_vec1::<u32>()?);
        }
        Ok((features, classes))
    }

    /// Class statistics of generated images against the data's shares.
    pub fn class_stats(&self, generated: &Samples, data_shares: &[f64]) -> Result<ClassStats> {
        let predicted = self.predict(generated)?;
        let mut counts = vec![0f64; self.classes];
        for &c in &predicted {
            counts[c as usize] += 1.0;
        }
        let n = predicted.len().max(1) as f64;
        let shares: Vec<f64> = counts
            .iter()
            .zip(data_shares)
            .map(|(c, d)| c / n / d.max(1e-12))
            .collect();
        Ok(ClassStats {
            coverage: shares.iter().filter(|&&s| s >= 0.5).count() as f64 / shares.len().max(1) as f64,
            max_share_error: shares.iter().map(|s| (s - 1.0).abs()).fold(0.0, f64::max),
            shares,
        })
    }

    /// Fréchet distance between the features of two image samples.
    pub fn frechet(&self, a: &Samples, b: &Samples) -> Result<f64> {
        Ok(frechet_distance(&self.run(a)?.0, &self.run(b)?.0))
    }

    fn save(&self, path: &Path) -> Result<()> {
        let meta = std::collections::HashMap::from([
            ("model".to_string(), "classifier".to_string()),
            ("accuracy".to_string(), self.accuracy.to_string()),
            ("image".to_string(), serde_json::to_string(&self.image)?),
        ]);
        self.params.save(path, meta)
    }

    fn load(&mut self, path: &Path) -> Result<()> {
        let mut accuracy = None;
        let image = serde_json::to_string(&self.image)?;
        self.params.load_file(path, |meta| {
            if meta.get("model").map(String::as_str) != Some("classifier")
                || meta.get("image") != Some(&image)
            {
                bail!("{} is not a classifier for these images", path.display());
            }
            accuracy = meta.get("accuracy").and_then(|a| a.parse().ok());
            Ok(())
        })?;
        self.accuracy =
            accuracy.with_context(|| format!("{}: no accuracy in its metadata", path.display()))?;
        Ok(())
    }
}

/// Where the classifier of `key` is cached.
pub fn classifier_file(cache_dir: &Path, key: &str) -> PathBuf {
    cache_dir.join(format!("classifier-{key}.safetensors"))
}

/// Labelled images to draw training batches from.
enum Source<'a> {
    /// Indices into a stored set.
    Stored(&'a crate::data::ImageSet, Vec<usize>),
    /// Fresh procedural images.
    Fresh(&'a crate::data::Images),
}

impl Source<'_> {
    fn draw(&self, n: usize, rng: &mut impl Rng) -> (Samples, Vec<u32>) {
        use rand::RngExt;
        let batch = match self {
            Source::Stored(set, indices) => {
                let picks: Vec<usize> = (0..n)
                    .map(|_| indices[rng.random_range(0..indices.len())])
                    .collect();
                set.pick(&picks)
            }
            Source::Fresh(images) => images.sample(n, rng),
        };
        let s = batch.shape;
        let labels = batch
            .labels
            .expect("labelled images")
            .into_iter()
            .map(u32::from)
            .collect();
        let samples = Samples {
            shape: vec![s.channels, s.height, s.width],
            values: batch.pixels,
        };
        (samples, labels)
    }
}

/// A stored set's images split into training and held-out indices (a
/// fixed shuffle); procedural images draw fresh ones for both.
fn split<'a>(images: &'a crate::data::Images, rng: &mut impl Rng) -> (Source<'a>, Source<'a>) {
    use rand::seq::SliceRandom;
    match images.stored() {
        Some(set) => {
            let mut order: Vec<usize> = (0..set.len()).collect();
            order.shuffle(rng);
            let cut = ((set.len() as f64) * (1.0 - HELD_OUT)).round() as usize;
            let held = order.split_off(cut.clamp(1, set.len().saturating_sub(1).max(1)));
            (Source::Stored(set, order), Source::Stored(set, held))
        }
        None => (Source::Fresh(images), Source::Fresh(images)),
    }
}

/// Pixels average-pooled to at most 8 × 8 per channel: the features of the
/// Fréchet distance for unlabelled images (a classifier needs labels).
pub fn pooled_pixels(samples: &Samples) -> Vec<Vec<f64>> {
    let [c, h, w] = samples.shape[..] else {
        return samples
            .rows()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect();
    };
    let (fy, fx) = (h.div_ceil(8), w.div_ceil(8));
    let (ph, pw) = (h.div_ceil(fy), w.div_ceil(fx));
    samples
        .rows()
        .map(|img| {
            let mut out = vec![0.0; c * ph * pw];
            let mut count = vec![0.0; c * ph * pw];
            for ch in 0..c {
                for y in 0..h {
                    for x in 0..w {
                        let cell = ch * ph * pw + (y / fy) * pw + x / fx;
                        out[cell] += img[ch * h * w + y * w + x] as f64;
                        count[cell] += 1.0;
                    }
                }
            }
            out.iter().zip(&count).map(|(s, n)| s / n).collect()
        })
        .collect()
}

/// `‖μ_a − μ_b‖² + Tr(C_a + C_b − 2 (C_a C_b)^{1/2})` between two sets of
/// feature rows. The trace of the square root is the sum of the square
/// roots of the eigenvalues of `C_a^{1/2} C_b C_a^{1/2}` (symmetric, so a
/// symmetric eigensolver from nalgebra suffices and stays real).
pub fn frechet_distance(a: &[Vec<f64>], b: &[Vec<f64>]) -> f64 {
    let (mean_a, cov_a) = moments(a);
    let (mean_b, cov_b) = moments(b);
    let sqrt_a = psd_sqrt(&cov_a);
    let middle = &sqrt_a * &cov_b * &sqrt_a;
    let middle = (&middle + middle.transpose()) * 0.5;
    let tr_sqrt: f64 = middle
        .symmetric_eigen()
        .eigenvalues
        .iter()
        .map(|&e| e.max(0.0).sqrt())
        .sum();
    (mean_a - mean_b).norm_squared() + cov_a.trace() + cov_b.trace() - 2.0 * tr_sqrt
}

fn moments(rows: &[Vec<f64>]) -> (nalgebra::DVector<f64>, nalgebra::DMatrix<f64>) {
    let n = rows.len().max(2) as f64;
    let dim = rows.first().map_or(0, Vec::len);
    let x = nalgebra::DMatrix::from_fn(rows.len(), dim, |i, j| rows[i][j]);
    let mean = nalgebra::DVector::from_fn(dim, |j, _| x.column(j).sum() / rows.len().max(1) as f64);
    let centred = nalgebra::DMatrix::from_fn(rows.len(), dim, |i, j| x[(i, j)] - mean[j]);
    let cov = centred.transpose() * &centred / (n - 1.0);
    (mean, cov)
}

/// The square root of a symmetric positive semi-definite matrix.
fn psd_sqrt(m: &nalgebra::DMatrix<f64>) -> nalgebra::DMatrix<f64> {
    let eigen = m.clone().symmetric_eigen();
    let roots = eigen.eigenvalues.map(|e| e.max(0.0).sqrt());
    &eigen.eigenvectors * nalgebra::DMatrix::from_diagonal(&roots) * eigen.eigenvectors.transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};

    fn gaussian(n: usize, dim: usize, mean: f64, std: f64, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n)
            .map(|_| {
                (0..dim)
                    .map(|_| {
                        mean + std * <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut rng)
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_frechet_distance_matches_its_closed_form_for_gaussians() {
        // Same covariance: ‖μ_a − μ_b‖² = 4 × 0.5² = 1.
        let a = gaussian(20_000, 4, 0.0, 1.0, 1);
        let b = gaussian(20_000, 4, 0.5, 1.0, 2);
        let d = frechet_distance(&a, &b);
        assert!((d - 1.0).abs() < 0.05, "{d}");
        // Same mean, isotropic: dim (σ_a − σ_b)² = 4 × 1 = 4.
        let c = gaussian(20_000, 4, 0.0, 2.0, 3);
        let d = frechet_distance(&a, &c);
        assert!((d - 4.0).abs() < 0.2, "{d}");
        // One distribution against itself: about 0.
        let again = gaussian(20_000, 4, 0.0, 1.0, 4);
        assert!(frechet_distance(&a, &again).abs() < 0.02);
    }

    #[test]
    fn pixels_pool_to_at_most_eight_by_eight() {
        let samples = Samples {
            shape: vec![1, 16, 16],
            values: (0..256).map(|i| if (i / 16) < 8 { 1.0 } else { -1.0 }).collect(),
        };
        let pooled = pooled_pixels(&samples);
        assert_eq!(pooled[0].len(), 64);
        // The top half is bright, the bottom half dark.
        assert_eq!(pooled[0][0], 1.0);
        assert_eq!(pooled[0][63], -1.0);
    }
}
