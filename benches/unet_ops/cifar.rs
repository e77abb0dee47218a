//! The DDPM-CIFAR-10 U-Net's ops at batch 8 (`-- cifar`): every distinct
//! convolution, group norm and attention shape of google/ddpm-cifar10-32
//! (channels 128, 256, 256, 256; attention at 16×16, one head over the
//! channels), through the same calls the model makes, one line per op
//! in `benches/unet_ops.py`'s layout so the two outputs sit side by side.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Shape, Tensor, Var};
use disback::kernels;
use disback::model::{Linear, ParamBuilder, attend};
use rand::SeedableRng;
use std::time::Instant;

const BATCH: usize = 8;

/// (in, out, side, kernel, stride) of the convolutions, in the order the
/// network meets them (the up path's inputs hold the skips). The
/// downsamplers pad one pixel on every side here; the model pads only the
/// right and bottom (diffusers' `downsample_padding = 0`), one row and
/// column fewer of zeros.
pub const CONVS: [(usize, usize, usize, usize, usize); 24] = [
    (3, 128, 32, 3, 1),
    (128, 128, 32, 3, 1),
    (128, 128, 32, 3, 2),
    (128, 256, 16, 3, 1),
    (256, 256, 16, 3, 1),
    (128, 256, 16, 1, 1),
    (256, 256, 16, 3, 2),
    (256, 256, 8, 3, 1),
    (256, 256, 8, 3, 2),
    (256, 256, 4, 3, 1),
    (512, 256, 4, 3, 1),
    (512, 256, 4, 1, 1),
    (512, 256, 8, 3, 1),
    (512, 256, 8, 1, 1),
    (512, 256, 16, 3, 1),
    (512, 256, 16, 1, 1),
    (384, 256, 16, 3, 1),
    (384, 256, 16, 1, 1),
    (256, 256, 32, 3, 1),
    (384, 128, 32, 3, 1),
    (384, 128, 32, 1, 1),
    (256, 128, 32, 3, 1),
    (256, 128, 32, 1, 1),
    (128, 3, 32, 3, 1),
];

/// (channels, side) of the group norms (32 groups).
pub const NORMS: [(usize, usize); 11] = [
    (128, 32),
    (128, 16),
    (256, 16),
    (256, 8),
    (256, 4),
    (512, 4),
    (512, 8),
    (512, 16),
    (384, 16),
    (256, 32),
    (384, 32),
];

/// (channels, side) of the attention blocks (one head).
pub const ATTENTIONS: [(usize, usize); 2] = [(256, 16), (256, 4)];

/// `filter`: only the ops whose line starts with it (all when empty).
pub fn run(filter: &str) -> candle_core::Result<()> {
    let device = Device::Cpu;
    let wanted = |op: &str| op.starts_with(filter);
    println!(
        "# disback, {} threads, batch {BATCH}: ms forward, ms forward + backward",
        rayon::current_num_threads()
    );
    for (input, output, side, kernel, stride) in CONVS {
        let op = format!("conv {input}->{output} {side}x{side} k{kernel} s{stride}");
        if !wanted(&op) {
            continue;
        }
        let x = var((BATCH, input, side, side), &device)?;
        let w = var((output, input, kernel, kernel), &device)?;
        let b = var(output, &device)?;
        let (fwd, both) = time_op(repeats(side), || kernels::conv2d(&x, &w, &b, stride, kernel / 2))?;
        line(&op, fwd, both);
    }
    for (channels, side) in NORMS {
        let op = format!("group norm {channels} {side}x{side}");
        if !wanted(&op) {
            continue;
        }
        let x = var((BATCH, channels, side, side), &device)?;
        let w = Var::from_tensor(&Tensor::ones(channels, DType::F32, &device)?)?;
        let b = Var::from_tensor(&Tensor::zeros(channels, DType::F32, &device)?)?;
        let (fwd, both) = time_op(repeats(side), || kernels::group_norm(&x, &w, &b, 32, 1e-6))?;
        line(&op, fwd, both);
    }
    for (channels, side) in ATTENTIONS {
        let op = format!("attention {channels} {side}x{side}");
        if !wanted(&op) {
            continue;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        let mut params = ParamBuilder::new(&device, &mut rng);
        let projections: Vec<Linear> = ["q", "k", "v", "out"]
            .iter()
            .map(|name| Linear::new(&mut params, name, (channels, channels), 1.0))
            .collect::<anyhow::Result<_>>()
            .map_err(candle_core::Error::wrap)?;
        let x = var((BATCH * side * side, channels), &device)?;
        // The projections, the heads' mixing and the output projection,
        // as the model's attention block runs them on its rows.
        let block = || -> anyhow::Result<Tensor> {
            let mixed = attend(
                &projections[0].forward(&x)?,
                &projections[1].forward(&x)?,
                &projections[2].forward(&x)?,
                BATCH,
                1,
            )?;
            projections[3].forward(&mixed)
        };
        let (fwd, both) = time_op(repeats(side), || block().map_err(candle_core::Error::wrap))?;
        line(&op, fwd, both);
    }
    Ok(())
}

/// Milliseconds per forward, and per forward + backward with a fixed
/// gradient arriving at the output (PyTorch's `y.backward(g)`: no loss
/// function's passes in the time), each the best of three rounds.
fn time_op(repeats: usize, op: impl Fn() -> candle_core::Result<Tensor>) -> candle_core::Result<(f64, f64)> {
    let upstream = Tensor::randn(0f32, 1., op()?.shape(), &Device::Cpu)?;
    let step = || op()?.apply_op1(Arriving(upstream.clone()))?.backward().map(drop);
    step()?;
    let forward = best_of_three(repeats, || op().map(drop))?;
    let both = best_of_three(repeats, step)?;
    Ok((forward, both))
}

fn best_of_three(repeats: usize, run: impl Fn() -> candle_core::Result<()>) -> candle_core::Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let start = Instant::now();
        for _ in 0..repeats {
            run()?;
        }
        best = best.min(start.elapsed().as_secs_f64() * 1e3 / repeats as f64);
    }
    Ok(best)
}

/// `y ↦ 0` whose backward hands `y` the gradient it holds, whatever
/// arrives: the fixed upstream gradient of [`time_op`].
struct Arriving(Tensor);

impl CustomOp1 for Arriving {
    fn name(&self) -> &'static str {
        "arriving-gradient"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Ok((CpuStorage::F32(vec![0.0]), Shape::from(())))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, _: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.0.clone()))
    }
}

fn var(shape: impl Into<candle_core::Shape>, device: &Device) -> candle_core::Result<Var> {
    Var::from_tensor(&Tensor::randn(0f32, 1., shape, device)?)
}

/// Fewer repeats for the large planes: about a tenth of a second a round.
fn repeats(side: usize) -> usize {
    match side {
        32 => 3,
        16 => 6,
        _ => 20,
    }
}

fn line(op: &str, fwd: f64, both: f64) {
    println!("{op:<32} {fwd:>9.2} {both:>9.2}");
}
