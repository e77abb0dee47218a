//! `disback teacher DIR`: what the lab understood of a pretrained
//! `diffusers` model (its blocks, schedule, size), its weights loaded
//! strictly; with `--check REF`, proof that the network computes what
//! diffusers computed on the same inputs, before a long run relies on it.

use crate::config::{
    Activation, Betas, Config, DataConfig, DeviceChoice, DiffusersFiles, DiffusersSpec, NetSpec, Prediction,
    Resampler,
};
use crate::model::{Denoiser, VpTable, load_diffusers_weights};
use crate::rng::host_rng;
use crate::runtime::{Ended, available_memory, memory_estimate, select_device};
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct TeacherArgs {
    /// A diffusers model folder (config.json and
    /// diffusion_pytorch_model.safetensors, the scheduler's
    /// scheduler_config.json beside them or in ../scheduler/) or a pipeline
    /// folder (unet/ and scheduler/).
    pub dir: PathBuf,
    /// A reference diffusers computed (safetensors: `sample` (B, C, H, W),
    /// `timestep` (B,), `output`, the UNet's prediction): run the network
    /// on it and compare; the exit status is 1 when the largest difference
    /// exceeds 1e-4 of the largest output. The README shows the Python
    /// that makes one.
    #[arg(long, value_name = "REF.safetensors")]
    pub check: Option<PathBuf>,
}

/// The largest difference, relative to the largest output, that passes
/// `--check`: float32 rounding over a U-Net stays far below it, a wrong
/// setting (heads, norm groups, an activation) far above.
pub const TOLERANCE: f64 = 1e-4;

pub fn teacher(args: TeacherArgs) -> Result<Ended> {
    let spec = DiffusersSpec::read(&args.dir)?;
    let files = DiffusersFiles::find(&args.dir)?;
    let (device, device_name) = select_device(DeviceChoice::Auto)?;
    let model = Denoiser::new(
        &NetSpec::Diffusers(Box::new(spec.clone())),
        crate::config::EDM_SIGMA_DATA,
        &device,
        &mut host_rng(0, 0),
    )?;
    load_diffusers_weights(model.params(), &files.weights)?;
    describe(&args.dir, &spec, &files, &model)?;
    // The check before the memory estimate, so that nothing the estimate
    // needs can keep the proof from running.
    if let Some(reference) = &args.check {
        check(&model, reference, &device)?;
    }
    println!("  memory      {}", memory_line(&args.dir, &spec, &device_name)?);
    Ok(Ended::Finished)
}

/// Prints the model as the lab will build it.
fn describe(dir: &Path, spec: &DiffusersSpec, files: &DiffusersFiles, model: &Denoiser) -> Result<()> {
    let u = &spec.unet;
    println!("diffusers UNet2DModel in {}", dir.display());
    println!(
        "  files       {}, {}, {}",
        files.config.display(),
        files.weights.display(),
        files.scheduler.display()
    );
    println!(
        "  images      {} × {} × {}{}",
        u.in_channels,
        u.sample_size,
        u.sample_size,
        if u.center_input_sample {
            " (centred: 2x − 1)"
        } else {
            ""
        }
    );
    println!(
        "  {:<15} {:<17} {:>9} {:>6}  {:<14} norm groups",
        "block", "type", "channels", "layers", "attention"
    );
    for b in u.blocks() {
        let attention = b.heads.map_or("–".to_string(), |(n, d)| {
            format!("{n} head{} × {d}", if n == 1 { "" } else { "s" })
        });
        let groups = match (b.heads, b.attention_groups) {
            (Some(_), Some(g)) if g != b.groups => format!("{} (attention {g})", b.groups),
            (Some(_), None) => format!("{} (attention: no norm)", b.groups),
            _ => b.groups.to_string(),
        };
        println!(
            "  {:<15} {:<17} {:>9} {:>6}  {:<14} {groups}",
            b.name,
            b.kind,
            format!("{}→{}", b.channels.0, b.channels.1),
            b.layers,
            attention
        );
    }
    let in_attention = |r: Resampler, plain: &str, resnet: &str| match r {
        Resampler::Conv => plain.to_string(),
        Resampler::Resnet => format!("{plain} ({resnet} in attention blocks)"),
    };
    println!(
        "  resampling  down: {} (padding {}); up: {}{}",
        in_attention(
            u.downsample,
            "stride-2 convolution",
            "residual block, 2 × 2 average pooling"
        ),
        u.downsample_padding,
        in_attention(
            u.upsample,
            "nearest ×2, convolution",
            "residual block, nearest ×2"
        ),
        match u.mid_block && u.mid_block_scale_factor != 1.0 {
            true => format!("; middle block output ÷ {}", u.mid_block_scale_factor),
            false => String::new(),
        }
    );
    let act = match u.act_fn {
        Activation::Silu => "SiLU",
        Activation::Mish => "Mish",
        Activation::Gelu => "GELU",
        Activation::Relu => "ReLU",
    };
    println!(
        "  time        sinusoids of {} ({} first, shift {}) → {}; blocks' nonlinearity {act}; norm ε {:e}{}",
        u.block_out_channels[0],
        if u.flip_sin_to_cos { "cos" } else { "sin" },
        u.freq_shift,
        u.time_embed_dim(),
        u.norm_eps,
        if u.scale_shift {
            "; time scales and shifts the norms"
        } else {
            ""
        }
    );
    let s = &spec.schedule;
    let prediction = match s.prediction {
        Prediction::Epsilon => "the noise ε (epsilon)",
        Prediction::V => "v = √ᾱ ε − √(1−ᾱ) x₀ (v_prediction)",
        Prediction::Sample => "the clean sample x₀ (sample)",
    };
    println!("  predicts    {prediction}");
    let betas = match &s.betas {
        Betas::Linear { start, end } => format!("linear {start} … {end}"),
        Betas::ScaledLinear { start, end } => format!("scaled_linear {start} … {end}"),
        Betas::SquaredcosCapV2 => "squaredcos_cap_v2 (cosine)".into(),
        Betas::Given { .. } => "given (trained_betas)".into(),
    };
    println!("  β schedule  {betas}, {} timesteps", s.train_timesteps);
    println!("  sampling    {}", sampler_line(&files.scheduler)?);
    let (low, high) = VpTable::new(s).range();
    println!("  σ range     {low:.4} … {high:.1} (EDM units: x_t / √ᾱ_t)");
    let count = model.params().count();
    let mib = |bytes: f64| bytes / (1024.0 * 1024.0);
    println!(
        "  parameters  {count} ({:.2} MiB as float32), all loaded from the weights file",
        mib(4.0 * count as f64)
    );
    Ok(())
}

/// The scheduler's `clip_sample` and `thresholding`: settings of its
/// sampler, applied to the clean-sample estimate between steps. DisBack
/// distils the raw denoiser, so they are not applied; said, not silent.
fn sampler_line(scheduler: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(scheduler).with_context(|| format!("cannot read {}", scheduler.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}: not JSON", scheduler.display()))?;
    let setting = |key: &str| json.get(key).map_or("absent".to_string(), |v| v.to_string());
    Ok(format!(
        "clip_sample {}, thresholding {}: the scheduler's sampler settings, not applied (the raw denoiser is distilled)",
        setting("clip_sample"),
        setting("thresholding")
    ))
}

/// What a run with this teacher needs at the sizes of
/// `configs/pretrained.toml` (batches of 32, 256 measured samples; the
/// lab's own defaults are for the 2-D toy), beside what is free.
fn memory_line(dir: &Path, spec: &DiffusersSpec, device: &str) -> Result<String> {
    let mut config = Config::default_with(&[])?;
    config.teacher.pretrained = Some(dir.to_path_buf());
    config.teacher.diffusers = Some(spec.clone());
    config.data = DataConfig::None {
        channels: spec.unet.in_channels,
        size: spec.unet.sample_size,
    };
    (config.record.batch, config.distill.batch, config.metrics.samples) = (32, 32, 256);
    let config = crate::data::resolve(config)?;
    let gib = |bytes: f64| bytes / (1024.0 * 1024.0 * 1024.0);
    let free = available_memory().map_or(String::new(), |f| format!("; {:.1} GiB free here", gib(f)));
    Ok(format!(
        "a run at batch 32 (record and distil, as configs/pretrained.toml) holds about twelve copies \
         of the weights and needs about {:.1} GiB on {device}{free}",
        gib(memory_estimate(&config))
    ))
}

/// Runs the network on the reference's inputs and compares; an error (exit
/// status 1) above [`TOLERANCE`].
fn check(model: &Denoiser, reference: &Path, device: &Device) -> Result<()> {
    let tensors = candle_core::safetensors::load(reference, &Device::Cpu)
        .with_context(|| format!("--check: cannot read {}", reference.display()))?;
    let get = |key: &str| -> Result<Tensor> {
        let t = tensors.get(key).with_context(|| {
            format!(
                "--check: {} has no `{key}` (a reference holds `sample` (B, C, H, W), `timestep` (B,) \
                 and `output`)",
                reference.display()
            )
        })?;
        Ok(t.to_dtype(DType::F32)?.to_device(device)?)
    };
    let (sample, timestep, want) = (get("sample")?, get("timestep")?, get("output")?);
    let batch = sample
        .dims4()
        .with_context(|| format!("--check: {}: `sample` is not (B, C, H, W)", reference.display()))?;
    if timestep.elem_count() != batch.0 {
        bail!(
            "--check: {}: {} timesteps for {} samples",
            reference.display(),
            timestep.elem_count(),
            batch.0
        );
    }
    let out = model.net.forward(&sample, &timestep.reshape((batch.0, 1))?)?;
    if out.dims() != want.dims() {
        bail!(
            "--check: {}: `output` has shape {:?}, the network gives {:?}",
            reference.display(),
            want.dims(),
            out.dims()
        );
    }
    let (out, want) = (host_values(&out)?, host_values(&want)?);
    finite(&want).with_context(|| format!("--check: {}: `output`", reference.display()))?;
    finite(&out).context("--check failed: the network's output")?;
    let difference = out
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f64::max);
    let relative = difference / scale.max(f64::MIN_POSITIVE);
    println!(
        "  check       {}: largest difference {difference:.3e} on outputs up to {scale:.3e}: {relative:.2e} of the largest",
        reference.display()
    );
    if relative > TOLERANCE {
        bail!(
            "--check failed: the largest difference is {relative:.2e} of the largest output (more than \
             {TOLERANCE:e}): this network does not compute what diffusers computed for {}; do not \
             distil it (a setting read wrongly, or a reference from another model)",
            reference.display()
        );
    }
    println!("  check       passed (≤ {TOLERANCE:e}): the network computes what diffusers computes");
    Ok(())
}

/// A tensor's values on the host, for comparing there: candle's `max_all`
/// passes over a NaN that is not the first element, so a network that
/// gives NaN over part of an image would pass a device-side check.
fn host_values(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.flatten_all()?.to_vec1()?)
}

/// Refuses NaN and infinities, saying where the first one is.
fn finite(values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => bail!(
            "{} of {} values are not finite (the first, {}, at flat index {i})",
            values.iter().filter(|v| !v.is_finite()).count(),
            values.len(),
            values[i]
        ),
    }
}
