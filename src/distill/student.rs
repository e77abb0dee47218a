//! The one-step generator being distilled, with its optimiser and the
//! moving average of its weights.

use crate::model::Generator;
use crate::optim::Adam;
use crate::parallel::Collective;
use crate::rng::Draws;
use anyhow::Result;
use candle_core::Tensor;

pub struct Student {
    /// G_η, the weights the optimiser moves.
    pub generator: Generator,
    /// The exponential moving average of G_η's weights
    /// (`distill.generator_ema`): what is sampled, measured and saved.
    pub average: Generator,
    pub opt: Adam,
    ema_decay: f64,
}

impl Student {
    /// `team`: the ranks whose gradients each update averages.
    pub fn new(generator: Generator, lr: f64, ema_decay: f64, team: &Collective) -> Result<Self> {
        Ok(Self {
            opt: Adam::new(generator.params(), lr)?.averaged_over(team),
            average: generator.deep_clone()?,
            generator,
            ema_decay,
        })
    }

    /// `x_0 = G_η(z)` for a fresh latent batch, differentiable in η.
    pub fn generate(&self, batch: usize, draws: &mut Draws<'_>) -> Result<Tensor> {
        self.generator
            .forward(&self.generator.draw_latents(batch, draws)?)
    }

    /// One optimiser step on `loss`, then the moving average follows.
    pub fn update(&mut self, loss: &Tensor) -> Result<()> {
        self.opt.step(&loss.backward()?)?;
        self.average
            .params()
            .average_toward(self.generator.params(), self.ema_decay)
    }

    /// Makes the average equal the weights (when G⁰ is set from outside).
    pub fn reset_average(&self) -> Result<()> {
        self.average.params().copy_from(self.generator.params())
    }
}
