//! The U-Net's convolutions, forward and forward + backward, at the digits
//! config's sizes: candle's own `conv2d` beside the project's fused CPU op
//! (`src/model/cpu_conv.rs`), measured side by side in one process.
//!
//!     RAYON_NUM_THREADS=1 cargo bench --bench conv
//!
//! (Threads follow RAYON_NUM_THREADS, as in the app.)

use candle_core::{Device, Tensor, Var};
use std::time::Instant;

const REPEATS: usize = 20;

fn main() -> candle_core::Result<()> {
    let device = Device::Cpu;
    println!(
        "{:<34} {:>12} {:>12} {:>16} {:>16}",
        "convolution (batch 128)", "candle fwd", "fused fwd", "candle fwd+bwd", "fused fwd+bwd"
    );
    // (in, out, side, kernel, stride): the digits U-Net's shapes.
    for (input, output, side, kernel, stride) in [
        (32, 32, 8, 3, 1),
        (32, 32, 8, 3, 2),
        (64, 64, 4, 3, 1),
        (128, 64, 4, 3, 1),
        (96, 32, 8, 1, 1),
    ] {
        let x = Var::from_tensor(&Tensor::randn(0f32, 1., (128, input, side, side), &device)?)?;
        let w = Var::from_tensor(&Tensor::randn(
            0f32,
            1.,
            (output, input, kernel, kernel),
            &device,
        )?)?;
        let b = Var::from_tensor(&Tensor::randn(0f32, 1., (1, output, 1, 1), &device)?)?;
        let candle = || x.conv2d(&w, kernel / 2, stride, 1, 1)?.broadcast_add(&b);
        let fused = || disback::model::conv2d_cpu(&x, &w, &b, stride, kernel / 2);
        let (candle_fwd, candle_both) = time(candle)?;
        let (fused_fwd, fused_both) = time(fused)?;
        println!(
            "{:<34} {:>9.2} ms {:>9.2} ms {:>13.2} ms {:>13.2} ms",
            format!("{input}→{output}, {side}×{side}, {kernel}×{kernel}, stride {stride}"),
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
