//! `disback export`: a generator distilled from a `diffusers` teacher
//! becomes a `diffusers` folder that diffusers loads strictly and whose
//! `sample.py` draws disback's own images; the project's own generators
//! become weights and a PyTorch `sample.py` that draws its samples. The
//! Rust half always runs; the Python half is skipped, saying so, where no
//! `python3` with the packages is found.

mod common;

use candle_core::{Device, Tensor};
use disback::config::{Config, DiffusersSpec, GeneratorSpec, NetSpec};
use disback::engine::Session;
use disback::export::{Architecture, CHECK_FILE, OneStep, export};
use disback::model::{Generator, VpTable, load_diffusers_weights};
use disback::rng::host_rng;
use disback::rundir::RunDir;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/diffusers")
        .join(name)
}

/// A few iterations of every stage from a fixture teacher, no data.
fn pretrained_config(teacher: &Path) -> Config {
    let text = format!(
        r#"
name = "export"
seed = 5
device = "cpu"
[teacher]
pretrained = {teacher:?}
[generator]
sigma_g = 2.5
[record]
iterations = 8
node_every = 4
batch = 16
[distill]
batch = 16
[schedule]
steps = [4, 12]
[log]
every = 4
final_samples = 16
[metrics]
every = 8
samples = 16
"#,
        teacher = teacher.display().to_string()
    );
    Config::parse(&text, &[]).unwrap()
}

/// Runs `config` to its end in `dir`.
fn finish(config: Config, dir: &Path) {
    let mut session = Session::start(config, RunDir::create(dir, false).unwrap()).unwrap();
    while !session.is_done() {
        session.step().unwrap();
    }
}

/// max |a − b| and max |b|.
/// (in f32: the fixtures store some weights in f16).
fn difference(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let f32 = |t: &Tensor| t.to_dtype(candle_core::DType::F32).unwrap();
    let (a, b) = (f32(a), f32(b));
    let max = |t: Tensor| t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    (max((&a - &b).unwrap()), max(b))
}

fn tensors(file: &Path) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(file, &Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Names and shapes of a weights file.
fn layout(file: &Path) -> BTreeMap<String, Vec<usize>> {
    tensors(file)
        .into_iter()
        .map(|(n, t)| (n, t.dims().to_vec()))
        .collect()
}

/// Two layouts are the same, else the names that differ are listed.
fn assert_same_layout(ours: &BTreeMap<String, Vec<usize>>, theirs: &BTreeMap<String, Vec<usize>>) {
    let names: std::collections::BTreeSet<&String> = ours.keys().chain(theirs.keys()).collect();
    let differ: Vec<String> = names
        .into_iter()
        .filter(|n| ours.get(*n) != theirs.get(*n))
        .map(|n| format!("{n}: {:?} against diffusers' {:?}", ours.get(n), theirs.get(n)))
        .collect();
    assert!(
        differ.is_empty(),
        "{} tensors differ: {}",
        differ.len(),
        differ.join("; ")
    );
}

/// `python3` when it imports every module, else None with the reason
/// printed (the test then checks the Rust half only).
fn python_with(modules: &str, test: &str) -> Option<&'static str> {
    let found = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("{test}: SKIPPED the Python half: no python3 that imports {modules}");
    }
    found.then_some("python3")
}

fn python(args: &[&str], cwd: &Path) -> String {
    let o = Command::new("python3")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "python3 {args:?}: {out}{err}");
    out.into_owned()
}

/// The export's `sample.py`, on its own check latents, draws the images
/// the check file holds, to 1e-4 of the largest value.
fn sample_py_matches_check(out: &Path, key: &str) {
    let drawn = out.join("drawn.safetensors");
    let (script, latents) = (out.join("sample.py"), out.join(CHECK_FILE));
    python(
        &[
            script.to_str().unwrap(),
            "--latents",
            latents.to_str().unwrap(),
            "--out",
            drawn.to_str().unwrap(),
        ],
        out,
    );
    let check = tensors(&latents);
    let (err, scale) = difference(&tensors(&drawn)[key], &check[key]);
    assert!(
        err <= 1e-4 * scale,
        "sample.py differs by {err} on values up to {scale}"
    );
    assert!(scale > 0.0, "the check holds samples");
}

/// A ε-prediction teacher, distilled and exported: a folder diffusers
/// reads, with the teacher's architecture and the generator's weights,
/// that gives disback's images through its own loader and through
/// PyTorch + diffusers.
#[test]
fn a_generator_from_a_diffusers_teacher_exports_as_a_diffusers_folder() {
    exports_as_diffusers("plain-eps");
}

/// The same for a v-prediction teacher with attention and scale-shift
/// time conditioning (another way from prediction to image).
#[test]
fn a_v_prediction_teacher_exports_with_its_own_formula() {
    exports_as_diffusers("attention-v");
}

/// The same for a sample-prediction teacher with no middle block and
/// unpadded downsampling, and for one with one attention head over each
/// block (`attention_head_dim: null`).
#[test]
fn sample_prediction_and_null_head_teachers_export_too() {
    exports_as_diffusers("deep-sample");
    exports_as_diffusers("null-heads");
}

fn exports_as_diffusers(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let (run, out) = (tmp.path().join("run"), tmp.path().join("export"));
    let teacher = fixture(name);
    let config = pretrained_config(&teacher);
    finish(config, &run);
    let done = export(&run, None, &out).unwrap();
    assert_eq!(done.generator, run.join("generator/final.safetensors"));
    for file in [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
        "scheduler/scheduler_config.json",
        "one_step.json",
        "sample.py",
        CHECK_FILE,
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // The teacher's architecture and schedule, read back by the project's
    // own reader from the files the export wrote.
    let original = DiffusersSpec::read(&teacher).unwrap();
    let exported = DiffusersSpec::read(&out).unwrap();
    assert_eq!(exported, original);
    // Diffusers' names and shapes, tensor for tensor; the generator's
    // weights, not the teacher's (training moved them).
    let weights = out.join("unet/diffusion_pytorch_model.safetensors");
    let teacher_weights = teacher.join("unet/diffusion_pytorch_model.safetensors");
    assert_same_layout(&layout(&weights), &layout(&teacher_weights));
    let (ours, theirs) = (tensors(&weights), tensors(&teacher_weights));
    let moved = ours
        .iter()
        .map(|(n, t)| difference(t, &theirs[n]).0)
        .fold(0f32, f32::max);
    assert!(moved > 0.0, "the export holds the teacher's weights");

    // one_step.json: σ_g of the run's generator, the timestep nearest it.
    let run_config = disback::data::resolve(Config::load_run(&run.join("config.toml")).unwrap()).unwrap();
    let GeneratorSpec::Denoiser {
        sigma_g, sigma_data, ..
    } = run_config.generator_spec()
    else {
        panic!("a teacher-initialised generator")
    };
    let step: OneStep = disback::files::read_json(&out.join("one_step.json")).unwrap();
    assert_eq!(step.sigma_g, sigma_g);
    assert_eq!(step.timestep, VpTable::new(&original.schedule).timestep(sigma_g));
    assert!(step.timestep > 0 && step.timestep < original.schedule.train_timesteps);

    // The names round-trip through the project's diffusers loader: the
    // folder's network at one_step.json's σ_g draws the check's images.
    let spec = GeneratorSpec::Denoiser {
        net: NetSpec::Diffusers(Box::new(exported)),
        sigma_data,
        sigma_g: step.sigma_g,
        from_teacher: true,
    };
    let reloaded = Generator::new(&spec, &Device::Cpu, &mut host_rng(9, 9)).unwrap();
    load_diffusers_weights(reloaded.params(), &weights).unwrap();
    let check = tensors(&out.join(CHECK_FILE));
    let again = reloaded.forward(&check["z"]).unwrap();
    let (err, scale) = difference(&again, &check["images"]);
    assert!(
        err <= 1e-6 * scale,
        "reloaded images differ by {err} (values up to {scale})"
    );
    assert_eq!(check["images"].dims(), check["z"].dims());

    let Some(_) = python_with("torch, diffusers, safetensors", name) else {
        return;
    };
    sample_py_matches_check(&out, "images");
    // A grid too, of the 16 images in 8 columns.
    python(&["sample.py", "--latents", CHECK_FILE, "--out", "grid.png"], &out);
    let grid = image::open(out.join("grid.png")).unwrap();
    let (height, width) = (check["z"].dims()[2] as u32, check["z"].dims()[3] as u32);
    assert_eq!(check["z"].dims()[0], 16);
    assert_eq!((grid.width(), grid.height()), (8 * width, 2 * height));
    // diffusers loads the folder strictly: nothing missing, unexpected or
    // misshapen.
    let report = python(
        &[
            "-c",
            "import json, sys\n\
             from diffusers import UNet2DModel\n\
             _, info = UNet2DModel.from_pretrained(sys.argv[1], output_loading_info=True)\n\
             print(json.dumps({k: [str(x) for x in v] for k, v in info.items()}))",
            out.join("unet").to_str().unwrap(),
        ],
        &out,
    );
    let info: BTreeMap<String, Vec<String>> = serde_json::from_str(report.lines().last().unwrap()).unwrap();
    assert!(
        info.contains_key("missing_keys") && info.contains_key("unexpected_keys"),
        "{info:?}"
    );
    assert!(info.values().all(Vec::is_empty), "{info:?}");
}

#[test]
fn exports_are_refused_by_name_when_there_is_nothing_to_export() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("unfinished");
    std::fs::create_dir_all(&run).unwrap();
    let config = common::tiny_config(&tmp.path().join("teachers"));
    disback::files::write_toml(&run.join("config.toml"), &config.to_toml().unwrap()).unwrap();
    let out = tmp.path().join("export");
    let e = format!("{:#}", export(&run, None, &out).unwrap_err());
    assert!(
        e.contains("has no generator yet") && e.contains("generator/final.safetensors"),
        "{e}"
    );
    let missing = run.join("generator/saved-7.safetensors");
    let e = format!("{:#}", export(&run, Some(missing.as_path()), &out).unwrap_err());
    assert!(e.contains("saved-7.safetensors: no such generator file"), "{e}");
    assert!(!out.exists());
    let e = format!(
        "{:#}",
        export(&tmp.path().join("nowhere"), None, &out).unwrap_err()
    );
    assert!(e.contains("not a run directory"), "{e}");
}

/// The default demo's generator (the ResNet-MLP denoiser at σ_g) and the
/// paper's random MLP generator: weights in PyTorch's layouts under the
/// network's own names, `generator.json`, and a `sample.py` that rebuilds
/// the network in PyTorch and draws the check's points.
#[test]
fn the_projects_own_generators_export_for_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("teachers");
    for (arm, sets) in [
        ("denoiser", vec![]),
        ("mlp", vec!["generator.init=random".to_string()]),
    ] {
        let text = common::tiny_config(&cache).to_toml().unwrap();
        let config = Config::parse(&text, &sets).unwrap();
        let run = tmp.path().join(arm);
        finish(config.clone(), &run);
        let out = tmp.path().join(format!("{arm}-export"));
        export(&run, None, &out).unwrap();
        for file in ["generator.safetensors", "generator.json", "sample.py", CHECK_FILE] {
            assert!(out.join(file).is_file(), "{arm}: {file}");
        }
        let architecture: Architecture = disback::files::read_json(&out.join("generator.json")).unwrap();
        let config = disback::data::resolve(config).unwrap();
        assert_eq!(architecture, Architecture::of(&config.generator_spec()).unwrap());
        let expected = match arm {
            "denoiser" => matches!(architecture, Architecture::MlpDenoiser { .. }),
            _ => matches!(architecture, Architecture::MlpGenerator(_)),
        };
        assert!(expected, "{arm}: {architecture:?}");
        // Every parameter, in PyTorch's layout: linear weights (out, in),
        // biases plain vectors.
        let generator = Generator::new(&config.generator_spec(), &Device::Cpu, &mut host_rng(0, 0)).unwrap();
        let exported = layout(&out.join("generator.safetensors"));
        assert_eq!(exported.len(), generator.params().len(), "{arm}");
        for (name, var) in generator.params().iter() {
            let dims = var.dims();
            let want = match (name.ends_with(".bias"), dims) {
                (true, _) => vec![var.elem_count()],
                (false, [input, output]) => vec![*output, *input],
                (false, other) => other.to_vec(),
            };
            assert_eq!(exported[name], want, "{arm}: {name}");
        }
        assert_eq!(tensors(&out.join(CHECK_FILE))["samples"].dims(), [16, 2]);
        if python_with("torch, safetensors", arm).is_some() {
            sample_py_matches_check(&out, "samples");
        }
    }
}

/// The image U-Net's generator: its PyTorch rebuild draws the check's
/// images.
#[test]
fn the_unet_generator_exports_for_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let config = common::tiny_digits_config(&tmp.path().join("teachers"));
    let run = tmp.path().join("run");
    finish(config, &run);
    let out = tmp.path().join("export");
    let done = export(&run, None, &out).unwrap();
    assert!(done.kind.contains("U-Net"), "{}", done.kind);
    let architecture: Architecture = disback::files::read_json(&out.join("generator.json")).unwrap();
    assert!(
        matches!(architecture, Architecture::UnetDenoiser { image: [1, 8, 8], .. }),
        "{architecture:?}"
    );
    assert_eq!(tensors(&out.join(CHECK_FILE))["images"].dims(), [16, 1, 8, 8]);
    if python_with("torch, safetensors", "unet").is_some() {
        sample_py_matches_check(&out, "images");
    }
}

/// What an export writes for any teacher the project reads: the config
/// and scheduler files read back as the same architecture and schedule,
/// for every fixture (activations, resampling blocks, null heads, odd
/// keys, every prediction type and β schedule).
#[test]
fn every_fixtures_description_round_trips_through_the_exported_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut seen = 0;
    for entry in std::fs::read_dir(fixture("")).unwrap() {
        let teacher = entry.unwrap().path();
        if !teacher.join("unet").is_dir() {
            continue;
        }
        let spec = DiffusersSpec::read(&teacher).unwrap();
        let out = tmp.path().join(teacher.file_name().unwrap());
        let write = |file: &str, value: &serde_json::Value| {
            let path = out.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, serde_json::to_string_pretty(value).unwrap()).unwrap();
        };
        write("unet/config.json", &disback::export::unet_config(&spec.unet));
        write(
            "scheduler/scheduler_config.json",
            &disback::export::scheduler_config(&spec.schedule),
        );
        std::fs::copy(
            teacher.join("unet/diffusion_pytorch_model.safetensors"),
            out.join("unet/diffusion_pytorch_model.safetensors"),
        )
        .unwrap();
        let again = DiffusersSpec::read(&out).unwrap_or_else(|e| panic!("{}: {e:#}", out.display()));
        assert_eq!(again, spec, "{}", teacher.display());
        seen += 1;
    }
    assert!(seen >= 3, "{seen} fixtures");
}
