//! Teachers apart from any session: a pretrained `diffusers` model's
//! weights, its samples standing in for data it came without, and the
//! name a trained teacher is cached under.

use crate::config::{Config, DiffusersFiles};
use crate::data::{Dataset, ImageSet, Images, to_byte};
use crate::diffusion::{NoiseSchedule, heun_sample, model_denoise_fn};
use crate::model::{Denoiser, generation_chunk, load_diffusers_weights};
use crate::rng::{host_rng, normal_tensor, streams};
use crate::rundir::RunDir;
use anyhow::{Context, Result, bail};
use std::path::Path;

/// Puts a `diffusers` model folder's weights into `teacher`, strictly.
pub(super) fn load_pretrained(teacher: &Denoiser, dir: &Path) -> Result<()> {
    let files = DiffusersFiles::find(dir).context("teacher.pretrained")?;
    load_diffusers_weights(teacher.params(), &files.weights).context("teacher.pretrained")
}

/// Images of a pretrained teacher (`metrics.samples` of them, Heun
/// samples in `metrics.sampler_steps` steps, from a stream of their own)
/// to stand in for the data when there is none: what measurements compare
/// the generator with. The teacher's weights come from the run (resumed)
/// or from its folder (new).
pub(super) fn teacher_samples_as_data(
    config: &Config,
    teacher: &Denoiser,
    run: &RunDir,
    noise: &NoiseSchedule,
) -> Result<Dataset> {
    match (run.teacher().is_file(), &config.teacher.pretrained) {
        (true, _) => teacher.load(&run.teacher())?,
        (false, Some(dir)) => load_pretrained(teacher, dir)?,
        (false, None) => bail!("data.kind = \"none\" needs a pretrained teacher (teacher.pretrained)"),
    }
    let shape = config
        .data
        .image_shape()
        .context("a run without data has the teacher's image shape")?;
    let (n, steps) = (config.metrics.samples, config.metrics.sampler_steps);
    let grid = noise.karras(steps);
    let mut rng = host_rng(config.seed, streams::TEACHER_REFERENCE);
    let chunk = generation_chunk(shape.len());
    let mut pixels = Vec::with_capacity(n * shape.len());
    let mut left = n;
    while left > 0 {
        let b = left.min(chunk);
        let start = (normal_tensor(
            &mut rng,
            vec![b, shape.channels, shape.height, shape.width],
            &teacher.device(),
        )? * grid[0])?;
        let images = heun_sample(model_denoise_fn(teacher), start, &grid)?;
        let values: Vec<f32> = images.flatten_all()?.to_vec1()?;
        pixels.extend(values.into_iter().map(to_byte));
        left -= b;
    }
    let set = ImageSet::new(shape, pixels, None, Vec::new())?;
    Ok(Dataset::Images(Images::Stored {
        set: std::sync::Arc::new(set),
        name: "no data: the teacher's samples".into(),
    }))
}

/// A Heun sampler of `steps` steps and what a sample costs, in words: each
/// step one network evaluation and a second for its correction, but the
/// last (to σ = 0).
pub(super) fn heun_sampler(steps: usize) -> String {
    format!("Heun, {steps} steps, {} network evaluations each", 2 * steps - 1)
}

/// The name of a config's pretrained teacher in the cache: a hash of
/// everything that shapes it (data, diffusion, network, pretraining
/// settings and seed) and nothing that does not (the run's own seed,
/// paths, distillation settings), so runs of any seed share one teacher.
pub(super) fn teacher_cache_key(config: &Config) -> String {
    use sha2::{Digest, Sha256};
    // A config whose data cannot be resolved has no teacher to cache.
    let resolved = crate::data::resolve(config.clone()).unwrap_or_else(|_| config.clone());
    let (t, d) = (&resolved.teacher, &resolved.diffusion);
    let shape = serde_json::json!({
        "format": 4,
        "data": resolved.data,
        "diffusion": [d.sigma_data, d.p_mean, d.p_std],
        "net": resolved.net_spec(),
        "teacher": [t.steps, t.batch, t.lr, t.seed],
    });
    let digest = Sha256::digest(shape.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_teacher_cache_key_ignores_what_does_not_shape_the_teacher() {
        let base = Config::default();
        let other_seed = Config::parse("seed = 5\n[distill]\nbatch = 64\n", &[]).unwrap();
        assert_eq!(teacher_cache_key(&base), teacher_cache_key(&other_seed));
        let other_teacher = Config::parse("[teacher]\nsteps = 10\n", &[]).unwrap();
        assert_ne!(teacher_cache_key(&base), teacher_cache_key(&other_teacher));
        let other_data = Config::parse("[data]\nkind = \"ring\"\nmodes = 8\n", &[]).unwrap();
        assert_ne!(teacher_cache_key(&base), teacher_cache_key(&other_data));
    }
}
