//! Preemption through the binary, without Slurm: a training run sent SIGTERM (one process) or
//! SIGUSR1 (one rank of two) after a step finishes that step, writes its checkpoint, exits with
//! status 75, and the same command with `--resume-if-present` ends where an uninterrupted run
//! ends, bit for bit. (`scripts/slurm/test.sh` does the same under Slurm with a requeue.)

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{dis2, failed, metrics_records, ok, ok_all, s, serial, tiny_benchmark, BIN};

/// The exit status of a run stopped on a signal with its checkpoint written.
const STOPPED: i32 = 75;

/// `train-teacher` on `config` into `out`: 16 samples of 4 per epoch, validation (and a
/// checkpoint) every 4 steps on two batches, then `extra`.
fn train_args(config: &Path, out: &Path, epochs: u64, extra: &[&str]) -> Vec<String> {
    let settings = [
        "data.sampling.samples_per_epoch=16".to_string(),
        "data.sampling.batch_size=4".into(),
        format!("train.epochs={epochs}"),
        "train.val_every=4".into(),
        "train.val_batches=2".into(),
        "train.image_every=0".into(),
    ];
    let mut a: Vec<String> = vec!["train-teacher".into(), "--config".into()];
    a.push(config.display().to_string());
    a.extend(["--out".into(), out.display().to_string()]);
    a.extend(settings.into_iter().flat_map(|s| ["--set".to_string(), s]));
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Waits until the run in `run` has logged `steps` steps (none of the `children` ending first).
fn wait_for_steps(run: &Path, steps: usize, children: &mut [Child]) {
    let deadline = Instant::now() + Duration::from_secs(300);
    let logged =
        || std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count());
    while logged() < steps {
        assert!(
            Instant::now() < deadline,
            "the run never reached step {steps}"
        );
        for child in children.iter_mut() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "a process ended before the signal"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill sends a signal to a child this test started and has not waited for yet.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(sent, 0, "kill failed");
}

fn spawn(args: &[String], envs: &[(&str, String)]) -> Child {
    Command::new(BIN)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dis2 starts")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The step a run's `checkpoints/last` points to.
fn last_step(run: &Path) -> u64 {
    let target = std::fs::read_link(run.join("checkpoints/last")).unwrap();
    let name = target.to_string_lossy().into_owned();
    name.trim_start_matches("step-").parse().unwrap()
}

/// The bytes of the final checkpoint's weights and optimiser state, and the run's logs.
fn final_state(run: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    [
        "checkpoints/last/model.safetensors",
        "checkpoints/last/optim.safetensors",
        "metrics.jsonl",
        "validation.jsonl",
    ]
    .iter()
    .map(|f| {
        let path = run.join(f);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        (PathBuf::from(f), bytes)
    })
    .collect()
}

fn assert_same_end(resumed: &Path, straight: &Path) {
    for ((file, a), (_, b)) in final_state(resumed).iter().zip(final_state(straight)) {
        assert!(
            *a == b,
            "{}: the resumed run differs from the uninterrupted one",
            file.display()
        );
    }
}

#[test]
fn sigterm_stops_a_run_at_a_step_boundary_and_resume_ends_as_an_uninterrupted_run() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 7);
    let cpu = ["--device", "cpu", "--threads", "2", "--quiet"];
    let straight = dir.path().join("straight");
    ok(&dis2(&train_args(&config, &straight, 2, &cpu)));
    assert_eq!(metrics_records(&straight).len(), 8);

    // SIGTERM after step 2: the step being computed is finished and checkpointed (steps 4 and 8
    // write validation checkpoints, steps 2 and 3 none of their own).
    let stopped = dir.path().join("stopped");
    let mut command = train_args(&config, &stopped, 2, &cpu);
    command.push("--resume-if-present".into());
    let mut child = spawn(&command, &[]);
    wait_for_steps(&stopped, 2, std::slice::from_mut(&mut child));
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(STOPPED), "{err}");
    let step = last_step(&stopped);
    assert!((2..8).contains(&step), "stopped at step {step}");
    assert_eq!(
        metrics_records(&stopped).len() as u64,
        step,
        "one line per step done"
    );
    assert!(
        err.contains(&format!(
            "stopped: SIGTERM received: training stopped after step {step} of 8"
        )),
        "{err}"
    );

    // The same command goes on from that checkpoint, to the uninterrupted run's end.
    let resumed = ok_all(&dis2(&command));
    assert!(resumed.contains(&format!("from step {step}")), "{resumed}");
    assert_same_end(&stopped, &straight);

    // ... but not as another experiment.
    let mut other = train_args(&config, &stopped, 2, &cpu);
    other.extend([
        "--resume-if-present".into(),
        "--set".into(),
        "train.schedule.lr=0.5".into(),
    ]);
    let err = failed(&dis2(&other));
    assert!(
        err.contains("--resume-if-present") && err.contains("train.schedule.lr"),
        "{err}"
    );
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().unwrap().port()
}

/// Rank `rank` of a 2-rank job with torchrun's variables, rendezvous on loopback at `port`.
fn spawn_rank(args: &[String], rank: usize, port: u16) -> Child {
    let envs = [
        ("WORLD_SIZE", "2".to_string()),
        ("RANK", rank.to_string()),
        ("LOCAL_RANK", rank.to_string()),
        ("MASTER_ADDR", "127.0.0.1".to_string()),
        ("MASTER_PORT", port.to_string()),
        ("DIS2_DIST_TIMEOUT", "120".to_string()),
    ];
    spawn(args, &envs)
}

fn two_ranks(args: &[String]) -> Vec<Child> {
    let port = free_port();
    (0..2).map(|rank| spawn_rank(args, rank, port)).collect()
}

#[test]
fn a_signal_to_one_rank_stops_both_at_the_same_step() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 8);
    // Two ranks: 2 steps an epoch, 8 steps in 4 epochs.
    let cpu = ["--device", "cpu", "--threads", "1", "--quiet"];
    let straight = dir.path().join("straight");
    let command = train_args(&config, &straight, 4, &cpu);
    for out in two_ranks(&command)
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
    {
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // SIGUSR1 to rank 1 only, after step 2: rank 0 learns of it through the step's all-reduce
    // and writes the checkpoint; both stop after the same step.
    let stopped = dir.path().join("stopped");
    let mut command = train_args(&config, &stopped, 4, &cpu);
    command.push("--resume-if-present".into());
    let mut ranks = two_ranks(&command);
    wait_for_steps(&stopped, 2, &mut ranks);
    signal(&ranks[1], libc::SIGUSR1);
    let outs: Vec<Output> = ranks
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let step = last_step(&stopped);
    assert!((2..8).contains(&step), "stopped at step {step}");
    for (rank, out) in outs.iter().enumerate() {
        let err = stderr(out);
        assert_eq!(out.status.code(), Some(STOPPED), "rank {rank}: {err}");
        assert!(
            err.contains(&format!("training stopped after step {step} of 8")),
            "rank {rank}: {err}"
        );
    }
    assert!(stderr(&outs[0]).contains("a stop signal to another rank received"));
    assert!(stderr(&outs[1]).contains("SIGUSR1 received"));

    for out in two_ranks(&command)
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
    {
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert_same_end(&stopped, &straight);
}

#[test]
fn a_predict_list_stops_between_scenes_and_skip_existing_goes_on() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = common::synthetic_checkpoint(dir.path());
    let files = common::synthetic_scene(dir.path(), 128);
    let (optical, dsm, sar) = (s(&files[0]), s(&files[1]), s(&files[2]));
    let scenes = 12;
    let list = dir.path().join("scenes.txt");
    let lines: String = (0..scenes)
        .map(|i| format!("optical={optical} dsm={dsm} sar={sar} out=pred/{i:02}.tif\n"))
        .collect();
    std::fs::write(&list, lines).unwrap();
    let command: Vec<String> = [
        "predict",
        "--checkpoint",
        s(&checkpoint),
        "--list",
        s(&list),
    ]
    .iter()
    .chain(&["--device", "cpu", "--threads", "1", "--quiet"])
    .map(|a| a.to_string())
    .collect();
    // Finished outputs only (a scene is written to a hidden temporary file, then renamed).
    let written = || {
        let names = std::fs::read_dir(dir.path().join("pred"))
            .into_iter()
            .flatten();
        let names = names.map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
        names.filter(|n| !n.starts_with('.')).count()
    };

    let mut child = spawn(&command, &[]);
    let deadline = Instant::now() + Duration::from_secs(300);
    while written() < 1 {
        assert!(Instant::now() < deadline, "no scene was written");
        assert!(
            child.try_wait().unwrap().is_none(),
            "predict ended before the signal"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    signal(&child, libc::SIGTERM);
    let out = child.wait_with_output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(STOPPED), "{err}");
    assert!(
        err.contains("stopped: SIGTERM received: predict stopped before scene"),
        "{err}"
    );
    // Only whole outputs, in list order, and not all of them; no temporary file left.
    let done = written();
    let all = std::fs::read_dir(dir.path().join("pred")).unwrap().count();
    assert_eq!(all, done, "a temporary file was left");
    assert!((1..scenes).contains(&done), "{done} of {scenes} written");
    for i in 0..done {
        assert!(
            dir.path().join(format!("pred/{i:02}.tif")).exists(),
            "scene {i}"
        );
    }

    let mut again = command.clone();
    again.push("--skip-existing".into());
    let stdout = ok(&dis2(&again));
    assert_eq!(stdout.matches("exists, skipped").count(), done, "{stdout}");
    assert_eq!(written(), scenes);
}
