//! `log.tensorboard = true`: the run's event file holds every number of
//! its `metrics.jsonl` as scalars at the same cost, the node switches as
//! text and a picture at each measurement, in records whose CRCs check;
//! TensorBoard's own reader loads it (skipped, saying so, without the
//! `tensorboard` package). Without the setting nothing is written.

mod common;

use disback::config::Config;
use disback::rundir::events::{Event, Kind, What};
use disback::rundir::{MetricsRecord, read_events, read_metrics};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Runs the tiny ring config to its end in `dir`, with `sets`.
fn finish(dir: &Path, cache: &Path, sets: &[&str]) {
    let text = common::tiny_config(cache).to_toml().unwrap();
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    let mut session = common::start(Config::parse(&text, &sets).unwrap(), dir);
    while !session.is_done() {
        session.step().unwrap();
    }
}

/// The event files in `dir` (not below).
fn event_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        })
        .collect()
}

/// Scalars by tag: (step, value) in order.
fn scalars(events: &[Event]) -> BTreeMap<String, Vec<(i64, f32)>> {
    let mut out: BTreeMap<String, Vec<(i64, f32)>> = BTreeMap::new();
    for e in events {
        if let Some(What::Summary(s)) = &e.what {
            for v in &s.value {
                if let Some(Kind::SimpleValue(x)) = v.kind {
                    out.entry(v.tag.clone()).or_default().push((e.step, x));
                }
            }
        }
    }
    out
}

/// Values of one kind under `tag`, with their steps.
fn tagged<'a>(events: &'a [Event], tag: &str) -> Vec<(i64, &'a Kind)> {
    events
        .iter()
        .filter_map(|e| match &e.what {
            Some(What::Summary(s)) => Some((e.step, s)),
            _ => None,
        })
        .flat_map(|(step, s)| {
            s.value
                .iter()
                .filter(|v| v.tag == tag)
                .filter_map(move |v| v.kind.as_ref().map(|k| (step, k)))
        })
        .collect()
}

#[test]
fn a_run_logs_its_numbers_switches_and_pictures_for_tensorboard() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, cache) = (tmp.path().join("run"), tmp.path().join("teachers"));
    finish(&run, &cache, &["log.tensorboard=true"]);
    let files = event_files(&run.join("tensorboard"));
    assert_eq!(files.len(), 1, "{files:?}");
    let events = read_events(&files[0]).unwrap();
    assert_eq!(events[0].what, Some(What::FileVersion("brain.Event:2".into())));

    // Every number of every metrics line, at its cost: the losses, the
    // measurements, the mismatch degree per σ.
    let series = scalars(&events);
    let records = read_metrics(&run.join("metrics.jsonl")).unwrap();
    let distilling: Vec<_> = records
        .iter()
        .filter(|r| r.stage != disback::rundir::Stage::Pretrain)
        .collect();
    type Read = fn(&MetricsRecord) -> Option<f64>;
    let numbers: [(&str, Read); 5] = [
        ("loss_g", |r| r.loss_g),
        ("loss_fake", |r| r.loss_fake),
        ("eval/energy", |r| r.eval.as_ref().map(|e| e.energy)),
        ("eval/modes/coverage", |r| {
            r.eval.as_ref().and_then(|e| e.modes.as_ref()).map(|m| m.coverage)
        }),
        ("eval/mismatch_teacher/mean", |r| {
            r.eval.as_ref().and_then(|e| e.mismatch_teacher_mean())
        }),
    ];
    for (tag, value) in numbers {
        let want: Vec<(i64, f32)> = distilling
            .iter()
            .filter_map(|r| value(r).map(|v| (r.cost as i64, v as f32)))
            .collect();
        assert!(want.len() >= 2, "{tag}: {want:?}");
        assert_eq!(series.get(tag), Some(&want), "{tag}");
    }
    let sigmas = common::tiny_config(&cache).metrics.mismatch_sigmas;
    let first = format!("eval/mismatch_teacher/sigma={}", sigmas[0]);
    assert!(series.contains_key(&first), "{:?}", series.keys());
    // Teacher pretraining, on its own axis, in its own folder.
    let pretraining = event_files(&run.join("tensorboard/pretrain"));
    assert_eq!(pretraining.len(), 1, "{pretraining:?}");
    let teacher = scalars(&read_events(&pretraining[0]).unwrap());
    assert!(teacher["loss_teacher"].len() >= 2, "{teacher:?}");
    assert!(!series.contains_key("loss_teacher"));
    let rates = &series["it_per_s"];
    assert!(
        rates.len() >= 2 && rates.iter().all(|(_, r)| *r > 0.0),
        "{rates:?}"
    );

    // The switches as text, as many as the run made (targets 3, 2, 1, 0).
    let switches = tagged(&events, "switches");
    let texts: Vec<String> = switches
        .iter()
        .map(|(_, k)| match k {
            Kind::Tensor(t) => String::from_utf8(t.string_val[0].clone()).unwrap(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(texts.len(), 3, "{texts:?}");
    assert!(texts[0].starts_with("target node 3 → node 2"), "{texts:?}");
    // A picture at each measurement, a PNG of what its header says.
    let pictures = tagged(&events, "samples");
    let measured = distilling.iter().filter(|r| r.eval.is_some()).count();
    assert_eq!(pictures.len(), measured);
    let Kind::Image(picture) = pictures[0].1 else {
        panic!("not an image")
    };
    let png = image::load_from_memory(&picture.encoded_image_string).unwrap();
    assert_eq!(
        (png.width(), png.height()),
        (picture.width as u32, picture.height as u32)
    );

    // A damaged byte is caught by the record's CRC, and named.
    let damaged = tmp.path().join("events.out.tfevents.damaged");
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&damaged, bytes).unwrap();
    let e = format!("{:#}", read_events(&damaged).unwrap_err());
    assert!(e.contains("CRC") && e.contains("damaged"), "{e}");

    // TensorBoard's own reader.
    let found = std::process::Command::new("python3")
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("SKIPPED TensorBoard's reader: no python3 that imports tensorboard");
        return;
    }
    let o = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys\n\
             from tensorboard.backend.event_processing import event_accumulator as ea\n\
             acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0, ea.IMAGES: 0, ea.TENSORS: 0})\n\
             acc.Reload()\n\
             tags = acc.Tags()\n\
             print(json.dumps({'scalars': {t: len(acc.Scalars(t)) for t in tags['scalars']},\n\
                               'images': {t: len(acc.Images(t)) for t in tags['images']},\n\
                               'tensors': {t: len(acc.Tensors(t)) for t in tags['tensors']}}))",
            run.join("tensorboard").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    let seen: BTreeMap<String, BTreeMap<String, usize>> =
        serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let long = seen["scalars"].values().filter(|&&n| n >= 2).count();
    assert!(long >= 3, "{seen:?}");
    assert_eq!(seen["scalars"]["eval/energy"], series["eval/energy"].len());
    assert_eq!(seen["images"]["samples"], measured, "{seen:?}");
    assert_eq!(seen["tensors"]["switches"], 3, "{seen:?}");
}

#[test]
fn without_the_setting_no_event_file_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    finish(&run, &tmp.path().join("teachers"), &[]);
    assert!(run.join("metrics.jsonl").is_file());
    assert!(!run.join("tensorboard").exists());
}

/// `--tensorboard` on the command line is `log.tensorboard = true`, and
/// the run's config says so.
#[test]
fn the_command_line_flag_turns_it_on() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::tiny_config(&tmp.path().join("teachers"));
    disback::files::write_toml(&tmp.path().join("tiny.toml"), &config.to_toml().unwrap()).unwrap();
    let o = common::disback(
        &["run", "--config", "tiny.toml", "--out", "run", "--tensorboard"],
        tmp.path(),
    );
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert_eq!(event_files(&tmp.path().join("run/tensorboard")).len(), 1);
    let written = Config::load_run(&tmp.path().join("run/config.toml")).unwrap();
    assert!(written.log.tensorboard);
}

/// A run stopped and resumed starts a second event file beside the first
/// (TensorBoard reads them in order as one run); both check.
#[test]
fn a_resumed_run_starts_another_event_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, cache) = (tmp.path().join("run"), tmp.path().join("teachers"));
    let text = common::tiny_config(&cache).to_toml().unwrap();
    let config = Config::parse(&text, &["log.tensorboard=true".to_string()]).unwrap();
    let mut session = common::start(config, &run);
    common::step_until(&mut session, disback::rundir::Stage::Backtrack);
    session.save_state().unwrap();
    let stopped_at = session.cost();
    drop(session);
    let mut resumed = disback::engine::Session::resume(disback::rundir::RunDir::open(&run).unwrap()).unwrap();
    while !resumed.is_done() {
        resumed.step().unwrap();
    }
    let mut files = event_files(&run.join("tensorboard"));
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let later = read_events(&files[1]).unwrap();
    let steps: Vec<i64> = scalars(&later)["loss_g"].iter().map(|(s, _)| *s).collect();
    assert!(steps[0] > stopped_at as i64, "{steps:?} after {stopped_at}");
    assert!(read_events(&files[0]).is_ok());
}
