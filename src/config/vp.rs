//! A pretrained VP model's noise schedule, as its `diffusers` scheduler
//! describes it (`scheduler_config.json`): the β schedule, the number of
//! training timesteps and what the network predicts. What the lab cannot
//! use is refused with the file, the key and the value.

use super::keys::Keys;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a VP model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Prediction {
    /// The noise ε (DDPM).
    Epsilon,
    /// v = √ᾱ ε − √(1 − ᾱ) x₀.
    V,
    /// The clean sample x₀.
    Sample,
}

/// The β schedule a VP model was trained with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Betas {
    Linear { start: f64, end: f64 },
    ScaledLinear { start: f64, end: f64 },
    SquaredcosCapV2,
    Given { betas: Vec<f64> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VpSchedule {
    pub betas: Betas,
    pub train_timesteps: usize,
    pub prediction: Prediction,
}

impl VpSchedule {
    /// ᾱ_t for t = 0 … T − 1, in the f32 arithmetic `diffusers` uses.
    pub fn alphas_cumprod(&self) -> Vec<f64> {
        let t = self.train_timesteps;
        let linear = |a: f32, b: f32| -> Vec<f32> {
            (0..t)
                .map(|i| match t {
                    1 => a,
                    _ => a + (b - a) * i as f32 / (t - 1) as f32,
                })
                .collect()
        };
        let betas: Vec<f32> = match &self.betas {
            Betas::Linear { start, end } => linear(*start as f32, *end as f32),
            Betas::ScaledLinear { start, end } => linear((*start as f32).sqrt(), (*end as f32).sqrt())
                .into_iter()
                .map(|b| b * b)
                .collect(),
            Betas::SquaredcosCapV2 => {
                let alpha_bar = |x: f64| ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..t)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / t as f64, (i + 1) as f64 / t as f64);
                        (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
                    })
                    .collect()
            }
            Betas::Given { betas } => betas.iter().map(|&b| b as f32).collect(),
        };
        let mut product = 1f32;
        betas
            .iter()
            .map(|b| {
                product *= 1.0 - b;
                product as f64
            })
            .collect()
    }

    /// σ_t = √((1 − ᾱ_t) / ᾱ_t): the VP model's noise levels in EDM's
    /// variance-exploding units, increasing with t.
    pub fn sigmas(&self) -> Vec<f64> {
        self.alphas_cumprod()
            .iter()
            .map(|a| ((1.0 - a) / a).sqrt())
            .collect()
    }
}

/// diffusers' schedulers that make ᾱ from `beta_schedule` /
/// `trained_betas` as DDPM does (the same β lines, cosine and cumulative
/// product): a model saved with any of them is the same VP model; they
/// differ only in how they sample. Others (flow matching, variance
/// exploding, EDM's own σ) describe another model with the same keys or
/// none, and would be read as a DDPM one.
const VP_SCHEDULERS: [&str; 19] = [
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "DDPMParallelScheduler",
    "DDIMParallelScheduler",
    "DDIMInverseScheduler",
    "EulerDiscreteScheduler",
    "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler",
    "LMSDiscreteScheduler",
    "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler",
    "DPMSolverMultistepScheduler",
    "DPMSolverMultistepInverseScheduler",
    "DPMSolverSinglestepScheduler",
    "DPMSolverSDEScheduler",
    "UniPCMultistepScheduler",
    "DEISMultistepScheduler",
    "SASolverScheduler",
];

/// Refuses a scheduler whose model is not a discrete-time VP one.
fn check_family(k: &Keys) -> Result<()> {
    let class: Option<String> = k.optional("_class_name")?;
    match class {
        None => {
            return k.refuse(
                "_class_name",
                "missing: which scheduler (so which kind of model) is not said; diffusers writes it".into(),
            );
        }
        Some(class) if !VP_SCHEDULERS.contains(&class.as_str()) => {
            return k.refuse(
                "_class_name",
                format!(
                    "{class:?} is not supported: only schedulers of a discrete-time VP model with a \
                     β schedule ({})",
                    VP_SCHEDULERS.join(", ")
                ),
            );
        }
        Some(_) => {}
    }
    // A VP scheduler can still describe another model.
    if k.flag("use_flow_sigmas", false)? {
        return k.refuse(
            "use_flow_sigmas",
            "true is not supported (a flow-matching model, not a VP one)".into(),
        );
    }
    k.choice("timestep_type", "discrete", &["discrete"])?;
    Ok(())
}

pub(super) fn read_scheduler(file: &Path) -> Result<VpSchedule> {
    let k = Keys::read(file)?;
    check_family(&k)?;
    if k.flag("rescale_betas_zero_snr", false)? {
        return k.refuse(
            "rescale_betas_zero_snr",
            "true is not supported (zero-SNR schedules have an infinite σ)".into(),
        );
    }
    let train_timesteps: usize = k.get("num_train_timesteps", 1000)?;
    let start: f64 = k.get("beta_start", 0.0001)?;
    let end: f64 = k.get("beta_end", 0.02)?;
    let given: Option<Vec<f64>> = k.optional("trained_betas")?;
    let betas = match (given, k.get("beta_schedule", "linear".to_string())?.as_str()) {
        (Some(betas), _) => Betas::Given { betas },
        (None, "linear") => Betas::Linear { start, end },
        (None, "scaled_linear") => Betas::ScaledLinear { start, end },
        (None, "squaredcos_cap_v2") => Betas::SquaredcosCapV2,
        (None, other) => {
            return k.refuse(
                "beta_schedule",
                format!("{other:?} is not supported (linear, scaled_linear, squaredcos_cap_v2)"),
            );
        }
    };
    let prediction = match k.get("prediction_type", "epsilon".to_string())?.as_str() {
        "epsilon" => Prediction::Epsilon,
        "v_prediction" => Prediction::V,
        "sample" => Prediction::Sample,
        other => {
            return k.refuse(
                "prediction_type",
                format!("{other:?} is not supported (epsilon, v_prediction, sample)"),
            );
        }
    };
    if train_timesteps < 2 {
        return k.refuse("num_train_timesteps", format!("{train_timesteps} is too few"));
    }
    if let Betas::Given { betas } = &betas
        && betas.len() != train_timesteps
    {
        return k.refuse(
            "trained_betas",
            format!("{} values for {train_timesteps} timesteps", betas.len()),
        );
    }
    Ok(VpSchedule {
        betas,
        train_timesteps,
        prediction,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedules_match_diffusers_values() {
        // DDPM's linear schedule: ᾱ_0 = 1 − 1e-4; σ_999 ≈ 157 (EDM's
        // "VP" maximum for it).
        let linear = VpSchedule {
            betas: Betas::Linear {
                start: 1e-4,
                end: 0.02,
            },
            train_timesteps: 1000,
            prediction: Prediction::Epsilon,
        };
        let s = linear.sigmas();
        assert!((s[0] - (1e-4f64 / (1.0 - 1e-4)).sqrt()).abs() < 1e-6, "{}", s[0]);
        assert!((s[999] - 157.4).abs() < 1.0, "{}", s[999]);
        assert!(s.windows(2).all(|w| w[1] > w[0]));
        // The cosine schedule's ᾱ follows cos²((t/T + 0.008)/1.008 · π/2).
        let cosine = VpSchedule {
            betas: Betas::SquaredcosCapV2,
            train_timesteps: 1000,
            prediction: Prediction::Epsilon,
        };
        let a = cosine.alphas_cumprod();
        let f = |x: f64| ((x + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
        assert!(
            (a[499] - f(0.5) / f(0.0)).abs() < 1e-4,
            "{} vs {}",
            a[499],
            f(0.5) / f(0.0)
        );
    }
}
