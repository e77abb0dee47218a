//! The command line: `disback` / `disback tui` (the terminal lab), `run`,
//! `attach`, `ls`, `stop`, `compare`, `sweep`, `plot`, `sample`, `show`,
//! `bench`, `teacher`, `export`.

mod bench;
mod compare;
mod export;
mod rank;
mod run;
mod show;
mod sweep;
mod teacher;

use crate::config::Config;
use crate::data::Samples;
use crate::model::Generator;
use crate::rng::host_rng;
use crate::rundir::{RunDir, write_points_csv};
use crate::runtime::{Ended, configure_threads, select_device};
use crate::ui::LabEnd;
use anyhow::Result;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "disback",
    version,
    about = "Distribution Backtracking Distillation: a terminal lab",
    long_about = "Distil a diffusion model into a one-step generator by recording a degradation \
                  path and backtracking it (DisBack), or by plain score distillation \
                  (Diff-Instruct). Without a subcommand, opens the terminal lab on the default \
                  2-D Gaussian-mixture demo."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Open the terminal lab on a config (the default without a subcommand).
    /// Training runs in the background: `d` detaches, `disback attach`
    /// comes back.
    Tui(RunArgs),
    /// Run a config headless: progress on stderr, results in a run directory
    /// (`--detach`: in the background). A lab can attach to it.
    Run(RunArgs),
    /// Open the lab on a run training in the background (default: the only
    /// live run under runs/).
    Attach {
        /// The run directory.
        dir: Option<PathBuf>,
    },
    /// List the runs under a folder: live or not, stage, step, energy, loss.
    Ls {
        #[arg(default_value = "runs")]
        dir: PathBuf,
    },
    /// Checkpoint a background run and end it.
    Stop {
        /// The run directory.
        dir: PathBuf,
    },
    /// The background runner `tui` and `run --detach` start.
    #[command(hide = true)]
    Serve(RunArgs),
    /// Run DisBack and Diff-Instruct on the same problem over several seeds
    /// and print a comparison table (also written as JSON, with plots).
    Compare(compare::CompareArgs),
    /// Run a comparison at every point of a grid of settings (`--grid
    /// KEY=V1,V2,…`, repeatable), and tabulate where DisBack pays; run again
    /// on the same `--out` to continue.
    Sweep(sweep::SweepArgs),
    /// Redraw the figures of a run or comparison directory.
    Plot {
        /// A run directory (or a comparison's).
        dir: PathBuf,
    },
    /// Draw samples from a saved generator into a CSV file (header x,y).
    Sample(SampleArgs),
    /// Show pictures in the terminal: a PNG, a run directory's latest
    /// sample grid and plots, or a comparison's plots (kitty, iTerm2 or
    /// sixel graphics where the terminal has them, coloured blocks
    /// elsewhere).
    Show {
        /// A PNG or JPEG file, a run directory or a comparison directory.
        path: PathBuf,
        /// Width in terminal columns (default: fit the terminal).
        #[arg(long)]
        width: Option<u32>,
    },
    /// Measure training speed (steps per second) and print a table.
    Bench(bench::BenchArgs),
    /// Show what the lab understood of a pretrained diffusers model
    /// (blocks, attention heads, schedule, σ range, size); `--check REF`
    /// proves it computes diffusers' outputs.
    Teacher(teacher::TeacherArgs),
    /// Write a run's generator for other tools: a diffusers model folder
    /// (for a diffusers teacher) or its weights with a PyTorch sample.py.
    Export(export::ExportArgs),
}

/// Which config to use, with overrides.
#[derive(Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// A TOML config file (see configs/).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override any field: --set section.key=value (repeatable), e.g.
    /// --set seed=3 --set schedule.steps=[100,100,100,500].
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

impl RunArgs {
    /// Where a new run goes: `--out`, or `runs/<config name>-<time stamp>`.
    fn run_dir(&self, config: &Config) -> PathBuf {
        self.out
            .clone()
            .unwrap_or_else(|| RunDir::default_path(Path::new("runs"), config.run_name()))
    }
}

/// Opens a run to resume and takes its lock, with candle's threads set
/// from its config.
fn open_for_resume(args: &RunArgs, dir: &Path) -> Result<RunDir> {
    let run = RunDir::open(dir)?.locked()?;
    let config = Config::load_run_on(&run.config(), &args.config.overrides)?;
    args.check_memory(&config)?;
    configure_threads(config.threads);
    Ok(run)
}

impl ConfigArgs {
    /// The config file's contents with overrides, or the built-in default
    /// (the 2-D ring demo, named `gmm2d`) when no file is given.
    pub fn load(&self) -> Result<Config> {
        match &self.config {
            Some(path) => Config::load(path, &self.overrides),
            None => {
                let mut c = Config::default_with(&self.overrides)?;
                c.name.get_or_insert_with(|| "gmm2d".into());
                Ok(c)
            }
        }
    }
}

#[derive(Args, Debug, Default)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run directory (default: runs/<config name>-<time stamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Overwrite the run directory if it exists.
    #[arg(long)]
    pub force: bool,
    /// Continue a run from its last checkpoint, with the config it started
    /// with (--config is refused with it, and --set but for parallel.*:
    /// a run may continue on another number of ranks).
    #[arg(long, value_name = "RUN_DIR", conflicts_with_all = ["out", "force", "config"])]
    pub resume: Option<PathBuf>,
    /// Start even if the memory the sizes need looks larger than what is
    /// free (the estimate is generous).
    #[arg(long)]
    pub no_memory_check: bool,
    /// Run in the background (`run` only): watch with `disback attach`,
    /// end with `disback stop`.
    #[arg(long)]
    pub detach: bool,
    /// Seconds a finished background run stays viewable with no lab
    /// attached.
    #[arg(long, default_value_t = RunArgs::LINGER, value_name = "SECONDS")]
    pub linger: u64,
    /// Also write TensorBoard event files into RUN_DIR/tensorboard/ (the
    /// same as --set log.tensorboard=true).
    #[arg(long, conflicts_with = "resume")]
    pub tensorboard: bool,
}

impl RunArgs {
    const LINGER: u64 = 600;

    /// The flags that are config settings, as the overrides they stand for.
    fn flags_as_settings(&mut self) {
        if std::mem::take(&mut self.tensorboard) {
            self.config.overrides.push("log.tensorboard=true".into());
        }
    }

    /// The arguments of `disback serve` for this run, in `dir`.
    fn serve_args(&self, dir: &Path) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(resume) = &self.resume {
            args.extend(["--resume".into(), resume.display().to_string()]);
            for o in &self.config.overrides {
                args.extend(["--set".into(), o.clone()]);
            }
        } else {
            if let Some(config) = &self.config.config {
                args.extend(["--config".into(), config.display().to_string()]);
            }
            for o in &self.config.overrides {
                args.extend(["--set".into(), o.clone()]);
            }
            args.extend(["--out".into(), dir.display().to_string()]);
            if self.force {
                args.push("--force".into());
            }
        }
        if self.no_memory_check {
            args.push("--no-memory-check".into());
        }
        args.extend(["--linger".into(), self.linger.to_string()]);
        args
    }
}

impl RunArgs {
    /// Refuses sizes that cannot fit in memory, unless told not to.
    fn check_memory(&self, config: &Config) -> Result<()> {
        match self.no_memory_check {
            true => Ok(()),
            false => crate::runtime::check_memory(config, 1),
        }
    }
}

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// A generator saved by a run (generator/*.safetensors).
    #[arg(long)]
    pub generator: PathBuf,
    /// The config it was trained with (a run's config.toml works).
    #[arg(long)]
    pub config: PathBuf,
    /// How many samples.
    #[arg(long, default_value_t = 10_000)]
    pub n: usize,
    /// Where to write: a CSV file for 2-D data; for images a `.png` grid,
    /// a `.safetensors` tensor, or a folder of PNGs (any other path).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the latent draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs the command line; the result says how it ended, for the exit
/// status.
pub fn main() -> Result<Ended> {
    let mut cli = Cli::parse();
    if let Some(Command::Run(args) | Command::Tui(args) | Command::Serve(args)) = &mut cli.command {
        args.flags_as_settings();
    }
    // A rank other than 0 of a launched team follows rank 0 (its own
    // command line runs only on rank 0). Only a command that trains on
    // several ranks reads the launcher's environment.
    if let Some(Command::Run(args) | Command::Tui(args) | Command::Serve(args)) = &cli.command
        && let Some(launched) = rank::launched_follower(args)?
    {
        return rank::follow(args, &launched);
    }
    let finished = |r: Result<()>| r.map(|()| Ended::Finished);
    match cli.command {
        Some(Command::Run(args)) => run::run(args),
        Some(Command::Tui(args)) => tui(args),
        Some(Command::Serve(args)) => run::serve(args),
        Some(Command::Attach { dir }) => attach(dir),
        Some(Command::Ls { dir }) => finished(ls(&dir)),
        Some(Command::Stop { dir }) => finished(crate::runner::stop(&dir)),
        Some(Command::Compare(args)) => {
            crate::engine::sessions_in_this_process("compare");
            finished(compare::compare(args))
        }
        Some(Command::Sweep(args)) => {
            crate::engine::sessions_in_this_process("sweep");
            finished(sweep::sweep(args))
        }
        Some(Command::Plot { dir }) => finished(plot(&dir)),
        Some(Command::Sample(args)) => finished(sample(args)),
        Some(Command::Show { path, width }) => finished(show::show(&path, width)),
        Some(Command::Bench(args)) => {
            crate::engine::sessions_in_this_process("bench");
            finished(bench::bench(args))
        }
        Some(Command::Teacher(args)) => teacher::teacher(args),
        Some(Command::Export(args)) => finished(export::export(args)),
        None => tui(RunArgs {
            linger: RunArgs::LINGER,
            ..RunArgs::default()
        }),
    }
}

/// The terminal lab on a new or resumed run: starts its runner in the
/// background, then attaches.
fn tui(args: RunArgs) -> Result<Ended> {
    crate::ui::check_terminal()?;
    let (dir, config) = run::start_in_background(&args, true)?;
    lab(&dir, config.data.is_image())
}

/// The lab on a run that trains in the background.
fn attach(dir: Option<PathBuf>) -> Result<Ended> {
    crate::ui::check_terminal()?;
    let dir = crate::runner::attach_target(dir, Path::new("runs"))?;
    let config = crate::config::Config::load_run(&crate::rundir::RunDir::open(&dir)?.config())?;
    lab(&dir, config.data.is_image())
}

/// The lab on the run in `dir`; `images` when its data is images.
fn lab(dir: &Path, images: bool) -> Result<Ended> {
    let (link, pid) = crate::runner::connect(dir)?;
    let end = crate::ui::run(link, images)?;
    let dir = dir.display();
    Ok(match end {
        LabEnd::Detached { signal } => {
            println!(
                "disback: detached; training goes on in the background (runner pid {pid})\n  \
                 come back: disback attach {dir}\n  stop (checkpoint, then end): disback stop {dir}"
            );
            signal.map_or(Ended::Finished, |signal| Ended::Stopped { signal })
        }
        LabEnd::Stopped => {
            println!("disback: stopped and checkpointed; continue with: disback tui --resume {dir}");
            Ended::Finished
        }
        LabEnd::Quit => {
            println!("disback: run directory {dir}");
            Ended::Finished
        }
    })
}

/// `disback ls`: one line per run.
fn ls(base: &Path) -> Result<()> {
    let runs = crate::runner::live_runs(base);
    if runs.is_empty() {
        println!("no runs under {}", base.display());
        return Ok(());
    }
    println!(
        "{:<44} {:<6} {:<24} {:>8} {:>9} {:>9}",
        "run", "state", "stage", "step", "energy", "loss"
    );
    let num = |x: Option<f64>| x.map_or("–".into(), |v| format!("{v:.4}"));
    for r in runs {
        println!(
            "{:<44} {:<6} {:<24} {:>8} {:>9} {:>9}",
            r.dir.display(),
            if r.live { "live" } else { "ended" },
            r.stage.as_deref().unwrap_or("–"),
            r.step.map_or("–".into(), |s| s.to_string()),
            num(r.energy),
            num(r.loss)
        );
    }
    Ok(())
}

fn plot(dir: &Path) -> Result<()> {
    let written = if dir.join(crate::compare::RESULT).is_file() {
        compare::replot(dir)?
    } else {
        crate::report::plot_run(dir)?
    };
    for file in written {
        eprintln!("wrote {}", file.display());
    }
    eprintln!("{}", show::hint(dir));
    Ok(())
}

fn sample(args: SampleArgs) -> Result<()> {
    let config = crate::data::resolve(Config::load(&args.config, &[])?)?;
    configure_threads(config.threads);
    let (device, _) = select_device(config.device)?;
    let generator = Generator::new(&config.generator_spec(), &device, &mut host_rng(0, 0))?;
    generator.load(&args.generator)?;
    let samples = Samples::from_tensor(&generator.generate(args.n, &mut host_rng(args.seed, 0))?)?;
    let what = match config.data.is_image() {
        false => {
            write_points_csv(&args.out, &samples)?;
            format!("{} samples", samples.len())
        }
        true => crate::report::write_image_samples(&args.out, &samples)?,
    };
    eprintln!("wrote {what} to {}", args.out.display());
    Ok(())
}
