//! Ending a rank stuck in a collective call. NCCL waits forever for a
//! peer that died or hangs, and no error reaches the rank's training
//! thread. The watchdog is armed only while that thread is inside a
//! collective call ([`Watchdog::call`]); outside one — a rank 0 paused in
//! the lab, lingering for a viewer, or measuring — it never acts, and the
//! thread meets any failure at its next exchange. Inside one it ends the
//! process:
//!
//! - when a failure is known (a rank's connection closed, or a rank said
//!   so) and the call is still not over `grace` later;
//! - when a call that is timed (gradient exchanges, not waits for rank
//!   0's measurements) lasts longer than `parallel.timeout_s`: this rank
//!   tells the team, naming itself, and ends.
//!
//! Either way the message names the rank and how the run resumes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// What ends the process: the message is the last line it writes.
pub type Exit = Arc<dyn Fn(&str) + Send + Sync>;

/// The process's end as production wants it.
pub fn exit_process() -> Exit {
    Arc::new(|message: &str| {
        eprintln!("disback: {message}");
        // Not std::process::exit: its teardown (the CUDA context's, NCCL's)
        // can wait forever behind the kernel that hangs.
        // SAFETY: _exit ends the process at once; nothing runs after it.
        unsafe { libc::_exit(1) }
    })
}

/// How a rank watches its collective calls.
#[derive(Clone)]
pub struct Watching {
    /// A timed call lasting longer than this is hung.
    pub timeout: Duration,
    /// How long a call may go on once a failure is known.
    pub grace: Duration,
    /// How the run continues, for the last message: "resume with …".
    pub resume: String,
    pub exit: Exit,
}

pub(super) struct Watchdog {
    state: Arc<State>,
}

struct State {
    rank: usize,
    watching: Watching,
    call: Mutex<Option<Call>>,
    calls: AtomicU64,
}

#[derive(Clone, Copy)]
struct Call {
    number: u64,
    since: Instant,
    timed: bool,
}

/// A collective call in progress; its drop disarms the watchdog.
pub(super) struct InCall<'a>(&'a Watchdog);

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        *self.0.state.lock() = None;
    }
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Call>> {
        self.call.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Watchdog {
    /// Starts watching rank `rank`'s calls. `failure`: the team's first
    /// failure, if any; `tell`: says a message to every other rank.
    pub fn start(
        rank: usize,
        watching: Watching,
        failure: impl Fn() -> Option<String> + Send + 'static,
        tell: impl Fn(&str) + Send + 'static,
    ) -> std::io::Result<Self> {
        let state = Arc::new(State {
            rank,
            watching,
            call: Mutex::new(None),
            calls: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&state);
        std::thread::Builder::new()
            .name(format!("disback-rank-{rank}-watchdog"))
            .spawn(move || watch(weak, failure, tell))?;
        Ok(Self { state })
    }

    /// Arms the watchdog until the returned guard drops. `timed`: the call
    /// is hung after the team's timeout (gradient exchanges); untimed
    /// calls wait for rank 0 as long as it takes.
    pub fn call(&self, timed: bool) -> InCall<'_> {
        let number = self.state.calls.fetch_add(1, Ordering::SeqCst) + 1;
        *self.state.lock() = Some(Call {
            number,
            since: Instant::now(),
            timed,
        });
        InCall(self)
    }
}

/// The watchdog's thread, until its rank's hub is gone.
fn watch(state: Weak<State>, failure: impl Fn() -> Option<String>, tell: impl Fn(&str)) {
    let tick = |w: &Watching| {
        (w.grace.min(w.timeout) / 20).clamp(Duration::from_millis(5), Duration::from_millis(500))
    };
    // Since when the current call has gone on with a failure known.
    let mut stuck: Option<(u64, Instant)> = None;
    loop {
        let Some(state) = state.upgrade() else {
            return;
        };
        let w = &state.watching;
        std::thread::sleep(tick(w));
        let Some(call) = *state.lock() else {
            stuck = None;
            continue;
        };
        let rank = state.rank;
        if let Some(failure) = failure() {
            let since = match stuck {
                Some((number, since)) if number == call.number => since,
                _ => Instant::now(),
            };
            stuck = Some((call.number, since));
            if since.elapsed() >= w.grace {
                (w.exit)(&format!(
                    "rank {rank}: {failure}; this rank was still waiting for it in a collective call \
                     {} s later, so its process ends; {}",
                    w.grace.as_secs_f64(),
                    w.resume
                ));
                return;
            }
            continue;
        }
        if call.timed && call.since.elapsed() > w.timeout {
            let message = format!(
                "rank {rank} waited more than {} s (parallel.timeout_s) in gradient exchange {}: a rank \
                 died or hangs; rank {rank}'s process ends; {}",
                w.timeout.as_secs_f64(),
                call.number,
                w.resume
            );
            tell(&message);
            (w.exit)(&message);
            return;
        }
    }
}
