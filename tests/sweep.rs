//! `dis2 sweep` through the binary on a tiny synthetic benchmark: tables over two seeds (their
//! statistics recomputed by hand from the cells' own files), skipping finished cells after a
//! kill, shards and `--collect`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

mod common;
use common::{dis2, ok_all, read_json, tiny_benchmark, BIN};

/// `dis2 sweep` arguments for a two-method, one-scenario grid of very short runs.
fn sweep_args(config: &Path, out: &Path) -> Vec<String> {
    [
        "sweep",
        "--config",
        &config.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--methods",
        "teacher-fill,dis2",
        "--scenarios",
        "dsm",
        "--set",
        "data.sampling.samples_per_epoch=16",
        "--set",
        "data.sampling.batch_size=4",
        "--set",
        "train.epochs=1",
        "--set",
        "train.val_batches=1",
        "--set",
        "train.kd_warmup_epochs=0",
        "--seeds",
        "3,4",
        "--device",
        "cpu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

fn results(out: &Path) -> serde_json::Value {
    read_json(&out.join("results.json"))
}

/// The mIoU of an evaluation, from its own `done.json`.
fn cell_miou(out: &Path, eval: &str) -> f64 {
    let path = out.join("evals").join(eval).join("done.json");
    read_json(&path)["miou"].as_f64().unwrap()
}

fn close(a: &serde_json::Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-12)
}

/// The tables' statistics against the same computed by hand from the two seeds' files: the
/// mean, the sample standard deviation |a - b| / sqrt(2), and dis2's paired difference to the
/// filled teacher with its interval mean ± t(1) sd / sqrt(2), t(1) = 12.7062.
fn check_statistics(out: &Path, doc: &serde_json::Value) {
    assert_eq!(doc["seeds"], serde_json::json!([3, 4]), "{doc}");
    let dis2 = [3, 4].map(|s| cell_miou(out, &format!("test/s{s}/dis2-dsm--drop-dsm")));
    let fill = [3, 4].map(|s| cell_miou(out, &format!("test/s{s}/teacher--drop-dsm")));
    let row = &doc["methods"][1];
    assert_eq!(row["method"], "dis2");
    let cell = &row["cells"]["dsm"];
    assert_eq!(cell["n"], 2, "{cell}");
    assert!(
        close(&cell["miou"]["mean"], (dis2[0] + dis2[1]) / 2.0),
        "{cell}"
    );
    let sd = (dis2[0] - dis2[1]).abs() / 2f64.sqrt();
    assert!(
        (cell["miou"]["sd"].as_f64().unwrap() - sd).abs() < 1e-12,
        "{cell}"
    );
    assert!(close(&cell["miou"]["per_seed"]["4"], dis2[1]), "{cell}");
    let diff = doc["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["minus"] == "teacher-fill" && d["scenario"] == "dsm")
        .expect("dis2 minus teacher-fill, -dsm");
    let d = [dis2[0] - fill[0], dis2[1] - fill[1]];
    let mean = (d[0] + d[1]) / 2.0;
    let half = 12.706205 * ((d[0] - d[1]).abs() / 2f64.sqrt()) / 2f64.sqrt();
    assert!(
        (diff["mean"].as_f64().unwrap() - mean).abs() < 1e-12,
        "{diff}"
    );
    let ci = &diff["ci95"];
    assert!(
        (ci[0].as_f64().unwrap() - (mean - half)).abs() < 1e-9,
        "{diff}"
    );
    assert!(
        (ci[1].as_f64().unwrap() - (mean + half)).abs() < 1e-9,
        "{diff}"
    );
    let distinguishable = mean - half > 0.0 || mean + half < 0.0;
    assert_eq!(diff["distinguishable"], distinguishable, "{diff}");
    // The full column of dis2 is the teacher's evaluation: no difference is listed.
    assert!(!doc["differences"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["scenario"] == "full"));
}

#[test]
fn a_killed_sweep_continues_without_redoing_finished_cells() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 11);
    let out = dir.path().join("sweep");
    let args = sweep_args(&config, &out);

    // Kill the sweep once the teacher is trained and scored with the DSM filled.
    let mut child = Command::new(BIN)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let scored = out.join("evals/test/s3/teacher--drop-dsm/done.json");
    let started = Instant::now();
    while !scored.exists() {
        assert!(
            child.try_wait().unwrap().is_none() || scored.exists(),
            "the sweep ended before the teacher was scored"
        );
        assert!(started.elapsed() < Duration::from_secs(600), "timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let teacher_finished = out.join("runs/s3/teacher/finished.json");
    let before = (modified(&teacher_finished), modified(&scored));

    // A run cut off before its first checkpoint (here a stale teacher spec and no checkpoint)
    // starts again with the sweep's settings rather than resuming what it holds.
    let cut_off = out.join("runs/s4/dis2-dsm");
    assert!(!cut_off.exists(), "the kill came later than expected");
    std::fs::create_dir_all(&cut_off).unwrap();
    std::fs::copy(
        out.join("runs/s3/teacher/run.yaml"),
        cut_off.join("run.yaml"),
    )
    .unwrap();
    std::fs::write(cut_off.join("stale"), "").unwrap();

    let log = ok_all(&dis2(&args));
    assert!(
        !cut_off.join("stale").exists(),
        "the cut-off run started again"
    );
    let spec = std::fs::read_to_string(cut_off.join("run.yaml")).unwrap();
    assert!(spec.contains("kind: distill"), "{spec}");
    assert!(log.contains("run s3/teacher is finished, skipped"), "{log}");
    assert!(
        log.contains("evaluation test/s3/teacher--drop-dsm is done, skipped"),
        "{log}"
    );
    assert_eq!(
        (modified(&teacher_finished), modified(&scored)),
        before,
        "finished work is not redone"
    );
    let doc = results(&out);
    assert_eq!(doc["cells_missing"], 0, "{doc}");
    assert_eq!(doc["cells_done"], 2 * 4, "{doc}");
    check_statistics(&out, &doc);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| method | full | -dsm |"), "{md}");
    assert!(md.contains("| teacher-fill | same model |"), "{md}");
    assert!(md.contains("recovered by dis2"), "{md}");
    for f in ["results.csv", "differences.csv", "miou.png"] {
        assert!(out.join(f).exists(), "{f}");
    }

    // Everything done: a third start trains and scores nothing.
    let log = ok_all(&dis2(&args));
    assert!(
        log.contains("run s4/dis2-dsm is finished, skipped"),
        "{log}"
    );
    assert!(!log.contains("training "), "{log}");

    // Another grid in the same folder is refused, naming the folder.
    let mut other = args.clone();
    other.extend(["--set".to_string(), "train.epochs=2".to_string()]);
    let refused = dis2(&other);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds another sweep"), "{stderr}");
}

#[test]
fn shards_share_the_grid_and_collect_merges_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 11);
    let out = dir.path().join("sweep");
    let args = sweep_args(&config, &out);

    let mut listed = args.clone();
    listed.extend(["--shard".into(), "0/2".into(), "--list".into()]);
    let list = ok_all(&dis2(&listed));
    assert!(
        list.contains("shard 0/2:") && list.contains("shard 1/2:"),
        "{list}"
    );
    assert!(list.contains("/runs/s4/dis2-dsm "), "{list}");

    // The student's shard waits for the teacher's shard.
    let children: Vec<_> = ["1/2", "0/2"]
        .iter()
        .map(|shard| {
            let mut a = args.clone();
            a.extend(["--shard".to_string(), shard.to_string()]);
            Command::new(BIN)
                .args(&a)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_file(out.join("results.json")).unwrap();
    let collected = ok_all(&dis2(&[
        "sweep".to_string(),
        "--collect".to_string(),
        "--out".to_string(),
        out.display().to_string(),
    ]));
    assert!(collected.contains("8 of 8 cells"), "{collected}");
    assert_eq!(results(&out)["cells_missing"], 0);

    let bad = dis2(&[
        "sweep".into(),
        "--collect".into(),
        "--out".into(),
        dir.path().display().to_string(),
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not a sweep folder"));
}

/// The words a POSIX shell makes of `line`.
fn shell_words(line: &str) -> Vec<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("printf '%s\\0' {line}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{line}");
    let text = String::from_utf8(out.stdout).unwrap();
    text.split_terminator('\0').map(String::from).collect()
}

/// Every line of `--list` is a shell command: the binary, a subcommand and its arguments; a
/// teacher's line and its evaluation's line, run by the shell, write the run and the scores
/// where the sweep would.
#[test]
fn listed_lines_are_commands_that_run() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 12);
    let out = dir.path().join("sweep");
    let mut args = sweep_args(&config, &out);
    args.extend(["--list".into()]);
    let list = ok_all(&dis2(&args));
    let lines: Vec<&str> = list.lines().filter(|l| !l.starts_with('#')).collect();
    // Teacher and student per seed; teacher full, teacher-fill -dsm, student -dsm per seed.
    assert_eq!(lines.len(), 2 * 2 + 3 * 2, "{list}");
    for line in &lines {
        let words = shell_words(line);
        assert_eq!(words[0], BIN, "{line}");
        assert!(
            ["train-teacher", "distill", "eval"].contains(&words[1].as_str()),
            "{line}"
        );
        let at = words.iter().position(|w| w == "--out").unwrap();
        assert!(Path::new(&words[at + 1]).starts_with(&out), "{line}");
        assert!(words.ends_with(&["--device".into(), "cpu".into(), "--quiet".into()]));
    }
    let teacher = lines
        .iter()
        .find(|l| l.contains("/runs/s3/teacher "))
        .unwrap();
    assert!(
        shell_words(teacher).contains(&"seed=3".to_string()),
        "{teacher}"
    );
    let eval = (lines.iter())
        .find(|l| l.contains("/evals/test/s3/teacher--full "))
        .unwrap();
    for line in [teacher, eval] {
        let run = Command::new("sh").args(["-c", line]).output().unwrap();
        assert!(
            run.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }
    assert!(out.join("runs/s3/teacher/checkpoints/best").exists());
    let scores = read_json(&out.join("evals/test/s3/teacher--full/metrics.json"));
    assert_eq!(scores["score_unit"], "fraction");
    assert!(scores["miou"]
        .as_f64()
        .is_some_and(|m| (0.0..=1.0).contains(&m)));
}

/// Runs `scripts/sweep-local.sh OUT ARGS...` with `JOBS` shards of one thread each.
fn sweep_local(jobs: &str, out: &Path, args: &[String]) -> Output {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/sweep-local.sh");
    Command::new("bash")
        .arg(script)
        .arg(out)
        .args(args)
        .env("JOBS", jobs)
        .env("THREADS", "1")
        .env("BIN", BIN)
        .output()
        .expect("bash runs")
}

/// The options of `sweep_args`, without the subcommand, `--out` and its value.
fn without_out(args: Vec<String>) -> Vec<String> {
    let at = args.iter().position(|a| a == "--out").unwrap();
    let mut rest = args;
    rest.drain(at..at + 2);
    rest.remove(0);
    rest
}

#[test]
fn local_shards_give_the_numbers_of_one_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 11);
    let args = without_out(sweep_args(&config, Path::new("unused")));
    let one = dir.path().join("one");
    let two = dir.path().join("two");
    ok_all(&sweep_local("1", &one, &args));
    let log = ok_all(&sweep_local("2", &two, &args));
    assert!(log.contains("2 shards of 1 thread(s)"), "{log}");
    assert!(two.join("logs/shard-0.log").is_file() && two.join("logs/shard-1.log").is_file());
    assert_eq!(results(&two)["cells_missing"], 0);
    for eval in ["test/s3/dis2-dsm--drop-dsm", "test/s4/teacher--full"] {
        assert_eq!(cell_miou(&one, eval), cell_miou(&two, eval), "{eval}");
    }

    // A failing shard fails the whole command and shows the end of its log.
    let mut bad = args.clone();
    bad.extend(["--set".into(), "train.epochs=-1".into()]);
    let failed = sweep_local("2", &dir.path().join("bad"), &bad);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("shard 0/2 failed") && stderr.contains("epochs"),
        "{stderr}"
    );

    let jobs = sweep_local("two", &dir.path().join("x"), &args);
    assert_eq!(jobs.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&jobs.stderr).contains("JOBS=two"));
}

/// `dis2-joint` beside `dis2` in a tiny grid, as two local shards: one joint run per seed
/// (the teacher and both scenarios' students, drawn uniformly), scored like `dis2` (its students
/// per scenario, its own teacher in the `full` column), paired with `dis2` and with the other
/// rows; a second start trains and scores nothing.
#[test]
fn dis2_joint_is_one_run_per_seed_scored_and_paired_like_dis2() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 11);
    let out = dir.path().join("sweep");
    let mut args = sweep_args(&config, &out);
    let methods = args.iter().position(|a| a == "teacher-fill,dis2").unwrap();
    args[methods] = "teacher-fill,dis2,dis2-joint".to_string();
    let scenarios = args.iter().position(|a| a == "dsm").unwrap();
    args[scenarios] = "dsm,sar".to_string();
    ok_all(&sweep_local("2", &out, &without_out(args.clone())));

    let run = out.join("runs/s4/dis2-joint");
    let spec = std::fs::read_to_string(run.join("run.yaml")).unwrap();
    assert!(spec.contains("kind: joint"), "{spec}");
    let exp = dis2::config::Experiment::load(&run.join("config.yaml"), &[]).unwrap();
    let draw: Vec<(&str, f64)> = exp
        .train
        .joint_probabilities
        .iter()
        .map(|(k, p)| (k.as_str(), *p))
        .collect();
    assert_eq!(draw, [("dsm", 1.0), ("sar", 1.0)]);
    assert_eq!(
        exp.model.scenarios,
        Some(vec![vec!["dsm".into()], vec!["sar".into()]])
    );
    for (eval, branch) in [
        ("full", "teacher"),
        ("drop-dsm", "student[dsm]"),
        ("drop-sar", "student[sar]"),
    ] {
        let done = read_json(&out.join(format!("evals/test/s3/dis2-joint--{eval}/done.json")));
        assert_eq!(done["branch"], branch, "{done}");
        assert_eq!(done["run"], "s3/dis2-joint", "{done}");
    }

    let doc = results(&out);
    assert_eq!(doc["cells_missing"], 0, "{doc}");
    let row = &doc["methods"][2];
    assert_eq!(row["method"], "dis2-joint", "{row}");
    let joint = [3, 4].map(|s| cell_miou(&out, &format!("test/s{s}/dis2-joint--drop-sar")));
    let cell = &row["cells"]["sar"];
    assert_eq!(cell["n"], 2, "{cell}");
    assert!(
        close(&cell["miou"]["mean"], (joint[0] + joint[1]) / 2.0),
        "{cell}"
    );
    let pairs: Vec<(&str, &str, &str)> = doc["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let s = |k: &str| d[k].as_str().unwrap();
            (s("method"), s("minus"), s("scenario"))
        })
        .collect();
    // Its teacher is its own: dis2 minus dis2-joint has a full column.
    for pair in [
        ("dis2", "dis2-joint", "full"),
        ("dis2", "dis2-joint", "sar"),
        ("dis2-joint", "teacher-fill", "dsm"),
    ] {
        assert!(pairs.contains(&pair), "{pair:?} in {pairs:?}");
    }
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("### dis2-joint minus each method"), "{md}");

    let log = ok_all(&dis2(&args));
    assert!(
        log.contains("run s4/dis2-joint is finished, skipped"),
        "{log}"
    );
    assert!(
        !log.contains("training ") && !log.contains("scoring "),
        "{log}"
    );
}

/// A test scene outside the SAR footprint (its SAR all nodata) is scored through the branch
/// without SAR, every pixel of it, and the sweep finishes: before routes per pixel it stopped
/// with "every pixel is nodata in at least one input".
#[test]
fn a_scene_outside_the_sar_footprint_never_stops_a_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 13);
    let exp = dis2::config::Experiment::load(&config, &[]).unwrap();
    let split = dis2::data::layouts::Split::Test;
    let data = dis2::data::dataset::SceneDataset::open(&exp.data, &exp.model, split).unwrap();
    let sar = &data.scenes[0].modalities[2].path;
    let ds = gdal::Dataset::open_ex(
        sar,
        gdal::DatasetOptions {
            open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE | gdal::GdalOpenFlags::GDAL_OF_RASTER,
            ..Default::default()
        },
    )
    .unwrap();
    let (w, h) = ds.raster_size();
    let mut band = ds.rasterband(1).unwrap();
    let nodata = band
        .no_data_value()
        .expect("the synthetic SAR declares its nodata") as f32;
    let mut blank = gdal::raster::Buffer::new((w, h), vec![nodata; w * h]);
    band.write((0, 0), (w, h), &mut blank).unwrap();
    drop(ds);

    let out = dir.path().join("sweep");
    let mut args = sweep_args(&config, &out);
    let seeds = args.iter().position(|a| a == "3,4").unwrap();
    args[seeds] = "1".to_string(); // the experiment's own seed

    let methods = args.iter().position(|a| a == "teacher-fill,dis2").unwrap();
    args[methods] = "teacher-fill".to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok_all(&dis2(&args));
    let seed_dir = std::fs::read_dir(out.join("evals/test"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let done = read_json(&seed_dir.join("teacher--full/done.json"));
    let labelled: u64 = (0..data.scenes.len())
        .map(|i| {
            let s = &data.scenes[i];
            let window = dis2::data::raster::Window::new(0, 0, s.width(), s.height());
            let raw = data.read(i, window).unwrap();
            raw.labels
                .iter()
                .filter(|&&l| l != data.ignore_index)
                .count() as u64
        })
        .sum();
    assert_eq!(done["pixels"].as_u64(), Some(labelled), "{done}");
    assert_eq!(done["branch"], "teacher");
}
