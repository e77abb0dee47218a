//! Trusting the files: what the project wrote is what it reads back, one
//! process writes a run, and sizes or signals cannot take the machine down.
//! Each test is a way things went wrong before.

mod common;

use common::{disback, start, stderr, tiny_config};
use disback::engine::Session;
use disback::rundir::RunDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A tiny run stopped (as by kill -9) in the middle of backtracking, with
/// a checkpoint at iteration 100 and path nodes on disk.
fn interrupted_run(dir: &Path) -> PathBuf {
    let root = dir.join("run");
    let mut s = start(tiny_config(&dir.join("teachers")), &root);
    while s.iteration() < 110 {
        s.step().unwrap();
    }
    root
}

fn resume_error(root: &Path) -> String {
    let err = Session::resume(RunDir::open(root).unwrap()).err();
    format!("{:#}", err.expect("the resume must be refused"))
}

/// Flips one byte `from_end` bytes before the end of a file.
fn flip(file: &Path, from_end: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() - from_end;
    bytes[at] ^= 0x20;
    std::fs::write(file, bytes).unwrap();
}

fn checkpoint_dir(root: &Path) -> PathBuf {
    root.join("state/ckpt-00000100")
}

#[test]
fn flipped_bytes_in_any_file_a_resume_reads_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    let root = interrupted_run(dir.path());
    let ckpt = checkpoint_dir(&root);
    let files = [
        ckpt.join("generator.safetensors"),
        ckpt.join("generator-average.safetensors"),
        ckpt.join("generator-adam.safetensors"),
        ckpt.join("fake-score.safetensors"),
        ckpt.join("session.json"),
        root.join("state/latest.json"),
        root.join("teacher.safetensors"),
        root.join("path/nodes.json"),
        root.join("config.toml"),
    ];
    for file in &files {
        let original = std::fs::read(file).unwrap();
        flip(file, 12);
        let err = resume_error(&root);
        let name = file.file_name().unwrap().to_string_lossy();
        assert!(err.contains(&*name), "{}: {err}", file.display());
        assert!(
            err.contains("checksum") || err.contains("changed") || err.contains("corrupt"),
            "{}: {err}",
            file.display()
        );
        std::fs::write(file, original).unwrap();
    }
    // Repaired, it resumes.
    let resumed = Session::resume(RunDir::open(&root).unwrap()).unwrap();
    assert_eq!(resumed.iteration(), 100);
}

#[test]
fn a_corrupt_node_file_is_refused_by_name_when_backtracking_reaches_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = interrupted_run(dir.path());
    // Node 1 is a later target than the one trained at iteration 100.
    let node = root.join("path/node-1.safetensors");
    flip(&node, 12);
    // Refused when the resume loads it, or at the switch that needs it.
    let err = match Session::resume(RunDir::open(&root).unwrap()) {
        Err(e) => format!("{e:#}"),
        Ok(mut s) => loop {
            match s.step() {
                Ok(_) if s.is_done() => panic!("finished on a corrupt node"),
                Ok(_) => {}
                Err(e) => break format!("{e:#}"),
            }
        },
    };
    assert!(
        err.contains("node-1.safetensors") && err.contains("checksum"),
        "{err}"
    );
}

#[test]
fn a_second_writer_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("run");
    let s = start(tiny_config(&dir.path().join("teachers")), &root);
    let config = std::fs::read(root.join("config.toml")).unwrap();
    let pid = format!("pid {}", std::process::id());
    // A resume of the same run…
    let err = resume_error(&root);
    assert!(err.contains("in use") && err.contains(&pid), "{err}");
    // …and an overwrite of it are both refused while it runs.
    let err = RunDir::create(&root, true).unwrap_err().to_string();
    assert!(err.contains("in use") && err.contains(&pid), "{err}");
    assert_eq!(std::fs::read(root.join("config.toml")).unwrap(), config);
    drop(s);
    RunDir::create(&root, true).expect("free once the first writer is gone");
}

#[test]
fn a_second_process_is_refused_with_the_holders_pid_and_command() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_file(d);
    let c = config.to_str().unwrap();
    let mut first = Command::new(env!("CARGO_BIN_EXE_disback"))
        .args([
            "run",
            "--config",
            c,
            "--set",
            "schedule.steps=[20,20,20,100000]",
            "--out",
            "r",
        ])
        .current_dir(d)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&d.join("r/metrics.jsonl"));
    let o = disback(&["run", "--config", c, "--out", "r", "--force"], d);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("in use") && e.contains(&format!("pid {}", first.id())),
        "{e}"
    );
    assert!(e.contains("run --config"), "the holder's command: {e}");
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(
        d.join("r/metrics.jsonl").exists(),
        "the first run's files are kept"
    );
}

fn wait_for(file: &Path) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read(file).map_or(true, |b| b.is_empty()) {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never appeared",
            file.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

fn tiny_file(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.toml");
    let config = tiny_config(&dir.join("teachers"));
    std::fs::write(&path, config.to_toml().unwrap()).unwrap();
    path
}

#[test]
fn a_corrupt_line_in_the_checkpointed_log_is_reported_by_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let root = interrupted_run(dir.path());
    let metrics = root.join("metrics.jsonl");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[3] = "{\"stage\": \"pretrain\", \"step\": ".into(); // torn
    std::fs::write(&metrics, lines.join("\n") + "\n").unwrap();
    let err = resume_error(&root);
    assert!(err.contains("metrics.jsonl:4"), "{err}");

    // A line dropped from the checkpointed part is found too (the old
    // rule kept the first N lines and so dropped a real record).
    lines.remove(3);
    std::fs::write(&metrics, lines.join("\n") + "\n").unwrap();
    let err = resume_error(&root);
    assert!(err.contains("metrics.jsonl") && err.contains("changed"), "{err}");

    // Restored, the records after the checkpoint are cut by content.
    std::fs::write(&metrics, &text).unwrap();
    let resumed = Session::resume(RunDir::open(&root).unwrap()).unwrap();
    let kept = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.starts_with(&kept) && kept.len() < text.len());
    let last: serde_json::Value = serde_json::from_str(kept.lines().last().unwrap()).unwrap();
    assert_eq!(last, serde_json::to_value(resumed.latest().unwrap()).unwrap());
}

#[test]
fn a_batch_that_cannot_fit_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let o = disback(
        &["run", "--set", "teacher.batch=1000000000000", "--out", "big"],
        d,
    );
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("GiB") && e.contains("teacher.batch") && e.contains("--no-memory-check"),
        "{e}"
    );
    assert!(!d.join("big").exists());
}

#[test]
fn sample_writes_into_a_fifo_instead_of_replacing_it() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = dir.path().join("run");
    drop(start(tiny_config(&d.join("teachers")), &root));
    save_a_generator(&root, &d.join("g.safetensors"));
    let fifo = d.join("samples.fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap())
    };
    let o = sample(d, "samples.fifo");
    assert!(o.status.success(), "{}", stderr(&o));
    let text = reader.join().unwrap();
    assert_eq!(text.lines().count(), 6, "{text}");
    assert!(std::fs::metadata(&fifo).unwrap().file_type().is_fifo());
}

#[test]
fn a_generator_with_flipped_bytes_is_refused_by_sample() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let root = d.join("run");
    drop(start(tiny_config(&d.join("teachers")), &root));
    save_a_generator(&root, &d.join("g.safetensors"));
    flip(&d.join("g.safetensors"), 40);
    let o = sample(d, "s.csv");
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(e.contains("g.safetensors") && e.contains("checksum"), "{e}");
    assert!(!d.join("s.csv").exists());
}

/// `disback sample` of five points from `g.safetensors` into `out`.
fn sample(d: &Path, out: &str) -> Output {
    let config = "run/config.toml";
    disback(
        &[
            "sample",
            "--generator",
            "g.safetensors",
            "--config",
            config,
            "--n",
            "5",
            "--out",
            out,
        ],
        d,
    )
}

/// Saves an untrained generator of the run's config, as `sample` reads it.
fn save_a_generator(run: &Path, file: &Path) {
    let config = disback::config::Config::load(&run.join("config.toml"), &[]).unwrap();
    let device = candle_core::Device::Cpu;
    let spec = disback::data::resolve(config).unwrap().generator_spec();
    let g = disback::model::Generator::new(&spec, &device, &mut disback::rng::host_rng(0, 0)).unwrap();
    g.save(file).unwrap();
}
