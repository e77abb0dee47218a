//! Models, the denoising loss and the sampler, against hand-computed and
//! exact values.

use candle_core::{Device, Tensor};
use disback::config::{Config, GeneratorConfig, GeneratorSpec, NetSpec, ScoreNetConfig};
use disback::data::{GaussianMixture, Point};
use disback::diffusion::{NoiseSchedule, denoising_loss, heun_sample};
use disback::metrics::ModeStats;
use disback::model::{Denoiser, Generator, Precond, loss_weight, points_to_tensor, tensor_to_points};
use disback::optim::Adam;
use disback::rng::{Draws, host_rng, normal_vec};

fn small_net() -> ScoreNetConfig {
    ScoreNetConfig {
        width: 32,
        blocks: 2,
        emb_dim: 8,
        dim: 2,
    }
}

fn small_generator() -> GeneratorSpec {
    let config = Config {
        generator: GeneratorConfig {
            width: 16,
            depth: 2,
            ..GeneratorConfig::default()
        },
        ..Config::default()
    };
    disback::data::resolve(config).unwrap().generator_spec()
}

fn data_tensor(n: usize, seed: u64) -> Tensor {
    let gmm = GaussianMixture::new(&GaussianMixture::ring_components(4, 2.0, 0.2));
    points_to_tensor(&gmm.sample(n, &mut host_rng(seed, 0)), &Device::Cpu).unwrap()
}

/// Σ |t|.
fn abs_sum(t: &Tensor) -> f32 {
    t.abs().unwrap().sum_all().unwrap().to_scalar().unwrap()
}

/// A few denoising updates of `model`.
fn train(model: &Denoiser, steps: usize) {
    let mut opt = Adam::new(model.params(), 1e-2).unwrap();
    let noise = NoiseSchedule::new(&Config::default().diffusion, model.sigma_data);
    let mut rng = host_rng(1, 1);
    for _ in 0..steps {
        let x0 = data_tensor(64, 2);
        let sigmas = noise.training(&mut rng, 64);
        let loss = denoising_loss(model, &x0, sigmas, &mut Draws::host(&mut rng)).unwrap();
        opt.step(&loss.backward().unwrap()).unwrap();
    }
}

#[test]
fn a_deep_copy_does_not_move_when_its_source_trains() {
    let model = Denoiser::new(&NetSpec::Mlp(small_net()), 1.4, &Device::Cpu, &mut host_rng(0, 0)).unwrap();
    let copy = model.deep_clone().unwrap();
    assert_eq!(copy.params().max_abs_diff(model.params()).unwrap(), 0.0);
    let before = copy.params().tensors();
    train(&model, 5);
    assert!(
        model.params().max_abs_diff(copy.params()).unwrap() > 1e-4,
        "the source trained"
    );
    for ((name, was), (_, now)) in before.iter().zip(copy.params().tensors()) {
        assert_eq!(abs_sum(&(was - &now).unwrap()), 0.0, "{name} of the copy moved");
    }

    let g = Generator::new(&small_generator(), &Device::Cpu, &mut host_rng(0, 0)).unwrap();
    let g_copy = g.deep_clone().unwrap();
    let mut opt = Adam::new(g.params(), 1e-2).unwrap();
    let loss = g
        .forward(&g.latents(32, &mut host_rng(0, 1)).unwrap())
        .unwrap()
        .sqr()
        .unwrap()
        .mean_all()
        .unwrap();
    opt.step(&loss.backward().unwrap()).unwrap();
    assert!(g.params().max_abs_diff(g_copy.params()).unwrap() > 0.0);
    let fresh = Generator::new(&small_generator(), &Device::Cpu, &mut host_rng(0, 0)).unwrap();
    assert_eq!(g_copy.params().max_abs_diff(fresh.params()).unwrap(), 0.0);
}

#[test]
fn every_parameter_receives_a_gradient() {
    // Adam refuses a parameter without gradient, so a step proves it; the
    // output layer starts at zero, so train twice to reach the inner ones.
    let model = Denoiser::new(&NetSpec::Mlp(small_net()), 1.0, &Device::Cpu, &mut host_rng(0, 0)).unwrap();
    let noise = NoiseSchedule::new(&Config::default().diffusion, 1.0);
    let mut rng = host_rng(0, 2);
    let x0 = data_tensor(32, 3);
    let sigmas = noise.training(&mut rng, 32);
    let loss = denoising_loss(&model, &x0, sigmas, &mut Draws::host(&mut rng)).unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in model.params().iter() {
        let g = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        assert_eq!(g.dims(), var.dims(), "{name}");
    }
    train(&model, 2);
    let sigmas = noise.training(&mut rng, 32);
    let loss = denoising_loss(&model, &x0, sigmas, &mut Draws::host(&mut rng)).unwrap();
    let grads = loss.backward().unwrap();
    for (name, var) in model.params().iter() {
        let norm = abs_sum(grads.get(var.as_tensor()).unwrap());
        assert!(
            norm > 0.0,
            "{name}: zero gradient once the output layer is non-zero"
        );
    }
}

#[test]
fn the_denoising_loss_matches_a_hand_computation() {
    // An untrained denoiser has a zero output layer: D(x; σ) = c_skip x.
    let sd = 1.3;
    let model = Denoiser::new(&NetSpec::Mlp(small_net()), sd, &Device::Cpu, &mut host_rng(0, 0)).unwrap();
    let x0: Vec<Point> = vec![[1.0, -2.0], [0.5, 0.25], [-1.5, 3.0]];
    let sigmas = vec![0.1f32, 1.0, 7.0];
    let mut rng = host_rng(9, 9);
    let loss: f32 = denoising_loss(
        &model,
        &points_to_tensor(&x0, &Device::Cpu).unwrap(),
        sigmas.clone(),
        &mut Draws::host(&mut rng),
    )
    .unwrap()
    .to_scalar()
    .unwrap();
    // The loss draws ε as 2 normals per point from the RNG: replay them.
    let eps = normal_vec(&mut host_rng(9, 9), 6);
    let mut expected = 0.0;
    for (i, (p, &s)) in x0.iter().zip(&sigmas).enumerate() {
        let s = s as f64;
        let c = Precond::new(s, sd);
        for d in 0..2 {
            let xt = p[d] as f64 + s * eps[2 * i + d] as f64;
            expected += loss_weight(s, sd) * (c.c_skip * xt - p[d] as f64).powi(2);
        }
    }
    expected /= 6.0;
    assert!(
        ((loss as f64) - expected).abs() < 1e-4 * expected,
        "{loss} vs {expected}"
    );
}

#[test]
fn heun_with_the_exact_denoiser_reproduces_the_mixture() {
    let gmm = GaussianMixture::new(&[
        disback::config::ComponentConfig {
            mean: [-2.0, 0.0],
            std: 0.2,
            weight: 1.0,
        },
        disback::config::ComponentConfig {
            mean: [1.5, 1.5],
            std: 0.4,
            weight: 2.0,
        },
        disback::config::ComponentConfig {
            mean: [1.0, -2.0],
            std: 0.1,
            weight: 1.0,
        },
    ]);
    let noise = NoiseSchedule::new(&Config::default().diffusion, gmm.std());
    let grid = noise.karras(40);
    let mut rng = host_rng(4, 4);
    let x: Vec<Point> = normal_vec(&mut rng, 2 * 8000)
        .chunks(2)
        .map(|e| [e[0] * grid[0] as f32, e[1] * grid[0] as f32])
        .collect();
    let exact = |x: &Tensor, sigma: f32| -> anyhow::Result<Tensor> {
        let denoised: Vec<Point> = tensor_to_points(x)?
            .iter()
            .map(|p| {
                let d = gmm.denoise([p[0] as f64, p[1] as f64], sigma as f64);
                [d[0] as f32, d[1] as f32]
            })
            .collect();
        points_to_tensor(&denoised, &Device::Cpu)
    };
    let start = points_to_tensor(&x, &Device::Cpu).unwrap();
    let samples = tensor_to_points(&heun_sample(exact, start, &grid).unwrap()).unwrap();
    let stats = ModeStats::new(&gmm, &disback::data::Samples::from_points(&samples));
    for (k, share) in stats.shares.iter().enumerate() {
        assert!((share - 1.0).abs() < 0.05, "mode {k}: share {share} ({stats:?})");
    }
    assert!(stats.precision > 0.97, "{stats:?}");
}

#[test]
fn model_files_round_trip_and_bad_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = Denoiser::new(&NetSpec::Mlp(small_net()), 1.0, &Device::Cpu, &mut host_rng(0, 0)).unwrap();
    train(&model, 3);
    let file = dir.path().join("m.safetensors");
    model.save(&file).unwrap();
    let other = Denoiser::new(&NetSpec::Mlp(small_net()), 1.0, &Device::Cpu, &mut host_rng(5, 5)).unwrap();
    other.load(&file).unwrap();
    assert_eq!(other.params().max_abs_diff(model.params()).unwrap(), 0.0);

    // Another shape: refused, and the model is left as it was.
    let wide = Denoiser::new(
        &NetSpec::Mlp(ScoreNetConfig {
            width: 48,
            ..small_net()
        }),
        1.0,
        &Device::Cpu,
        &mut host_rng(1, 1),
    )
    .unwrap();
    let wide_copy = wide.deep_clone().unwrap();
    let e = format!("{:#}", wide.load(&file).unwrap_err());
    assert!(e.contains("m.safetensors") && e.contains("width"), "{e}");
    assert_eq!(wide.params().max_abs_diff(wide_copy.params()).unwrap(), 0.0);

    // Another σ_data: refused with the fix.
    let e = format!(
        "{:#}",
        Denoiser::new(&NetSpec::Mlp(small_net()), 2.0, &Device::Cpu, &mut host_rng(0, 0))
            .unwrap()
            .load(&file)
            .unwrap_err()
    );
    assert!(e.contains("sigma_data"), "{e}");

    // A generator file where a score net is expected.
    let g = Generator::new(&small_generator(), &Device::Cpu, &mut host_rng(0, 0)).unwrap();
    let gfile = dir.path().join("g.safetensors");
    g.save(&gfile).unwrap();
    let e = format!("{:#}", model.load(&gfile).unwrap_err());
    assert!(e.contains("generator") && e.contains("score-net"), "{e}");

    // Truncated and missing files.
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
    let e = format!("{:#}", model.load(&file).unwrap_err());
    assert!(e.contains("m.safetensors") && e.contains("truncated"), "{e}");
    let e = format!(
        "{:#}",
        model.load(&dir.path().join("none.safetensors")).unwrap_err()
    );
    assert!(e.contains("none.safetensors"), "{e}");
}
