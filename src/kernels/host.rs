//! Reading tensors' values on the host, for the fused CPU ops, and when
//! their element-wise passes are split over rayon's threads.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, Layout, Result, Storage, Tensor, bail};

/// Below this many values an element-wise pass runs on one thread:
/// splitting it would cost more than it saves.
const SPLIT_FROM: usize = 1 << 15;

/// The values one rayon task takes at a time of a split pass.
pub const PART: usize = SPLIT_FROM / 4;

/// Whether an element-wise pass over `len` values is split over rayon's
/// threads (in [`PART`]s).
pub fn split_over_threads(len: usize) -> bool {
    len >= SPLIT_FROM && rayon::current_num_threads() > 1
}

/// The f32 values of a contiguous CPU tensor that should hold `len` of
/// them; `op` and `what` name it in the error otherwise.
pub fn f32_values<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    len: usize,
    op: &str,
    what: &str,
) -> Result<&'a [f32]> {
    let CpuStorage::F32(values) = storage else {
        bail!("{op}: the {what} must be f32, got {:?}", storage.dtype())
    };
    Ok(&values[contiguous_range(layout, len, op, what)?])
}

/// Where a contiguous layout of `len` values lies in its storage.
fn contiguous_range(layout: &Layout, len: usize, op: &str, what: &str) -> Result<std::ops::Range<usize>> {
    match layout.contiguous_offsets() {
        Some((start, end)) if end - start == len => Ok(start..end),
        Some((start, end)) => bail!("{op}: expected {len} values for the {what}, got {}", end - start),
        None => bail!("{op}: the {what} must be contiguous"),
    }
}

/// Runs `f` on a CPU tensor's f32 values in row-major order, without a
/// copy when the tensor is already contiguous.
pub fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(f32_values(cpu, layout, t.elem_count(), "fused op", "tensor")?)),
        other => bail!("fused CPU op: a tensor on {:?}", other.device().location()),
    }
}

/// [`f32_values`] for the tensor an in-place op writes.
pub fn f32_values_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    len: usize,
    op: &str,
    what: &str,
) -> Result<&'a mut [f32]> {
    let dtype = storage.dtype();
    let CpuStorage::F32(values) = storage else {
        bail!("{op}: the {what} must be f32, got {dtype:?}")
    };
    Ok(&mut values[contiguous_range(layout, len, op, what)?])
}

/// Runs `work` compiled for AVX2 and FMA where the CPU has them, else as
/// it is: the default x86-64 target stops at SSE2, where a loop over f32
/// values gets 4 lanes instead of 8. (FMA only where asked for: Rust does
/// not fuse a product and a sum by itself.) What `work` calls is
/// compiled into the AVX2 copy only where it is inlined, so `work` and
/// the loops it runs must be `#[inline(always)]` (a closure too: without
/// it a closure of any size is compiled on its own, for SSE2, and called).
#[inline(always)]
pub fn vectorised<R>(work: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has both features, checked just above.
        return unsafe { in_avx2(work) };
    }
    work()
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn in_avx2<R>(work: impl FnOnce() -> R) -> R {
    work()
}
