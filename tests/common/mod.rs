//! Shared helpers for the integration tests.
#![allow(dead_code)]

// As in the binary: every tensor op allocates, and mimalloc keeps those
// buffers warm (tests run real trainings).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use disback::config::Config;
use disback::engine::protocol::Event;
use disback::engine::{ModelKind, Session};
use disback::rundir::RunDir;
use std::path::Path;

/// Runs the binary with `args` in `cwd`.
pub fn disback(args: &[&str], cwd: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_disback"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("the binary runs")
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

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

/// The smallest digits run that goes through every stage: an 8-channel
/// U-Net, a few iterations of each stage, the classifier's metrics.
pub fn tiny_digits_config(cache: &Path) -> Config {
    let text = format!(
        r#"
name = "tiny-digits"
seed = 1
device = "cpu"
[data]
kind = "digits"
[unet]
channels = 8
multipliers = [1, 2]
emb_dim = 8
groups = 4
[teacher]
steps = 60
batch = 32
cache_dir = {cache:?}
[record]
iterations = 8
node_every = 4
batch = 16
[distill]
batch = 16
[schedule]
steps = [6, 12]
[log]
every = 4
checkpoint_every = 10
final_samples = 20
[metrics]
every = 10
samples = 32
stf_reference = 64
mismatch_sigmas = [0.5, 2.0]
"#,
        cache = cache.display().to_string()
    );
    Config::parse(&text, &[]).expect("the tiny digits config is valid")
}

/// What a checked run saw.
#[derive(Debug, Default)]
pub struct Observed {
    /// (from, to, largest difference between the target and the node file
    /// right after the switch).
    pub switches: Vec<(Option<usize>, usize, f32)>,
    /// Largest difference between s_φ and the most degraded node's file
    /// when backtracking started (DisBack only).
    pub fake_start: Option<f32>,
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
                let c = session.config();
                if from.is_none() && c.method == disback::config::Method::Disback {
                    let last = session.path().file(session.path().len() - 1);
                    let fake = session.score_model(ModelKind::FakeScore).expect("s_φ");
                    seen.fake_start = Some(model_vs_file(fake, &last));
                }
            }
            seen.events.push(event);
        }
    }
    (session, seen)
}

/// Largest difference between the session's target and node `index`'s file.
/// The file is read with the safetensors crate directly, not through the
/// project's loader, and must hold exactly the target's tensors by name.
pub fn target_vs_file(session: &Session, index: usize) -> f32 {
    let c = session.config();
    let file = if c.method == disback::config::Method::Disback {
        session.path().file(index)
    } else {
        session.run_dir().teacher()
    };
    model_vs_file(session.score_model(ModelKind::Target).expect("a target"), &file)
}

/// Largest difference between `model` and a safetensors file, read with the
/// safetensors crate directly; the file must hold exactly the model's
/// tensors by name.
pub fn model_vs_file(target: &disback::model::Denoiser, file: &Path) -> f32 {
    let bytes = std::fs::read(file).unwrap();
    let stored = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = stored.names().into_iter().map(|n| n.to_string()).collect();
    names.sort();
    let mut expected: Vec<String> = target.params().iter().map(|(n, _)| n.to_string()).collect();
    expected.sort();
    assert_eq!(
        names,
        expected,
        "{} holds other tensors than the target",
        file.display()
    );
    let mut worst = 0f32;
    for (name, var) in target.params().iter() {
        let view = stored.tensor(name).unwrap();
        assert_eq!(view.shape(), var.dims(), "{name}");
        let ours: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let theirs = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        for (a, b) in ours.iter().zip(theirs) {
            worst = worst.max((a - b).abs());
        }
    }
    worst
}

/// Steps a session until it reaches `stage`.
pub fn step_until(session: &mut Session, stage: disback::rundir::Stage) {
    while session.stage() != stage {
        session.step().expect("training step");
    }
}

/// Starts a session in a fresh run directory under `dir`.
pub fn start(config: Config, dir: &Path) -> Session {
    Session::start(config, RunDir::create(dir, false).unwrap()).unwrap()
}
