//! `disback bench --against-torch`: disback beside a PyTorch mirror of the
//! same networks and iterations (benches/torch_mirror.py) over a grid of
//! batch sizes, widths and thread counts, one cell at a time in one sitting,
//! each side in its own process so neither disturbs the other's threads or
//! memory reading.
//!
//! The mirror is built into the binary and written to a temporary file, so
//! the bench runs from any directory; PyTorch itself is optional.

use super::{BenchArgs, Rates, run_worker};
use crate::config::NetSpec;
use crate::config::{Config, GeneratorInit, ScoreNetConfig};
use anyhow::{Context, Result, bail, ensure};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const MIRROR: &str = include_str!("../../../benches/torch_mirror.py");

/// One cell of the grid.
#[derive(Debug, Clone, Copy)]
struct Cell {
    batch: usize,
    width: usize,
    threads: usize,
}

pub fn grid(args: &BenchArgs) -> Result<()> {
    let config = args.config.load()?;
    let NetSpec::Mlp(net) = config.net_spec() else {
        bail!(
            "--against-torch times the 2-D ResNet-MLP; this config's data are images \
             (for the U-Net, run `python3 benches/torch_mirror.py --net unet` beside `disback bench`)"
        );
    };
    ensure!(
        config.generator.init == GeneratorInit::Teacher,
        "--against-torch mirrors the generator G(z) = D_θ(σ_g z; σ_g): set generator.init = \"teacher\""
    );
    let dir = std::env::temp_dir().join(format!("disback-torch-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script = dir.join("torch_mirror.py");
    std::fs::write(&script, MIRROR).with_context(|| format!("writing {}", script.display()))?;
    let torch = torch_version();
    let result = run_grid(
        args,
        &config,
        &net,
        torch.as_deref().ok().map(|_| script.as_path()),
    );
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(why) = &torch {
        println!("\nPyTorch was not measured: {why}. Install it (`pip install torch`) to see the ratios.");
    }
    result
}

fn run_grid(args: &BenchArgs, config: &Config, net: &ScoreNetConfig, mirror: Option<&Path>) -> Result<()> {
    let fake_steps = config.distill.fake_steps_per_generator_step;
    let (per_core, clock) = cpu_peak();
    println!(
        "disback bench --against-torch — ResNet-MLP on {}-D points × {} blocks, emb {}, {} s per measurement; \
         teacher and distillation batch alike; {} fake-score step{} per iteration",
        net.dim,
        net.blocks,
        net.emb_dim,
        args.seconds,
        fake_steps,
        if fake_steps == 1 { "" } else { "s" }
    );
    println!(
        "peak = threads × {clock:.2} GHz × {per_core} FLOP/cycle (FP32 FMA); share = matrix-product FLOP/s of the \
         distillation iteration over that peak; best of {} alternating measurements each\n",
        args.rounds.max(1)
    );
    println!(
        "{:>6} {:>6} {:>8} | {:>26} | {:>26} | {:>13} | {:>14}",
        "batch",
        "width",
        "threads",
        "teacher steps/s d / torch",
        "distill it/s d / torch",
        "peak share",
        "memory MB"
    );
    let mut wins = (0, 0);
    for &threads in &args.threads {
        for &batch in &args.batches {
            for &width in &args.widths {
                let cell = Cell {
                    batch,
                    width,
                    threads,
                };
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                for _ in 0..args.rounds.max(1) {
                    ours.push(run_disback(args, cell)?);
                    theirs.extend(
                        mirror
                            .map(|m| run_torch(m, args, config, net, cell))
                            .transpose()?,
                    );
                }
                let ours = Rates::best(ours);
                let theirs = (!theirs.is_empty()).then(|| Rates::best(theirs));
                let flops = distill_flops(net, width, batch, fake_steps);
                let peak = threads as f64 * clock * 1e9 * per_core as f64;
                let share = |it: f64| it * flops / peak * 100.0;
                let row = Row {
                    ours: &ours,
                    theirs: theirs.as_ref(),
                };
                println!(
                    "{batch:>6} {width:>6} {threads:>8} | {:>26} | {:>26} | {:>13} | {:>14}",
                    row.pair(|r| r.teacher_steps, |t| t.teacher_steps),
                    row.pair(|r| r.distill_iterations, |t| t.distill_iterations),
                    match &theirs {
                        Some(t) => format!(
                            "{:.0}% / {:.0}%",
                            share(ours.distill_iterations),
                            share(t.distill_iterations)
                        ),
                        None => format!("{:.0}%", share(ours.distill_iterations)),
                    },
                    match &theirs {
                        Some(t) => format!("{:.0} / {:.0}", ours.peak_rss_mb, t.peak_rss_mb),
                        None => format!("{:.0}", ours.peak_rss_mb),
                    },
                );
                if let Some(t) = &theirs {
                    wins.1 += 1;
                    let ratio = (ours.teacher_steps / t.teacher_steps)
                        .min(ours.distill_iterations / t.distill_iterations);
                    if ratio >= 1.2 {
                        wins.0 += 1;
                    }
                }
            }
        }
    }
    if mirror.is_some() {
        println!(
            "\n{} of {} cells at ≥ 1.2× PyTorch in both teacher steps and distillation iterations",
            wins.0, wins.1
        );
    }
    Ok(())
}

struct Row<'a> {
    ours: &'a Rates,
    theirs: Option<&'a Rates>,
}

impl Row<'_> {
    /// "59.1 / 44.0 = 1.34×", or disback's number alone.
    fn pair(&self, ours: impl Fn(&Rates) -> f64, theirs: impl Fn(&Rates) -> f64) -> String {
        let a = ours(self.ours);
        match self.theirs {
            Some(t) => {
                let b = theirs(t);
                format!("{a:.1} / {b:.1} = {:.2}×", a / b)
            }
            None => format!("{a:.1}"),
        }
    }
}

fn overrides(cell: Cell) -> Vec<String> {
    vec![
        format!("score_net.width={}", cell.width),
        format!("teacher.batch={}", cell.batch),
        format!("distill.batch={}", cell.batch),
    ]
}

fn run_disback(args: &BenchArgs, cell: Cell) -> Result<Rates> {
    run_worker(args, cell.threads, false, true, &overrides(cell))
        .with_context(|| format!("disback at batch {}, width {}", cell.batch, cell.width))
}

fn run_torch(
    script: &Path,
    args: &BenchArgs,
    config: &Config,
    net: &ScoreNetConfig,
    cell: Cell,
) -> Result<Rates> {
    let number = |v: f64| v.to_string();
    let output = Command::new(python())
        .arg(script)
        .args(["--net", "mlp", "--device", "cpu"])
        .args(["--threads", &cell.threads.to_string()])
        .args(["--seconds", &number(args.seconds)])
        .args(["--width", &cell.width.to_string()])
        .args(["--dim", &net.dim.to_string()])
        .args(["--blocks", &net.blocks.to_string()])
        .args(["--emb-dim", &net.emb_dim.to_string()])
        .args(["--teacher-batch", &cell.batch.to_string()])
        .args(["--distill-batch", &cell.batch.to_string()])
        .args([
            "--fake-steps",
            &config.distill.fake_steps_per_generator_step.to_string(),
        ])
        .args(["--ema", &number(config.distill.generator_ema)])
        .args(["--sigma-g", &number(config.generator.sigma_g)])
        .stderr(Stdio::inherit())
        .output()
        .context("running the PyTorch mirror")?;
    ensure!(
        output.status.success(),
        "the PyTorch mirror failed at batch {}, width {}",
        cell.batch,
        cell.width
    );
    serde_json::from_slice(&output.stdout).context("reading the PyTorch mirror's output")
}

fn python() -> PathBuf {
    std::env::var_os("PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// PyTorch's version, or why it cannot be used.
fn torch_version() -> Result<String> {
    let output = Command::new(python())
        .args(["-c", "import torch; print(torch.__version__)"])
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("{} could not be started", python().display()))?;
    ensure!(
        output.status.success(),
        "`import torch` failed in {}",
        python().display()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Matrix-product FLOPs of one forward pass of the ResNet-MLP per sample
/// (bias additions and activations are left out: they are not what a peak
/// FLOP rate measures).
fn forward_flops(net: &ScoreNetConfig, width: usize) -> f64 {
    let (w, e, d) = (width as f64, net.emb_dim as f64, net.dim as f64);
    let weights = (d + e) * w + net.blocks as f64 * (2.0 * w * w + e * w) + d * w;
    2.0 * weights
}

/// Matrix-product FLOPs of one distillation iteration: the generator's
/// forward and backward (3 passes), the target's and the fake score's
/// forwards (2), and per fake-score step a generator forward and a
/// denoising step (4).
fn distill_flops(net: &ScoreNetConfig, width: usize, batch: usize, fake_steps: usize) -> f64 {
    forward_flops(net, width) * batch as f64 * (5 + 4 * fake_steps) as f64
}

/// FP32 FLOP per cycle and core for the CPU's widest FMA (two FMA units),
/// and its clock in GHz as /proc/cpuinfo states it.
fn cpu_peak() -> (usize, f64) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let mhz = field(&info, "cpu MHz")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(2000.0);
    (flop_per_cycle(&info), mhz / 1000.0)
}

/// The first value of `name` in /proc/cpuinfo's text.
fn field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines()
        .find(|l| l.split(':').next().is_some_and(|key| key.trim() == name))
        .and_then(|l| l.split_once(':'))
        .map(|(_, value)| value.trim())
}

fn flop_per_cycle(info: &str) -> usize {
    let flags = field(info, "flags").unwrap_or("");
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    // AMD's family 19h (Zen 4) runs AVX-512 on 256-bit units: no more
    // FLOP a cycle than AVX2 (measured there: gemm's AVX-512 kernels ran
    // the products at the AVX2 kernels' speed).
    let half_width_avx512 =
        field(info, "vendor_id") == Some("AuthenticAMD") && field(info, "cpu family") == Some("25");
    if has("avx512f") && !half_width_avx512 {
        64
    } else if has("avx2") && has("fma") {
        32
    } else {
        16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flops_count_every_weight_twice_per_sample() {
        let net = ScoreNetConfig {
            width: 4,
            blocks: 1,
            emb_dim: 2,
            dim: 2,
        };
        // input (2+2)·4, block 4·4 + 2·4 + 4·4, output 4·2: 64 weights.
        assert_eq!(forward_flops(&net, 4), 128.0);
        assert_eq!(distill_flops(&net, 4, 10, 2), 128.0 * 10.0 * 13.0);
    }

    #[test]
    fn the_peak_counts_avx512_at_full_width_only_where_the_units_are() {
        let cpu = |vendor: &str, family: &str, flags: &str| {
            format!(
                "processor\t: 0\nvendor_id\t: {vendor}\ncpu family\t: {family}\nflags\t\t: fpu {flags} sse2\n"
            )
        };
        assert_eq!(flop_per_cycle(&cpu("GenuineIntel", "6", "avx2 fma avx512f")), 64);
        assert_eq!(flop_per_cycle(&cpu("AuthenticAMD", "26", "avx2 fma avx512f")), 64);
        assert_eq!(flop_per_cycle(&cpu("AuthenticAMD", "25", "avx2 fma avx512f")), 32);
        assert_eq!(flop_per_cycle(&cpu("AuthenticAMD", "23", "avx2 fma")), 32);
        assert_eq!(flop_per_cycle(&cpu("GenuineIntel", "6", "sse4_2")), 16);
        assert_eq!(field(&cpu("AuthenticAMD", "25", ""), "cpu family"), Some("25"));
    }
}
