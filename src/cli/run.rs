//! The headless runner: a thin driver of [`Session`] that prints progress
//! to stderr. Ctrl-C or SIGTERM checkpoints the run and stops it, so it can
//! be continued with `--resume`.

use super::RunArgs;
use crate::config::SchedulePolicy;
use crate::engine::{Event, RunDir, Session, Stage};
use crate::metrics::Evaluation;
use crate::runtime::{Ended, configure_threads};
use anyhow::{Result, bail};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub fn run(args: RunArgs) -> Result<Ended> {
    let session = match &args.resume {
        Some(dir) => {
            let s = Session::resume(super::open_for_resume(&args, dir)?)?;
            refuse_manual(s.schedule().policy())?;
            eprintln!(
                "resuming {} at iteration {} ({})",
                dir.display(),
                s.iteration(),
                s.stage()
            );
            s
        }
        None => {
            let config = args.config.load()?;
            refuse_manual(config.schedule.policy)?;
            args.check_memory(&config)?;
            configure_threads(config.threads);
            let run = RunDir::create(&args.run_dir(&config), args.force)?;
            Session::start(config, run)?
        }
    };
    drive(session)
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

/// Steps the session to its end, or until a signal: SIGINT, SIGTERM and
/// SIGHUP checkpoint the run and stop it (exit status 128 + the signal); a
/// second signal, for a step that takes too long, ends the process at once
/// with the same status (resumable from the checkpoint before).
fn drive(mut session: Session) -> Result<Ended> {
    let stopping = Arc::new(AtomicBool::new(false));
    let signal = Arc::new(AtomicUsize::new(0));
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        // Registered first, so it sees the flag as the previous signal left it.
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&stopping))?;
        signal_hook::flag::register(sig, Arc::clone(&stopping))?;
        signal_hook::flag::register_usize(sig, Arc::clone(&signal), sig as usize)?;
    }
    let view = session.view();
    eprintln!(
        "{} on {} — {} — run directory {}",
        view.method,
        view.data,
        view.device,
        view.run_dir.display()
    );
    let started = Instant::now();
    let mut progress = Progress::new(&session);
    while !session.is_done() {
        if stopping.load(Ordering::Relaxed) {
            session.save_state()?;
            eprintln!(
                "stopped at iteration {}; continue with: disback run --resume {}",
                session.iteration(),
                session.run_dir().root().display()
            );
            let signal = signal.load(Ordering::Relaxed) as i32;
            return Ok(Ended::Stopped { signal });
        }
        for event in session.step()? {
            print_event(&event);
        }
        progress.tick(&session);
    }
    let view = session.view();
    eprintln!(
        "finished in {:.1} s: {} distillation iterations; run directory {}",
        started.elapsed().as_secs_f64(),
        view.cost,
        view.run_dir.display()
    );
    if let Some(e) = session.latest_eval() {
        eprintln!("final: {}", describe_eval(e));
    }
    Ok(Ended::Finished)
}

fn print_event(event: &Event) {
    match event {
        Event::StageStarted(stage) => eprintln!("== {stage}"),
        Event::TeacherReady { source } => eprintln!("teacher {source}"),
        Event::NodeRecorded {
            index,
            iteration,
            file,
        } => {
            eprintln!(
                "node {index} recorded at iteration {iteration}: {}",
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
    if let (Some(t), Some(th)) = (e.mismatch_target_mean(), e.mismatch_teacher_mean()) {
        s += &format!("  mismatch target {t:.3} teacher {th:.3}");
    }
    s
}

/// A progress line every few seconds, with the iteration rate.
struct Progress {
    last: Instant,
    last_iteration: usize,
}

impl Progress {
    const EVERY: Duration = Duration::from_secs(3);

    /// Starts counting at the session's iteration, so the first rate after
    /// `--resume` counts only this process's iterations.
    fn new(session: &Session) -> Self {
        Self::starting_at(session.iteration())
    }

    fn starting_at(iteration: usize) -> Self {
        Self {
            last: Instant::now(),
            last_iteration: iteration,
        }
    }

    /// Iterations per second since the last line, at `iteration` now.
    fn rate(&self, iteration: usize, elapsed: Duration) -> f64 {
        iteration.saturating_sub(self.last_iteration) as f64 / elapsed.as_secs_f64()
    }

    fn tick(&mut self, session: &Session) {
        let elapsed = self.last.elapsed();
        if elapsed < Self::EVERY || session.stage() == Stage::Done {
            return;
        }
        let v = session.view();
        let rate = self.rate(v.iteration, elapsed);
        let mut line = format!("[{}] {}/{}  {rate:.0} it/s", v.stage, v.stage_step, v.stage_total);
        if let Some(r) = &v.latest {
            for (name, value) in [
                ("teacher", r.loss_teacher),
                ("g", r.loss_g),
                ("fake", r.loss_fake),
            ] {
                if let Some(x) = value {
                    line += &format!("  loss_{name} {x:.4}");
                }
            }
        }
        eprintln!("{line}");
        self.last = Instant::now();
        self.last_iteration = v.iteration;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_rate_after_a_resume_counts_only_new_iterations() {
        // Resumed at iteration 5000; 30 iterations in 3 s is 10 per second
        // (counting from 0 it would claim 1,677).
        let p = Progress::starting_at(5000);
        assert_eq!(p.rate(5030, Duration::from_secs(3)), 10.0);
    }
}
