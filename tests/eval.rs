//! `dis2 eval` through the binary on a tiny synthetic benchmark.

use std::path::Path;
use std::process::Output;

mod common;
use common::{ok, read_json, tiny_benchmark};

/// `dis2 ARGS --device cpu --quiet`: every run of this file.
fn quiet_on_cpu(args: &[&str]) -> Output {
    common::dis2(&[args, &["--device", "cpu", "--quiet"][..]].concat())
}

/// Labelled pixels of the test split: with data in every input (the tiny benchmark has SAR
/// nodata at swath edges), and in all, counted from the rasters themselves.
fn labelled_test_pixels(config: &Path) -> (u64, u64) {
    let exp = dis2::config::Experiment::load(config, &[]).unwrap();
    let data = dis2::data::dataset::SceneDataset::open(
        &exp.data,
        &exp.model,
        dis2::data::layouts::Split::Test,
    )
    .unwrap();
    let (mut complete, mut all) = (0, 0);
    for (i, scene) in data.scenes.iter().enumerate() {
        let window = dis2::data::raster::Window::new(0, 0, scene.width(), scene.height());
        let raw = data.read(i, window).unwrap();
        for p in 0..window.width * window.height {
            if raw.labels[p] != data.ignore_index {
                all += 1;
                complete += u64::from(raw.modalities.iter().all(|m| m.valid[p]));
            }
        }
    }
    (complete, all)
}

/// `metrics.json`'s `by_data` groups as (name, labelled, scored).
fn data_groups(doc: &serde_json::Value) -> Vec<(String, u64, u64)> {
    let groups = doc["by_data"].as_array().expect("by_data");
    groups
        .iter()
        .map(|g| {
            let n = |k: &str| g[k].as_u64().unwrap();
            (
                g["pixels"].as_str().unwrap().to_string(),
                n("labelled"),
                n("scored"),
            )
        })
        .collect()
}

#[test]
fn eval_scores_whole_scenes_and_labels_the_filled_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 5);
    let run = dir.path().join("teacher");
    let (config, run_s) = (config.display().to_string(), run.display().to_string());
    ok(&quiet_on_cpu(&[
        "train-teacher",
        "--config",
        &config,
        "--out",
        &run_s,
        "--set",
        "data.sampling.samples_per_epoch=16",
        "--set",
        "data.sampling.batch_size=4",
        "--set",
        "train.epochs=1",
        "--set",
        "train.val_batches=1",
    ]));

    let stdout = ok(&quiet_on_cpu(&["eval", "--checkpoint", &run_s]));
    assert!(stdout.starts_with("teacher: mIoU"), "{stdout}");
    let doc = read_json(&run.join("eval-test/metrics.json"));
    let cm: Vec<Vec<u64>> = serde_json::from_value(doc["confusion_matrix"].clone()).unwrap();
    let total: u64 = cm.iter().flatten().sum();
    let (complete, labelled) = labelled_test_pixels(Path::new(&config));
    assert!(complete < labelled, "the tiny benchmark has SAR gaps");
    assert_eq!(
        total, labelled,
        "every labelled test pixel is scored once: where SAR has no data, by the teacher with \
         SAR filled (a teacher run has no student)"
    );
    assert_eq!(doc["pixels"].as_u64(), Some(total));
    assert_eq!(doc["routes"], "per pixel");
    // The groups by what the data lacks split the labelled pixels, every one scored.
    let groups = data_groups(&doc);
    assert_eq!(
        groups.iter().map(|g| g.1).sum::<u64>(),
        labelled,
        "{groups:?}"
    );
    assert_eq!(groups.iter().map(|g| g.2).sum::<u64>(), total, "{groups:?}");
    assert_eq!((groups[0].0.as_str(), groups[0].1), ("complete", complete));
    let gap = groups
        .iter()
        .find(|g| g.0 == "missing sar")
        .expect("SAR gaps");
    assert_eq!(gap.1, gap.2, "{groups:?}");
    assert!(
        stdout.contains("pixels by what the data lacks:"),
        "{stdout}"
    );
    // By branch: the teacher, and the filled teacher over the SAR gaps and their margin.
    let mut routes: Vec<(String, u64, u64)> = doc["by_route"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let n = |k: &str| g[k].as_u64().unwrap();
            (
                g["pixels"].as_str().unwrap().to_string(),
                n("labelled"),
                n("scored"),
            )
        })
        .collect();
    routes.sort();
    assert_eq!(routes.len(), 2, "{routes:?}");
    assert_eq!(
        (routes[0].0.as_str(), routes[1].0.as_str()),
        ("teacher", "teacher-fill[sar]")
    );
    assert_eq!(routes[0].2 + routes[1].2, total);
    assert!(
        routes[1].2 >= gap.1 && routes[0].2 <= complete,
        "{routes:?}"
    );
    assert!(
        stdout.contains("pixels by the branch that classified them:"),
        "{stdout}"
    );
    assert!(!stdout.contains("left unscored"), "{stdout}");

    // One branch per scene, as before routes per pixel: only complete pixels are scored.
    let one = dir.path().join("one-route");
    let stdout = ok(&quiet_on_cpu(&[
        "eval",
        "--checkpoint",
        &run_s,
        "--one-route",
        "--out",
        &one.display().to_string(),
    ]));
    let one_doc = read_json(&one.join("metrics.json"));
    assert_eq!(one_doc["pixels"].as_u64(), Some(complete));
    assert_eq!(one_doc["routes"], "one per scene");
    let unscored = format!("left unscored: {} labelled pixels", labelled - complete);
    assert!(stdout.contains(&unscored), "{stdout}");
    let correct: u64 = (0..cm.len()).map(|i| cm[i][i]).sum();
    let oa = doc["overall_accuracy"].as_f64().unwrap();
    assert!((oa - correct as f64 / total as f64).abs() < 1e-12);
    assert!(
        run.join("eval-test/metrics.csv").exists() && run.join("eval-test/confusion.png").exists()
    );

    // No student for a dropped DSM in a teacher run: the teacher runs with it filled, and says so.
    let stdout = ok(&quiet_on_cpu(&[
        "eval",
        "--checkpoint",
        &run_s,
        "--drop",
        "dsm",
        "--exclude",
        "water",
    ]));
    assert!(stdout.starts_with("teacher-fill[dsm]: mIoU"), "{stdout}");
    assert!(stdout.contains("(not in means)"), "{stdout}");
    let doc = read_json(&run.join("eval-test-drop-dsm/metrics.json"));
    assert_eq!(doc["branch"], "teacher-fill[dsm]");
    // A dropped modality is not a gap in the data: the groups are those of the full run.
    let dropped = data_groups(&doc);
    assert_eq!(
        (dropped.iter().map(|g| (&g.0, g.1)).collect::<Vec<_>>()),
        (groups.iter().map(|g| (&g.0, g.1)).collect::<Vec<_>>())
    );

    for (args, expected) in [
        (vec!["--drop", "lidar"], "unknown modality \"lidar\""),
        (vec!["--exclude", "forest"], "not a class"),
    ] {
        let mut all = vec!["eval", "--checkpoint", &run_s];
        all.extend(args);
        let out = quiet_on_cpu(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// The synthetic benchmark and a teacher trained for a few steps: (root, config, run).
fn tiny_teacher(dir: &Path) -> (std::path::PathBuf, String, std::path::PathBuf) {
    let config = tiny_benchmark(dir, 5);
    let run = dir.join("teacher");
    let config = config.display().to_string();
    ok(&quiet_on_cpu(&[
        "train-teacher",
        "--config",
        &config,
        "--out",
        &run.display().to_string(),
        "--set",
        "data.sampling.samples_per_epoch=8",
        "--set",
        "data.sampling.batch_size=4",
        "--set",
        "train.epochs=1",
        "--set",
        "train.val_batches=1",
    ]));
    (dir.join("synthetic"), config, run)
}

fn png_size(path: &Path) -> (usize, usize) {
    let img = image::open(path).unwrap().to_rgb8();
    (img.width() as usize, img.height() as usize)
}

#[test]
fn eval_erodes_boundaries_and_draws_overlays() {
    let dir = tempfile::tempdir().unwrap();
    let (_root, config, run) = tiny_teacher(dir.path());
    let run_s = run.display().to_string();

    // The pixels left after eroding each whole test scene's labels by a disk of radius 2.
    let exp = dis2::config::Experiment::load(Path::new(&config), &[]).unwrap();
    let data = dis2::data::dataset::SceneDataset::open(
        &exp.data,
        &exp.model,
        dis2::data::layouts::Split::Test,
    )
    .unwrap();
    let mut kept = 0u64;
    for (i, scene) in data.scenes.iter().enumerate() {
        let (w, h) = (scene.width(), scene.height());
        let raw = data
            .read(i, dis2::data::raster::Window::new(0, 0, w, h))
            .unwrap();
        let eroded = dis2::metrics::erode_boundaries(&raw.labels, w, h, 2, data.ignore_index);
        kept += (0..w * h)
            .filter(|&p| {
                eroded[p] != data.ignore_index && raw.modalities.iter().any(|m| m.valid[p])
            })
            .count() as u64;
    }
    let total = labelled_test_pixels(Path::new(&config)).1;
    assert!(kept < total, "the synthetic scenes have class boundaries");

    let eroded = dir.path().join("eroded");
    ok(&quiet_on_cpu(&[
        "eval",
        "--checkpoint",
        &run_s,
        "--erode",
        "2",
        "--overlays",
        "2",
        "--out",
        &eroded.display().to_string(),
    ]));
    let doc = read_json(&eroded.join("metrics.json"));
    assert_eq!(doc["erode"].as_u64(), Some(2));
    assert_eq!(doc["pixels"].as_u64(), Some(kept));
    let mut overlays: Vec<_> = std::fs::read_dir(eroded.join("overlays"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    overlays.sort();
    // The first two scenes of the split (the tiny benchmark may have fewer), by scene id.
    let expected: Vec<_> = data
        .scenes
        .iter()
        .take(2)
        .map(|s| eroded.join("overlays").join(format!("{}.png", s.id)))
        .collect();
    assert_eq!(overlays, expected);
    for path in &overlays {
        assert_eq!(path.extension().unwrap(), "png");
        let classes = exp.data.class_table(6);
        assert_eq!(
            png_size(path),
            dis2::figures::overlay_size(96, 96, &classes)
        );
    }

    let plain = dir.path().join("plain");
    ok(&quiet_on_cpu(&[
        "eval",
        "--checkpoint",
        &run_s,
        "--overlays",
        "0",
        "--out",
        &plain.display().to_string(),
    ]));
    let doc = read_json(&plain.join("metrics.json"));
    assert_eq!(
        (doc["erode"].as_u64(), doc["pixels"].as_u64()),
        (Some(0), Some(total))
    );
    assert!(!plain.join("overlays").exists());
}

#[test]
fn eval_draws_attention_maps_of_teacher_and_student() {
    let dir = tempfile::tempdir().unwrap();
    let (_root, config, run) = tiny_teacher(dir.path());
    let run_s = run.display().to_string();
    let classes = dis2::config::Experiment::load(Path::new(&config), &[])
        .unwrap()
        .data
        .class_table(6);
    let titles = ["teacher".to_string(), "student[dsm]".to_string()];
    let (w, h) = dis2::figures::attention_size(64, 64, &titles, &classes);
    let (cw, ch) = dis2::figures::attention_cell(64, 64);

    // Teacher alone: the second column of the class rows stays empty (white).
    let teacher_maps = dir.path().join("attention-teacher");
    let stdout = ok(&quiet_on_cpu(&[
        "eval",
        "--checkpoint",
        &run_s,
        "--overlays",
        "0",
        "--attention-maps",
        &teacher_maps.display().to_string(),
        "--attention-windows",
        "2",
    ]));
    assert!(stdout.contains("wrote 2 attention figure(s)"), "{stdout}");
    let files: Vec<_> = std::fs::read_dir(&teacher_maps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    // A pixel in the middle of the second column, first class row.
    let probe = |path: &Path| {
        let img = image::open(path).unwrap().to_rgb8();
        assert_eq!((img.width() as usize, img.height() as usize), (w, h));
        let x = w - 6 - cw / 2;
        // Header 26, the input row, the column titles (18), half a class row.
        let y = 26 + (ch + 6) + 18 + ch / 2;
        img.get_pixel(x as u32, y as u32).0
    };
    for f in &files {
        assert_eq!(probe(f), [255, 255, 255]);
    }

    // A student for the missing DSM (two distillation steps): teacher | student[dsm].
    let student = dir.path().join("student-dsm");
    ok(&quiet_on_cpu(&[
        "distill",
        "--config",
        &config,
        "--teacher",
        &run.join("checkpoints/best").display().to_string(),
        "--missing",
        "dsm",
        "--out",
        &student.display().to_string(),
        "--set",
        "train.max_steps=2",
        "--set",
        "data.sampling.batch_size=2",
        "--set",
        "train.val_batches=1",
    ]));
    let maps = dir.path().join("attention-student");
    let stdout = ok(&quiet_on_cpu(&[
        "eval",
        "--checkpoint",
        &student.display().to_string(),
        "--drop",
        "dsm",
        "--overlays",
        "0",
        "--attention-maps",
        &maps.display().to_string(),
        "--attention-windows",
        "1",
    ]));
    assert!(stdout.starts_with("student[dsm]: mIoU"), "{stdout}");
    let files: Vec<_> = std::fs::read_dir(&maps)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_ne!(
        probe(&files[0]),
        [255, 255, 255],
        "the student's column is drawn"
    );

    let out = quiet_on_cpu(&[
        "eval",
        "--checkpoint",
        &run_s,
        "--attention-maps",
        &maps.display().to_string(),
        "--attention-windows",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--attention-windows 0"), "{stderr}");
}

/// Fills every band of the raster at `path` with `nodata` (0, which every pixel type holds) and
/// declares it: a scene outside that input's footprint.
fn blank(path: &Path) {
    let nodata = 0.0;
    use gdal::raster::Buffer;
    let ds = gdal::Dataset::open_ex(
        path,
        gdal::DatasetOptions {
            open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE | gdal::GdalOpenFlags::GDAL_OF_RASTER,
            ..Default::default()
        },
    )
    .unwrap();
    let (w, h) = ds.raster_size();
    for b in 1..=ds.raster_count() {
        let mut band = ds.rasterband(b).unwrap();
        band.set_no_data_value(Some(nodata)).unwrap();
        let mut buf = Buffer::new((w, h), vec![nodata as f32; w * h]);
        band.write((0, 0), (w, h), &mut buf).unwrap();
    }
}

/// A split with a scene outside the SAR footprint is scored through the branch without SAR,
/// and a scene where every input is empty is skipped with a line naming it, not an error.
#[test]
fn eval_scores_a_scene_outside_a_footprint_and_skips_one_without_any_input() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_benchmark(dir.path(), 7);
    let exp = dis2::config::Experiment::load(&config, &[]).unwrap();
    let data = dis2::data::dataset::SceneDataset::open(
        &exp.data,
        &exp.model,
        dis2::data::layouts::Split::Train,
    )
    .unwrap();
    assert!(
        data.scenes.len() >= 2,
        "the tiny benchmark has two test scenes"
    );
    let (outside, empty) = (&data.scenes[0], &data.scenes[1]);
    blank(&outside.modalities[2].path);
    for source in &empty.modalities {
        blank(&source.path);
    }
    let checkpoint = common::untrained_checkpoint(dir.path(), "model", &exp.model, &exp.data, 3);
    let out = dir.path().join("eval");
    let run = quiet_on_cpu(&[
        "eval",
        "--checkpoint",
        &checkpoint.display().to_string(),
        "--config",
        &config.display().to_string(),
        "--split",
        "train",
        "--out",
        &out.display().to_string(),
    ]);
    let (stdout, stderr) = common::ok_with_stderr(&run);
    assert!(
        stderr.contains(&format!(
            "skipped scene {}: every pixel is nodata",
            empty.id
        )),
        "{stderr}"
    );
    let doc = read_json(&out.join("metrics.json"));
    assert_eq!(doc["skipped_scenes"][0], empty.id.as_str(), "{doc}");
    let groups = data_groups(&doc);
    let sar = groups
        .iter()
        .find(|g| g.0 == "missing sar")
        .expect("{groups:?}");
    let pixels = (outside.width() * outside.height()) as u64;
    assert!(sar.1 >= pixels && sar.2 == sar.1, "{groups:?}");
    let none = groups
        .iter()
        .find(|g| g.0 == "no input")
        .expect("{groups:?}");
    assert!(none.1 > 0 && none.2 == 0, "{groups:?}");
    assert!(stdout.contains("left unscored:"), "{stdout}");
}

/// The inputs, in model order, of the first test scene whose SAR has gaps.
fn scene_with_sar_gaps(config: &Path) -> Vec<std::path::PathBuf> {
    let exp = dis2::config::Experiment::load(config, &[]).unwrap();
    let data = dis2::data::dataset::SceneDataset::open(
        &exp.data,
        &exp.model,
        dis2::data::layouts::Split::Test,
    )
    .unwrap();
    let sar = (exp.model.modalities.iter())
        .position(|m| m.name == "sar")
        .unwrap();
    let index = (0..data.scenes.len())
        .find(|&i| {
            let scene = &data.scenes[i];
            let window = dis2::data::raster::Window::new(0, 0, scene.width(), scene.height());
            let valid = &data.read(i, window).unwrap().modalities[sar].valid;
            valid.iter().any(|v| !v) && valid.iter().any(|&v| v)
        })
        .expect("a test scene with SAR gaps");
    (data.scenes[index].modalities.iter())
        .map(|m| m.path.clone())
        .collect()
}

#[test]
fn a_trained_teacher_reports_its_confidence_and_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let (_root, config, run) = tiny_teacher(dir.path());
    let run_s = run.display().to_string();

    // Eval: the calibration bins hold exactly the scored pixels, and the ECE is the formula
    // over them.
    let out = dir.path().join("eval");
    let stdout = ok(&quiet_on_cpu(&[
        "eval",
        "--checkpoint",
        &run_s,
        "--overlays",
        "0",
        "--out",
        &out.display().to_string(),
    ]));
    assert!(stdout.contains("calibration: ECE "), "{stdout}");
    let doc = read_json(&out.join("metrics.json"));
    let cal = &doc["calibration"];
    assert_eq!(cal["measure"], dis2::predict::CONFIDENCE_MEASURE);
    let bins = cal["bins"].as_array().unwrap();
    assert_eq!(bins.len(), dis2::metrics::CALIBRATION_BINS);
    let scored = doc["pixels"].as_u64().unwrap();
    assert_eq!(cal["pixels"].as_u64(), Some(scored));
    let (mut ece, mut correct, mut counted) = (0.0, 0.0, 0u64);
    for (i, bin) in bins.iter().enumerate() {
        let (lower, upper) = (i as f64 / 15.0, (i + 1) as f64 / 15.0);
        assert!((bin["lower"].as_f64().unwrap() - lower).abs() < 1e-12);
        assert!((bin["upper"].as_f64().unwrap() - upper).abs() < 1e-12);
        let n = bin["pixels"].as_u64().unwrap();
        counted += n;
        if n == 0 {
            assert!(bin["accuracy"].is_null() && bin["confidence"].is_null());
            continue;
        }
        let (acc, conf) = (
            bin["accuracy"].as_f64().unwrap(),
            bin["confidence"].as_f64().unwrap(),
        );
        assert!(
            conf > lower - 1e-6 && conf <= upper + 1e-6,
            "bin {i}: {conf}"
        );
        ece += n as f64 / scored as f64 * (acc - conf).abs();
        correct += acc * n as f64;
    }
    assert_eq!(counted, scored);
    assert!((ece - cal["ece"].as_f64().unwrap()).abs() < 1e-9, "{cal}");
    // The bins' correct pixels are the confusion matrix's diagonal.
    let oa = doc["overall_accuracy"].as_f64().unwrap();
    assert!((correct / scored as f64 - oa).abs() < 1e-9);
    for group in doc["by_route"].as_array().unwrap() {
        assert!(group["ece"].as_f64().is_some(), "{group}");
    }
    let png = image::open(out.join("reliability.png")).unwrap();
    // The title fits the smallest width: 760 x (62 + 470 + 230).
    assert_eq!(png.height(), 762);
    assert!(png.width() >= 760, "{}", png.width());

    // Predict on a scene whose SAR has gaps: a teacher without students leaves them nodata.
    let files = scene_with_sar_gaps(Path::new(&config));
    let (classes, probs, confidence) = (
        dir.path().join("classes.tif"),
        dir.path().join("probs.tif"),
        dir.path().join("confidence.tif"),
    );
    let path = |p: &Path| p.display().to_string();
    ok(&common::predict(&[
        "--checkpoint",
        &run_s,
        "--optical",
        &path(&files[0]),
        "--dsm",
        &path(&files[1]),
        "--sar",
        &path(&files[2]),
        "--out",
        &path(&classes),
        "--probs",
        &path(&probs),
        "--confidence",
        &path(&confidence),
    ]));
    let info = dis2::data::raster::RasterInfo::read(&confidence).unwrap();
    let class_info = dis2::data::raster::RasterInfo::read(&classes).unwrap();
    assert_eq!((info.bands, info.data_type.as_str()), (1, "Float32"));
    assert_eq!(
        (info.width, info.height, &info.geo_transform),
        (
            class_info.width,
            class_info.height,
            &class_info.geo_transform
        )
    );
    assert!(info.nodata[0].is_some_and(f64::is_nan), "{:?}", info.nodata);
    use gdal::Metadata;
    let ds = dis2::data::raster::open(&confidence).unwrap();
    let band = ds.rasterband(1).unwrap();
    assert_eq!(
        band.description().unwrap(),
        dis2::predict::CONFIDENCE_MEASURE
    );
    // The values as stored (reading through the mask model fills nodata pixels).
    let (w, h) = (info.width, info.height);
    let stored: Vec<f32> = (band.read_as::<f32>((0, 0), (w, h), (w, h), None))
        .unwrap()
        .data()
        .to_vec();
    let (k, c, p) = (
        common::read_all(&classes),
        common::read_all(&confidence),
        common::read_all(&probs),
    );
    let plane = k.valid.len();
    let nodata = k.valid.iter().filter(|v| !**v).count();
    assert!(nodata > 0 && nodata < plane, "{nodata} of {plane}");
    for (i, &value) in stored.iter().enumerate() {
        // NaN, and masked for GDAL, exactly where the class map is nodata.
        assert_eq!(c.valid[i], k.valid[i], "pixel {i}");
        assert_eq!(value.is_nan(), !k.valid[i], "pixel {i}");
        if !k.valid[i] {
            continue;
        }
        let max = (0..p.bands)
            .map(|b| p.data[b * plane + i])
            .fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(value, max, "pixel {i}");
        assert_eq!(c.data[i], max, "pixel {i}");
        assert!(
            (1.0 / 6.0 - 1e-6..=1.0 + 1e-6).contains(&value),
            "pixel {i}: {value}"
        );
    }
}
