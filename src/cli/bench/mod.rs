//! `disback bench`: training speed of the real session code at a config's
//! sizes, side by side for several thread counts, idle and under load.
//!
//! candle reads its thread counts once per process, so each setting runs in
//! a child process (`bench --worker`); "under load" runs a busy-looping
//! child beside it, as another user's job on a shared machine would.
//! `--against-torch` times a grid of sizes beside a PyTorch mirror
//! ([`torch`]).

mod torch;

use super::ConfigArgs;
use crate::config::{Config, DataConfig};
use crate::engine::Session;
use crate::engine::trainer::Start;
use crate::rundir::{RunDir, Stage};
use crate::runner;
use crate::runtime::configure_threads;
use anyhow::{Context, Result, bail};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Seconds of timing per measurement.
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
    /// Thread counts to compare.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Skip the runs under load.
    #[arg(long)]
    pub no_load: bool,
    /// Time a grid of sizes (`--batches` × `--widths` × `--threads`) beside
    /// the PyTorch mirror in benches/torch_mirror.py (2-D configs; without
    /// PyTorch, disback alone).
    #[arg(long)]
    pub against_torch: bool,
    /// Batch sizes of the grid (teacher and distillation batch alike).
    #[arg(long, value_delimiter = ',', default_value = "256,1024,4096")]
    pub batches: Vec<usize>,
    /// Score-net widths of the grid.
    #[arg(long, value_delimiter = ',', default_value = "128,256,512")]
    pub widths: Vec<usize>,
    /// Times each cell of the grid is measured, alternating disback and
    /// PyTorch; the best of each is kept (the least disturbed by other
    /// work on the machine).
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Draw the training's random numbers on the device, as the GPU path
    /// does, whatever the device (on the CPU: to measure that path's host
    /// work and copies per iteration without a GPU).
    #[arg(long)]
    pub device_draws: bool,
    #[arg(long, hide = true)]
    pub worker: bool,
    /// Worker only: skip the measurement with a lab attached.
    #[arg(long, hide = true)]
    pub plain: bool,
    #[arg(long, hide = true)]
    pub burn: bool,
}

/// Steps per second of one worker (or of the PyTorch mirror, which prints
/// the same fields but the lab's and the copies).
#[derive(Debug, Serialize, Deserialize)]
struct Rates {
    teacher_steps: f64,
    distill_iterations: f64,
    /// Distillation iterations per second on the training thread while the
    /// terminal lab's drawing code renders every frame (into an off-screen
    /// 160×48 buffer); not measured with `--plain`.
    with_ui: Option<f64>,
    /// The worker process's peak resident memory.
    peak_rss_mb: f64,
    /// Host↔device copies per distillation iteration ([`crate::transfer`]):
    /// the host draws' uploads on the CPU path, none on the GPU path.
    #[serde(default)]
    copies_per_iteration: f64,
    /// Tensors made per distillation iteration ([`tensors_made`]): on a GPU
    /// about one kernel launch each, what bounds small batches there.
    #[serde(default)]
    tensors_per_iteration: f64,
    /// Teacher steps and distillation iterations per second of the
    /// process's CPU time (all its threads, user and system): on a machine
    /// shared with other work this moves far less than the rates per
    /// second of wall time (on one thread it is the speed the step would
    /// have alone; on more it also counts threads spinning while they
    /// wait).
    #[serde(default)]
    teacher_steps_per_cpu_s: f64,
    #[serde(default)]
    distill_iterations_per_cpu_s: f64,
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if args.burn {
        burn();
    }
    if args.worker {
        let threads = *args.threads.first().context("--worker needs --threads N")?;
        configure_threads(threads);
        let rates = measure(&args)?;
        println!("{}", serde_json::to_string(&rates)?);
        return Ok(());
    }
    if args.against_torch {
        return torch::grid(&args);
    }
    let config = args.config.load()?;
    // On several ranks each takes its share of every batch: the rates are
    // the team's (iterations of the whole batch per second).
    let p = &config.parallel;
    let world = match p.ranks {
        1 => String::new(),
        n => format!(
            ", on {n} ranks ({}): {} and {} per rank",
            p.backend,
            config.teacher.batch / n,
            config.distill.batch / n
        ),
    };
    println!(
        "disback bench — {} ({}), teacher batch {}, distillation batch {}{world}, {}, {:.0} s per cell",
        config.run_name(),
        config.method,
        config.teacher.batch,
        config.distill.batch,
        config.net_spec(),
        args.seconds
    );
    println!(
        "{:<9} {:<8} {:>16} {:>20} {:>18} {:>10} {:>10} {:>10}",
        "threads",
        "load",
        "teacher steps/s",
        "distill it/s",
        "with the lab it/s",
        "lab/plain",
        "copies/it",
        "tensors/it"
    );
    let loads: &[bool] = if args.no_load { &[false] } else { &[false, true] };
    for &threads in &args.threads {
        for &loaded in loads {
            let rates = run_worker(&args, threads, loaded, false, &[])?;
            let with_ui = rates.with_ui.unwrap_or(f64::NAN);
            println!(
                "{:<9} {:<8} {:>16.1} {:>20.1} {:>18.1} {:>10.2} {:>10.1} {:>10.0}",
                threads,
                if loaded { "1 busy" } else { "idle" },
                rates.teacher_steps,
                rates.distill_iterations,
                with_ui,
                with_ui / rates.distill_iterations,
                rates.copies_per_iteration,
                rates.tensors_per_iteration
            );
        }
    }
    Ok(())
}

/// One worker process at `threads`, with the config's overrides and then
/// `extra` ones; `loaded` runs a busy core beside it.
/// `plain` skips the measurement with a lab attached.
fn run_worker(
    args: &BenchArgs,
    threads: usize,
    loaded: bool,
    plain: bool,
    extra: &[String],
) -> Result<Rates> {
    let exe = std::env::current_exe()?;
    let burner = if loaded {
        Some(
            Process::new(&exe)
                .args(["bench", "--burn"])
                .stdout(Stdio::null())
                .spawn()?,
        )
    } else {
        None
    };
    let mut cmd = Process::new(&exe);
    cmd.args(["bench", "--worker", "--threads", &threads.to_string()])
        .args(["--seconds", &args.seconds.to_string()]);
    if let Some(c) = &args.config.config {
        cmd.arg("--config").arg(c);
    }
    for o in args.config.overrides.iter().chain(extra) {
        cmd.args(["--set", o]);
    }
    if args.device_draws {
        cmd.arg("--device-draws");
    }
    if plain {
        cmd.arg("--plain");
    }
    let output = cmd.stderr(Stdio::inherit()).output();
    if let Some(mut b) = burner {
        let _ = b.kill();
        let _ = b.wait();
    }
    let output = output?;
    if !output.status.success() {
        bail!("bench worker with {threads} threads failed");
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// Spins one core until killed.
fn burn() -> ! {
    let mut x = 0u64;
    loop {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

/// Times the session's own steps: teacher pretraining first, then (after
/// skipping ahead) distillation iterations. Measurements during training
/// are turned off so only the steps are timed.
fn measure(args: &BenchArgs) -> Result<Rates> {
    let tmp = std::env::temp_dir().join(format!("disback-bench-{}", std::process::id()));
    let mut config = args.config.load()?;
    // Train a fresh teacher (never ends while timing), long enough budgets
    // for every target, and no measurements or checkpoints in the way.
    config.teacher.file = None;
    config.teacher.cache_dir = tmp.join("teachers");
    config.teacher.steps = 1_000_000_000;
    config.schedule.steps = vec![1_000_000_000; config.planned_nodes().max(1)];
    config.metrics.every = 0;
    // The start of backtracking still measures once (untimed): keep it short.
    config.metrics.samples = config.metrics.samples.min(16);
    config.log.checkpoint_every = 1_000_000_000;
    if config.teacher.pretrained.is_some() {
        config = with_pretraining(config)?;
    }
    let run = RunDir::create(&tmp.join("run"), true)?;
    let mut session = Session::start(config.clone(), run)?;
    if args.device_draws {
        session.draw_on_device();
    }
    let seconds = Duration::from_secs_f64(args.seconds);
    let (teacher_steps, teacher_steps_per_cpu_s) = rate(&mut session, Stage::Pretrain, seconds)?;
    while session.stage() != Stage::Backtrack {
        session.skip()?;
    }
    let (copies, tensors) = (crate::transfer::count(), tensors_made());
    let before = session.iteration();
    let (distill_iterations, distill_iterations_per_cpu_s) = rate(&mut session, Stage::Backtrack, seconds)?;
    let per_iteration = |n: f64| n / (session.iteration() - before) as f64;
    let copies_per_iteration = per_iteration((crate::transfer::count() - copies) as f64);
    let tensors_per_iteration = per_iteration((tensors_made() - tensors) as f64);
    drop(session);
    let with_ui = if args.plain {
        None
    } else {
        Some(rate_with_attached_lab(config, &tmp.join("run-lab"), seconds)?)
    };
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(Rates {
        teacher_steps,
        distill_iterations,
        with_ui,
        peak_rss_mb: peak_rss_mb(),
        copies_per_iteration,
        tensors_per_iteration,
        teacher_steps_per_cpu_s,
        distill_iterations_per_cpu_s,
    })
}

/// A pretrained teacher's network, trained here from its random start on
/// procedural shapes of its image size: so that its teacher step (a
/// denoising update of that network) can be timed like any other.
fn with_pretraining(config: Config) -> Result<Config> {
    let mut config = crate::data::resolve(config)?;
    config.teacher.pretrained = None;
    let shape = config
        .data
        .image_shape()
        .context("a pretrained teacher has an image shape")?;
    config.data = DataConfig::Shapes {
        size: shape.height,
        channels: shape.channels,
    };
    Ok(config)
}

impl Rates {
    /// The fastest of several measurements of one setting (the largest
    /// memory, the lab measurement of the fastest).
    fn best(all: Vec<Rates>) -> Rates {
        all.into_iter()
            .reduce(|a, b| Rates {
                teacher_steps: a.teacher_steps.max(b.teacher_steps),
                distill_iterations: a.distill_iterations.max(b.distill_iterations),
                with_ui: a.with_ui.into_iter().chain(b.with_ui).reduce(f64::max),
                peak_rss_mb: a.peak_rss_mb.max(b.peak_rss_mb),
                copies_per_iteration: a.copies_per_iteration.max(b.copies_per_iteration),
                tensors_per_iteration: a.tensors_per_iteration.max(b.tensors_per_iteration),
                teacher_steps_per_cpu_s: a.teacher_steps_per_cpu_s.max(b.teacher_steps_per_cpu_s),
                distill_iterations_per_cpu_s: a
                    .distill_iterations_per_cpu_s
                    .max(b.distill_iterations_per_cpu_s),
            })
            .expect("at least one measurement")
    }
}

/// Tensors candle has made in this process so far: every op's output and
/// every view (reshape, narrow, detach) takes the next number of one
/// process-wide counter. candle keeps the counter private; the `Debug` form
/// of a new tensor's id, `TensorId(n)`, is the one public reading of it.
fn tensors_made() -> u64 {
    let Ok(probe) = Tensor::zeros((), DType::F32, &Device::Cpu) else {
        return 0;
    };
    let id = format!("{:?}", probe.id());
    id.chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

/// This process's peak resident memory (Linux's VmHWM), 0 where unknown.
fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Backtracking iterations per second with a lab attached the way `disback
/// tui` attaches one: a runner (here on a thread) trains and serves its
/// socket, and the lab takes in every update over it and draws.
fn rate_with_attached_lab(config: Config, dir: &Path, time: Duration) -> Result<f64> {
    let start = Start::New {
        config: Box::new(config),
        run: RunDir::create(dir, true)?,
    };
    let runner = {
        let dir = dir.to_path_buf();
        let options = runner::Options {
            linger: Duration::ZERO,
        };
        std::thread::spawn(move || runner::serve(start, &dir, options, |_| {}))
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let link = loop {
        match runner::connect(dir) {
            Ok((link, _)) => break link,
            Err(_) if Instant::now() < deadline && !runner.is_finished() => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(e.context("the bench's runner did not start")),
        }
    };
    let rate = match crate::ui::backtracking_rate_with_lab(link, time) {
        Ok(rate) => rate,
        // A runner that ended says why better than the lab's view of it.
        Err(e) if runner.is_finished() => {
            return Err(match runner.join() {
                Ok(Err(why)) => e.context(format!("the bench's runner ended: {why:#}")),
                _ => e,
            });
        }
        Err(e) => return Err(e),
    };
    runner
        .join()
        .map_err(|_| anyhow::anyhow!("the bench's runner panicked"))??;
    Ok(rate)
}

/// Iterations per second in `stage`, after a short warm-up: ten steps,
/// or fewer (at least two: the first allocates) where they take more than
/// a quarter of the timing (a real-size U-Net's step takes seconds).
/// Steps per second of wall time, and per second of the process's CPU
/// time, of `stage`.
fn rate(session: &mut Session, stage: Stage, time: Duration) -> Result<(f64, f64)> {
    let warming = Instant::now();
    for n in 0..10 {
        if n >= 2 && warming.elapsed() > time / 4 {
            break;
        }
        session.step()?;
    }
    session.synchronize()?;
    let (start, cpu_start) = (Instant::now(), cpu_seconds());
    let mut n = 0usize;
    while start.elapsed() < time {
        session.step()?;
        n += 1;
    }
    session.synchronize()?;
    if session.stage() != stage {
        bail!("the bench left stage {stage} early");
    }
    let (wall, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu_start);
    Ok((n as f64 / wall, n as f64 / cpu.max(1e-9)))
}

/// This process's CPU time so far, user and system, all threads.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_made_counts_each_op_and_view() {
        let before = tensors_made();
        let a = Tensor::ones(4, DType::F32, &Device::Cpu).unwrap();
        let b = (&a + &a).unwrap().reshape((2, 2)).unwrap();
        drop(b);
        // ones, the sum, the view and the counter's own probe; other tests'
        // tensors, made meanwhile, can only add to it.
        assert!(before > 0);
        assert!(tensors_made() >= before + 4);
    }
}
