//! Test-time augmentation (`--tta`, `--tta-spread`) through the binary: `none` is the output
//! without the option, `d8` on a trained teacher is a valid, different prediction, its spread is
//! NaN exactly at nodata, and `dis2 eval --tta d8` scores.

use std::path::{Path, PathBuf};

use dis2::data::raster::{write_geotiff, GeoRef, RasterData, RasterInfo, WriteOptions};

mod common;
use common::{dis2, failed, ok, predict, read_all, read_json, s, tiny_benchmark};

/// A copy of a one-band raster with its first `border` rows set to the nodata value -9999.
fn with_nodata_rows(src: &Path, dst: &Path, border: usize) {
    let info = RasterInfo::read(src).unwrap();
    let px = read_all(src);
    let data: Vec<f32> = (px.data.iter().zip(&px.valid).enumerate())
        .map(|(i, (&v, &ok))| {
            if i / info.width < border || !ok {
                -9999.0
            } else {
                v
            }
        })
        .collect();
    let raster = RasterData {
        width: info.width,
        height: info.height,
        bands: 1,
        data: &data,
    };
    let opts = WriteOptions {
        nodata: Some(-9999.0),
        ..Default::default()
    };
    write_geotiff(dst, &raster, &GeoRef::of(&info).unwrap(), &opts).unwrap();
}

/// The tiny benchmark and a teacher trained on it for two steps: (config, run, test scene
/// files [optical, dsm, sar]).
fn trained_teacher(dir: &Path) -> (String, PathBuf, Vec<PathBuf>) {
    let config = tiny_benchmark(dir, 5);
    let run = dir.join("teacher");
    let config = config.display().to_string();
    ok(&dis2(&[
        "train-teacher",
        "--config",
        &config,
        "--out",
        s(&run),
        "--set",
        "data.sampling.samples_per_epoch=8",
        "--set",
        "data.sampling.batch_size=4",
        "--set",
        "train.epochs=1",
        "--set",
        "train.val_batches=1",
        "--device",
        "cpu",
        "--quiet",
    ]));
    let test = dir.join("synthetic/test");
    let mut scene = Vec::new();
    for modality in ["optical", "dsm", "sar"] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(test.join(modality))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        scene.push(files[0].clone());
    }
    (config, run, scene)
}

#[test]
fn tta_none_is_the_output_without_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let ck = common::synthetic_checkpoint(dir.path());
    let files = common::synthetic_scene(dir.path(), 100);
    let mut outputs = Vec::new();
    for (name, tta) in [("plain", None), ("none", Some("none"))] {
        let (classes, probs) = (
            dir.path().join(format!("{name}.tif")),
            dir.path().join(format!("{name}-p.tif")),
        );
        let mut args = vec![
            "--checkpoint",
            s(&ck),
            "--optical",
            s(&files[0]),
            "--dsm",
            s(&files[1]),
            "--sar",
            s(&files[2]),
            "--out",
            s(&classes),
            "--probs",
            s(&probs),
        ];
        args.extend(tta.iter().flat_map(|t| ["--tta", *t]));
        let line = ok(&predict(&args));
        assert!(!line.contains("tta"), "{line}");
        outputs.push((read_all(&classes), read_all(&probs)));
    }
    assert_eq!(outputs[0].0, outputs[1].0);
    // Bit for bit: every probability the same f32.
    let bits = |p: &dis2::data::raster::Pixels| -> Vec<u32> {
        p.data.iter().map(|v| v.to_bits()).collect()
    };
    assert_eq!(bits(&outputs[0].1), bits(&outputs[1].1));

    // A spread needs several views.
    let err = failed(&predict(&[
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&files[0]),
        "--out",
        s(&dir.path().join("x.tif")),
        "--tta-spread",
        s(&dir.path().join("spread.tif")),
    ]));
    assert!(
        err.contains("--tta-spread") && err.contains("--tta none"),
        "{err}"
    );
    assert!(!dir.path().join("x.tif").exists());
}

#[test]
fn d8_on_a_trained_teacher_is_valid_differs_and_spreads_only_where_classified() {
    let dir = tempfile::tempdir().unwrap();
    let (_config, run, scene) = trained_teacher(dir.path());
    // Rows without a DSM: a teacher-only checkpoint leaves them nodata.
    let dsm = dir.path().join("dsm-gap.tif");
    with_nodata_rows(&scene[1], &dsm, 20);
    let predict_with = |name: &str, extra: &[&str]| {
        let (classes, probs) = (
            dir.path().join(format!("{name}.tif")),
            dir.path().join(format!("{name}-p.tif")),
        );
        let mut args = vec![
            "--checkpoint",
            s(&run),
            "--optical",
            s(&scene[0]),
            "--dsm",
            s(&dsm),
            "--sar",
            s(&scene[2]),
            "--out",
            s(&classes),
            "--probs",
            s(&probs),
        ];
        args.extend_from_slice(extra);
        let line = ok(&predict(&args));
        (line, read_all(&classes), read_all(&probs))
    };
    let (_, none_classes, none_probs) = predict_with("none", &[]);
    let spread_path = dir.path().join("spread.tif");
    let (line, classes, probs) =
        predict_with("d8", &["--tta", "d8", "--tta-spread", s(&spread_path)]);
    assert!(line.contains("tta d8"), "{line}");
    let plane = classes.data.len();
    let nodata = classes.valid.iter().filter(|v| !**v).count();
    assert!(
        nodata >= 20 * 96,
        "the rows without a DSM are nodata: {nodata}"
    );
    // The same pixels classified, every class a class, every pixel's probabilities a distribution.
    assert_eq!(classes.valid, none_classes.valid);
    let mut changed = 0.0f32;
    for i in (0..plane).filter(|&i| classes.valid[i]) {
        assert!(classes.data[i] < 6.0);
        let sum: f32 = (0..6).map(|c| probs.data[c * plane + i]).sum();
        assert!((sum - 1.0).abs() < 1e-4, "pixel {i}: {sum}");
        for c in 0..6 {
            let d = (probs.data[c * plane + i] - none_probs.data[c * plane + i]).abs();
            changed = changed.max(d);
        }
    }
    assert!(changed > 1e-3, "d8 differs from none: {changed}");

    // The spread: NaN (invalid) exactly where the class map is nodata, finite and >= 0 elsewhere.
    let info = RasterInfo::read(&spread_path).unwrap();
    assert_eq!((info.width, info.height, info.bands), (96, 96, 1));
    assert_eq!(info.data_type, "Float32");
    assert!(info.nodata[0].is_some_and(f64::is_nan), "{:?}", info.nodata);
    assert_eq!(read_all(&spread_path).valid, classes.valid);
    let ds = gdal::Dataset::open(&spread_path).unwrap();
    let band = ds.rasterband(1).unwrap();
    let spread = band
        .read_as::<f32>((0, 0), (96, 96), (96, 96), None)
        .unwrap();
    let mut largest = 0.0f32;
    for (i, &v) in spread.data().iter().enumerate() {
        if classes.valid[i] {
            assert!(v.is_finite() && v >= 0.0, "pixel {i}: {v}");
            largest = largest.max(v);
        } else {
            assert!(v.is_nan(), "pixel {i}: {v}");
        }
    }
    assert!(largest > 0.0, "the views disagree somewhere");
    assert_eq!(spread.data().len(), plane);
}

#[test]
fn eval_with_d8_scores_the_same_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let (_config, run, _) = trained_teacher(dir.path());
    let mut docs = Vec::new();
    for tta in ["none", "d8"] {
        let out = dir.path().join(format!("eval-{tta}"));
        ok(&dis2(&[
            "eval",
            "--checkpoint",
            s(&run),
            "--tta",
            tta,
            "--overlays",
            "0",
            "--out",
            s(&out),
            "--device",
            "cpu",
            "--quiet",
        ]));
        docs.push(read_json(&out.join("metrics.json")));
    }
    assert_eq!(docs[0]["tta"], "none");
    assert_eq!(docs[1]["tta"], "d8");
    assert_eq!(docs[0]["pixels"], docs[1]["pixels"]);
    assert!(docs[1]["pixels"].as_u64().unwrap() > 0);
    let miou = docs[1]["miou"].as_f64().expect("a score");
    assert!((0.0..=1.0).contains(&miou), "{miou}");
    let err = failed(&dis2(&["eval", "--checkpoint", s(&run), "--tta", "d4"]));
    assert!(err.contains("--tta") && err.contains("d8"), "{err}");
}
