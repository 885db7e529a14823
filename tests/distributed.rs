//! Data-parallel training through the binary: two processes on the CPU over loopback (Gloo),
//! started with torchrun's variables as `torchrun` sets them, and through `torchrun` itself when
//! the torch venv has it. One step on two ranks equals one process that averages the gradients
//! of the same two shards; two identical runs log identically; the checkpoints evaluate and
//! predict; a rank that dies or never comes fails the others quickly; `--resume` refuses another
//! number of processes. One test at a time (`common::serial`): each starts several processes on
//! a 2-core machine.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tch::Tensor;

mod common;
use common::{dis2, ok, serial, tiny_benchmark, BIN};

/// Small settings: 16 samples of 4 per epoch (4 batches: 2 steps on two ranks), validation on
/// two batches.
fn settings(extra: &[&str]) -> Vec<String> {
    [
        "data.sampling.samples_per_epoch=16",
        "data.sampling.batch_size=4",
        "train.epochs=1",
        "train.val_every=2",
        "train.val_batches=2",
        "train.image_every=3",
        "train.kd_warmup_epochs=0",
    ]
    .iter()
    .chain(extra)
    .flat_map(|s| ["--set".to_string(), s.to_string()])
    .collect()
}

/// `dis2 COMMAND --config CONFIG --out OUT SETTINGS --device cpu --threads 1 --quiet`.
fn train_args(command: &[&str], config: &Path, out: &Path, settings: Vec<String>) -> Vec<String> {
    let mut a: Vec<String> = command.iter().map(|s| s.to_string()).collect();
    a.extend(["--config".into(), config.display().to_string()]);
    a.extend(["--out".into(), out.display().to_string()]);
    a.extend(settings);
    a.extend(["--device", "cpu", "--threads", "1", "--quiet"].map(String::from));
    a
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

/// Starts rank `rank` of `world` with torchrun's variables (rendezvous on loopback at `port`).
fn spawn_rank(args: &[String], rank: usize, world: usize, port: u16, timeout_s: u64) -> Child {
    Command::new(BIN)
        .args(args)
        .env("WORLD_SIZE", world.to_string())
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("DIS2_DIST_TIMEOUT", timeout_s.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dis2 starts")
}

/// Runs `args` as the two ranks of a job and returns their outputs, rank 0's first.
fn two_ranks(args: &[String]) -> Vec<Output> {
    let port = free_port();
    let children: Vec<Child> = (0..2).map(|r| spawn_rank(args, r, 2, port, 120)).collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().expect("dis2 ends"))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The trained tensors of a run's last checkpoint, by name: BatchNorm's running statistics left
/// out (a data-parallel run keeps rank 0's, one process those of every micro-batch).
fn parameters(run: &Path) -> Vec<(String, Tensor)> {
    let path = run.join("checkpoints/last/model.safetensors");
    let mut tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .filter(|(n, _)| !n.ends_with("running_mean") && !n.ends_with("running_var"))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

fn max_difference(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((na, ta), (nb, tb))| {
            assert_eq!(na, nb);
            if ta.numel() == 0 {
                return 0.0;
            }
            (ta - tb).abs().max().double_value(&[])
        })
        .fold(0.0, f64::max)
}

/// The loss terms of the first line of a run's metrics.
fn first_losses(run: &Path) -> serde_json::Map<String, serde_json::Value> {
    let text = read(&run.join("metrics.jsonl"));
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    line["loss"].as_object().unwrap().clone()
}

#[test]
fn one_step_on_two_ranks_equals_one_process_averaging_both_shards() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 16);
    let teacher = dir.path().join("teacher-1").join("checkpoints/best");
    let teacher = teacher.display().to_string();
    // (name, command, batches per step on each of the two ranks)
    let cases: [(&str, Vec<&str>, u64); 4] = [
        ("teacher", vec!["train-teacher"], 1),
        ("joint", vec!["distill", "--joint"], 1),
        (
            "student",
            vec!["distill", "--missing", "dsm", "--teacher", &teacher],
            1,
        ),
        // Joint runs reduce every batch of a step, not only the last.
        ("joint-accumulate", vec!["distill", "--joint"], 2),
    ];
    for (name, command, accumulate) in cases {
        // One process: the shards of both ranks as the batches of one step, gradients averaged.
        let one = dir.path().join(format!("{name}-1"));
        let both = format!("train.accumulate={}", 2 * accumulate);
        let one_args = train_args(
            &command,
            &config,
            &one,
            settings(&[&both, "train.max_steps=1"]),
        );
        ok(&dis2(&one_args));
        let two = dir.path().join(format!("{name}-2"));
        let each = format!("train.accumulate={accumulate}");
        let two_args = train_args(
            &command,
            &config,
            &two,
            settings(&[&each, "train.max_steps=1"]),
        );
        for out in &two_ranks(&two_args) {
            ok(out);
        }

        let diff = max_difference(&parameters(&one), &parameters(&two));
        assert!(diff <= 1e-6, "{name}: parameters differ by {diff}");
        let (a, b) = (first_losses(&one), first_losses(&two));
        assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
        for (term, value) in &a {
            let (x, y) = (value.as_f64().unwrap(), b[term].as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-6 * x.abs().max(1.0),
                "{name} {term}: {x} vs {y}"
            );
        }
        let info = dis2::checkpoint::read_info(&two.join("checkpoints/last")).unwrap();
        assert_eq!(info.metadata["world_size"].as_u64(), Some(2), "{name}");
    }
}

/// `torchrun` of the torch venv that `.libtorch` links to, if there is one.
fn torchrun() -> Option<PathBuf> {
    let torch =
        std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join(".libtorch")).ok()?;
    // venv/lib/pythonX.Y/site-packages/torch -> venv/bin/torchrun
    let bin = torch.ancestors().nth(4)?.join("bin/torchrun");
    bin.is_file().then_some(bin)
}

/// The two ranks started by `torchrun --standalone --nproc-per-node 2 --no-python dis2 ...`.
fn torchrun_two(torchrun: &Path, args: &[String]) -> Output {
    Command::new(torchrun)
        .args(["--standalone", "--nproc-per-node", "2", "--no-python", BIN])
        .args(args)
        .output()
        .expect("torchrun runs")
}

#[test]
fn two_rank_runs_repeat_exactly_and_their_checkpoints_evaluate_and_predict() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 17);
    let run = |name: &str, launch: &dyn Fn(&[String]) -> Vec<Output>| {
        let out = dir.path().join(name);
        let outputs = launch(&train_args(
            &["train-teacher"],
            &config,
            &out,
            settings(&[]),
        ));
        for out in &outputs {
            ok(out);
        }
        (out, outputs)
    };
    let (first, outputs) = run("first", &two_ranks);
    let stdout: Vec<String> = outputs
        .iter()
        .map(|o| String::from_utf8_lossy(&o.stdout).into())
        .collect();
    assert!(stdout[0].contains("finished 2 steps"), "{}", stdout[0]);
    assert!(stdout[1].is_empty(), "rank 1 writes nothing: {}", stdout[1]);
    // The same run again, through torchrun where the venv has it.
    let again = match torchrun() {
        Some(bin) => run("again", &|args| vec![torchrun_two(&bin, args)]).0,
        None => {
            eprintln!(
                "note: no torchrun beside .libtorch; the second run uses the variables alone"
            );
            run("again", &two_ranks).0
        }
    };
    for file in ["metrics.jsonl", "validation.jsonl"] {
        assert_eq!(read(&first.join(file)), read(&again.join(file)), "{file}");
    }

    let eval = dis2(&[
        "eval".into(),
        "--checkpoint".into(),
        first.display().to_string(),
        "--split".into(),
        "test".into(),
        "--out".into(),
        dir.path().join("eval").display().to_string(),
        "--device".into(),
        "cpu".into(),
    ]);
    ok(&eval);
    assert!(String::from_utf8_lossy(&eval.stdout).starts_with("teacher: mIoU"));
    let scene = |m: &str| {
        dir.path()
            .join(format!("synthetic/test/{m}/scene_0005.tif"))
    };
    let classes = dir.path().join("classes.tif");
    let mut predict: Vec<String> = vec!["predict".into(), "--checkpoint".into()];
    predict.push(first.join("checkpoints/best").display().to_string());
    for m in ["optical", "dsm", "sar"] {
        predict.extend([format!("--{m}"), scene(m).display().to_string()]);
    }
    predict.extend([
        "--out".into(),
        classes.display().to_string(),
        "--device".into(),
        "cpu".into(),
    ]);
    ok(&dis2(&predict));
    assert!(classes.is_file());

    // --resume: the same number of processes, or a clear refusal.
    let resume = |n: usize| -> Vec<Output> {
        let args = [
            "train-teacher",
            "--resume",
            &first.display().to_string(),
            "--device",
            "cpu",
            "--quiet",
        ]
        .map(String::from)
        .to_vec();
        if n == 2 {
            two_ranks(&args)
        } else {
            vec![dis2(&args)]
        }
    };
    for out in &resume(2) {
        ok(out);
    }
    let alone = resume(1).remove(0);
    assert_eq!(alone.status.code(), Some(1));
    let err = String::from_utf8_lossy(&alone.stderr);
    assert!(
        err.contains("trained on 2 process(es)") && err.contains("--nproc-per-node 2"),
        "{err}"
    );
}

#[test]
fn a_rank_that_never_comes_or_dies_fails_the_others_quickly() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 18);

    // Rank 1 never starts: rank 0 gives up after the timeout, naming the rendezvous.
    let args = train_args(
        &["train-teacher"],
        &config,
        &dir.path().join("alone"),
        settings(&[]),
    );
    let started = Instant::now();
    let out = spawn_rank(&args, 0, 2, free_port(), 3)
        .wait_with_output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rank 0 of 2") && err.contains("cannot join the process group"),
        "{err}"
    );
    assert!(
        !err.contains("Exception raised from"),
        "no C++ backtrace: {err}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    // Rank 1 is killed mid-run: rank 0 stops with an error, long before the 120 s timeout.
    let run = dir.path().join("killed");
    let long = train_args(
        &["train-teacher"],
        &config,
        &run,
        settings(&["train.epochs=200"]),
    );
    let port = free_port();
    let mut children: Vec<Child> = (0..2).map(|r| spawn_rank(&long, r, 2, port, 120)).collect();
    let metrics = run.join("metrics.jsonl");
    let waited = Instant::now();
    while !std::fs::read_to_string(&metrics).is_ok_and(|t| t.lines().count() >= 2) {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "no training step logged"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    children[1].kill().unwrap();
    let killed = Instant::now();
    let out = children.remove(0).wait_with_output().unwrap();
    let _ = children[0].wait();
    assert!(
        killed.elapsed() < Duration::from_secs(60),
        "rank 0 took {:?}",
        killed.elapsed()
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rank 0 of 2") && err.contains("another rank stopped"),
        "{err}"
    );
}
