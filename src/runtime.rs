//! Process-wide compute settings: the device and candle's CPU threads.

use crate::config::{Config, DeviceChoice};
use crate::model::generation_chunk;
use anyhow::{Result, bail};
use candle_core::Device;

/// How a command ended, for its exit status (the README's table): 0 when
/// it finished; 128 + the signal's number when a signal stopped it, a
/// checkpoint saved so `--resume` continues it (a second signal ends the
/// process at once with the same status, resumable from the checkpoint
/// before). Errors exit 1, and a bad command line 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Finished,
    Stopped { signal: i32 },
}

impl Ended {
    pub fn exit_code(self) -> std::process::ExitCode {
        match self {
            Ended::Finished => std::process::ExitCode::SUCCESS,
            Ended::Stopped { signal } => std::process::ExitCode::from((128 + signal) as u8),
        }
    }
}

/// Tells mimalloc (the binary's allocator, `main.rs`) to keep freed memory
/// for reuse instead of returning it to the system a second after it was
/// freed (its default). Every tensor op allocates its output, and a
/// training step frees and allocates the same large buffers again, seconds
/// apart on images; returned, each came back as fresh pages the kernel
/// zeroes (9% of a CIFAR-10 U-Net step's CPU time in `perf`). Kept: teacher
/// step +15–19%, distillation +6–14% on one thread, peak memory 1.9 → 2.5
/// GB (PyTorch: 3.0 GB; docs/speed.md, 2026-12-06 evening). A
/// `MIMALLOC_PURGE_DELAY` set in the environment is left as it is.
pub fn keep_freed_memory() {
    // Why by hand: libmimalloc-sys names no constant for this option. Its
    // index in mimalloc's `mi_option_e` is 15 in both v2 and v3 (the v3 of
    // libmimalloc-sys 0.1.49 is what builds); writing only over one of its
    // documented defaults (1,000 ms in v3, 10 ms in v2) is a cheap guard
    // against a later release renumbering the enum, not a proof.
    const PURGE_DELAY: std::ffi::c_int = 15;
    const DEFAULTS_MS: [std::ffi::c_long; 2] = [1000, 10];
    unsafe extern "C" {
        fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: both calls check the index; `mi_option_set` is a plain
    // store, so this runs first in `main`, before any other thread.
    unsafe {
        if DEFAULTS_MS.contains(&mi_option_get(PURGE_DELAY)) {
            mi_option_set(PURGE_DELAY, -1);
        }
    }
}

/// Sets candle's CPU thread counts. candle reads them from the environment
/// once, when its thread pools start, so this must run before any tensor
/// work and before other threads exist (the start of `main`).
///
/// Measured on the project's 2-core machine kind: a second thread gives no
/// speed-up at the default sizes, and under load from another process two
/// threads collapse (see `disback bench`), so the default is one.
///
/// The threads go to rayon's pool, which runs the matrix products and this
/// project's fused ops. candle's own element-wise pool is kept to the
/// calling thread: its workers spin at a barrier while rayon's run, and on
/// two cores the five threads fought (a quarter of the time went to
/// candle's barrier; with it off, two threads ran the batch-1,024 ResNet-MLP
/// teacher step 58 → 76 steps/s and the distillation iteration 11.5 → 16.2
/// it/s).
///
/// More threads than the machine has CPUs only wait on each other (and a
/// count in the thousands failed to start them at all), so a larger
/// `threads` is cut to the CPUs, with a note: a config written for a
/// bigger machine still runs, and so does a run resumed on a smaller one.
pub fn configure_threads(threads: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = thread_count(threads, cpus);
    if threads > cpus {
        eprintln!(
            "note: threads = {threads}, but this machine has {cpus} CPUs: using {cpus} \
             (more threads than CPUs only wait on each other)"
        );
    }
    // SAFETY: called at the start of `main`, before any other thread runs,
    // so nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// The threads the CPU's tensor work runs on: rayon's pool, as
/// [`configure_threads`] sized it (what a header says).
pub fn cpu_threads() -> usize {
    rayon::current_num_threads()
}

/// The threads to run for a config's `threads` on a machine with `cpus`:
/// 0 means all of them, and no more than them.
pub fn thread_count(threads: usize, cpus: usize) -> usize {
    match threads {
        0 => cpus,
        n => n.min(cpus),
    }
}

/// Picks the device, and says which in words.
pub fn select_device(choice: DeviceChoice) -> Result<(Device, String)> {
    match choice {
        DeviceChoice::Cpu => Ok((Device::Cpu, "CPU".into())),
        DeviceChoice::Cuda(n) => cuda(n),
        DeviceChoice::Auto => {
            if tensors_on_gpu(choice)
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

/// A generous estimate of the memory one run of `config` needs at its
/// largest moment, in bytes. Per sample of a batch, one pass of a network
/// with its backward keeps a few tensors of the hidden width per layer;
/// the distillation step runs the generator and three score networks.
/// This is a bound to refuse sizes that cannot fit (a batch of 10¹² would
/// otherwise grow until the machine kills the process), not a prediction.
pub fn memory_estimate(config: &Config) -> f64 {
    let net = |width: usize, layers: usize, emb: usize| 16.0 * ((layers + 2) * width + emb) as f64;
    let (score, generator) = match config.data.image_shape() {
        Some(image) if config.teacher.diffusers.is_some() => {
            let floats =
                diffusers_activations(config.teacher.diffusers.as_ref().expect("just matched"), image);
            (4.0 * floats, 4.0 * floats)
        }
        // Per level, its down and up blocks (and the middle ones at the
        // bottom), each keeping about ten feature maps for its backward.
        Some(image) => {
            let u = &config.unet;
            let levels = u.multipliers.len();
            let floats: f64 = (u.multipliers.iter().enumerate())
                .map(|(l, m)| {
                    let area = (image.height * image.width) as f64 / 4f64.powi(l as i32);
                    let blocks = (2 * u.blocks + 1 + 2 * usize::from(l + 1 == levels)) as f64;
                    10.0 * blocks * (u.channels * m) as f64 * area
                })
                .sum();
            (4.0 * floats, 4.0 * floats)
        }
        None => {
            let s = &config.score_net;
            let score = net(s.width, s.blocks, s.emb_dim);
            let g = &config.generator;
            (score, net(g.width, g.depth, g.latent_dim).max(score))
        }
    };
    let m = &config.metrics;
    // Measurements score `metrics.samples` points at once; the final
    // samples are generated a chunk at a time. Forward passes only.
    let values = values_per_sample(config);
    let measured = m
        .samples
        .max(config.log.final_samples.min(generation_chunk(values)));
    // A teacher given (a file, a pretrained model) is not trained here.
    let trained = config.teacher.file.is_none() && config.teacher.pretrained.is_none();
    // Data parallelism: each rank holds every model and its share of each
    // batch; the ranks of this machine all count.
    let ranks = config.parallel.ranks.max(1);
    let share = |batch: usize| batch.div_ceil(ranks) as f64;
    let rows = [
        usize::from(trained) as f64 * share(config.teacher.batch) * score,
        share(config.record.batch) * 2.0 * score,
        share(config.distill.batch) * (generator + 3.0 * score),
        measured as f64 * score / 4.0,
    ];
    let per_rank = 4.0 * rows.iter().copied().fold(0.0, f64::max) + weights_estimate(config);
    host_memory_estimate(config) + ranks as f64 * per_rank
}

/// The weights a run holds: the teacher, the generator and its moving
/// average, s_φ and the target (or the degrading copy), Adam's two moments
/// for each trained one: about twelve copies of the score network, in
/// bytes. Counted by building the network on the CPU (for a pretrained
/// teacher of tens of millions of parameters this is what dominates).
fn weights_estimate(config: &Config) -> f64 {
    let mut rng = crate::rng::host_rng(0, 0);
    let sigma_data = config
        .diffusion
        .sigma_data
        .unwrap_or(crate::config::EDM_SIGMA_DATA);
    crate::model::Denoiser::new(
        &config.net_spec(),
        sigma_data,
        &candle_core::Device::Cpu,
        &mut rng,
    )
    .map_or(0.0, |m| 12.0 * 4.0 * m.params().count() as f64)
}

/// Floats a `diffusers` U-Net keeps for its backward per image: about ten
/// feature maps a block, and the attention weights where it attends.
fn diffusers_activations(d: &crate::config::DiffusersSpec, image: crate::config::ImageShape) -> f64 {
    let u = &d.unet;
    let levels = u.block_out_channels.len();
    (0..levels)
        .map(|l| {
            let area = (image.height * image.width) as f64 / 4f64.powi(l as i32);
            let blocks = (2 * u.layers_per_block + 1 + 2 * usize::from(l + 1 == levels)) as f64;
            let channels = u.block_out_channels[l] as f64;
            let heads = channels / u.attention_head_dim.unwrap_or(u.block_out_channels[l]) as f64;
            let attention = match u.down_attention[l] || u.up_attention[levels - 1 - l] {
                true => 3.0 * heads * area * area,
                false => 0.0,
            };
            10.0 * blocks * channels * area + blocks * attention
        })
        .sum()
}

/// What a run keeps in the host's memory whatever its device: the process
/// itself, and the samples it holds (the final ones, the measurements'
/// and their reference).
fn host_memory_estimate(config: &Config) -> f64 {
    const BASE: f64 = 64.0 * 1024.0 * 1024.0;
    let m = &config.metrics;
    let held = config.log.final_samples + m.samples + m.stf_reference;
    // Every rank of this machine holds its data and reference samples.
    let ranks = config.parallel.ranks.max(1) as f64;
    ranks * (BASE + 4.0 * (held * values_per_sample(config)) as f64)
}

/// Values of one data sample: an image's pixels, or a point's `dim`.
fn values_per_sample(config: &Config) -> usize {
    match config.data.image_shape() {
        Some(image) => image.len(),
        None => config.data.point_dim().unwrap_or(2),
    }
}

/// Whether a run of `choice` keeps its tensors on a GPU (then the GPU's
/// memory bounds its batches, not the host's), known before the device is
/// made: [`select_device`] goes by it too.
pub fn tensors_on_gpu(choice: DeviceChoice) -> bool {
    match choice {
        DeviceChoice::Cpu => false,
        DeviceChoice::Cuda(_) => cfg!(feature = "cuda"),
        DeviceChoice::Auto => cfg!(feature = "cuda") && candle_core::utils::cuda_is_available(),
    }
}

/// The memory this machine has free now (Linux's `MemAvailable`), if known.
pub fn available_memory() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Refuses `runs` side-by-side runs of `config` whose memory estimate
/// exceeds what the machine has free, with the estimate and the limit.
pub fn check_memory(config: &Config, runs: usize) -> Result<()> {
    let Some(free) = available_memory() else {
        return Ok(()); // not Linux: nothing to compare against
    };
    // Resolved, so that a pretrained teacher is counted at its real size.
    let config = &crate::data::resolve(config.clone())?;
    // On a GPU the activations are the GPU's to hold, not the host's: a
    // batch too large for it ends training with CUDA's out-of-memory error,
    // the last checkpoint kept, like any other error of a step.
    let per_run = match tensors_on_gpu(config.device) {
        true => host_memory_estimate(config),
        false => memory_estimate(config),
    };
    let need = per_run * runs.max(1) as f64;
    if need > free {
        let gib = |b: f64| b / (1024.0 * 1024.0 * 1024.0);
        bail!(
            "these sizes need about {:.1} GiB of memory ({runs} run(s); the batches teacher.batch = {}, \
             record.batch = {}, distill.batch = {} and the network widths set it), but {:.1} GiB is \
             free: lower them, or pass --no-memory-check if you know better",
            gib(need),
            config.teacher.batch,
            config.record.batch,
            config.distill.batch,
            gib(free)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_samples_cost_a_generation_chunk_not_all_at_once() {
        // 28×28 images: 10,000 final samples are generated 64 at a time,
        // so they add their own pixels to the estimate, not 10,000 forward
        // passes (which made the shipped MNIST config "need" 157 GiB).
        let mut config = Config {
            data: crate::config::DataConfig::Shapes {
                size: 28,
                channels: 1,
            },
            ..Config::default()
        };
        config.metrics.samples = 64;
        config.log.final_samples = 64;
        let few = memory_estimate(&config);
        config.log.final_samples = 10_000;
        let many = memory_estimate(&config);
        let pixels = (10_000 - 64) as f64 * 28.0 * 28.0 * 4.0;
        assert!((many - few - pixels).abs() < 1.0, "{few} → {many}");
        // The scored measurement batch still counts in full.
        config.metrics.samples = 100_000;
        assert!(memory_estimate(&config) > 10.0 * many);
    }

    #[test]
    fn only_a_cpu_run_holds_its_activations_in_the_host_s_memory() {
        assert!(!tensors_on_gpu(DeviceChoice::Cpu));
        let cuda = cfg!(feature = "cuda");
        assert_eq!(tensors_on_gpu(DeviceChoice::Cuda(0)), cuda);
        if !cuda {
            assert!(!tensors_on_gpu(DeviceChoice::Auto));
        }
        // A GPU run's host share leaves the batches out.
        let mut config = Config::default();
        let host = host_memory_estimate(&config);
        config.teacher.batch = 1_000_000_000;
        assert_eq!(host_memory_estimate(&config), host);
        assert!(memory_estimate(&config) > 1e12);
    }

    #[test]
    fn the_default_config_fits_and_a_huge_batch_does_not() {
        let mut config = Config::default();
        let small = memory_estimate(&config);
        assert!(small < 256.0 * 1024.0 * 1024.0, "{small}");
        check_memory(&config, 1).expect("the default fits any machine");
        config.teacher.batch = 1_000_000_000_000;
        assert!(memory_estimate(&config) > 1e15);
        let err = check_memory(&config, 1).unwrap_err().to_string();
        assert!(
            err.contains("teacher.batch = 1000000000000") && err.contains("--no-memory-check"),
            "{err}"
        );
    }

    #[test]
    fn threads_are_all_the_cpus_for_0_and_never_more_than_them() {
        assert_eq!(thread_count(0, 8), 8);
        assert_eq!(thread_count(1, 8), 1);
        assert_eq!(thread_count(8, 8), 8);
        assert_eq!(thread_count(100_000, 8), 8);
        assert_eq!(thread_count(2, 1), 1);
    }
}
