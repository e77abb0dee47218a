//! Pretrained `diffusers` teachers: the small UNet2DModels of
//! `tests/fixtures/diffusers` (made by `tests/fixtures/make_diffusers_fixtures.py`
//! with diffusers 0.42.1, random weights) give the outputs diffusers gave
//! for the same inputs; broken folders are refused by name; the VP
//! preconditioning makes them EDM denoisers.

mod common;

use candle_core::{DType, Device, Tensor};
use disback::config::{DiffusersFiles, DiffusersSpec, NetSpec, Prediction};
use disback::model::{Denoiser, load_diffusers_weights};
use disback::rng::host_rng;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diffusers")
        .join(name)
}

/// max |a − b| over every element.
fn largest_difference(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// The network a fixture's `config.json` describes, with fresh weights.
fn network(dir: &Path) -> anyhow::Result<Denoiser> {
    let spec = DiffusersSpec::read(dir)?;
    Denoiser::new(
        &NetSpec::Diffusers(Box::new(spec)),
        0.5,
        &Device::Cpu,
        &mut host_rng(0, 0),
    )
}

/// The fixture's teacher, loaded.
fn teacher(dir: &Path) -> anyhow::Result<Denoiser> {
    let model = network(dir)?;
    load_diffusers_weights(model.params(), &DiffusersFiles::find(dir)?.weights)?;
    Ok(model)
}

#[test]
fn every_fixture_gives_diffusers_outputs() {
    for name in ["plain-eps", "attention-v", "deep-sample"] {
        let dir = fixture(name);
        let model = teacher(&dir).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let expected =
            candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
        let t = expected["timestep"].reshape((3, 1)).unwrap();
        let out = model.net.forward(&expected["sample"], &t).unwrap();
        let want = &expected["output"];
        let err = largest_difference(&out, want);
        let scale = largest_difference(want, &want.zeros_like().unwrap());
        assert!(
            err <= 1e-4 * scale,
            "{name}: largest difference {err} on outputs up to {scale}"
        );
    }
}

/// The VP wrapper: for an ε-model D(x; σ) = x − σ ε̂(x / √(1 + σ²), t),
/// t the timestep of the nearest σ_t; the loss weight is 1 / σ².
#[test]
fn an_eps_model_becomes_an_edm_denoiser() {
    let model = teacher(&fixture("plain-eps")).unwrap();
    let spec = DiffusersSpec::read(&fixture("plain-eps")).unwrap();
    assert_eq!(spec.schedule.prediction, Prediction::Epsilon);
    let sigmas = spec.schedule.sigmas();
    let x = Tensor::randn(0f32, 1.0, (2, 1, 8, 8), &Device::Cpu).unwrap();
    // σ between two table entries, nearer the lower one.
    let (lo, hi) = (sigmas[300], sigmas[301]);
    let sigma = lo + 0.3 * (hi - lo);
    let levels = model.levels(vec![sigma as f32; 2], &Device::Cpu).unwrap();
    let d = model.denoise(&x, &levels).unwrap();
    let c_in = 1.0 / (1.0 + sigma * sigma).sqrt();
    let t = Tensor::full(300f32, (2, 1), &Device::Cpu).unwrap();
    let eps = model.net.forward(&(&x * c_in).unwrap(), &t).unwrap();
    let want = (&x - (eps * sigma).unwrap()).unwrap();
    let err = largest_difference(&d, &want);
    assert!(err < 1e-4, "{err}");
    let weight: Vec<f32> = levels
        .weight_for(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(
        ((weight[0] as f64) * sigma * sigma - 1.0).abs() < 1e-4,
        "{weight:?}"
    );
}

/// Copies a fixture into `to`, for breaking.
fn copy(name: &str, to: &Path) -> PathBuf {
    let dir = to.join(name);
    for sub in ["unet", "scheduler"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        for e in std::fs::read_dir(fixture(name).join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(sub).join(e.file_name())).unwrap();
        }
    }
    dir
}

/// Asserts that loading `dir` fails with an error that says every needle.
fn refused(dir: &Path, needles: &[&str]) {
    let e = format!("{:#}", teacher(dir).expect_err("should be refused"));
    for needle in needles {
        assert!(e.contains(needle), "missing {needle:?} in {e}");
    }
}

/// Replaces `from` by `to` in a copied fixture's `unet/config.json`.
fn edit_config(dir: &Path, from: &str, to: &str) {
    let config = dir.join("unet/config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains(from), "{from} not in the fixture's config");
    std::fs::write(&config, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn broken_folders_are_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    // No scheduler: the schedule is needed.
    let dir = copy("plain-eps", tmp.path());
    std::fs::remove_dir_all(dir.join("scheduler")).unwrap();
    refused(&dir, &["no scheduler_config.json"]);
    // No weights.
    let dir = copy("attention-v", &tmp.path().join("a"));
    std::fs::remove_file(dir.join("unet/diffusion_pytorch_model.safetensors")).unwrap();
    refused(&dir, &["no diffusion_pytorch_model.safetensors"]);
    // A block type this lab does not build, by key and value.
    let dir = copy("plain-eps", &tmp.path().join("b"));
    edit_config(&dir, "\"DownBlock2D\"", "\"SkipDownBlock2D\"");
    refused(&dir, &["down_block_types", "SkipDownBlock2D", "config.json"]);
    // Class conditioning is refused, saying why.
    let dir = copy("plain-eps", &tmp.path().join("c"));
    edit_config(&dir, "\"num_class_embeds\": null", "\"num_class_embeds\": 10");
    refused(&dir, &["num_class_embeds"]);
    // Weights of the wrong shape, a missing one and an extra one: each
    // named, and nothing loaded.
    let dir = copy("plain-eps", &tmp.path().join("d"));
    let weights = dir.join("unet/diffusion_pytorch_model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &Device::Cpu).unwrap();
    tensors.insert(
        "conv_in.weight".into(),
        Tensor::zeros((8, 1, 5, 5), DType::F32, &Device::Cpu).unwrap(),
    );
    tensors.remove("conv_out.bias");
    tensors.insert(
        "surplus.weight".into(),
        Tensor::zeros(3, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let model = network(&dir).unwrap();
    let before = model.params().tensors();
    let e = format!(
        "{:#}",
        load_diffusers_weights(model.params(), &weights).unwrap_err()
    );
    for needle in [
        "conv_in.weight has shape [8, 1, 5, 5]",
        "conv_out.bias is missing",
        "surplus.weight is not a parameter",
        "nothing was loaded",
    ] {
        assert!(e.contains(needle), "missing {needle:?} in {e}");
    }
    for ((_, a), (_, b)) in before.iter().zip(model.params().tensors()) {
        let same = largest_difference(a, &b);
        assert_eq!(same, 0.0, "a refused load changed nothing");
    }
}

/// A fixture distils end to end with no data: `run` and `compare` on the
/// command line, the teacher from its folder, its samples standing in for
/// the data, the header naming it.
#[test]
fn a_pretrained_teacher_distils_without_data() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let teacher = fixture("attention-v");
    let sets = [
        format!("teacher.pretrained={}", teacher.display()),
        "device=cpu".into(),
        "record.iterations=8".into(),
        "record.node_every=4".into(),
        "record.batch=16".into(),
        "distill.batch=16".into(),
        "schedule.steps=[4,12]".into(),
        "metrics.samples=16".into(),
        "metrics.every=4".into(),
        "log.final_samples=16".into(),
    ];
    let mut args = vec!["run".to_string(), "--out".into(), "run".into()];
    for s in &sets {
        args.extend(["--set".into(), s.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = common::disback(&args, d);
    let err = common::stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        err.contains("no data: the teacher's samples (16 images), 3×8×8"),
        "{err}"
    );
    assert!(
        err.contains("teacher pretrained: diffusers model") && err.contains("(48659 parameters)"),
        "{err}"
    );
    // The run wrote what every run writes: the teacher among it, as this
    // lab's file (so a resumed run needs no folder), and the path.
    for file in [
        "teacher.safetensors",
        "path/node-2.safetensors",
        "generator/final.safetensors",
        "samples.safetensors",
    ] {
        assert!(d.join("run").join(file).is_file(), "{file}");
    }
    let config = std::fs::read_to_string(d.join("run/config.toml")).unwrap();
    assert!(
        config.contains("kind = \"none\"") && config.contains("[teacher.diffusers"),
        "{config}"
    );
    // The mismatch degree needs the data's score: none is measured.
    let metrics = std::fs::read_to_string(d.join("run/metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"mismatch_teacher\":[]"), "{metrics}");

    // The comparison: three arms from the one folder.
    let mut args = vec![
        "compare".to_string(),
        "--seeds".into(),
        "1".into(),
        "--out".into(),
        "cmp".into(),
    ];
    for s in &sets {
        args.extend(["--set".into(), s.clone()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = common::disback(&args, d);
    assert!(o.status.success(), "{}", common::stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("pixel Fréchet distance"));
}
