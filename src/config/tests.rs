use super::*;
use std::path::Path;

fn err(text: &str, overrides: &[&str]) -> String {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    format!(
        "{:#}",
        Config::parse(text, &overrides).expect_err("should be rejected")
    )
}

#[test]
fn an_empty_file_is_the_default_demo() {
    let c = Config::parse("", &[]).unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.method, Method::Disback);
    assert_eq!(c.record.nodes(), 4);
    assert_eq!(c.schedule.steps.len(), 4);
}

#[test]
fn shipped_configs_are_valid() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/configs")).unwrap() {
        let path = entry.unwrap().path();
        Config::load(&path, &[]).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
    }
}

#[test]
fn the_shipped_demo_config_is_the_built_in_default() {
    // `cargo run --release` runs the built-in default; configs/gmm2d.toml
    // must describe exactly that run.
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/gmm2d.toml");
    let default = Config {
        name: Some("gmm2d".into()),
        ..Config::default()
    };
    assert_eq!(Config::load(&path, &[]).unwrap(), default);
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let e = err("[teacher]\nstepz = 3\n", &[]);
    assert!(e.contains("stepz"), "{e}");
    let e = err("colour = 1\n", &[]);
    assert!(e.contains("colour"), "{e}");
    let e = err(
        "[data]\nkind = \"gmm\"\n[[data.components]]\nmean = [0.0, 0.0]\nstd = 1.0\nsize = 2\n",
        &[],
    );
    assert!(e.contains("size"), "{e}");
}

#[test]
fn bad_values_name_the_key_and_the_reason() {
    let gmm = |std: &str, weight: &str| {
        format!(
            "[data]\nkind = \"gmm\"\n[[data.components]]\nmean = [0.0, 0.0]\nstd = {std}\nweight = {weight}\n"
        )
    };
    let e = err(&gmm("-0.1", "1.0"), &[]);
    assert!(
        e.contains("data.components[0].std") && e.contains("positive"),
        "{e}"
    );
    let e = err(&gmm("0.1", "0.0"), &[]);
    assert!(e.contains("data.components[0].weight"), "{e}");
    let e = err("[data]\nkind = \"gmm\"\ncomponents = []\n", &[]);
    assert!(e.contains("data.components") && e.contains("at least one"), "{e}");

    let e = err("[record]\niterations = 20\nnode_every = 50\n", &[]);
    assert!(e.contains("zero nodes"), "{e}");
    let e = err("[record]\nnode_every = 0\n", &[]);
    assert!(e.contains("record.node_every"), "{e}");
    let e = err("[record]\nnode_every = 30\n", &[]);
    assert!(e.contains("must divide"), "{e}");
    let e = err("[generator]\nlr = 0.0\n", &[]);
    assert!(e.contains("generator.lr"), "{e}");
    let e = err("[distill]\nfake_lr = -1e-3\n", &[]);
    assert!(e.contains("distill.fake_lr"), "{e}");
    let e = err("device = \"tpu\"\n", &[]);
    assert!(e.contains("tpu") && e.contains("cuda:N"), "{e}");
    let e = err("[diffusion]\nsigma_min = 100.0\n", &[]);
    assert!(e.contains("diffusion.sigma_min"), "{e}");
}

#[test]
fn a_schedule_must_end_on_the_teacher() {
    // Three entries for four targets: it would stop one node short.
    let e = err("[schedule]\nsteps = [100, 100, 100]\n", &[]);
    assert!(
        e.contains("schedule.steps") && e.contains("does not end on the teacher"),
        "{e}"
    );
    let e = err(
        "method = \"diff-instruct\"\n[schedule]\nsteps = [100, 100]\n",
        &[],
    );
    assert!(e.contains("one target"), "{e}");
    let e = err("[schedule]\nsteps = [100, 0, 100, 100]\n", &[]);
    assert!(e.contains("at least one generator step"), "{e}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = err("[generator]\nlr = -1.0\nwidth = 0\n", &[]);
    assert!(e.contains("generator.lr") && e.contains("generator.width"), "{e}");
}

#[test]
fn overrides_set_any_field() {
    let c = Config::parse(
        "",
        &[
            "teacher.lr=1e-3".into(),
            "schedule.steps=[1, 2, 3, 4]".into(),
            "device=cpu".into(),
            "seed=7".into(),
            "method=diff-instruct".into(),
            "schedule.steps=[9]".into(),
        ],
    )
    .unwrap();
    assert_eq!(c.teacher.lr, 1e-3);
    assert_eq!(c.schedule.steps, vec![9], "later overrides win");
    assert_eq!(c.device, DeviceChoice::Cpu);
    assert_eq!(c.seed, 7);
    assert_eq!(c.method, Method::DiffInstruct);

    let e = err("", &["teacher.nope=3"]);
    assert!(e.contains("nope"), "{e}");
    let e = err("", &["teacher"]);
    assert!(e.contains("section.key=value"), "{e}");
    let e = err("", &["seed.x=1"]);
    assert!(e.contains("seed"), "{e}");
    let e = err("seed = 1\n", &["seed.x=1"]);
    assert!(e.contains("seed is not a section"), "{e}");
}

#[test]
fn devices_parse() {
    assert_eq!("auto".parse::<DeviceChoice>(), Ok(DeviceChoice::Auto));
    assert_eq!("cuda:2".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(2)));
    assert_eq!("cuda".parse::<DeviceChoice>(), Ok(DeviceChoice::Cuda(0)));
    assert!("cuda:x".parse::<DeviceChoice>().is_err());
}

#[test]
fn every_problem_is_reported_at_once_with_its_key() {
    let text = "[teacher]\nbatch = \"x\"\nstepz = 3\n[distill]\nlr = -1\nbatch = 0\n";
    let e = err(text, &[]);
    for key in ["teacher.batch", "teacher.stepz", "distill.lr", "distill.batch"] {
        assert!(e.contains(key), "{key} missing from:\n{e}");
    }
    assert_eq!(e.lines().count(), 4, "{e}");
}

#[test]
fn a_bad_override_is_blamed_on_the_override_not_the_file() {
    let e = err("[teacher]\nsteps = 0\n", &["teacher.batch=x", "seed=1"]);
    assert!(
        e.contains("teacher.batch") && e.contains("(from --set teacher.batch=x)"),
        "{e}"
    );
    let steps = e
        .lines()
        .find(|l| l.starts_with("teacher.steps"))
        .expect("the file's problem too");
    assert!(!steps.contains("--set"), "{e}");
}

#[test]
fn image_configs_are_checked_against_the_unet() {
    let e = err("[data]\nkind = \"digits\"\n[unet]\ngroups = 7\n", &[]);
    assert!(e.contains("unet.groups") && e.contains("[32, 64]"), "{e}");
    let e = err(
        "[data]\nkind = \"shapes\"\nsize = 18\nchannels = 2\n[unet]\nmultipliers = [1, 2, 2]\n",
        &[],
    );
    assert!(e.contains("data.size: 18") && e.contains("divide by 4"), "{e}");
    assert!(e.contains("data.channels: 2 must be 1 (grey) or 3"), "{e}");
    let e = err("[data]\nkind = \"idx\"\n", &[]);
    assert!(e.contains("path"), "{e}");
    // Images use the U-Net.
    let c = Config::parse("[data]\nkind = \"digits\"\n", &[]).unwrap();
    assert!(matches!(c.net_spec(), NetSpec::UNet { .. }));
}

#[test]
fn edm_units_scale_with_the_data() {
    // σ_data = 0.5 is EDM's own scale; σ_g = σ_data is 0.5 in EDM units.
    assert_eq!(edm_to_data_units(80.0, 0.5), 80.0);
    assert_eq!(edm_to_data_units(0.5, 1.77), 1.77);
    assert!((edm_to_data_units(2.5, 2.0) - 10.0).abs() < 1e-12);
}

/// The `[record]` section alone (its node count need not match the
/// default schedule).
fn record(text: &str) -> RecordConfig {
    toml::from_str(text).unwrap()
}

#[test]
fn nodes_are_placed_by_the_rule_given() {
    // The default: geometric, 4 nodes from iteration 2 to 200 (factor
    // 100^(1/3) = 4.64: 2, 9.3, 43.1, 200).
    assert_eq!(record("").node_iterations(), [2, 9, 43, 200]);
    assert_eq!(record("").nodes(), 4);
    assert_eq!(
        record("placement = \"geometric\"\niterations = 1000\nnode_count = 3\nfirst_node = 10")
            .node_iterations(),
        [10, 100, 1000]
    );
    assert_eq!(
        record("placement = \"uniform\"").node_iterations(),
        [50, 100, 150, 200]
    );
    assert_eq!(
        record("placement = \"uniform\"\niterations = 10\nnode_count = 3").node_iterations(),
        [3, 7, 10]
    );
    // The old key keeps its meaning, whatever the placement.
    assert_eq!(
        record("iterations = 120\nnode_every = 40").node_iterations(),
        [40, 80, 120]
    );
    assert_eq!(
        record("nodes = [2, 6, 20, 200]").node_iterations(),
        [2, 6, 20, 200]
    );
    let overrides = [
        "record.nodes=[3, 200]".into(),
        "schedule.steps=[100, 1900]".into(),
    ];
    let listed = Config::parse("", &overrides).unwrap();
    assert_eq!(listed.record.node_iterations(), [3, 200]);
    assert_eq!(listed.record.nodes(), 2);
}

#[test]
fn badly_placed_nodes_are_refused_with_the_reason() {
    let e = err("[record]\nnodes = [2, 20, 6, 200]\n", &[]);
    assert!(
        e.contains("record.nodes") && e.contains("strictly increasing"),
        "{e}"
    );
    let e = err("[record]\nnodes = [2, 6, 6, 200]\n", &[]);
    assert!(
        e.contains("record.nodes") && e.contains("strictly increasing"),
        "{e}"
    );
    let e = err("[record]\nnodes = [0, 6, 20, 200]\n", &[]);
    assert!(e.contains("at least 1"), "{e}");
    let e = err("[record]\nnodes = [2, 6, 20, 300]\n", &[]);
    assert!(e.contains("record.nodes") && e.contains("never reached"), "{e}");
    let e = err("[record]\nnodes = [2, 6, 20, 100]\n", &[]);
    assert!(e.contains("never used"), "{e}");
    let e = err("[record]\nnodes = []\n", &[]);
    assert!(e.contains("zero nodes"), "{e}");
    let e = err("[record]\nnodes = [2, 6, 20, 200]\nnode_every = 50\n", &[]);
    assert!(e.contains("give one of them"), "{e}");
    // Geometric placement that would put two nodes at one iteration.
    let e = err("[record]\niterations = 6\nnode_count = 5\n", &[]);
    assert!(
        e.contains("record.node_count") && e.contains("fewer nodes"),
        "{e}"
    );
    let e = err("[record]\nfirst_node = 200\n", &[]);
    assert!(e.contains("record.first_node"), "{e}");
    let e = err("[record]\nnode_count = 0\n", &[]);
    assert!(e.contains("record.node_count"), "{e}");
    // Node count and schedule must agree, as before.
    let e = err("[record]\nnodes = [2, 200]\n", &[]);
    assert!(e.contains("schedule.steps") && e.contains("2 targets"), "{e}");
}

#[test]
fn images_default_to_every_core_and_cheap_measurements_unless_the_file_says() {
    let toy = Config::parse("", &[]).unwrap();
    assert_eq!(toy.threads, 1);
    assert_eq!((toy.metrics.samples, toy.metrics.sampler_steps), (1000, 18));
    assert!(toy.metrics.path_spread);

    let images = Config::parse("[data]\nkind = \"shapes\"\n", &[]).unwrap();
    assert_eq!(images.threads, 0, "0: every core");
    assert_eq!((toy.log.final_samples, images.log.final_samples), (10_000, 1000));
    assert_eq!((images.metrics.samples, images.metrics.sampler_steps), (64, 4));
    assert!(!images.metrics.path_spread);

    // What the file (or a --set) says is kept, on images too.
    let set = "threads = 1\n[data]\nkind = \"shapes\"\n[metrics]\nsamples = 300\npath_spread = true\n";
    let kept = Config::parse(set, &["metrics.sampler_steps=9".into()]).unwrap();
    assert_eq!(kept.threads, 1);
    assert_eq!((kept.metrics.samples, kept.metrics.sampler_steps), (300, 9));
    assert!(kept.metrics.path_spread);

    // A run's config.toml writes the image defaults out: it reads back the same.
    assert_eq!(Config::parse(&images.to_toml().unwrap(), &[]).unwrap(), images);
}

#[test]
fn measurement_sampler_steps_below_two_are_refused() {
    let e = err("[metrics]\nsampler_steps = 1\n", &[]);
    assert!(e.contains("metrics.sampler_steps"), "{e}");
}

#[test]
fn a_runs_own_config_gets_no_image_defaults_it_did_not_run_with() {
    // A run's config.toml from before the image defaults: it ran with the
    // plain ones, and a resumed run must keep them.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let text = "[data]\nkind = \"shapes\"\n";
    crate::files::write_toml(&path, text).unwrap();
    let resumed = Config::load_run(&path).unwrap();
    let fresh = Config::parse(text, &[]).unwrap();
    assert_eq!((fresh.threads, fresh.metrics.samples), (0, 64));
    let plain = Config::parse("", &[]).unwrap();
    assert_eq!(
        (
            resumed.threads,
            resumed.metrics.samples,
            resumed.metrics.sampler_steps
        ),
        (plain.threads, plain.metrics.samples, plain.metrics.sampler_steps)
    );
}

// diffusers' UNet2DModel config, as diffusers reads it.

/// Reads a `config.json` of `text`.
fn unet_of(text: &str) -> Result<DiffusersUNet> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    std::fs::write(&file, text).unwrap();
    diffusers::read_unet(&file)
}

/// Where null and absent differ, each is read as diffusers reads it.
#[test]
fn null_and_absent_mean_what_they_mean_to_diffusers() {
    let base = r#""sample_size": 32, "block_out_channels": [32, 64], "norm_num_groups": 8,
        "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
        "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]"#;
    let absent = unet_of(&format!("{{{base}}}")).unwrap();
    let null = unet_of(&format!(
        r#"{{{base}, "attention_head_dim": null, "mid_block_type": null, "flip_sin_to_cos": null,
            "downsample_type": null, "time_embedding_dim": null, "attn_norm_num_groups": null}}"#
    ))
    .unwrap();
    // Absent: 8-channel heads; null: one head over the block.
    assert_eq!(absent.attention_head_dim, Some(8));
    assert_eq!(null.attention_head_dim, None);
    let heads = |u: &DiffusersUNet| u.blocks().iter().filter_map(|b| b.heads).collect::<Vec<_>>();
    assert_eq!(heads(&absent), vec![(8, 8), (8, 8), (8, 8)]);
    assert_eq!(heads(&null), vec![(1, 64), (1, 64)]);
    // Absent: a middle block; null: none.
    assert!(absent.mid_block && absent.mid_attention);
    assert!(!null.mid_block && !null.mid_attention);
    // `flip_sin_to_cos`: absent is true, null false (Python's `if None`).
    assert!(absent.flip_sin_to_cos && !null.flip_sin_to_cos);
    // The same either way.
    assert_eq!(null.downsample, Resampler::Conv);
    assert_eq!(absent.time_embed_dim(), 128);
    assert_eq!(null.time_embed_dim(), 128);
    // `add_attention: null` is false too: a middle block, no attention.
    let quiet = unet_of(&format!(r#"{{{base}, "add_attention": null}}"#)).unwrap();
    assert!(quiet.mid_block && !quiet.mid_attention);
    // Any name but null builds diffusers' UNetMidBlock2D.
    let named = unet_of(&format!(
        r#"{{{base}, "mid_block_type": "UNetMidBlock2DCrossAttn"}}"#
    ))
    .unwrap();
    assert!(named.mid_block && named.mid_attention);
    // A key diffusers cannot take as None is refused, by name.
    let e = unet_of(&format!(r#"{{{base}, "norm_eps": null}}"#)).unwrap_err();
    assert!(format!("{e:#}").contains("norm_eps: null"), "{e:#}");
}

/// A config that leaves keys out gets diffusers' defaults for them,
/// the blocks and channels included.
#[test]
fn absent_keys_take_diffusers_defaults() {
    let u = unet_of(
        r#"{"sample_size": 16, "act_fn": "swish", "down_block_types": ["UNetResDownBlock2D",
        "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"]}"#,
    )
    .unwrap();
    assert_eq!(u.block_out_channels, vec![224, 448, 672, 896]);
    assert_eq!(u.down_attention, vec![false, true, true, true]);
    assert_eq!(u.up_attention, vec![true, true, true, false]);
    assert_eq!((u.layers_per_block, u.norm_num_groups, u.in_channels), (2, 32, 3));
    assert_eq!((u.norm_eps, u.freq_shift, u.downsample_padding), (1e-5, 0.0, 1));
    assert_eq!(u.act_fn, Activation::Silu);
    assert!(u.mid_block && u.mid_attention && u.flip_sin_to_cos && !u.scale_shift);
}

#[test]
fn a_mixture_in_more_dimensions_is_checked_field_by_field() {
    let c = Config::parse("", &["data.dim=48".into(), "data.off_plane_std=0.03".into()]).unwrap();
    let e = c.data.embedding().unwrap();
    assert_eq!((e.dim, e.off_plane_std, e.seed), (48, 0.03, 0));
    assert_eq!(
        c.net_spec(),
        NetSpec::Mlp(ScoreNetConfig {
            dim: 48,
            ..c.score_net.clone()
        })
    );
    // The plane is the default, and a 2-D config writes no new key.
    let plane = Config::default();
    assert_eq!(plane.data.embedding().unwrap().dim, 2);
    let text = plane.to_toml().unwrap();
    assert!(!text.contains("\ndim =") && !text.contains("off_plane"), "{text}");

    let e = err("[data]\ndim = 1\n", &[]);
    assert!(e.contains("data.dim") && e.contains('1'), "{e}");
    let e = err("[data]\ndim = 4\noff_plane_std = -0.5\n", &[]);
    assert!(e.contains("data.off_plane_std") && e.contains("-0.5"), "{e}");
    let e = err("[data]\ndim = 4\noff_plane_std = nan\n", &[]);
    assert!(e.contains("data.off_plane_std") && e.contains("NaN"), "{e}");
    let e = err("[data]\noff_plane_std = 0.1\n", &[]);
    assert!(
        e.contains("data.off_plane_std") && e.contains("data.dim > 2"),
        "{e}"
    );
    // The plane's seed means something only off the plane; a random
    // mixture's seed draws the mixture at any dim.
    let e = err("[data]\nseed = 3\n", &[]);
    assert!(e.contains("data.seed") && e.contains("data.dim = 2"), "{e}");
    Config::parse("[data]\nseed = 3\ndim = 3\n", &[]).unwrap();
    Config::parse("[data]\nkind = \"random\"\nseed = 3\n", &[]).unwrap();
    // Every mixture kind takes them; image kinds and the other toys refuse.
    Config::parse("[data]\nkind = \"random\"\nmodes = 3\ndim = 5\n", &[]).unwrap();
    let e = err("[data]\nkind = \"digits\"\ndim = 5\n", &[]);
    assert!(e.contains("dim"), "{e}");
    let e = err("", &["data.kind=\"digits\"", "data.dim=5"]);
    assert!(e.contains("dim"), "{e}");
    let e = err("[data]\nkind = \"checkerboard\"\ndim = 5\n", &[]);
    assert!(e.contains("dim"), "{e}");
    // The network follows the data; a differing hand-set value is refused.
    let e = err("[data]\ndim = 5\n[score_net]\ndim = 3\n", &[]);
    assert!(e.contains("score_net.dim") && e.contains('3'), "{e}");
}
