//! Shared helpers for the integration tests.
#![allow(dead_code)]

// As in the binary: every tensor op allocates, and mimalloc keeps those
// buffers warm (tests run real trainings).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use disback::config::Config;
use disback::engine::{Event, RunDir, Session};
use disback::model::Denoiser;
use std::path::Path;

/// A config small enough to run in a second or two: every stage, every
/// file, a few steps each.
pub fn tiny_config(cache: &Path) -> Config {
    let text = format!(
        r#"
name = "tiny"
seed = 3
device = "cpu"
[data]
kind = "ring"
modes = 4
radius = 2.0
std = 0.2
[score_net]
width = 32
blocks = 2
emb_dim = 8
[teacher]
steps = 60
batch = 128
cache_dir = {cache:?}
[generator]
width = 32
depth = 2
[record]
iterations = 20
node_every = 5
batch = 64
[distill]
batch = 64
[schedule]
steps = [10, 10, 10, 30]
[log]
every = 5
checkpoint_every = 25
final_samples = 500
[metrics]
every = 20
samples = 200
"#,
        cache = cache.display().to_string()
    );
    Config::parse(&text, &[]).expect("the tiny config is valid")
}

/// What a checked run saw.
#[derive(Debug, Default)]
pub struct Observed {
    /// (from, to, largest difference between the target and the node file
    /// right after the switch).
    pub switches: Vec<(Option<usize>, usize, f32)>,
    pub events: Vec<Event>,
}

/// Runs a session to the end, checking after every target switch that the
/// target holds exactly the node file's weights.
pub fn run_checked(mut session: Session) -> (Session, Observed) {
    let mut seen = Observed::default();
    while !session.is_done() {
        for event in session.step().expect("training step") {
            if let Event::TargetSwitched { from, to } = event {
                seen.switches.push((from, to, target_vs_file(&session, to)));
            }
            seen.events.push(event);
        }
    }
    (session, seen)
}

/// Largest difference between the session's target and node `index`'s file
/// (read fresh, into a new model).
pub fn target_vs_file(session: &Session, index: usize) -> f32 {
    let c = session.config();
    let node = Denoiser::new(
        &c.score_net,
        c.sigma_data(),
        &session.teacher().device(),
        &mut disback::rng::host_rng(99, 99),
    )
    .unwrap();
    let file = if c.method == disback::config::Method::Disback {
        session.path().file(index)
    } else {
        session.run_dir().teacher()
    };
    node.load(&file).unwrap();
    node.params().max_abs_diff(session.target().params()).unwrap()
}

/// Starts a session in a fresh run directory under `dir`.
pub fn start(config: Config, dir: &Path) -> Session {
    Session::start(config, RunDir::create(dir, false).unwrap()).unwrap()
}
