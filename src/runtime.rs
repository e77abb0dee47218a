//! Process-wide compute settings: the device and candle's CPU threads.

use crate::config::DeviceChoice;
use anyhow::{Result, bail};
use candle_core::Device;

/// Sets candle's CPU thread counts. candle reads them from the environment
/// once, when its thread pools start, so this must run before any tensor
/// work and before other threads exist (the start of `main`).
///
/// Measured on the project's 2-core machine kind: a second thread gives no
/// speed-up at the default sizes, and under load from another process two
/// threads collapse (see `disback bench`), so the default is one. With more
/// threads the element-wise pool's spin is cut from 25,000 to 2,000 rounds.
pub fn configure_threads(threads: usize) {
    let n = if threads == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        threads
    };
    // SAFETY: called at the start of `main`, before any other thread runs,
    // so nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "2000");
    }
}

/// Picks the device, and says which in words.
pub fn select_device(choice: DeviceChoice) -> Result<(Device, String)> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, "CPU".into())),
        DeviceChoice::Cuda(n) => cuda(n),
        DeviceChoice::Auto => {
            if cfg!(feature = "cuda")
                && candle_core::utils::cuda_is_available()
                && let Ok(found) = cuda(0)
            {
                return Ok(found);
            }
            // A CUDA build that finds no GPU says so; a CPU build is plain CPU.
            let name = if cfg!(feature = "cuda") {
                "CPU (no usable GPU)"
            } else {
                "CPU"
            };
            Ok((Device::Cpu, name.into()))
        }
    }
}

fn cuda(n: usize) -> Result<(Device, String)> {
    if !cfg!(feature = "cuda") {
        bail!(
            "device cuda:{n}: this build has no CUDA support; rebuild with \
             `cargo build --release --features cuda` or set device = \"cpu\""
        );
    }
    match Device::new_cuda(n) {
        Ok(d) => Ok((d, format!("CUDA GPU {n}"))),
        Err(e) => bail!("device cuda:{n} is not usable: {e}"),
    }
}
