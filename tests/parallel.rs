//! Data parallelism on the CPU with the `threads` backend: ranks that
//! split every batch take the steps of one rank with the whole batch, stay
//! bitwise identical, switch together, and stop together when one fails,
//! leaving a checkpoint that resumes on another number of ranks.

mod common;

use common::tiny_config;
use disback::config::{Config, ParallelBackend, ParallelConfig};
use disback::engine::protocol::Event;
use disback::engine::{ModelKind, Session};
use disback::parallel::{Collective, start_threads};
use disback::rundir::{RunDir, Stage};
use std::path::Path;
use std::time::Duration;

fn values(params: &disback::model::Params) -> Vec<f32> {
    params
        .vars()
        .flat_map(|v| v.as_tensor().flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect()
}

/// Every trained weight of a session: teacher, generator (its average),
/// s_φ and the target.
fn weights(s: &Session) -> Vec<(&'static str, Vec<f32>)> {
    let mut all = vec![
        ("teacher", values(s.teacher().params())),
        ("generator", values(s.sampled_generator().params())),
    ];
    for (name, kind) in [
        ("fake score", ModelKind::FakeScore),
        ("target", ModelKind::Target),
    ] {
        if let Some(model) = s.score_model(kind) {
            all.push((name, values(model.params())));
        }
    }
    all
}

fn largest_difference(a: &Session, b: &Session) -> f32 {
    let (a, b) = (weights(a), weights(b));
    assert_eq!(a.len(), b.len());
    let mut worst = 0f32;
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(x.len(), y.len(), "{name}");
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs());
        }
    }
    worst
}

fn run_to_end(config: Config, dir: &Path) -> Session {
    let mut s = Session::start(config, RunDir::create(dir, false).unwrap()).unwrap();
    while !s.is_done() {
        s.step().expect("a training step");
    }
    s
}

fn with_ranks(mut config: Config, ranks: usize) -> Config {
    config.parallel = ParallelConfig {
        ranks,
        backend: ParallelBackend::Threads,
        timeout_s: 60.0,
    };
    config
}

/// Teacher pretraining, recording and backtracking on 2 ranks with half
/// the batch each end where 1 rank with the whole batch ends, up to the
/// order of float sums; one rank with half the batch ends far from both,
/// so the shares are the two halves of one batch and not copies.
#[test]
fn two_ranks_with_half_batches_take_the_steps_of_one_rank_with_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let config = |cache: &str| tiny_config(&dir.path().join(cache));
    let one = run_to_end(config("cache-one"), &dir.path().join("one"));
    let two = run_to_end(with_ranks(config("cache-two"), 2), &dir.path().join("two"));
    let mut halved = config("cache-half");
    (halved.teacher.batch, halved.record.batch, halved.distill.batch) = (64, 32, 32);
    let half = run_to_end(halved, &dir.path().join("half"));

    let parallel_gap = largest_difference(&one, &two);
    let batch_gap = largest_difference(&one, &half);
    assert!(parallel_gap < 1e-4, "2 ranks ended {parallel_gap} from 1 rank");
    assert!(
        batch_gap > 100.0 * parallel_gap.max(1e-5),
        "a half batch ended only {batch_gap} away (2 ranks: {parallel_gap})"
    );
    assert!(two.device_name().starts_with("2 × CPU"), "{}", two.device_name());
    // Rank 0 wrote the run's files; the losses it logged are the team's.
    let logged = disback::rundir::read_metrics(&dir.path().join("two/metrics.jsonl")).unwrap();
    let last_one = disback::rundir::read_metrics(&dir.path().join("one/metrics.jsonl")).unwrap();
    assert_eq!(logged.len(), last_one.len());
    let (a, b) = (logged[3].loss_teacher.unwrap(), last_one[3].loss_teacher.unwrap());
    assert!(
        (a - b).abs() < 1e-4 * b.abs(),
        "teacher loss {a} on 2 ranks, {b} on 1"
    );
}

/// Rank 0 and a rank started by the test: rank 0 skips a target at an
/// iteration it picks and saves the generator; the other rank does both at
/// the same iteration, and at the end the two hold the same bits.
#[test]
fn ranks_stay_bitwise_identical_and_switch_on_the_same_iteration() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(&dir.path().join("cache"));
    let root = dir.path().join("run");
    let run = RunDir::create(&root, false).unwrap();
    let mut team = start_threads(2, Duration::from_secs(60));
    let other = team.pop().unwrap();
    let follower = {
        let (config, root) = (config.clone(), root.clone());
        std::thread::spawn(move || {
            Session::start_in_team(config, RunDir::written_by_another(&root), other)
                .and_then(Session::follow)
                .unwrap()
        })
    };
    let mut leader = Session::start_in_team(config, run, team.pop().unwrap()).unwrap();
    while leader.stage() != Stage::Backtrack {
        leader.step().unwrap();
    }
    for _ in 0..3 {
        leader.step().unwrap();
    }
    let skipped_at = leader.iteration();
    let target = leader.schedule().target();
    let events = leader.skip().unwrap();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::TargetSwitched { from: Some(f), .. } if *f == target)),
        "{events:?}"
    );
    let saved = leader.save_generator(None).unwrap();
    assert!(saved.is_file());
    while !leader.is_done() {
        leader.step().unwrap();
    }
    leader.dismiss().unwrap();
    let follower = follower.join().unwrap();

    assert_eq!(follower.iteration(), leader.iteration());
    for ((name, a), (_, b)) in weights(&leader).iter().zip(&weights(&follower)) {
        assert!(a == b, "{name} differs between the ranks");
    }
    // The schedules, steps per target included: the skip came at the same
    // iteration on both.
    let schedule = |s: &Session| serde_json::to_string(s.schedule()).unwrap();
    assert_eq!(schedule(&leader), schedule(&follower));
    assert!(skipped_at < leader.iteration());
}

/// Rank 1 cannot read the path's files (its run directory is wrong): it
/// fails when backtracking starts, rank 0 stops with its error, and rank
/// 0's last checkpoint resumes on one rank and on three to the end.
#[test]
fn a_failing_rank_stops_the_team_by_name_and_the_checkpoint_resumes_on_other_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = tiny_config(&dir.path().join("cache"));
    (config.teacher.batch, config.record.batch, config.distill.batch) = (96, 48, 48);
    let root = dir.path().join("run");
    let run = RunDir::create(&root, false).unwrap();
    let mut team: Vec<Collective> = start_threads(2, Duration::from_secs(60));
    let other = team.pop().unwrap();
    let follower = {
        let (config, wrong) = (config.clone(), dir.path().join("not-the-run"));
        std::thread::spawn(move || {
            Session::start_in_team(config, RunDir::written_by_another(&wrong), other)
                .and_then(Session::follow)
        })
    };
    let mut leader = Session::start_in_team(config, run, team.pop().unwrap()).unwrap();
    let error = loop {
        match leader.step() {
            Ok(_) => assert!(!leader.is_done(), "the run ended without rank 1 failing"),
            Err(e) => break format!("{e:#}"),
        }
    };
    assert!(
        error.contains("rank 1 failed: loading the last node into s_φ"),
        "{error}"
    );
    assert!(error.contains("can be resumed"), "{error}");
    assert!(follower.join().unwrap().is_err());
    drop(leader);

    let mut resumed_runs = Vec::new();
    for ranks in [1, 3] {
        let copy = dir.path().join(format!("resumed-on-{ranks}"));
        copy_dir(&root, &copy);
        let parallel = with_ranks(Config::default(), ranks).parallel;
        let mut resumed = Session::resume_on(RunDir::open(&copy).unwrap(), Some(parallel)).unwrap();
        assert_eq!(resumed.stage(), Stage::Record, "the checkpoint is of stage 1");
        while !resumed.is_done() {
            resumed.step().expect("a resumed step");
        }
        let last = resumed.latest_eval().expect("a final measurement");
        assert!(last.energy.is_finite());
        assert_eq!(
            Config::load_run(&copy.join("config.toml"))
                .unwrap()
                .parallel
                .ranks,
            ranks,
            "the run's config says where it continued"
        );
        resumed_runs.push(resumed);
    }
    // The same checkpoint continued on 1 and on 3 ranks is the same run,
    // up to the order of float sums: every weight and the final measure.
    let (one, three) = (&resumed_runs[0], &resumed_runs[1]);
    assert_eq!(one.iteration(), three.iteration());
    let gap = largest_difference(one, three);
    assert!(
        gap < 1e-4,
        "resumed on 3 ranks, the weights ended {gap} from 1 rank's"
    );
    let (e1, e3) = (
        one.latest_eval().unwrap().energy,
        three.latest_eval().unwrap().energy,
    );
    assert!(
        (e1 - e3).abs() <= 1e-3 * e1.abs().max(1e-3),
        "energy {e1} on 1 rank, {e3} on 3"
    );
}

#[test]
fn a_batch_that_does_not_split_among_the_ranks_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let config = with_ranks(tiny_config(&dir.path().join("cache")), 3);
    let err = Session::start(config, RunDir::create(&dir.path().join("run"), false).unwrap())
        .err()
        .expect("refused");
    let e = format!("{err:#}");
    assert!(
        e.contains("teacher.batch: 128 does not split evenly among 3 ranks"),
        "{e}"
    );
    assert!(
        e.contains("record.batch: 64 does not split evenly among 3 ranks"),
        "{e}"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else if entry.file_name() != "run.lock" {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// `disback run` on two thread ranks says so, writes one run directory,
/// and continues on other ranks with `--resume … --set parallel.ranks=…`;
/// any other `--set` with `--resume` is refused by name.
#[test]
fn the_command_line_trains_on_two_ranks_and_resumes_only_with_other_ranks() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(&dir.path().join("cache"));
    std::fs::write(dir.path().join("tiny.toml"), config.to_toml().unwrap()).unwrap();
    let ranks = ["--set", "parallel.ranks=2", "--set", "parallel.backend=threads"];
    let mut args = vec!["run", "--config", "tiny.toml", "--out", "run"];
    args.extend(ranks);
    let out = common::disback(&args, dir.path());
    let err = common::stderr(&out);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("2 × CPU (threads)"), "{err}");
    assert!(dir.path().join("run/generator/final.safetensors").is_file());
    // The team ended cleanly: every rank left, none was taken for dead.
    for alarm in ["fail", "error", "ended (its connection", "did not reach"] {
        assert!(
            !err.to_lowercase().contains(alarm),
            "{alarm:?} in a clean run's log:\n{err}"
        );
    }

    let other = common::disback(&["run", "--resume", "run", "--set", "seed=4"], dir.path());
    let e = common::stderr(&other);
    assert!(!other.status.success());
    assert!(
        e.contains("--set seed=4: a resumed run keeps the config it started with"),
        "{e}"
    );
    let solo = [
        "run",
        "--resume",
        "run",
        "--set",
        "parallel.ranks=1",
        "--set",
        "parallel.backend=solo",
    ];
    let resumed = common::disback(&solo, dir.path());
    assert!(resumed.status.success(), "{}", common::stderr(&resumed));
    let saved = Config::load_run(&dir.path().join("run/config.toml")).unwrap();
    assert_eq!(saved.parallel.ranks, 1);
}

/// Without the NCCL build there is no NCCL: said before any rank starts.
#[cfg(not(feature = "nccl"))]
#[test]
fn the_nccl_backend_without_the_nccl_build_says_how_to_get_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = with_ranks(tiny_config(&dir.path().join("cache")), 2);
    config.parallel.backend = ParallelBackend::Nccl;
    let run = RunDir::create(&dir.path().join("run"), false).unwrap();
    let e = format!("{:#}", Session::start(config, run).err().expect("refused"));
    assert!(
        e.contains("needs the NCCL build (cargo build --release --features nccl"),
        "{e}"
    );
}

/// `disback` with a launcher's environment (and no other).
fn disback_launched(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_disback"));
    command.args(args).current_dir(cwd);
    for name in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "SLURM_NTASKS",
        "SLURM_STEP_NUM_TASKS",
        "SLURM_PROCID",
        "SLURM_LOCALID",
    ] {
        command.env_remove(name);
    }
    command
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs")
}

/// Inside a Slurm allocation (no MASTER_ADDR): commands that train on
/// one rank never read the launcher's environment, and a world of one is
/// solo. A `threads` team under a launcher of several processes is
/// refused, naming the variable.
#[test]
fn inside_a_slurm_allocation_commands_that_need_no_team_just_work() {
    let dir = tempfile::tempdir().unwrap();
    let four = [
        ("SLURM_NTASKS", "4"),
        ("SLURM_STEP_NUM_TASKS", "4"),
        ("SLURM_PROCID", "1"),
        ("SLURM_LOCALID", "1"),
    ];
    let ls = disback_launched(&["ls"], dir.path(), &four);
    assert!(ls.status.success(), "{}", common::stderr(&ls));
    assert!(String::from_utf8_lossy(&ls.stdout).contains("no runs under runs"));

    let config = tiny_config(&dir.path().join("cache"));
    std::fs::write(dir.path().join("tiny.toml"), config.to_toml().unwrap()).unwrap();
    let one_task = [
        ("SLURM_NTASKS", "1"),
        ("SLURM_STEP_NUM_TASKS", "1"),
        ("SLURM_PROCID", "0"),
        ("SLURM_LOCALID", "0"),
    ];
    let run = ["run", "--config", "tiny.toml", "--out", "solo"];
    let solo = disback_launched(&run, dir.path(), &one_task);
    assert!(solo.status.success(), "{}", common::stderr(&solo));
    assert!(dir.path().join("solo/generator/final.safetensors").is_file());

    let threads = [
        "run",
        "--config",
        "tiny.toml",
        "--out",
        "threads",
        "--set",
        "parallel.ranks=2",
        "--set",
        "parallel.backend=threads",
    ];
    let refused = disback_launched(&threads, dir.path(), &four);
    let e = common::stderr(&refused);
    assert!(!refused.status.success());
    assert!(
        e.contains("SLURM_STEP_NUM_TASKS=4: a launcher started 4 processes"),
        "{e}"
    );
    assert!(!e.contains("MASTER_ADDR"), "{e}");

    // An `sbatch -n4` script is task 0 of the batch step (SLURM_NTASKS=4,
    // SLURM_PROCID=0) but no srun step: a `threads` team runs there.
    let batch_script = [
        ("SLURM_NTASKS", "4"),
        ("SLURM_PROCID", "0"),
        ("SLURM_LOCALID", "0"),
    ];
    let threads = disback_launched(&threads, dir.path(), &batch_script);
    assert!(threads.status.success(), "{}", common::stderr(&threads));
    assert!(dir.path().join("threads/generator/final.safetensors").is_file());
}

/// A rank other than 0 of an NCCL team (`rank::follow`) needs the run
/// directory every rank shares, and says so; given one, a build without
/// NCCL says how to get it, before waiting for any rank.
#[test]
fn a_launched_nccl_rank_names_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("WORLD_SIZE", "2"),
        ("RANK", "1"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "9"),
    ];
    let nccl = ["--set", "parallel.ranks=2", "--set", "parallel.backend=nccl"];
    let no_dir = disback_launched(&[&["run"][..], &nccl].concat(), dir.path(), &env);
    let e = common::stderr(&no_dir);
    assert!(!no_dir.status.success());
    assert!(
        e.contains("rank 1 of 2: every rank must name the same run directory"),
        "{e}"
    );
    if cfg!(not(feature = "nccl")) {
        let with_dir = disback_launched(&[&["run", "--out", "run"][..], &nccl].concat(), dir.path(), &env);
        let e = common::stderr(&with_dir);
        assert!(!with_dir.status.success());
        assert!(e.contains("needs the NCCL build"), "{e}");
    }
}

/// compare (and sweep, bench) run their sessions in their own process: an
/// `nccl` config is refused by name, before the launcher's environment is
/// read or a copy of the compare's command line is started as a rank.
#[test]
fn compare_refuses_an_nccl_team() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_config(&dir.path().join("cache"));
    std::fs::write(dir.path().join("tiny.toml"), config.to_toml().unwrap()).unwrap();
    let nccl = [
        "compare",
        "--config",
        "tiny.toml",
        "--seeds",
        "1",
        "--out",
        "cmp",
        "--force",
        "--set",
        "parallel.ranks=2",
        "--set",
        "parallel.backend=nccl",
    ];
    let launched = [("WORLD_SIZE", "2"), ("RANK", "0")];
    for env in [&launched[..], &[]] {
        let refused = disback_launched(&nccl, dir.path(), env);
        let e = common::stderr(&refused);
        assert!(!refused.status.success());
        assert!(
            e.contains("`disback compare` runs its sessions in this process"),
            "{e}"
        );
        assert!(!e.contains("MASTER_ADDR"), "{e}");
    }
}
