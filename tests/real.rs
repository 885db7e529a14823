//! The real-data path end to end on `../shared/fixtures/real/eolearn-slovenia` (Sentinel-2, DEM
//! and land cover, 101 x 100 px): `dis2 blocks` makes the spatial-block splits, then stats,
//! train-teacher and distill --missing dsm (a few steps each), eval with every modality and with
//! the DSM dropped, and predict on the whole patch. Checks the georeferencing of blocks and
//! predictions, the class set and the metrics files. Skipped, with a note, without `../shared`.

use std::path::{Path, PathBuf};

use dis2::data::raster::RasterInfo;

mod common;
use common::{dis2, ok_all, read_all, read_json, s};

const CLASSES: [&str; 4] = ["forest", "grassland", "shrubland", "artificial"];

/// The fixture folder, or `None` with a note when `../shared` is absent.
fn fixture() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/real/eolearn-slovenia");
    if dir.join("label.tif").is_file() {
        Some(dir)
    } else {
        eprintln!("skipped: the real fixture is not in {}", dir.display());
        None
    }
}

/// The shipped experiment with its data paths moved to `data`.
fn experiment(dir: &Path, data: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/eolearn-slovenia.yaml");
    let text = std::fs::read_to_string(shipped).unwrap();
    let path = dir.join("eolearn-slovenia.yaml");
    std::fs::write(&path, text.replace("data/eolearn-slovenia", s(data))).unwrap();
    path
}

/// Options of a training run of a few steps.
const SHORT: [&str; 10] = [
    "--set",
    "train.max_steps=3",
    "--set",
    "train.val_every=3",
    "--set",
    "data.sampling.samples_per_epoch=16",
    "--set",
    "train.kd_warmup_epochs=0",
    "--device",
    "cpu",
];

/// Every value of a single-band raster.
fn values(path: &Path) -> (RasterInfo, Vec<f32>) {
    (RasterInfo::read(path).unwrap(), read_all(path).data)
}

/// metrics.json of an evaluation: the four classes by name, scores in [0, 1], the means over
/// the classes present in the test labels.
fn check_metrics(dir: &Path, branch: &str) {
    let doc = read_json(&dir.join("metrics.json"));
    assert_eq!(doc["branch"], branch, "{doc}");
    let names: Vec<&str> = doc["per_class"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["class"].as_str().unwrap())
        .collect();
    assert_eq!(names, CLASSES);
    // Every class has test pixels (blocks.json counts them), so every class is averaged.
    assert_eq!(doc["classes_in_means"], serde_json::json!(CLASSES), "{doc}");
    let miou = doc["miou"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&miou), "{doc}");
    assert!(doc["pixels"].as_u64().unwrap() > 10_000, "{doc}");
    let csv = std::fs::read_to_string(dir.join("metrics.csv")).unwrap();
    for class in CLASSES {
        assert!(csv.contains(&format!("{branch},{class},")), "{csv}");
    }
    assert!(dir.join("confusion.png").is_file());
}

#[test]
fn real_patch_trains_distils_scores_and_predicts_in_place() {
    let Some(fixture) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let f = |name: &str| fixture.join(name).display().to_string();
    let optical: Vec<String> = (0..5).map(|t| f(&format!("optical_t{t}.tif"))).collect();
    let optical = format!("optical={}", optical.join(","));
    let dsm = format!("dsm={}", f("dsm.tif"));
    let log = ok_all(&dis2(&[
        "blocks",
        "--modality",
        &optical,
        "--modality",
        &dsm,
        "--labels",
        &f("label.tif"),
        "--grid",
        "4x4",
        "--out",
        s(&data),
    ]));
    assert!(log.contains("TV..\nV..T\n..TV\n.TV.\n"), "{log}");
    assert!(log.contains("40 train, 20 val and 20 test scenes"), "{log}");
    let blocks = read_json(&data.join("blocks.json"));
    for code in ["2", "3", "4", "8"] {
        assert!(
            blocks["label_counts"]["test"][code].as_u64().unwrap() > 0,
            "{blocks}"
        );
    }
    // A block sits where it was cut from: 25 px right and 50 down is 250 m east, 500 m south.
    let scene = RasterInfo::read(&fixture.join("label.tif")).unwrap();
    let block = RasterInfo::read(&data.join("test/optical/r2c2_t3.tif")).unwrap();
    let (g, b) = (scene.geo_transform.unwrap(), block.geo_transform.unwrap());
    assert!(
        (b[0] - (g[0] + 50.0 * g[1])).abs() < 1e-6 && (b[3] - (g[3] + 50.0 * g[5])).abs() < 1e-6
    );
    assert_eq!((block.width, block.height, block.bands), (25, 25, 4));

    let config_file = experiment(dir.path(), &data);
    let config = s(&config_file);
    ok_all(&dis2(&["stats", "--config", config, "--class-weights"]));
    let teacher_dir = dir.path().join("teacher");
    let teacher = s(&teacher_dir);
    let mut args = vec![
        "train-teacher",
        "--config",
        config,
        "--out",
        teacher,
        "--quiet",
    ];
    args.extend(SHORT);
    ok_all(&dis2(&args));
    let best = format!("{teacher}/checkpoints/best");
    let student_dir = dir.path().join("student");
    let student = s(&student_dir);
    let mut args = vec![
        "distill",
        "--config",
        config,
        "--teacher",
        &best,
        "--missing",
        "dsm",
        "--out",
        student,
        "--quiet",
    ];
    args.extend(SHORT);
    let log = ok_all(&dis2(&args));
    assert!(log.contains("student[dsm]"), "{log}");
    // The closing summary compares the student and the filled teacher over one class set.
    assert!(
        log.contains("each mIoU averages the same 4 of 4 classes"),
        "{log}"
    );

    for (drop, branch) in [(None, "teacher"), (Some("dsm"), "student[dsm]")] {
        let out = dir.path().join(format!("eval-{branch}"));
        let mut args = vec!["eval", "--checkpoint", student, "--out", s(&out), "--quiet"];
        args.extend(["--device", "cpu", "--overlays", "2"]);
        if let Some(d) = drop {
            args.extend(["--drop", d]);
        }
        ok_all(&dis2(&args));
        check_metrics(&out, branch);
    }

    // The whole patch, with and without the DSM: same grid, same CRS, classes 0..3 only.
    let ckpt = format!("{student}/checkpoints/best");
    let (t2, dem) = (f("optical_t2.tif"), f("dsm.tif"));
    for (name, dsm) in [("full", Some(dem.as_str())), ("optical", None)] {
        let out_file = dir.path().join(format!("predict-{name}.tif"));
        let out = s(&out_file);
        let mut args = vec![
            "predict",
            "--checkpoint",
            &ckpt,
            "--out",
            out,
            "--device",
            "cpu",
        ];
        args.extend(["--quiet", "--optical", &t2]);
        if let Some(d) = dsm {
            args.extend(["--dsm", d]);
        }
        ok_all(&dis2(&args));
        let (info, classes) = values(&out_file);
        scene.check_aligned(&info).unwrap();
        assert_eq!((info.width, info.height), (100, 101));
        assert!(
            classes.iter().all(|&c| (0.0..4.0).contains(&c)),
            "{name}: classes 0..3"
        );
    }
}
