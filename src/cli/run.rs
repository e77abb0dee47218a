//! `disback run` and the runner behind every lab: a run is trained by a
//! runner that serves its socket, in the foreground (`run`, progress on
//! stderr) or in the background (`run --detach`, `tui`; output in the run
//! directory's `runner.log`). Either can be attached to with `disback
//! attach`. Ctrl-C, SIGTERM or `disback stop` checkpoints the run and
//! stops it, so it can be continued with `--resume`.

use super::{RunArgs, open_for_resume};
use crate::config::{Config, SchedulePolicy};
use crate::engine::protocol::{Event, Seconds, SessionView, Update};
use crate::engine::trainer::Start;
use crate::metrics::Evaluation;
use crate::rundir::{MetricsRecord, RunDir};
use crate::runner::{self, Options};
use crate::runtime::{Ended, configure_threads};
use anyhow::{Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub fn run(args: RunArgs) -> Result<Ended> {
    if args.detach {
        let (dir, _) = start_in_background(&args, false)?;
        println!(
            "running in the background; its output goes to {}\n  watch and steer: disback attach {}\n  \
             stop (checkpoint, then end): disback stop {}",
            dir.join(runner::LOG).display(),
            dir.display(),
            dir.display()
        );
        return Ok(Ended::Finished);
    }
    let (start, dir) = prepare(&args, true)?;
    let mut printer = Printer::new();
    let options = Options {
        linger: Duration::ZERO,
    };
    let ended = runner::serve(start, &dir, options, |u| printer.show(u))?;
    printer.finish(ended, &dir);
    Ok(ended)
}

/// The hidden `disback serve`: the background runner that `tui` and `run
/// --detach` start. Once the run directory is its own, its output goes to
/// `runner.log` there (until then, errors reach the starting command).
pub fn serve(args: RunArgs) -> Result<Ended> {
    let (start, dir) = prepare(&args, false)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(runner::LOG))?;
    runner::redirect_output(&log)?;
    eprintln!(
        "{} runner pid {} for {}",
        chrono::Local::now().format("%Y-%m-%d %H:%M:%S"),
        std::process::id(),
        dir.display()
    );
    let mut printer = Printer::new();
    let options = Options {
        linger: Duration::from_secs(args.linger),
    };
    let ended = runner::serve(start, &dir, options, |u| printer.show(u));
    match &ended {
        Ok(e) => printer.finish(*e, &dir),
        Err(e) => eprintln!("error: {e:#}"),
    }
    ended
}

/// Starts `disback serve` for these arguments in the background and
/// returns the run directory, once its runner answers, with the run's
/// config.
pub fn start_in_background(args: &RunArgs, lab: bool) -> Result<(PathBuf, Config)> {
    // Check what can be checked here, where the user sees the answer.
    let (dir, config) = match &args.resume {
        Some(dir) => {
            Config::check_resume_overrides(&args.config.overrides)?;
            let config = Config::load_run_on(&RunDir::open(dir)?.config(), &args.config.overrides)?;
            args.check_memory(&config)?;
            (dir.clone(), config)
        }
        None => {
            let config = args.config.load()?;
            if !lab {
                refuse_manual(config.schedule.policy)?;
            }
            args.check_memory(&config)?;
            let dir = args.run_dir(&config);
            if !args.force {
                let again = if lab {
                    "disback tui --resume"
                } else {
                    "disback run --resume"
                };
                RunDir::check_free(&dir, Some(again))?;
            }
            (dir, config)
        }
    };
    runner::spawn_detached(&args.serve_args(&dir), &dir)?;
    Ok((dir, config))
}

/// Takes the run directory (created, or opened to resume) and what to
/// start in it. `headless` refuses the manual schedule, which waits for
/// keys.
fn prepare(args: &RunArgs, headless: bool) -> Result<(Start, PathBuf)> {
    match &args.resume {
        Some(dir) => {
            Config::check_resume_overrides(&args.config.overrides)?;
            let run = open_for_resume(args, dir)?;
            let config = Config::load_run_on(&run.config(), &args.config.overrides)?;
            if headless {
                refuse_manual(config.schedule.policy)?;
            }
            let parallel = (!args.config.overrides.is_empty()).then_some(config.parallel);
            Ok((Start::Resume { run, parallel }, dir.clone()))
        }
        None => {
            let config = args.config.load()?;
            if headless {
                refuse_manual(config.schedule.policy)?;
            }
            args.check_memory(&config)?;
            configure_threads(config.threads);
            let dir = args.run_dir(&config);
            let run = RunDir::create(&dir, args.force)?;
            let start = Start::New {
                config: Box::new(config),
                run,
            };
            Ok((start, dir))
        }
    }
}

/// A manual schedule waits for key presses, which a headless run has none of.
fn refuse_manual(policy: SchedulePolicy) -> Result<()> {
    if policy == SchedulePolicy::Manual {
        bail!(
            "schedule.policy = \"manual\" waits for key presses: use it in the terminal lab \
             (disback tui, or disback tui --resume RUN_DIR), or choose fixed or auto for a headless run"
        );
    }
    Ok(())
}

/// Prints a run's updates as lines on stderr: its events, and a progress
/// line every few seconds.
struct Printer {
    started: Instant,
    last_line: Option<Instant>,
    view: Option<SessionView>,
    last_eval: Option<Evaluation>,
    /// A resumed run first replays its log (for labs): not printed again.
    replaying: bool,
}

impl Printer {
    const EVERY: Duration = Duration::from_secs(3);

    fn new() -> Self {
        Self {
            started: Instant::now(),
            last_line: Some(Instant::now()),
            view: None,
            last_eval: None,
            replaying: false,
        }
    }

    fn show(&mut self, update: &Update) {
        match update {
            Update::Started { view, .. } => {
                eprintln!(
                    "{} on {} — {} — run directory {}",
                    view.method,
                    view.data,
                    view.device,
                    view.run_dir.display()
                );
                if !view.measuring.is_empty() {
                    eprintln!("{}", view.measuring);
                }
                if view.iteration > 0 {
                    eprintln!(
                        "resuming {} at iteration {} ({})",
                        view.run_dir.display(),
                        view.iteration,
                        view.stage
                    );
                }
                self.view = Some((**view).clone());
                self.replaying = true;
            }
            Update::View { view, rate } => {
                self.replaying = false;
                let due = self.last_line.is_none_or(|t| t.elapsed() >= Self::EVERY);
                if due && self.view.is_some() {
                    progress(view, *rate);
                    self.last_line = Some(Instant::now());
                }
                self.view = Some((**view).clone());
            }
            Update::Session(Event::Logged(_)) if self.replaying => {}
            Update::Session(event) => {
                if let Event::Logged(r) = event
                    && let Some(e) = &r.eval
                {
                    self.last_eval = Some(e.clone());
                }
                print_event(event);
            }
            _ => {}
        }
    }

    fn finish(&self, ended: Ended, dir: &std::path::Path) {
        match ended {
            Ended::Finished => {
                let cost = self.view.as_ref().map_or(0, |v| v.cost);
                eprintln!(
                    "finished in {:.1} s: {cost} distillation iterations; run directory {}",
                    self.started.elapsed().as_secs_f64(),
                    dir.display()
                );
                if let Some(v) = &self.view {
                    eprintln!(
                        "{}",
                        describe_seconds(v.seconds, self.started.elapsed().as_secs_f64())
                    );
                }
                if let Some(e) = &self.last_eval {
                    eprintln!("final: {}", describe_eval(e));
                }
                eprintln!("{}", super::show::hint(dir));
            }
            Ended::Stopped { .. } => eprintln!(
                "stopped at iteration {}; continue with: disback run --resume {}",
                self.view.as_ref().map_or(0, |v| v.iteration),
                dir.display()
            ),
        }
    }
}

/// One progress line: stage, step, rate and the latest losses.
fn progress(v: &SessionView, rate: f64) {
    let mut line = format!("[{}] {}/{}  {rate:.0} it/s", v.stage, v.stage_step, v.stage_total);
    if let Some(r) = &v.latest {
        line += &losses(r);
    }
    eprintln!("{line}");
}

fn losses(r: &MetricsRecord) -> String {
    [
        ("teacher", r.loss_teacher),
        ("g", r.loss_g),
        ("fake", r.loss_fake),
    ]
    .into_iter()
    .filter_map(|(name, value)| value.map(|x| format!("  loss_{name} {x:.4}")))
    .collect()
}

fn print_event(event: &Event) {
    match event {
        Event::StageStarted(stage) => eprintln!("== {stage}"),
        Event::TeacherReady { source } => eprintln!("teacher {source}"),
        Event::ClassifierReady { accuracy } => {
            eprintln!(
                "image classifier ready: {:.1}% accurate on held-out images",
                100.0 * accuracy
            )
        }
        Event::NodeRecorded {
            index,
            iteration,
            file,
            spread,
        } => {
            let spread = spread
                .as_ref()
                .map(|s| format!("; {}", s.describe()))
                .unwrap_or_default();
            eprintln!(
                "node {index} recorded at iteration {iteration}: {}{spread}",
                file.display()
            )
        }
        Event::TargetSwitched { from, to } => match from {
            Some(from) => eprintln!("target: node {from} → node {to}"),
            None => eprintln!("target: node {to}"),
        },
        Event::Logged(record) => {
            if let Some(e) = &record.eval {
                eprintln!(
                    "step {:>6} (node {:?}): {}",
                    record.step,
                    record.target_node.unwrap_or(0),
                    describe_eval(e)
                );
            }
        }
        Event::Saved(path) => eprintln!("saved {}", path.display()),
        Event::Warning(w) => eprintln!("warning: {w}"),
        Event::Checkpointed { .. } | Event::Finished => {}
    }
}

/// Where a run's time went: training, measuring, and their shares of the
/// whole (the rest: the teacher's loading, snapshots, final samples, files).
fn describe_seconds(s: Seconds, total: f64) -> String {
    let share = |x: f64| 100.0 * x / total.max(1e-9);
    format!(
        "training {:.1} s ({:.0}%), measuring {:.1} s ({:.0}%) of {total:.1} s",
        s.training,
        share(s.training),
        s.measuring,
        share(s.measuring)
    )
}

/// One line summarising a measurement.
pub fn describe_eval(e: &Evaluation) -> String {
    let mut s = format!("energy {:.4}  sliced-W {:.4}", e.energy, e.sliced_w);
    if let Some(m) = &e.modes {
        s += &format!(
            "  modes {:.0}%  min share {:.2}  nll {:.3}  precision {:.3}",
            m.coverage * 100.0,
            m.min_share(),
            m.nll,
            m.precision
        );
    }
    if let Some(c) = &e.classes {
        let least = c.shares.iter().copied().fold(f64::INFINITY, f64::min);
        s += &format!("  classes {:.0}%  min class share {least:.2}", c.coverage * 100.0);
    }
    if let Some(fd) = e.classifier_fd {
        s += &format!("  classifier FD {fd:.3}");
    }
    if let Some(fd) = e.pixel_fd {
        s += &format!("  pixel FD {fd:.3}");
    }
    if let (Some(t), Some(th)) = (e.mismatch_target_mean(), e.mismatch_teacher_mean()) {
        s += &format!("  mismatch target {t:.3} teacher {th:.3}");
    }
    s
}
