//! The samples the lab's preview panel shows, computed on the training
//! thread: generator samples, Heun samples of the model being trained or
//! targeted, data samples, score fields, and a recorded node's samples.
//!
//! Image previews start from fixed latents and fixed noise, so that one
//! frame compares with the next and a change on screen is a change of the
//! model, not of the draw. Previews use their own random stream, so they
//! never change what training draws.

use super::protocol::{ModelKind, Preview, PreviewData, Shown};
use super::session::Session;
use crate::data::{PixelImages, Samples};
use crate::diffusion::{heun_sample, model_denoise_fn};
use crate::model::Denoiser;
use crate::rng::{HostRng, host_rng, normal_tensor, streams};
use crate::rundir::Stage;
use anyhow::{Result, ensure};
use candle_core::Tensor;

/// Points in a generator preview (a scatter needs many).
const GENERATOR_POINTS: usize = 1500;
/// Points in a Heun preview (each costs a full sampling run).
const HEUN_POINTS: usize = 600;
/// Heun steps of a preview at most: a glance, not a measurement (EDM
/// samples CIFAR-10 in 18).
const HEUN_STEPS: usize = 18;

pub(super) struct Previewer {
    rng: HostRng,
    /// Images only: what every frame starts from.
    fixed: Option<FixedDraws>,
    /// A spare copy of the score network, for node previews (made on the
    /// first one).
    node_model: Option<Denoiser>,
}

/// The latents and noise image previews start from, and the data images
/// shown for reference.
struct FixedDraws {
    latents: Tensor,
    noise: Tensor,
    data: PixelImages,
}

impl Previewer {
    pub fn new(session: &Session) -> Result<Self> {
        let mut rng = host_rng(0, streams::PREVIEW);
        let fixed = match session.data().images() {
            Some(images) => {
                let shape = images.shape();
                // Small images as an 8 × 8 grid; large ones fewer, as every
                // frame crosses to the lab.
                let n = if shape.height * shape.width <= 256 { 64 } else { 36 };
                let latents = session.sampled_generator().latents(n, &mut rng)?;
                let noise = normal_tensor(&mut rng, latents.dims().to_vec(), latents.device())?;
                let data = session.data().sample(n, &mut rng);
                Some(FixedDraws {
                    latents,
                    noise,
                    data: PixelImages::from_samples(&data)?,
                })
            }
            None => None,
        };
        Ok(Self {
            rng,
            fixed,
            node_model: None,
        })
    }

    pub fn compute(&mut self, s: &Session, preview: Preview, field_sigma: f32) -> Result<PreviewData> {
        Ok(match preview {
            Preview::Generator => PreviewData::Generator(self.generator(s)?),
            Preview::Model => {
                let (label, model) = previewed_model(s);
                let samples = heun(&mut self.rng, self.fixed.as_ref(), s, model)?;
                PreviewData::Model { label, samples }
            }
            Preview::Data => match &self.fixed {
                Some(f) => PreviewData::Data(Shown::Images(f.data.clone())),
                None => anyhow::bail!("the data view is for images; 2-D data is behind every scatter"),
            },
            Preview::ScoreField => {
                ensure!(self.fixed.is_none(), "score fields are drawn for 2-D data only");
                let (label, model) = previewed_model(s);
                PreviewData::ScoreField(s.score_field(label, model, field_sigma)?)
            }
            Preview::Node(index) => {
                let recorded = s.path().len();
                ensure!(
                    index < recorded,
                    "node s'θ{index} is not recorded yet ({recorded} of the path so far)"
                );
                if self.node_model.is_none() {
                    self.node_model = Some(s.teacher().deep_clone()?);
                }
                let model = self.node_model.as_ref().expect("just made");
                model.load(&s.path().file(index))?;
                PreviewData::Node {
                    index,
                    samples: heun(&mut self.rng, self.fixed.as_ref(), s, model)?,
                }
            }
        })
    }

    fn generator(&mut self, s: &Session) -> Result<Shown> {
        match &self.fixed {
            Some(f) => images(&s.sampled_generator().forward(&f.latents)?),
            None => Ok(Shown::Points(
                s.generator_samples(GENERATOR_POINTS, &mut self.rng)?,
            )),
        }
    }
}

/// Heun samples of `model`: from the fixed noise for images, from fresh
/// noise for points.
fn heun(rng: &mut HostRng, fixed: Option<&FixedDraws>, s: &Session, model: &Denoiser) -> Result<Shown> {
    let grid = s
        .noise()
        .karras(s.config().diffusion.sampler_steps.min(HEUN_STEPS));
    let start = match fixed {
        Some(f) => (&f.noise * grid[0])?,
        None => {
            (normal_tensor(
                rng,
                vec![HEUN_POINTS, s.data().sample_shape()[0]],
                &model.device(),
            )? * grid[0])?
        }
    };
    let samples = heun_sample(model_denoise_fn(model), start, &grid)?;
    match fixed {
        Some(_) => images(&samples),
        None => Ok(Shown::Points(s.plane_points(&Samples::from_tensor(&samples)?)?)),
    }
}

fn images(t: &Tensor) -> Result<Shown> {
    Ok(Shown::Images(PixelImages::from_samples(&Samples::from_tensor(
        t,
    )?)?))
}

/// The model the previews show, with its name.
fn previewed_model(s: &Session) -> (String, &Denoiser) {
    match s.stage() {
        Stage::Pretrain => ("teacher (training)".into(), s.teacher()),
        Stage::Record => ("s'θ (degrading)".into(), s.tracking_model()),
        Stage::Backtrack | Stage::Done => (
            format!("target s'θ{}", s.schedule().target()),
            s.score_model(ModelKind::Target).unwrap_or(s.teacher()),
        ),
    }
}
