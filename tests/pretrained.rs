//! Pretrained `diffusers` teachers: the small UNet2DModels of
//! `tests/fixtures/diffusers` (made by `tests/fixtures/make_diffusers_fixtures.py`
//! with diffusers 0.42.1, random weights) give the outputs diffusers gave
//! for the same inputs, and their EDM denoisers the clean samples
//! diffusers' scheduler makes of them; broken folders and settings the
//! lab does not build are refused by name; `disback teacher --check`
//! proves a folder loaded right.

mod common;

use candle_core::{DType, Device, Tensor};
use disback::config::{DiffusersFiles, DiffusersSpec, NetSpec, Prediction};
use disback::model::{Denoiser, Sigmas, load_diffusers_weights};
use disback::rng::host_rng;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diffusers")
        .join(name)
}

/// max |a − b| over every element, on the host, with every value of both
/// finite (candle's `max_all` passes over a NaN not at the first element).
fn largest_difference(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    let values = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
    let (a, b) = (values(a), values(b));
    assert!(a.iter().chain(&b).all(|v| v.is_finite()), "a value is not finite");
    a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// The comparison every parity test here relies on sees a NaN anywhere.
#[test]
#[should_panic(expected = "not finite")]
fn a_nan_in_the_middle_fails_the_comparison() {
    let mut values = vec![0.5f32; 48];
    values[29] = f32::NAN;
    let a = Tensor::from_vec(values, (1, 3, 4, 4), &Device::Cpu).unwrap();
    largest_difference(&a, &a.ones_like().unwrap());
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

/// Every fixture, each with settings the others lack (see the script).
const FIXTURES: [&str; 6] = [
    "plain-eps",
    "attention-v",
    "deep-sample",
    "null-heads",
    "odd-keys",
    "resnet-resample",
];

#[test]
fn every_fixture_gives_diffusers_outputs() {
    for name in FIXTURES {
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

/// The input gradient through residual blocks that resample (the
/// resnet-resample fixture: `upsample_type = "resnet"`, where a block's
/// input feeds both its residual branch and its upsampled skip) against
/// the derivative by central differences along fixed directions. (candle
/// 0.11.1's upsampling backward overwrote what the input's other consumers
/// had given it; here the backward pass happens to reach the upsampling
/// first, so it was right even so: `tests/gradients.rs` checks both orders.)
#[test]
fn input_gradients_through_resampling_blocks_match_finite_differences() {
    let dir = fixture("resnet-resample");
    let model = teacher(&dir).unwrap();
    let expected = candle_core::safetensors::load(dir.join("expected.safetensors"), &Device::Cpu).unwrap();
    let sample = expected["sample"].narrow(0, 0, 1).unwrap();
    let t = expected["timestep"]
        .narrow(0, 0, 1)
        .unwrap()
        .reshape((1, 1))
        .unwrap();
    let wave = |phase: f32| {
        let values: Vec<f32> = (0..sample.elem_count())
            .map(|i| (i as f32 * 0.37 + phase).sin())
            .collect();
        Tensor::from_vec(values, sample.shape(), &Device::Cpu).unwrap()
    };
    let weights = wave(0.0);
    // L(x) = Σ net(x, t) ⊙ w, a scalar whose gradient reaches every path.
    let loss = |x: &Tensor| -> Tensor {
        (model.net.forward(x, &t).unwrap() * &weights)
            .unwrap()
            .sum_all()
            .unwrap()
    };
    let x = candle_core::Var::from_tensor(&sample).unwrap();
    let grad = loss(x.as_tensor()).backward().unwrap().get(&x).unwrap().clone();
    for seed in 0..3 {
        let direction = wave(1.0 + seed as f32);
        let along = |h: f64| loss(&(&sample + direction.affine(h, 0.0).unwrap()).unwrap());
        let h = 1e-2;
        let scalar = |t: Tensor| t.to_scalar::<f32>().unwrap() as f64;
        let by_differences = (scalar(along(h)) - scalar(along(-h))) / (2.0 * h);
        let by_backward = scalar((&grad * &direction).unwrap().sum_all().unwrap());
        assert!(
            (by_backward - by_differences).abs() <= 0.02 * by_differences.abs().max(1e-3),
            "direction {seed}: backward {by_backward}, central differences {by_differences}"
        );
    }
}

/// A setting that changes no weight's shape still shows in the outputs:
/// odd-keys' norm ε of 0.5 read as the default 1e-5 misses diffusers'
/// outputs by far more than the parity tolerance.
#[test]
fn a_wrong_norm_eps_fails_parity() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy("odd-keys", tmp.path());
    edit_config(&dir, "\"norm_eps\": 0.5", "\"norm_eps\": 1e-05");
    let model = teacher(&dir).unwrap();
    let expected =
        candle_core::safetensors::load(fixture("odd-keys").join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    let t = expected["timestep"].reshape((3, 1)).unwrap();
    let out = model.net.forward(&expected["sample"], &t).unwrap();
    let want = &expected["output"];
    let relative = largest_difference(&out, want) / largest_difference(want, &want.zeros_like().unwrap());
    assert!(relative > 1e-2, "only {relative} of the largest output");
}

/// The prediction types, against diffusers' own scheduler: at σ = σ_t and
/// x = x_t / √ᾱ_t (EDM's units), the denoiser D(x; σ) is the clean sample
/// `DDPMScheduler.step` derives from the network's ε, v or x₀ prediction
/// (its `pred_original_sample`), and the schedule's ᾱ are diffusers'.
#[test]
fn denoisers_give_the_clean_sample_diffusers_scheduler_derives() {
    for name in FIXTURES {
        let dir = fixture(name);
        let model = teacher(&dir).unwrap();
        let spec = DiffusersSpec::read(&dir).unwrap();
        let file = candle_core::safetensors::load(dir.join("prediction.safetensors"), &Device::Cpu).unwrap();
        let theirs: Vec<f32> = file["alphas_cumprod"].to_vec1().unwrap();
        let ours = spec.schedule.alphas_cumprod();
        assert_eq!(theirs.len(), ours.len(), "{name}");
        for (t, (a, b)) in theirs.iter().zip(&ours).enumerate() {
            // Float32 products of up to 1,000 factors, in another order.
            assert!(
                (*a as f64 - b).abs() <= 2e-5 * b,
                "{name}: ᾱ_{t} = {b}, diffusers {a}"
            );
        }
        let timesteps: Vec<f32> = file["timestep"].to_vec1().unwrap();
        let sigmas = spec.schedule.sigmas();
        for (i, &t) in timesteps.iter().enumerate() {
            let t = t as usize;
            let noisy = file["noisy"].narrow(0, i, 1).unwrap();
            let x = (noisy / ours[t].sqrt()).unwrap();
            let want = file["denoised"].narrow(0, i, 1).unwrap();
            let scale = largest_difference(&want, &want.zeros_like().unwrap());
            // σ from the host and σ already on the device: the two paths.
            let sigma = vec![sigmas[t] as f32];
            let column = Tensor::from_vec(sigma.clone(), (1, 1), &Device::Cpu).unwrap();
            for levels in [
                model.levels(sigma, &Device::Cpu).unwrap(),
                model.levels(Sigmas::Device(column), &Device::Cpu).unwrap(),
            ] {
                let d = model.denoise(&x, &levels).unwrap();
                let err = largest_difference(&d, &want);
                assert!(
                    err <= 1e-4 * scale,
                    "{name} ({:?}) at t = {t}: largest difference {err} on clean samples up to {scale}",
                    spec.schedule.prediction
                );
            }
        }
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

/// Runs `disback teacher DIR [--check REF]` in `cwd`.
fn teacher_command(dir: &Path, check: Option<&Path>, cwd: &Path) -> std::process::Output {
    let mut args = vec!["teacher".to_string(), dir.display().to_string()];
    if let Some(reference) = check {
        args.extend(["--check".into(), reference.display().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    common::disback(&args, cwd)
}

/// google/ddpm-* models write `"attention_head_dim": null`: one head over
/// each attention block's channels. `disback teacher` says so, and its
/// check passes against diffusers' outputs; a reference nudged by 1% fails
/// it with exit status 1.
#[test]
fn teacher_check_proves_a_null_head_model_and_catches_a_nudge() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = fixture("null-heads");
    let reference = dir.join("expected.safetensors");
    let o = teacher_command(&dir, Some(&reference), tmp.path());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", common::stderr(&o));
    for needle in [
        "down_blocks.1   AttnDownBlock2D",
        "1 head × 16",
        "predicts    the noise ε",
        "linear 0.0001 … 0.02, 1000 timesteps",
        "clip_sample true, thresholding false: the scheduler's sampler settings, not applied",
        "36543",
        "check       passed",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let mut tensors = candle_core::safetensors::load(&reference, &Device::Cpu).unwrap();
    let nudged = (&tensors["output"] * 1.01).unwrap();
    tensors.insert("output".into(), nudged);
    let nudged = tmp.path().join("nudged.safetensors");
    candle_core::safetensors::save(&tensors, &nudged).unwrap();
    let o = teacher_command(&dir, Some(&nudged), tmp.path());
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--check failed") && err.contains("nudged.safetensors"),
        "{err}"
    );
}

/// A NaN past the first element, in the reference or in the network's
/// output, fails the check with exit status 1 saying which is not finite.
#[test]
fn teacher_check_refuses_nan_in_the_middle() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy("null-heads", tmp.path());
    let reference = tmp.path().join("nan.safetensors");
    let mut tensors =
        candle_core::safetensors::load(fixture("null-heads").join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    let output = &tensors["output"];
    let mut values: Vec<f32> = output.flatten_all().unwrap().to_vec1().unwrap();
    let middle = values.len() / 2;
    values[middle] = f32::NAN;
    let nan = Tensor::from_vec(values, output.dims(), &Device::Cpu).unwrap();
    tensors.insert("output".into(), nan);
    candle_core::safetensors::save(&tensors, &reference).unwrap();
    let o = teacher_command(&dir, Some(&reference), tmp.path());
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nan.safetensors: `output`")
            && err.contains(&format!("not finite (the first, NaN, at flat index {middle})")),
        "{err}"
    );
    // The network's output, from an infinite pixel in the middle of the
    // sample (NaN weights are refused when loaded).
    let mut tensors =
        candle_core::safetensors::load(fixture("null-heads").join("expected.safetensors"), &Device::Cpu)
            .unwrap();
    let sample = &tensors["sample"];
    let mut values: Vec<f32> = sample.flatten_all().unwrap().to_vec1().unwrap();
    values[middle] = f32::INFINITY;
    let infinite = Tensor::from_vec(values, sample.dims(), &Device::Cpu).unwrap();
    tensors.insert("sample".into(), infinite);
    candle_core::safetensors::save(&tensors, &reference).unwrap();
    let o = teacher_command(&dir, Some(&reference), tmp.path());
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--check failed: the network's output") && err.contains("not finite"),
        "{err}"
    );
}

/// A weights file cut short is refused, naming it, by the command and by
/// the loader (nothing is half-loaded).
#[test]
fn a_truncated_weights_file_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy("null-heads", tmp.path());
    let weights = dir.join("unet/diffusion_pytorch_model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let o = teacher_command(&dir, None, tmp.path());
    let err = common::stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("diffusion_pytorch_model.safetensors"), "{err}");
    refused(&dir, &["cannot read", "diffusion_pytorch_model.safetensors"]);
}

/// Every setting the lab does not build is refused with the file, the key
/// and the value, rather than built as something else.
#[test]
fn settings_the_lab_does_not_build_are_refused_by_key() {
    let cases: [(&str, &str, &str, &[&str]); 14] = [
        (
            "plain-eps",
            "\"sample_size\": 8",
            "\"sample_size\": 9",
            &["sample_size", "9 is not divisible by 2^"],
        ),
        (
            "plain-eps",
            "\"time_embedding_type\": \"positional\"",
            "\"time_embedding_type\": \"fourier\"",
            &["time_embedding_type", "fourier"],
        ),
        (
            "plain-eps",
            "\"time_embedding_type\": \"positional\"",
            "\"time_embedding_type\": \"learned\"",
            &["time_embedding_type", "learned"],
        ),
        (
            "plain-eps",
            "\"act_fn\": \"silu\"",
            "\"act_fn\": \"tanh\"",
            &["act_fn", "tanh"],
        ),
        (
            "plain-eps",
            "\"class_embed_type\": null",
            "\"class_embed_type\": \"timestep\"",
            &["class_embed_type", "class-conditional"],
        ),
        (
            "plain-eps",
            "\"resnet_time_scale_shift\": \"default\"",
            "\"resnet_time_scale_shift\": \"spatial\"",
            &["resnet_time_scale_shift", "spatial"],
        ),
        (
            "attention-v",
            "\"downsample_type\": \"conv\"",
            "\"downsample_type\": \"blur\"",
            &["downsample_type", "blur"],
        ),
        (
            "attention-v",
            "\"upsample_type\": \"conv\"",
            "\"upsample_type\": \"fir\"",
            &["upsample_type", "fir"],
        ),
        (
            "plain-eps",
            "\"norm_num_groups\": 4",
            "\"norm_num_groups\": null",
            &["norm_num_groups", "null"],
        ),
        (
            "plain-eps",
            "\"norm_num_groups\": 4",
            "\"norm_num_groups\": 3",
            &["norm_num_groups", "3 does not divide"],
        ),
        (
            "null-heads",
            "\"attention_head_dim\": null",
            "\"attention_head_dim\": 6",
            &[
                "attention_head_dim",
                "6 does not divide the 16 channels of down_blocks.1",
            ],
        ),
        (
            "plain-eps",
            "\"sample_size\": 8",
            "\"sample_size\": null",
            &["sample_size", "the image size is needed"],
        ),
        (
            "plain-eps",
            "\"layers_per_block\": 1",
            "\"layers_per_block\": 0",
            &["layers_per_block"],
        ),
        (
            "odd-keys",
            "\"attn_norm_num_groups\": 2",
            "\"attn_norm_num_groups\": 3",
            &["attn_norm_num_groups", "3 does not divide"],
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (i, (name, from, to, needles)) in cases.iter().enumerate() {
        let dir = copy(name, &tmp.path().join(i.to_string()));
        edit_config(&dir, from, to);
        let mut needles = needles.to_vec();
        needles.push("config.json");
        refused(&dir, &needles);
    }
}

/// Replaces `from` by `to` in a copied fixture's scheduler config.
fn edit_scheduler(dir: &Path, from: &str, to: &str) {
    let file = dir.join("scheduler/scheduler_config.json");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(from), "{from} not in the fixture's scheduler");
    std::fs::write(&file, text.replacen(from, to, 1)).unwrap();
}

/// A scheduler of another kind of model (flow matching, variance
/// exploding, EDM's own σ), or a VP one set for another model, is refused
/// with the file, the key and the value, rather than read as DDPM's
/// linear ε schedule; a VP scheduler used only for sampling reads the
/// same schedule.
#[test]
fn schedulers_of_other_models_are_refused_by_name() {
    let class = "\"_class_name\": \"DDPMScheduler\"";
    let cases: [(&str, &str, &[&str]); 9] = [
        (
            class,
            "\"_class_name\": \"FlowMatchEulerDiscreteScheduler\"",
            &["_class_name", "FlowMatchEulerDiscreteScheduler"],
        ),
        (
            class,
            "\"_class_name\": \"ScoreSdeVeScheduler\"",
            &["_class_name", "ScoreSdeVeScheduler"],
        ),
        (
            class,
            "\"_class_name\": \"EDMEulerScheduler\"",
            &["_class_name", "EDMEulerScheduler"],
        ),
        (
            class,
            "\"_comment\": \"DDPMScheduler\"",
            &["_class_name", "missing"],
        ),
        (
            "\"beta_schedule\": \"linear\"",
            "\"beta_schedule\": \"sigmoid\"",
            &["beta_schedule", "sigmoid"],
        ),
        (
            "\"prediction_type\": \"epsilon\"",
            "\"prediction_type\": \"flow_prediction\"",
            &["prediction_type", "flow_prediction"],
        ),
        (
            "\"prediction_type\": \"epsilon\"",
            "\"prediction_type\": \"epsilon\", \"timestep_type\": \"continuous\"",
            &["timestep_type", "continuous"],
        ),
        (
            class,
            "\"_class_name\": \"DPMSolverMultistepScheduler\", \"use_flow_sigmas\": true",
            &["use_flow_sigmas", "flow-matching"],
        ),
        // A zero-SNR schedule has an infinite σ.
        (
            "\"rescale_betas_zero_snr\": false",
            "\"rescale_betas_zero_snr\": true",
            &["rescale_betas_zero_snr"],
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (i, (from, to, needles)) in cases.iter().enumerate() {
        let dir = copy("plain-eps", &tmp.path().join(i.to_string()));
        edit_scheduler(&dir, from, to);
        let mut needles = needles.to_vec();
        needles.push("scheduler_config.json");
        refused(&dir, &needles);
    }
    let dir = copy("plain-eps", &tmp.path().join("euler"));
    edit_scheduler(&dir, class, "\"_class_name\": \"EulerDiscreteScheduler\"");
    let euler = DiffusersSpec::read(&dir).unwrap().schedule;
    assert_eq!(
        euler,
        DiffusersSpec::read(&fixture("plain-eps")).unwrap().schedule
    );
}

/// A run made before null heads were read right stored
/// `attention_head_dim = 8` in its config: resumed while the teacher's
/// folder is there, the stored description is checked against the folder
/// and refused, naming the key; without the folder it is used as stored.
#[test]
fn a_stored_description_that_differs_from_the_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = copy("null-heads", tmp.path());
    let mut stored = DiffusersSpec::read(&dir).unwrap();
    stored.unet.attention_head_dim = Some(8);
    let mut config = disback::config::Config::default_with(&[]).unwrap();
    config.teacher.pretrained = Some(dir.clone());
    config.teacher.diffusers = Some(stored.clone());
    let e = format!("{:#}", disback::data::resolve(config.clone()).unwrap_err());
    assert!(
        e.contains("unet.attention_head_dim") && e.contains("null-heads"),
        "{e}"
    );
    // The same description passes; with the folder gone, the stored one is used.
    let mut same = config.clone();
    same.teacher.diffusers = Some(DiffusersSpec::read(&dir).unwrap());
    disback::data::resolve(same).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    let resolved = disback::data::resolve(config).unwrap();
    assert_eq!(resolved.teacher.diffusers, Some(stored));
}
