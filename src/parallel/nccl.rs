//! The `nccl` backend: one process per GPU. Gradients are summed by NCCL
//! on the stream candle computes on. Rank 0 hands out NCCL's unique id
//! over TCP ([`super::tcp::Hub`]) and the same connections carry its
//! orders, every rank's failures and the end.
//!
//! NCCL waits forever for a rank that died or hangs. So each sum is a
//! watched call ([`super::watchdog`]): the host waits for the stream to
//! pass the all-reduce inside it, and a rank stuck there — `parallel.timeout_s`
//! after the call began (gradient exchanges), or 20 s after another
//! rank's failure is known — ends its process, naming itself and how the
//! run resumes. (The wait costs the host its lead over the GPU at each
//! exchange; without it a hang would surface at some later read, where
//! nothing watches.)

use super::tcp::{Hub, Joining};
use super::watchdog::{Watching, exit_process};
use super::{Backend, Collective, Meeting};
use anyhow::{Context, Result, anyhow};
use candle_core::cuda_backend::cudarc::nccl::safe::{Comm, Id, ReduceOp};
use candle_core::{CudaStorage, CustomOp1, Device, Layout, Shape, Tensor};
use std::time::Duration;

/// How long after a rank's failure a rank still stuck in NCCL exits.
const STUCK_GRACE: Duration = Duration::from_secs(20);

struct Nccl {
    comm: Comm,
    hub: Hub,
    device: Device,
}

// SAFETY: the communicator is used by its rank's training thread only
// (every exchange of a rank happens on it, in order); the hub's threads
// never touch it.
unsafe impl Send for Nccl {}
unsafe impl Sync for Nccl {}

/// Joins the launched team on `device` (this rank's GPU).
pub fn start_nccl(meeting: Meeting<'_>, device: &Device) -> Result<Collective> {
    let cuda = device
        .as_cuda_device()
        .context("the nccl backend needs a CUDA device (device = \"cuda:N\" or auto on a GPU)")?;
    let launched = meeting.launched;
    let how = Joining {
        rank: launched.rank,
        world: launched.world,
        master: &launched.master,
        run_dir: meeting.run_dir,
        door: meeting.door,
        timeout: meeting.timeout,
        watching: Some(Watching {
            timeout: meeting.timeout,
            grace: STUCK_GRACE,
            resume: format!(
                "the run resumes from its last checkpoint: disback {} --resume {}",
                command_run(),
                meeting.run_dir.display()
            ),
            exit: exit_process(),
        }),
    };
    let (hub, token) = Hub::join(how, || {
        let id = Id::new().map_err(|e| anyhow!("NCCL could not make its unique id: {e:?}"))?;
        Ok(id.internal().iter().map(|&c| c as u8).collect())
    })?;
    let internal: [std::ffi::c_char; 128] = token
        .iter()
        .map(|&b| b as std::ffi::c_char)
        .collect::<Vec<_>>()
        .try_into()
        .map_err(|_| anyhow!("rank 0's NCCL id is {} bytes, not 128", token.len()))?;
    let comm = Comm::from_rank(
        cuda.cuda_stream(),
        launched.rank,
        launched.world,
        Id::uninit(internal),
    )
    .map_err(|e| {
        anyhow!(
            "NCCL could not join rank {} of {}: {e:?}",
            launched.rank,
            launched.world
        )
    })?;
    let backend = Nccl {
        comm,
        hub,
        device: device.clone(),
    };
    Ok(Collective::team(
        std::sync::Arc::new(backend),
        launched.rank,
        launched.world,
        "nccl",
    ))
}

/// NCCL's sum as a candle op on a contiguous f32 tensor.
struct AllReduce<'a>(&'a Comm);

impl CustomOp1 for AllReduce<'_> {
    fn name(&self) -> &'static str {
        "nccl-all-reduce"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("NCCL sums tensors on a GPU")
    }

    fn cuda_fwd(&self, storage: &CudaStorage, layout: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("NCCL sums contiguous tensors")
        };
        let src = storage.as_cuda_slice::<f32>()?.slice(start..end);
        let mut dst = storage.device.alloc_zeros::<f32>(end - start)?;
        self.0
            .all_reduce(&src, &mut dst, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::Cuda(format!("NCCL all-reduce: {e:?}").into()))?;
        Ok((
            CudaStorage::wrap_cuda_slice(dst, storage.device.clone()),
            layout.shape().clone(),
        ))
    }
}

impl Nccl {
    /// The sum of `t` over the ranks, the host waiting (watched) until the
    /// stream has passed it. `timed`: a gradient exchange, hung after the
    /// team's timeout; untimed sums wait for rank 0's measurements.
    fn reduce(&self, t: &Tensor, timed: bool) -> Result<Tensor> {
        self.hub.check()?;
        let t = t.to_dtype(candle_core::DType::F32)?.contiguous()?;
        let _call = self.hub.call(timed);
        let sum = t.apply_op1_no_bwd(&AllReduce(&self.comm))?;
        self.device.synchronize()?;
        Ok(sum)
    }
}

impl Backend for Nccl {
    fn sum(&self, _rank: usize, values: &mut [f32], patient: bool) -> Result<()> {
        let t = crate::transfer::upload(values.to_vec(), values.len(), &self.device)?;
        let sum = self.reduce(&t, !patient)?;
        values.copy_from_slice(&crate::transfer::read(&sum)?);
        Ok(())
    }

    fn sum_on_device(&self, _rank: usize, t: &Tensor) -> Result<Option<Tensor>> {
        self.reduce(t, true).map(Some)
    }

    fn broadcast(&self, _rank: usize, message: Option<Vec<u8>>) -> Result<Vec<u8>> {
        self.hub.broadcast(message)
    }

    fn fail(&self, _rank: usize, message: &str) {
        self.hub.fail(message);
    }

    fn end(&self) {
        self.hub.end();
    }
}

/// The command this process runs (`run`, `tui` or `serve`), for the
/// resume hint: a run started in the lab resumes in the lab.
fn command_run() -> String {
    match std::env::args().nth(1) {
        None => "tui".into(),
        Some(c) if ["run", "tui", "serve"].contains(&c.as_str()) => c,
        Some(_) => "run".into(),
    }
}
