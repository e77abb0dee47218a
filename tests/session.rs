//! The steppable session on a tiny config: determinism, resuming, skipping,
//! the baseline, failures.

mod common;

use common::{run_checked, start, tiny_config};
use disback::config::{Config, Method};
use disback::engine::protocol::Event;
use disback::engine::{ModelKind, Session};
use disback::model::{Denoiser, Generator};
use disback::rng::host_rng;
use disback::rundir::{RunDir, Stage, read_metrics};

fn metrics_text(session: &Session) -> String {
    std::fs::read_to_string(session.run_dir().metrics()).unwrap()
}

#[test]
fn the_same_seed_gives_identical_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("teachers");
    let (a, _) = run_checked(start(tiny_config(&cache), &dir.path().join("a")));
    // The second run reuses the cached teacher: the distillation must not
    // care whether its teacher was trained now or loaded.
    let (b, seen) = run_checked(start(tiny_config(&cache), &dir.path().join("b")));
    assert!(
        seen.events
            .iter()
            .any(|e| matches!(e, Event::TeacherReady { source } if source.contains("cached"))),
        "the second run should load the cached teacher"
    );
    let (ma, mb) = (metrics_text(&a), metrics_text(&b));
    let distill = |m: &str| {
        m.lines()
            .filter(|l| !l.contains("\"pretrain\""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(ma.lines().count() > 10);
    assert_eq!(distill(&ma), distill(&mb));
    assert_eq!(
        std::fs::read(a.run_dir().samples()).unwrap(),
        std::fs::read(b.run_dir().samples()).unwrap()
    );
    // A different seed gives a different run.
    let mut other = tiny_config(&cache);
    other.seed = 4;
    let (c, _) = run_checked(start(other, &dir.path().join("c")));
    assert_ne!(distill(&ma), distill(&metrics_text(&c)));
}

#[test]
fn a_killed_run_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("teachers");
    let (whole, _) = run_checked(start(tiny_config(&cache), &dir.path().join("whole")));

    // Stop part-way through each stage (checkpoints every 25 iterations),
    // as a kill would: the session is dropped without any goodbye.
    for stop_at in [40, 70, 95] {
        let run_dir = dir.path().join(format!("killed-{stop_at}"));
        let mut s = start(tiny_config(&cache.join(format!("{stop_at}"))), &run_dir);
        while s.iteration() < stop_at {
            s.step().unwrap();
        }
        drop(s);
        let resumed = Session::resume(RunDir::open(&run_dir).unwrap()).unwrap();
        assert!(resumed.iteration() <= stop_at && resumed.iteration() > stop_at - 25);
        let (done, _) = run_checked(resumed);
        assert_eq!(
            metrics_text(&done),
            metrics_text(&whole),
            "resumed from {stop_at}"
        );
        assert_eq!(
            std::fs::read(done.run_dir().samples()).unwrap(),
            std::fs::read(whole.run_dir().samples()).unwrap()
        );
    }
}

#[test]
fn the_generator_moves_toward_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&dir.path().join("teachers"));
    config.teacher.steps = 400;
    config.schedule.steps = vec![50, 50, 50, 300];
    // s_φ learns at the generator loss's σ, and uniform Karras indices
    // crowd at the smallest σ, which these 32-wide nets cannot resolve in
    // 300 steps (energy 0.51 → 0.33 from index 20); from index 300 the
    // tiny run halves its energy. The defaults are judged at full size in
    // tests/distillation.rs.
    config.distill.karras_min_index = 300;
    let (s, _) = run_checked(start(config, &dir.path().join("run")));
    let records = read_metrics(&s.run_dir().metrics()).unwrap();
    let energy: Vec<f64> = records
        .iter()
        .filter_map(|r| r.eval.as_ref().map(|e| e.energy))
        .collect();
    assert!(
        energy.len() >= 3,
        "measured at the start, every 20 steps and at the end"
    );
    assert!(energy.last().unwrap() < &(0.5 * energy[0]), "energy {energy:?}");
}

#[test]
fn skipping_cuts_recording_short_and_still_ends_on_the_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(tiny_config(&dir.path().join("teachers")), &dir.path().join("run"));
    common::step_until(&mut s, Stage::Record);
    for _ in 0..7 {
        s.step().unwrap(); // node 1 at iteration 5
    }
    let events = s.skip().unwrap();
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::NodeRecorded {
                index: 2,
                iteration: 7,
                ..
            }
        )),
        "{events:?}"
    );
    assert_eq!(s.stage(), Stage::Backtrack);
    assert_eq!(s.path().len(), 3, "teacher + nodes at 5 and 7");
    assert_eq!(s.schedule().targets(), &[1, 0]);
    assert_eq!(s.schedule().planned(), &[10, 30], "the teacher keeps its entry");
    // Skipping during backtracking moves to the next target and loads it.
    let events = s.skip().unwrap();
    assert!(events.contains(&Event::TargetSwitched { from: Some(1), to: 0 }));
    assert_eq!(common::target_vs_file(&s, 0), 0.0);
    let events = s.skip().unwrap();
    assert!(matches!(events.as_slice(), [Event::Warning(w)] if w.contains("teacher")));
    let (s, _) = run_checked(s);
    // The teacher runs until the whole budget (10 + 30) is spent.
    assert_eq!(s.schedule().spent(), &[0, 40]);
}

#[test]
fn the_baseline_distils_from_the_teacher_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&dir.path().join("teachers"));
    config.method = Method::DiffInstruct;
    config.schedule.steps = vec![60];
    let (s, seen) = run_checked(start(config.clone(), &dir.path().join("a")));
    assert_eq!(seen.switches.len(), 1);
    assert_eq!(seen.switches[0], (None, 0, 0.0));
    assert!(
        !seen
            .events
            .iter()
            .any(|e| matches!(e, Event::StageStarted(Stage::Record)))
    );
    assert!(s.path().is_empty(), "no path for the baseline");
    assert_eq!(s.cost(), 60);

    // With s_φ fitted to G⁰ first, it pays the recording iterations too.
    config.distill.baseline_fake_init = disback::config::FakeInit::Fit;
    let (s, seen) = run_checked(start(config, &dir.path().join("b")));
    assert!(
        seen.events
            .iter()
            .any(|e| matches!(e, Event::StageStarted(Stage::Record)))
    );
    assert!(s.path().is_empty());
    assert_eq!(s.cost(), 80);
}

#[test]
fn a_non_finite_loss_stops_training_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut config: Config = tiny_config(&dir.path().join("teachers"));
    config.generator.lr = 1e35;
    let mut s = start(config, &dir.path().join("run"));
    let error = loop {
        match s.step() {
            Ok(_) if s.is_done() => panic!("training should have failed"),
            Ok(_) => {}
            Err(e) => break format!("{e:#}"),
        }
    };
    assert!(
        error.contains("loss is") && error.contains("checkpoint"),
        "{error}"
    );
    assert_eq!(s.stage(), Stage::Backtrack);
    // It stays failed, and says so.
    assert!(s.step().is_err());
    assert!(s.view().failure.is_some());
    // The last checkpoint is intact and resumable (once the failed process
    // lets go of the run): it is the last one due before the failure, and
    // its weights are finite.
    let (root, every, failed_at) = (
        s.run_dir().root().to_path_buf(),
        s.config().log.checkpoint_every,
        s.iteration(),
    );
    drop(s);
    let resumed = Session::resume(RunDir::open(&root).unwrap()).unwrap();
    assert_eq!(resumed.iteration() % every, 0, "{}", resumed.iteration());
    assert!(
        failed_at - resumed.iteration() < every,
        "failed at {failed_at}, resumed at {}",
        resumed.iteration()
    );
    assert!(resumed.sampled_generator().params().all_finite().unwrap());
}

/// The GPU path's draws (here on the CPU, unseeded) leave nothing for an
/// iteration to copy between host and device: losses and gaps stay on the
/// device until the log line, which reads them back in one transfer.
#[test]
fn the_device_path_copies_nothing_between_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&dir.path().join("teachers"));
    config.log.every = 8;
    config.log.checkpoint_every = 1000;
    config.metrics.every = 0;
    config.record.node_every = Some(40);
    config.record.iterations = 40;
    config.schedule.steps = vec![200];
    let mut s = start(config, &dir.path().join("run"));
    s.draw_on_device();
    // Teacher pretraining draws its data batches on the host (one upload
    // each), so only recording and backtracking are counted.
    while s.stage() == Stage::Pretrain {
        s.step().unwrap();
    }
    let mut seen = std::collections::BTreeMap::<(Stage, bool), Vec<u64>>::new();
    while s.stage() != Stage::Done && s.cost() < 120 {
        let (stage, step) = (s.stage(), s.stage_step() + 1);
        let before = disback::transfer::count();
        s.step().unwrap();
        // A stage's first steps build its models (one upload each, once).
        if step > 2 && s.stage() == stage {
            let copies = disback::transfer::count() - before;
            seen.entry((stage, step % 8 == 0)).or_default().push(copies);
        }
    }
    for stage in [Stage::Record, Stage::Backtrack] {
        let plain = &seen[&(stage, false)];
        assert!(
            plain.len() > 20 && plain.iter().all(|&c| c == 0),
            "{stage}: {plain:?}"
        );
        let logged = &seen[&(stage, true)];
        assert!(
            !logged.is_empty() && logged.iter().all(|&c| c == 1),
            "{stage}: {logged:?}"
        );
    }
}

/// On the CPU path the same iteration uploads its host draws, and nothing
/// more: the count above is of the device path, not of an idle counter.
#[test]
fn the_host_path_uploads_its_draws() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&dir.path().join("teachers"));
    config.metrics.every = 0;
    let mut s = start(config, &dir.path().join("run"));
    while s.stage() != Stage::Backtrack || s.stage_step() < 3 {
        s.step().unwrap();
    }
    let before = disback::transfer::count();
    s.step().unwrap();
    // Latents, σ (with its five derived columns and embedding), ε for the
    // generator loss, and latents, σ and ε for each of the two s_φ steps.
    let copies = disback::transfer::count() - before;
    assert!((10..40).contains(&copies), "{copies}");
}

/// A NaN that appears between log lines is caught at the next line or
/// checkpoint, whichever comes first: the run stops with an error that
/// names the loss and its iteration, the checkpoint written before it is
/// the one kept, and it resumes with finite weights.
#[test]
fn a_nan_between_log_lines_stops_before_the_next_save_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&dir.path().join("teachers"));
    config.log.every = 10;
    config.log.checkpoint_every = 10;
    config.schedule.steps = vec![10, 10, 10, 100];
    let mut s = start(config, &dir.path().join("run"));
    let mut checkpointed = None;
    let mut note = |events: Vec<Event>| {
        for e in events {
            if let Event::Checkpointed { iteration, .. } = e {
                checkpointed = Some(iteration);
            }
        }
    };
    while s.stage() != Stage::Backtrack || s.stage_step() < 25 || s.iteration() % 10 != 3 {
        note(s.step().unwrap());
    }
    let checkpointed = checkpointed.expect("a checkpoint before the poisoning");
    assert_eq!(checkpointed, s.iteration() - 3);
    // Poison s_φ: every later fake-score loss is NaN.
    for (_, var) in s.tracking_model().params().iter() {
        let nan = (var.as_tensor().ones_like().unwrap() * f64::NAN).unwrap();
        var.set(&nan).unwrap();
    }
    let poisoned_at = s.iteration() + 1;
    let error = loop {
        match s.step() {
            Ok(_) => assert!(
                s.iteration() < checkpointed + 10,
                "no error by the next checkpoint"
            ),
            Err(e) => break format!("{e:#}"),
        }
    };
    assert!(
        s.iteration() <= checkpointed + 10,
        "caught by the next log line or checkpoint"
    );
    assert!(
        error.contains(&format!("loss is NaN at iteration {poisoned_at}")),
        "{error}"
    );
    assert!(
        error.contains(&format!("checkpoint of iteration {checkpointed}")),
        "{error}"
    );
    let root = s.run_dir().root().to_path_buf();
    drop(s);
    let resumed = Session::resume(RunDir::open(&root).unwrap()).unwrap();
    assert_eq!(resumed.iteration(), checkpointed);
    assert!(resumed.tracking_model().params().all_finite().unwrap());
}

#[test]
fn any_model_can_be_saved_and_loaded_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(tiny_config(&dir.path().join("teachers")), &dir.path().join("run"));
    while s.stage() != Stage::Backtrack || s.cost() < 30 {
        s.step().unwrap();
    }
    let c = s.config().clone();
    let device = candle_core::Device::Cpu;
    for kind in [ModelKind::FakeScore, ModelKind::Target, ModelKind::Teacher] {
        let file = dir.path().join(format!("{kind:?}.safetensors"));
        s.save_model(kind, &file).unwrap();
        let model = s.score_model(kind).unwrap_or(s.teacher());
        let back = Denoiser::new(&c.net_spec(), c.sigma_data(), &device, &mut host_rng(1, 1)).unwrap();
        back.load(&file).unwrap();
        assert_eq!(
            back.params().max_abs_diff(model.params()).unwrap(),
            0.0,
            "{kind:?}"
        );
    }
    let file = s.save_generator(Some(&dir.path().join("g.safetensors"))).unwrap();
    let back = Generator::new(&c.generator_spec(), &device, &mut host_rng(1, 1)).unwrap();
    back.load(&file).unwrap();
    assert_eq!(
        back.params()
            .max_abs_diff(s.sampled_generator().params())
            .unwrap(),
        0.0
    );
    // The degrading copy exists only in stage 1: asking for it now is a
    // clear error, not a wrong file.
    let err = s
        .save_model(ModelKind::Degrading, &dir.path().join("d.safetensors"))
        .unwrap_err();
    assert!(err.to_string().contains("no Degrading model"), "{err}");
}

#[test]
fn the_auto_schedule_switches_early_and_ends_on_the_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&dir.path().join("teachers"));
    config.schedule.policy = disback::config::SchedulePolicy::Auto;
    config.schedule.steps = vec![200, 200, 200, 100];
    config.schedule.window = 5;
    config.schedule.min_steps = 10;
    config.schedule.min_improvement = 0.5;
    let (s, seen) = run_checked(start(config, &dir.path().join("run")));
    // A 50% improvement per 5-step window is not to be had: every
    // non-teacher target stalls out early, and the teacher gets the rest.
    let spent = s.schedule().spent().to_vec();
    assert!(spent[..3].iter().all(|&n| (10..200).contains(&n)), "{spent:?}");
    assert_eq!(spent.iter().sum::<usize>(), 700, "the budget is kept");
    assert_eq!(
        seen.switches.iter().map(|w| w.1).collect::<Vec<_>>(),
        vec![3, 2, 1, 0]
    );
    assert!(seen.switches.iter().all(|w| w.2 == 0.0));
}

#[test]
fn a_teacher_cut_short_is_not_cached() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("teachers");
    let mut s = start(tiny_config(&cache), &dir.path().join("a"));
    for _ in 0..10 {
        s.step().unwrap();
    }
    let events = s.skip().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::TeacherReady { source } if source.contains("not cached"))),
        "{events:?}"
    );
    assert!(!s.teacher_cache_file().exists());
    assert_eq!(s.stage(), Stage::Record);
}

#[test]
fn a_teacher_initialised_generator_starts_as_the_teacher_at_sigma_g() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = tiny_config(&dir.path().join("teachers"));
    c.generator.init = disback::config::GeneratorInit::Teacher;
    c.generator.sigma_g = 1.5;
    let mut s = start(c, &dir.path().join("run"));
    common::step_until(&mut s, Stage::Record);
    // G⁰ is frozen while recording, so this is the generator at step 0.
    let device = s.teacher().device();
    let z = s.sampled_generator().latents(64, &mut host_rng(5, 5)).unwrap();
    let sigma_g = disback::config::edm_to_data_units(1.5, s.config().sigma_data());
    let x = z.affine(sigma_g, 0.0).unwrap();
    let levels = s.teacher().levels(vec![sigma_g as f32; 64], &device).unwrap();
    let expected = s.teacher().denoise(&x, &levels).unwrap();
    let got = s.sampled_generator().forward(&z).unwrap();
    let diff = (got - &expected).unwrap().abs().unwrap().max_all().unwrap();
    assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
    // And it is not trivially the data mean: the teacher spreads it out.
    let spread = expected
        .var(0)
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(spread > 0.05, "G⁰'s samples have variance {spread}");
}

#[test]
fn node_zero_is_the_teacher_at_iteration_zero_and_node_losses_are_interval_means() {
    let dir = tempfile::tempdir().unwrap();
    // A fresh cache: the teacher is pretrained here (60 steps) first.
    let (s, seen) = run_checked(start(
        tiny_config(&dir.path().join("teachers")),
        &dir.path().join("run"),
    ));
    let nodes = s.path().nodes();
    let iterations: Vec<usize> = nodes.iter().map(|n| n.iteration).collect();
    assert_eq!(iterations, vec![0, 5, 10, 15, 20]);
    assert_eq!(nodes[0].loss, None, "the teacher was not trained on G⁰");
    let recorded: Vec<(usize, usize)> = seen
        .events
        .iter()
        .filter_map(|e| match e {
            Event::NodeRecorded { index, iteration, .. } => Some((*index, *iteration)),
            _ => None,
        })
        .collect();
    assert_eq!(recorded, vec![(0, 0), (1, 5), (2, 10), (3, 15), (4, 20)]);
    // log.every = node_every = 5: each recording log line averages exactly
    // one node's interval, so the two means must agree.
    let records = read_metrics(&s.run_dir().metrics()).unwrap();
    for node in &nodes[1..] {
        let line = records
            .iter()
            .find(|r| r.stage == Stage::Record && r.step == node.iteration)
            .unwrap();
        let (logged, saved) = (line.loss_fake.unwrap(), node.loss.unwrap());
        assert!(
            (logged - saved).abs() < 1e-12,
            "node {}: {saved} vs {logged}",
            node.index
        );
    }
    // And they are means, not the interval's last loss: they differ.
    let distinct: std::collections::BTreeSet<u64> =
        nodes[1..].iter().map(|n| n.loss.unwrap().to_bits()).collect();
    assert_eq!(distinct.len(), 4);
}

#[test]
fn skipping_recording_before_its_first_iteration_saves_no_copy_of_the_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(tiny_config(&dir.path().join("teachers")), &dir.path().join("run"));
    common::step_until(&mut s, Stage::Record);
    let events = s.skip().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Warning(w) if w.contains("the teacher alone"))),
        "{events:?}"
    );
    assert_eq!(s.path().len(), 1, "only the teacher: no duplicate node");
    assert_eq!(s.schedule().targets(), &[0]);
    let (s, _) = run_checked(s);
    assert!(s.is_done());
}

/// Nodes placed unevenly (here listed; `geometric` places them by the same
/// code) are saved after exactly those recording iterations, and a run
/// killed between two of them resumes to the same path.
#[test]
fn nodes_are_saved_where_placed_and_a_resumed_recording_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("teachers");
    let placed = |cache: &std::path::Path| {
        let mut c = tiny_config(cache);
        c.record.node_every = None;
        c.record.nodes = Some(vec![1, 3, 12, 20]);
        c.log.checkpoint_every = 5;
        c
    };
    let (whole, _) = run_checked(start(placed(&cache), &dir.path().join("whole")));
    let iterations = |s: &Session| s.path().nodes().iter().map(|n| n.iteration).collect::<Vec<_>>();
    assert_eq!(iterations(&whole), [0, 1, 3, 12, 20]);

    // Killed at recording iteration 18: the last checkpoint (every 5) lies
    // between nodes 3 and 4.
    let run_dir = dir.path().join("killed");
    let mut s = start(placed(&cache), &run_dir);
    while s.stage() != Stage::Record || s.stage_step() < 18 {
        s.step().unwrap();
    }
    drop(s);
    let resumed = Session::resume(RunDir::open(&run_dir).unwrap()).unwrap();
    assert_eq!(resumed.stage(), Stage::Record);
    assert!(
        (13..18).contains(&resumed.stage_step()),
        "{}",
        resumed.stage_step()
    );
    assert_eq!(resumed.path().len(), 4, "nodes 0–3 kept, node 4 still to come");
    let (done, _) = run_checked(resumed);
    assert_eq!(iterations(&done), [0, 1, 3, 12, 20]);
    for (a, b) in done.path().nodes().iter().zip(whole.path().nodes()) {
        assert_eq!(a.loss, b.loss, "node {}", a.index);
        let (a, b) = (a.gap.clone().unwrap(), b.gap.clone().unwrap());
        assert!((a.to_teacher - b.to_teacher).abs() < 1e-9, "{a:?} vs {b:?}");
        assert!(
            (a.to_start.unwrap() - b.to_start.unwrap()).abs() < 1e-9,
            "{a:?} vs {b:?}"
        );
    }
    // The same run after the teacher (the whole run trained it, the killed
    // one found it cached).
    let distill = |s: &Session| {
        let text = metrics_text(s);
        text.lines()
            .filter(|l| !l.contains("\"pretrain\""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(distill(&done), distill(&whole));
}
