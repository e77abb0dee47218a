//! The U-Net's convolutions and group norms, forward and forward +
//! backward, at the digits config's sizes: candle's own ops beside the
//! project's fused CPU ops (`src/kernels/conv.rs`, `norm.rs`),
//! measured side by side in one process.
//!
//!     RAYON_NUM_THREADS=1 cargo bench --bench unet_ops
//!
//! With `-- cifar`, the DDPM-CIFAR-10 U-Net's convolutions, group norms
//! and attention (batch 8, the pretrained bench's teacher batch) through
//! the ops the model runs, one line per op in the layout of
//! `benches/unet_ops.py`, which times PyTorch's on the same shapes:
//!
//!     RAYON_NUM_THREADS=2 cargo bench --bench unet_ops -- cifar
//!     python3 benches/unet_ops.py --threads 2
//!
//! (`-- cifar "conv 512"` keeps the ops whose line starts so.)
//!
//! (Threads follow RAYON_NUM_THREADS, as in the app.)

use candle_core::{Device, Module, Tensor, Var};

// The app's allocator and its setting (src/main.rs): the fresh pages of
// large activations are part of what an op costs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Instant;

const REPEATS: usize = 20;

/// (in, out, side, kernel, stride) of the digits config's U-Net (16 and 32
/// channels; the up path's inputs hold the skips).
const SHAPES: [(usize, usize, usize, usize, usize); 9] = [
    (16, 16, 8, 3, 1),
    (16, 16, 8, 3, 2),
    (16, 32, 4, 3, 1),
    (32, 32, 4, 3, 1),
    (64, 32, 4, 3, 1),
    (32, 32, 8, 3, 1),
    (48, 16, 8, 3, 1),
    (64, 32, 4, 1, 1),
    (48, 16, 8, 1, 1),
];

/// (channels, side) of its group norms.
const NORMS: [(usize, usize); 5] = [(16, 8), (32, 4), (64, 4), (48, 8), (32, 8)];

fn main() -> candle_core::Result<()> {
    disback::runtime::keep_freed_memory();
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "cifar") {
        // An optional next word keeps only the ops whose line starts with it.
        let filter = args.get(at + 1).filter(|a| !a.starts_with('-'));
        return cifar::run(filter.map_or("", |f| f.as_str()));
    }
    let device = Device::Cpu;
    println!(
        "{:<34} {:>12} {:>12} {:>16} {:>16}",
        "op (batch 128)", "candle fwd", "fused fwd", "candle fwd+bwd", "fused fwd+bwd"
    );
    // (in, out, side, kernel, stride): the digits U-Net's shapes.
    for (input, output, side, kernel, stride) in SHAPES {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (128, input, side, side), &device)?)?;
        let w = Var::from_tensor(&Tensor::randn(
            0f32,
            1.,
            (output, input, kernel, kernel),
            &device,
        )?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1., (1, output, 1, 1), &device)?)?;
        let candle = || x.conv2d(&w, kernel / 2, stride, 1, 1)?.broadcast_add(&b);
        let fused = || disback::kernels::conv2d(&x, &w, &b, stride, kernel / 2);
        let (candle_fwd, candle_both) = time(candle)?;
        let (fused_fwd, fused_both) = time(fused)?;
        println!(
            "{:<34} {:>9.2} ms {:>9.2} ms {:>13.2} ms {:>13.2} ms",
            format!("conv {input}→{output}, {side}×{side}, {kernel}×{kernel}, /{stride}"),
            candle_fwd,
            fused_fwd,
            candle_both,
            fused_both
        );
    }
    for (channels, side) in NORMS {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (128, channels, side, side), &device)?)?;
        let w = Var::from_tensor(&Tensor::ones(channels, candle_core::DType::F32, &device)?)?;
        let b = Var::from_tensor(&Tensor::zeros(channels, candle_core::DType::F32, &device)?)?;
        let reference =
            candle_nn::GroupNorm::new(w.as_tensor().clone(), b.as_tensor().clone(), channels, 8, 1e-5)?;
        let (candle_fwd, candle_both) = time(|| reference.forward(&x))?;
        let (fused_fwd, fused_both) = time(|| disback::kernels::group_norm(&x, &w, &b, 8, 1e-5))?;
        println!(
            "{:<34} {:>9.2} ms {:>9.2} ms {:>13.2} ms {:>13.2} ms",
            format!("group norm {channels} ch / 8, {side}×{side}"),
            candle_fwd,
            fused_fwd,
            candle_both,
            fused_both
        );
    }
    Ok(())
}

/// Milliseconds per forward, and per forward + backward of a sum of squares.
fn time(conv: impl Fn() -> candle_core::Result<Tensor>) -> candle_core::Result<(f64, f64)> {
    conv()?.sqr()?.sum_all()?.backward()?;
    let start = Instant::now();
    for _ in 0..REPEATS {
        conv()?;
    }
    let forward = start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..REPEATS {
        conv()?.sqr()?.sum_all()?.backward()?;
    }
    let both = start.elapsed().as_secs_f64();
    Ok((forward * 1e3 / REPEATS as f64, both * 1e3 / REPEATS as f64))
}

#[path = "unet_ops/cifar.rs"]
mod cifar;
