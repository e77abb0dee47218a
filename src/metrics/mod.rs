//! Measurements of a generator against the data: sample distances (in any
//! dimension), mode statistics for mixtures, and the mismatch degree of
//! score models.

mod classifier;
mod distance;
mod mismatch;
mod modes;

pub use classifier::{ClassStats, Classifier, classifier_file};
pub use distance::energy_distance;
pub use mismatch::{model_scores, noised};
pub use modes::ModeStats;

use classifier::{frechet_distance, pooled_pixels};
use distance::sliced_wasserstein;
use mismatch::{TrueScore, mismatch_at};

use crate::data::{Dataset, Samples};
use crate::model::Denoiser;
use anyhow::Result;
use rand::Rng;
use serde::{Deserialize, Serialize};

/// One measurement of the generator, as logged in `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// Energy distance to fresh data samples of the same size.
    pub energy: f64,
    /// Sliced 1-Wasserstein distance to the same data samples.
    pub sliced_w: f64,
    /// Mixtures only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modes: Option<ModeStats>,
    /// Labelled images only: the generated images' classes (by the data's
    /// classifier) against the data's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classes: Option<ClassStats>,
    /// Labelled images only: Fréchet distance on the classifier's features
    /// to as many data images (not Inception FID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier_fd: Option<f64>,
    /// Images only: Fréchet distance on pixels pooled to at most 8 × 8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pixel_fd: Option<f64>,
    /// Mismatch degree of the current target, one value per σ of
    /// `metrics.mismatch_sigmas` (empty before backtracking).
    pub mismatch_target: Vec<f64>,
    /// Mismatch degree of the teacher at the same points.
    pub mismatch_teacher: Vec<f64>,
    /// Mismatch degree of the teacher at noised *data* samples: the floor a
    /// perfect generator would see (measured at the start and the end).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mismatch_data: Vec<f64>,
    /// How the distances were measured, in words: how many generator
    /// samples, against how many of what (data, or the teacher's samples
    /// standing in for it, with their sampler). Absent in logs written
    /// before it was said.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub measured: String,
}

impl Evaluation {
    /// The one number a comparison's threshold is set on, with its name:
    /// the classifier Fréchet distance for labelled images, the pixel
    /// Fréchet distance for other images, the energy distance for 2-D data.
    pub fn quality(&self) -> (f64, &'static str) {
        match (self.classifier_fd, self.pixel_fd) {
            (Some(fd), _) => (fd, "classifier Fréchet distance"),
            (None, Some(fd)) => (fd, "pixel Fréchet distance"),
            (None, None) => (self.energy, "energy distance"),
        }
    }

    /// Mean mismatch of the target over the σ grid (the sparkline value).
    pub fn mismatch_target_mean(&self) -> Option<f64> {
        mean(&self.mismatch_target)
    }

    pub fn mismatch_teacher_mean(&self) -> Option<f64> {
        mean(&self.mismatch_teacher)
    }
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Everything needed to measure a generator on one problem.
pub struct Evaluator {
    data: Dataset,
    /// The data's true (or estimated) score; none without data.
    truth: Option<TrueScore>,
    sigmas: Vec<f64>,
    samples: usize,
    /// Labelled images: the classifier and each class's share of the data.
    classifier: Option<(Classifier, Vec<f64>)>,
    /// What the generator is compared with, in words (the data's
    /// description unless [`Evaluator::comparing_with`] says otherwise).
    reference: String,
}

impl Evaluator {
    /// `reference` is the Stable Target Field batch for data without an
    /// exact score (drawn once per run, so every measurement uses the same).
    pub fn new(data: &Dataset, sigmas: &[f64], samples: usize, reference: impl FnOnce() -> Samples) -> Self {
        let truth = match data.mixture() {
            Some(gmm) => TrueScore::Exact(gmm.clone()),
            None => TrueScore::StableTargetField(reference()),
        };
        Self {
            data: data.clone(),
            truth: Some(truth),
            sigmas: sigmas.to_vec(),
            samples,
            classifier: None,
            reference: data.describe(),
        }
    }

    /// Says what the data stands for, where it is not the data itself (a
    /// teacher's samples standing in for it).
    pub fn comparing_with(mut self, reference: String) -> Self {
        self.reference = reference;
        self
    }

    /// No mismatch degree: the data's score is unknown (a pretrained
    /// teacher distilled without data, whose samples stand in for it).
    pub fn without_true_score(mut self) -> Self {
        self.truth = None;
        self
    }

    /// Adds class coverage and the classifier Fréchet distance to every
    /// measurement (labelled images).
    pub fn with_classifier(mut self, classifier: Classifier) -> Self {
        let shares = self.data.images().and_then(|i| i.class_shares());
        self.classifier = shares.map(|s| (classifier, s));
        self
    }

    /// The classifier's held-out accuracy, when there is one.
    pub fn classifier_accuracy(&self) -> Option<f64> {
        self.classifier.as_ref().map(|(c, _)| c.accuracy)
    }

    /// Why the classifier cache was not used, when it was damaged.
    pub fn classifier_cache_problem(&self) -> Option<&str> {
        self.classifier
            .as_ref()
            .and_then(|(c, _)| c.cache_problem.as_deref())
    }

    /// What every measurement holds, on what, in words (the run's header).
    pub fn describe(&self) -> String {
        let mut what = Vec::new();
        if self.classifier.is_some() {
            what.push("class coverage, classifier Fréchet distance".to_string());
        }
        if self.data.images().is_some() {
            what.push("pixel Fréchet distance".into());
        }
        if self.data.mixture().is_some() {
            what.push("mode statistics".into());
        }
        what.push("energy and sliced-W distances".into());
        if self.truth.is_some() {
            what.push(format!("mismatch degree at {} σ", self.sigmas.len()));
        }
        format!(
            "{} on {} generator samples against as many drawn from {}",
            what.join(", "),
            self.samples,
            self.reference
        )
    }

    /// How many generator samples one measurement uses.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// Distances (on at most `samples` of the points, against as many fresh
    /// data samples: the energy distance is quadratic) and mode statistics
    /// (on all of them) of `generated`.
    /// Class statistics (labelled images) use all of `generated`.
    pub fn distribution(&self, generated: &Samples, rng: &mut impl Rng) -> Result<Evaluation> {
        let head = generated.head(self.samples);
        let data = self.data.sample(head.len(), rng);
        let modes = self.data.mixture().map(|m| ModeStats::new(m, generated));
        let (classes, classifier_fd) = match &self.classifier {
            Some((classifier, shares)) => (
                Some(classifier.class_stats(generated, shares)?),
                Some(classifier.frechet(&head, &data)?),
            ),
            None => (None, None),
        };
        let pixel_fd = self
            .data
            .images()
            .map(|_| frechet_distance(&pooled_pixels(&head), &pooled_pixels(&data)));
        Ok(Evaluation {
            energy: energy_distance(&head, &data),
            sliced_w: sliced_wasserstein(&head, &data, 64, rng),
            modes,
            classes,
            classifier_fd,
            pixel_fd,
            mismatch_target: Vec::new(),
            mismatch_teacher: Vec::new(),
            mismatch_data: Vec::new(),
            measured: format!(
                "{} generator samples against {} drawn from {}",
                head.len(),
                data.len(),
                self.reference
            ),
        })
    }

    /// How far apart two sets of samples are, by the measure comparisons
    /// are judged on ([`Evaluation::quality`]): the classifier Fréchet
    /// distance for labelled images, the pixel Fréchet distance for other
    /// images, the energy distance for 2-D data. With its name.
    pub fn distance(&self, a: &Samples, b: &Samples) -> Result<(f64, &'static str)> {
        Ok(match (&self.classifier, self.data.images()) {
            (Some((classifier, _)), _) => (classifier.frechet(a, b)?, "classifier Fréchet distance"),
            (None, Some(_)) => (
                frechet_distance(&pooled_pixels(a), &pooled_pixels(b)),
                "pixel Fréchet distance",
            ),
            (None, None) => (energy_distance(a, b), "energy distance"),
        })
    }

    /// Fresh data samples, as many as a measurement uses.
    pub fn data_samples(&self, rng: &mut impl Rng) -> Samples {
        self.data.sample(self.samples, rng)
    }

    /// A model's mismatch degree over the σ grid at fresh data samples.
    pub fn mismatch_on_data(&self, model: &Denoiser, rng: &mut impl Rng) -> Result<Vec<f64>> {
        let data = self.data.sample(self.samples, rng);
        Ok(self.mismatch(&data, &[model], rng)?.remove(0))
    }

    /// Mismatch degree of each model over the σ grid, at the same noised
    /// points for every model.
    pub fn mismatch(
        &self,
        generated: &Samples,
        models: &[&Denoiser],
        rng: &mut impl Rng,
    ) -> Result<Vec<Vec<f64>>> {
        let mut out = vec![Vec::with_capacity(self.sigmas.len()); models.len()];
        let Some(truth) = &self.truth else {
            return Ok(out);
        };
        for &sigma in &self.sigmas {
            let points = noised(generated, sigma, rng);
            for (model, row) in models.iter().zip(out.iter_mut()) {
                let scores = model_scores(model, &points, sigma)?;
                row.push(mismatch_at(&scores, &points, sigma, truth));
            }
        }
        Ok(out)
    }
}
