//! Copies between the host and the compute device, counted.
//!
//! On a GPU every such copy waits for the device (candle's copies are
//! synchronous), so a training iteration that uploads its random numbers
//! or reads its loss back runs at the pace of the host, not the GPU. The
//! training loops therefore go through these two functions, and the
//! counter lets a test prove an iteration makes none on the device path
//! (on the CPU the copies are plain memory, but they are counted the same
//! way, so the test runs without a GPU). The count is per thread: a
//! session trains on one thread, and tests run side by side.

use anyhow::Result;
use candle_core::{Device, Shape, Tensor};
use std::cell::Cell;

thread_local! {
    static TRANSFERS: Cell<u64> = const { Cell::new(0) };
}

fn counted() {
    TRANSFERS.with(|c| c.set(c.get() + 1));
}

/// Host → device: `values` as a tensor of `shape` on `device`.
pub fn upload(values: Vec<f32>, shape: impl Into<Shape>, device: &Device) -> Result<Tensor> {
    counted();
    Ok(Tensor::from_vec(values, shape, device)?)
}

/// Device → host: every value of `t`, flattened.
pub fn read(t: &Tensor) -> Result<Vec<f32>> {
    counted();
    Ok(t.flatten_all()?.to_vec1::<f32>()?)
}

/// Copies made by this thread so far.
pub fn count() -> u64 {
    TRANSFERS.with(Cell::get)
}

/// Scalars computed on the device, one per step, read back together in
/// one transfer when their values are needed (a log line, a checkpoint, a
/// schedule decision) instead of one wait per step.
#[derive(Debug, Default)]
pub struct Pending(Vec<Tensor>);

impl Pending {
    /// Adds a scalar (any tensor of one value).
    pub fn push(&mut self, scalar: &Tensor) -> Result<()> {
        self.0.push(scalar.reshape(1)?.detach());
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The values pushed since the last call, in order; one transfer.
    pub fn take(&mut self) -> Result<Vec<f64>> {
        if self.0.is_empty() {
            return Ok(Vec::new());
        }
        let all = Tensor::cat(&std::mem::take(&mut self.0), 0)?;
        Ok(read(&all)?.into_iter().map(f64::from).collect())
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }
}
