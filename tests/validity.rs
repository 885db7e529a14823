//! Which pixels count: GDAL's mask model (internal and sidecar masks, per-band masks, alpha,
//! nodata) in predict, statistics, the loader, validation and eval; values with two meanings
//! (sentinel collisions); outputs GIS tools read as meant; the messages of issue 12; and a NIR
//! band marked as alpha read as data when the user says so (issue 23).

use std::path::{Path, PathBuf};
use std::process::Command;

use dis2::config::Experiment;
use dis2::data::dataset::SceneDataset;
use dis2::data::layouts::Split;
use dis2::data::raster::{read_window_at, RasterInfo, Window};
use dis2::data::validity::AlphaRule;
use dis2::model::Dis2Net;
use gdal::raster::Buffer;
use gdal::{Dataset, DatasetOptions, GdalOpenFlags};
use tch::{nn, Device};

mod common;
use common::{
    dis2, failed, ok, read_all, read_json, s, synthetic_checkpoint_with, synthetic_experiment,
};

/// [`common::synthetic_checkpoint_with`] of `classes` classes and `optical` optical bands (the
/// normalisation of the first `optical`).
fn checkpoint_of(dir: &Path, name: &str, classes: i64, optical: i64) -> PathBuf {
    synthetic_checkpoint_with(dir, name, |exp| {
        exp.model.num_classes = classes;
        exp.model.modalities[0].channels = optical;
        let norm = exp.data.normalisation.get_mut("optical").unwrap();
        norm.mean.truncate(optical as usize);
        norm.std.truncate(optical as usize);
    })
}

fn open_update(path: &Path) -> Dataset {
    Dataset::open_ex(
        path,
        DatasetOptions {
            open_flags: GdalOpenFlags::GDAL_OF_UPDATE | GdalOpenFlags::GDAL_OF_RASTER,
            ..Default::default()
        },
    )
    .unwrap()
}

/// How a mask is attached to a raster.
#[derive(Clone, Copy)]
enum Mask {
    /// `CreateMaskBand(GMF_PER_DATASET)` with `GDAL_TIFF_INTERNAL_MASK=YES`.
    Internal,
    /// The same in a `.msk` sidecar.
    Sidecar,
    /// A mask of band 1 only (GTiff keeps it in a `.msk`).
    PerBand,
}

/// Gives `path` a mask that is 0 where `invalid(x, y)`.
fn add_mask(path: &Path, kind: Mask, invalid: impl Fn(usize, usize) -> bool) {
    let ds = open_update(path);
    let internal = if matches!(kind, Mask::Internal) {
        "YES"
    } else {
        "NO"
    };
    gdal::config::set_thread_local_config_option("GDAL_TIFF_INTERNAL_MASK", internal).unwrap();
    {
        let mut band = ds.rasterband(1).unwrap();
        band.create_mask_band(!matches!(kind, Mask::PerBand))
            .unwrap();
        let mut mask = band.open_mask_band().unwrap();
        let (w, h) = ds.raster_size();
        let values: Vec<u8> = (0..w * h)
            .map(|i| if invalid(i % w, i / w) { 0 } else { 255 })
            .collect();
        mask.write((0, 0), (w, h), &mut Buffer::new((w, h), values))
            .unwrap();
    }
    ds.close().unwrap();
    gdal::config::clear_thread_local_config_option("GDAL_TIFF_INTERNAL_MASK").unwrap();
}

/// Band `b` of a raster as stored (no masking): `f64` values, row-major.
fn raw_band(path: &Path, b: usize) -> Vec<f64> {
    let ds = Dataset::open(path).unwrap();
    let (w, h) = ds.raster_size();
    let band = ds.rasterband(b).unwrap();
    band.read_as::<f64>((0, 0), (w, h), (w, h), None)
        .unwrap()
        .data()
        .to_vec()
}

/// Validity of a whole raster through dis2's reader.
fn valid_of(path: &Path) -> Vec<bool> {
    read_all(path).valid
}

/// Predicts a scene with the given `--NAME FILE` inputs; returns the class map's raw values.
fn predict(ck: &Path, inputs: &[(&str, &Path)], out: &Path, extra: &[&str]) -> Vec<f64> {
    let mut args = vec!["predict", "--checkpoint", s(ck), "--device", "cpu"];
    for (name, file) in inputs {
        args.push(name);
        args.push(s(file));
    }
    // One branch per scene: nodata wherever an input lacks data, as these tests check.
    args.extend(["--out", s(out), "--one-route"]);
    args.extend(extra);
    ok(&dis2(&args));
    raw_band(out, 1)
}

/// The class map holds 255 exactly where some input is invalid, a class elsewhere.
fn assert_classes_follow(classes: &[f64], inputs: &[&Path]) {
    let valid: Vec<Vec<bool>> = inputs.iter().map(|p| valid_of(p)).collect();
    for (i, &c) in classes.iter().enumerate() {
        let all = valid.iter().all(|v| v[i]);
        assert!(
            if all { c < 6.0 } else { c == 255.0 },
            "pixel {i}: class {c}, inputs valid: {all}"
        );
    }
}

#[test]
fn predict_leaves_pixels_of_an_internal_mask_out_of_classes_and_probabilities() {
    // The reproducer: a synthetic scene whose optical file has an internal per-dataset
    // mask over its left half.
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint_of(dir.path(), "model", 6, 4);
    let files = common::synthetic_scene(dir.path(), 128);
    add_mask(&files[0], Mask::Internal, |x, _| x < 64);
    assert!(
        !files[0].with_extension("tif.msk").exists(),
        "internal mask"
    );
    let classes = dir.path().join("classes.tif");
    let probs = dir.path().join("probs.tif");
    let inputs = [
        ("--optical", files[0].as_path()),
        ("--dsm", files[1].as_path()),
        ("--sar", files[2].as_path()),
    ];
    let map = predict(&ck, &inputs, &classes, &["--probs", s(&probs)]);
    for y in 0..128 {
        for x in 0..64 {
            assert_eq!(map[y * 128 + x], 255.0, "masked pixel ({x}, {y})");
        }
    }
    assert_classes_follow(&map, &[&files[0], &files[1], &files[2]]);
    for b in 1..=6 {
        let p = raw_band(&probs, b);
        for (i, (&v, &c)) in p.iter().zip(&map).enumerate() {
            assert_eq!(v.is_nan(), c == 255.0, "band {b} pixel {i}: {v}");
        }
    }

    // u8 probabilities: 0 there, and an internal mask GDAL reads as their validity.
    let probs_u8 = dir.path().join("probs8.tif");
    let map8 = predict(
        &ck,
        &inputs,
        &dir.path().join("classes8.tif"),
        &["--probs", s(&probs_u8), "--probs-type", "u8"],
    );
    assert_eq!(map8, map);
    let ds = Dataset::open(&probs_u8).unwrap();
    let flags = ds.rasterband(1).unwrap().mask_flags().unwrap();
    assert!(
        flags.is_per_dataset() && !flags.is_alpha(),
        "a per-dataset mask"
    );
    assert!(!probs_u8.with_extension("tif.msk").exists(), "internal");
    let valid = valid_of(&probs_u8);
    for (i, (&ok, &c)) in valid.iter().zip(&map).enumerate() {
        assert_eq!(ok, c != 255.0, "pixel {i}");
    }
    assert_eq!(raw_band(&probs_u8, 1)[0], 0.0);
}

#[test]
fn sidecar_and_per_band_masks_of_any_modality_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint_of(dir.path(), "model", 6, 4);
    let files = common::synthetic_scene(dir.path(), 96);
    // A .msk sidecar on the optical file, a per-band mask on the DSM, an internal one on SAR.
    add_mask(&files[0], Mask::Sidecar, |x, y| x < 20 && y < 20);
    assert!(
        PathBuf::from(format!("{}.msk", files[0].display())).exists(),
        "a .msk sidecar"
    );
    add_mask(&files[1], Mask::PerBand, |x, _| x >= 80);
    add_mask(&files[2], Mask::Internal, |_, y| y >= 90);
    let map = predict(
        &ck,
        &[
            ("--optical", files[0].as_path()),
            ("--dsm", files[1].as_path()),
            ("--sar", files[2].as_path()),
        ],
        &dir.path().join("c.tif"),
        &[],
    );
    assert_eq!(map[0], 255.0);
    assert_eq!(map[95], 255.0);
    assert_eq!(map[95 * 96 + 40], 255.0);
    assert_classes_follow(&map, &[&files[0], &files[1], &files[2]]);
}

/// `src` (4 u8 bands) rewritten as RGB + alpha: its first three bands and an alpha band that is
/// 0 where `invalid(x, y)`.
fn rgb_alpha(src: &Path, dst: &Path, invalid: impl Fn(usize, usize) -> bool) {
    let info = RasterInfo::read(src).unwrap();
    let (w, h) = (info.width, info.height);
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut options = gdal::raster::RasterCreationOptions::new();
    options.add_name_value("PHOTOMETRIC", "RGB").unwrap();
    options.add_name_value("ALPHA", "YES").unwrap();
    let mut ds = driver
        .create_with_band_type_with_options::<u8, _>(dst, w, h, 4, &options)
        .unwrap();
    let source = Dataset::open(src).unwrap();
    ds.set_geo_transform(&source.geo_transform().unwrap())
        .unwrap();
    ds.set_spatial_ref(&source.spatial_ref().unwrap()).unwrap();
    for b in 1..=3 {
        let values: Vec<u8> = raw_band(src, b).iter().map(|&v| v as u8).collect();
        let mut band = ds.rasterband(b).unwrap();
        band.write((0, 0), (w, h), &mut Buffer::new((w, h), values))
            .unwrap();
    }
    let alpha: Vec<u8> = (0..w * h)
        .map(|i| if invalid(i % w, i / w) { 0 } else { 255 })
        .collect();
    let mut band = ds.rasterband(4).unwrap();
    band.write((0, 0), (w, h), &mut Buffer::new((w, h), alpha))
        .unwrap();
}

#[test]
fn an_alpha_band_is_the_mask_of_rgb_and_never_a_fourth_band() {
    let dir = tempfile::tempdir().unwrap();
    let files = common::synthetic_scene(dir.path(), 96);
    let rgba = dir.path().join("rgba.tif");
    rgb_alpha(&files[0], &rgba, |x, _| x < 30);
    let info = RasterInfo::read(&rgba).unwrap();
    assert_eq!((info.bands, info.alpha_bands.clone()), (3, vec![4]));

    // A model of RGB (3 optical bands): the alpha is the mask.
    let rgb_model = checkpoint_of(dir.path(), "rgb", 6, 3);
    let map = predict(
        &rgb_model,
        &[
            ("--optical", rgba.as_path()),
            ("--dsm", files[1].as_path()),
            ("--sar", files[2].as_path()),
        ],
        &dir.path().join("c.tif"),
        &[],
    );
    assert!((0..96).all(|y| map[y * 96] == 255.0 && map[y * 96 + 29] == 255.0));
    assert_classes_follow(&map, &[&rgba, &files[1], &files[2]]);

    // A model of four optical bands is told that band 4 is an alpha band, not NIR.
    let model = checkpoint_of(dir.path(), "rgbn", 6, 4);
    let err = failed(&dis2(&[
        "predict",
        "--checkpoint",
        s(&model),
        "--device",
        "cpu",
        "--optical",
        s(&rgba),
        "--dsm",
        s(&files[1]),
        "--sar",
        s(&files[2]),
        "--out",
        s(&dir.path().join("d.tif")),
    ]));
    assert!(
        err.contains("--optical")
            && err.contains("rgba.tif")
            && err.contains("band 4 of 4 is an alpha band")
            && err.contains("gdal_edit.py -colorinterp_4 undefined"),
        "{err}"
    );
}

/// `src` (4 u8 bands: R, G, B, NIR) as GDAL's and rasterio's defaults write a 4-band byte
/// GeoTIFF: RGB, the fourth band (the NIR) marked as alpha.
fn rgbn_marked_alpha(src: &Path, dst: &Path) {
    let info = RasterInfo::read(src).unwrap();
    let (w, h) = (info.width, info.height);
    let driver = gdal::DriverManager::get_driver_by_name("GTiff").unwrap();
    let mut options = gdal::raster::RasterCreationOptions::new();
    options.add_name_value("PHOTOMETRIC", "RGB").unwrap();
    let mut ds = driver
        .create_with_band_type_with_options::<u8, _>(dst, w, h, 4, &options)
        .unwrap();
    let source = Dataset::open(src).unwrap();
    ds.set_geo_transform(&source.geo_transform().unwrap())
        .unwrap();
    ds.set_spatial_ref(&source.spatial_ref().unwrap()).unwrap();
    for b in 1..=4 {
        let values: Vec<u8> = raw_band(src, b).iter().map(|&v| v as u8).collect();
        let mut band = ds.rasterband(b).unwrap();
        band.write((0, 0), (w, h), &mut Buffer::new((w, h), values))
            .unwrap();
    }
    ds.rasterband(4)
        .unwrap()
        .set_color_interpretation(gdal::raster::ColorInterpretation::AlphaBand)
        .unwrap();
}

#[test]
fn a_nir_band_marked_as_alpha_is_read_as_data_when_told_in_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let files = common::synthetic_scene(dir.path(), 96);
    let marked = dir.path().join("rgbn.tif");
    rgbn_marked_alpha(&files[0], &marked);
    let info = RasterInfo::read(&marked).unwrap();
    assert_eq!((info.bands, info.alpha_bands), (3, vec![4]));
    let as_data = RasterInfo::read_with(&marked, AlphaRule::Data).unwrap();
    assert_eq!((as_data.bands, as_data.alpha_bands.len()), (4, 0));

    // predict: refused without the option, naming it and the key; with it, the classes of the
    // unmarked file (GDAL's alpha mask, which the NIR's zeros would set, is not applied).
    let model = checkpoint_of(dir.path(), "rgbn", 6, 4);
    let predict_with = |optical: &Path, out: &str, extra: &[&str]| {
        let inputs = [
            ("--optical", optical),
            ("--dsm", files[1].as_path()),
            ("--sar", files[2].as_path()),
        ];
        let out = dir.path().join(out);
        let mut args = vec!["predict", "--checkpoint", s(&model), "--device", "cpu"];
        for (flag, file) in inputs {
            args.extend([flag, s(file)]);
        }
        args.extend(["--out", s(&out)]);
        args.extend(extra);
        dis2(&args)
    };
    let err = failed(&predict_with(&marked, "refused.tif", &[]));
    assert!(
        err.contains("--optical")
            && err.contains("band 4 of 4 is an alpha band")
            && err.contains("--alpha-as-data")
            && err.contains("data.alpha_as_data: true")
            && err.contains("gdal_edit.py -colorinterp_4 undefined"),
        "{err}"
    );
    ok(&predict_with(&marked, "told.tif", &["--alpha-as-data"]));
    ok(&predict_with(&files[0], "plain.tif", &[]));
    let class_map = |name: &str| raw_band(&dir.path().join(name), 1);
    assert_eq!(class_map("told.tif"), class_map("plain.tif"));

    // blocks: refused until told what band 4 is; 4-band blocks with --alpha-as-data, 3-band
    // blocks with --alpha-as-mask.
    let optical = format!("optical={}", s(&marked));
    let blocks = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec!["blocks", "--grid", "2x2", "--labels", s(&files[3])];
        args.extend(["--modality", optical.as_str(), "--out", s(&out)]);
        args.extend(extra);
        dis2(&args)
    };
    let err = failed(&blocks("refused", &[]));
    assert!(
        err.contains("--modality optical")
            && err.contains("rgbn.tif")
            && err.contains("band 4 of 4 is marked as alpha")
            && err.contains("--alpha-as-data")
            && err.contains("--alpha-as-mask"),
        "{err}"
    );
    ok(&blocks("data", &["--alpha-as-data"]));
    let block = read_all(&dir.path().join("data/test/optical/r0c0.tif"));
    let original = read_window_at(&files[0], Window::new(0, 0, 48, 48)).unwrap();
    assert_eq!((block.bands, &block.data), (4, &original.data));
    ok(&blocks("mask", &["--alpha-as-mask"]));
    let masked = RasterInfo::read(&dir.path().join("mask/test/optical/r0c0.tif")).unwrap();
    assert_eq!(masked.bands, 3);

    // The loader's dataset and stats: data.alpha_as_data.
    let bench = dir.path().join("bench");
    let config = common::tiny_benchmark(&bench, 3);
    let optical_dir = bench.join("synthetic/train/optical");
    let mut originals = Vec::new();
    for entry in std::fs::read_dir(&optical_dir).unwrap() {
        let file = entry.unwrap().path();
        let original = dir.path().join(format!("original-{}", originals.len()));
        std::fs::rename(&file, &original).unwrap();
        rgbn_marked_alpha(&original, &file);
        originals.push((file, original));
    }
    let exp = Experiment::load(&config, &[]).unwrap();
    let err = format!(
        "{:#}",
        SceneDataset::open(&exp.data, &exp.model, Split::Train).unwrap_err()
    );
    assert!(
        err.contains("band 4 of 4 is an alpha band") && err.contains("data.alpha_as_data: true"),
        "{err}"
    );
    let told = Experiment::load(&config, &["data.alpha_as_data=true".to_string()]).unwrap();
    let dataset = SceneDataset::open(&told.data, &told.model, Split::Train).unwrap();
    for (i, scene) in dataset.scenes.iter().enumerate() {
        let (_, original) = originals
            .iter()
            .find(|(file, _)| *file == scene.modalities[0].path)
            .unwrap();
        let sample = dataset.read(i, Window::new(0, 0, 96, 96)).unwrap();
        assert_eq!(sample.modalities[0], read_all(original), "{}", scene.id);
    }
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\ndata:\n"), "{text}");
    std::fs::write(
        &config,
        text.replacen("\ndata:\n", "\ndata:\n  alpha_as_data: true\n", 1),
    )
    .unwrap();
    dis2::prepare::update_statistics(&config, false).unwrap();
    let updated = Experiment::load(&config, &[]).unwrap();
    assert!(updated.data.alpha_as_data);
    assert_eq!(updated.data.normalisation["optical"].mean.len(), 4);
}

#[test]
fn an_all_nodata_scene_is_refused_and_stale_temporaries_are_cleaned() {
    let dir = tempfile::tempdir().unwrap();
    let ck = checkpoint_of(dir.path(), "model", 6, 4);
    let files = common::synthetic_scene(dir.path(), 96);
    let out = dir.path().join("classes.tif");
    // A temporary of a killed run: its process is gone.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = dir.path().join(format!(".classes.tif.tmp-{dead}"));
    std::fs::write(&stale, b"half a GeoTIFF").unwrap();
    add_mask(&files[2], Mask::Internal, |_, _| true);
    let err = failed(&dis2(&[
        "predict",
        "--checkpoint",
        s(&ck),
        "--device",
        "cpu",
        "--optical",
        s(&files[0]),
        "--dsm",
        s(&files[1]),
        "--sar",
        s(&files[2]),
        "--out",
        s(&out),
        "--one-route",
    ]));
    assert!(
        err.contains("every pixel is nodata in at least one input") && err.contains("sar"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
    assert!(!stale.exists(), "the killed run's temporary is gone");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// gdalinfo's JSON description of a raster, or `None` when gdalinfo is not installed.
fn gdalinfo(path: &Path) -> Option<serde_json::Value> {
    let out = Command::new("gdalinfo")
        .arg("-json")
        .arg(path)
        .output()
        .ok()?;
    assert!(out.status.success(), "gdalinfo {}", path.display());
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn probabilities_read_as_gray_bands_named_after_the_classes() {
    let dir = tempfile::tempdir().unwrap();
    let files = common::synthetic_scene(dir.path(), 64);
    for classes in [3, 4] {
        let ck = checkpoint_of(dir.path(), &format!("k{classes}"), classes, 4);
        let names: Vec<String> = synthetic_experiment()
            .data
            .class_table(classes as usize)
            .into_iter()
            .map(|c| c.name)
            .collect();
        for kind in ["u8", "f32"] {
            let probs = dir.path().join(format!("p{classes}{kind}.tif"));
            predict(
                &ck,
                &[
                    ("--optical", files[0].as_path()),
                    ("--dsm", files[1].as_path()),
                    ("--sar", files[2].as_path()),
                ],
                &dir.path().join(format!("c{classes}{kind}.tif")),
                &["--probs", s(&probs), "--probs-type", kind],
            );
            // Through the gdal crate, and through gdalinfo as a GIS user would see it.
            let ds = Dataset::open(&probs).unwrap();
            assert_eq!(ds.raster_count(), classes as usize);
            let info = RasterInfo::read(&probs).unwrap();
            assert!(info.alpha_bands.is_empty(), "no band is transparency");
            let Some(json) = gdalinfo(&probs) else {
                eprintln!("skipped the gdalinfo part: gdalinfo is not installed");
                continue;
            };
            let bands = json["bands"].as_array().unwrap();
            assert_eq!(bands.len(), classes as usize);
            for (i, band) in bands.iter().enumerate() {
                let interp = band["colorInterpretation"].as_str().unwrap();
                let expected = if i == 0 { "Gray" } else { "Undefined" };
                assert_eq!(interp, expected, "{kind} band {}", i + 1);
                assert_eq!(band["description"].as_str(), Some(names[i].as_str()));
            }
            let photometric = json["metadata"]["IMAGE_STRUCTURE"]["INTERLEAVE"].as_str();
            assert_eq!(photometric, Some("BAND"));
        }
    }
}

/// Counts the labelled pixels of a split where every modality has data, and those labelled.
fn labelled_and_valid(exp: &Experiment, split: Split) -> (u64, u64) {
    let data = SceneDataset::open(&exp.data, &exp.model, split).unwrap();
    let (mut kept, mut labelled) = (0, 0);
    for (i, scene) in data.scenes.iter().enumerate() {
        let window = Window::new(0, 0, scene.width(), scene.height());
        let raw = data.read(i, window).unwrap();
        for p in 0..window.width * window.height {
            if raw.labels[p] == data.ignore_index {
                continue;
            }
            labelled += 1;
            let all = raw.modalities.iter().all(|px| px.valid[p]);
            kept += u64::from(all);
        }
    }
    (kept, labelled)
}

fn metrics(dir: &Path) -> serde_json::Value {
    read_json(&dir.join("metrics.json"))
}

#[test]
fn eval_scores_every_pixel_a_branch_reaches_and_one_route_only_where_every_input_has_data() {
    // The reproducer: `dis2 synth` with its defaults; 7607 labelled test pixels have
    // SAR = -99 (nodata).
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("syn");
    ok(&dis2(&["synth", "--out", s(&root)]));
    let config = root.join("experiment.yaml");
    let exp = Experiment::load(&config, &[]).unwrap();
    let (kept, labelled) = labelled_and_valid(&exp, Split::Test);
    assert_eq!((kept, labelled), (385_609, 393_216));
    let ck = checkpoint_of(dir.path(), "model", 6, 4);
    // Routes per pixel (the default): the SAR-nodata pixels by the branch without SAR too.
    // One branch per scene: only where every given input has data.
    for (one_route, scored) in [(false, 393_216), (true, 385_609)] {
        let out = dir.path().join(format!("eval-{one_route}"));
        let mut args = vec![
            "eval",
            "--checkpoint",
            s(&ck),
            "--config",
            s(&config),
            "--overlays",
            "0",
            "--out",
            s(&out),
            "--device",
            "cpu",
            "--quiet",
        ];
        if one_route {
            args.push("--one-route");
        }
        ok(&dis2(&args));
        let doc = metrics(&out);
        assert_eq!(
            doc["pixels"].as_u64(),
            Some(scored),
            "--one-route {one_route}"
        );
        let cm: Vec<Vec<u64>> = serde_json::from_value(doc["confusion_matrix"].clone()).unwrap();
        assert_eq!(cm.iter().flatten().sum::<u64>(), scored);
    }

    // Without SAR, the pixels where only SAR has no data are predicted and scored.
    let out = dir.path().join("eval-drop");
    ok(&dis2(&[
        "eval",
        "--checkpoint",
        s(&ck),
        "--config",
        s(&config),
        "--drop",
        "sar",
        "--overlays",
        "0",
        "--out",
        s(&out),
        "--device",
        "cpu",
        "--quiet",
    ]));
    assert_eq!(metrics(&out)["pixels"].as_u64(), Some(393_216));
}

/// The tiny synthetic benchmark with the left third of every SAR raster of `split` masked.
fn tiny_with_masked_sar(dir: &Path, split: &str) -> PathBuf {
    let config = common::tiny_benchmark(dir, 5);
    let sar = dir.join("synthetic").join(split).join("sar");
    for entry in std::fs::read_dir(&sar).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "tif") {
            add_mask(&path, Mask::Internal, |x, _| x < 32);
        }
    }
    config
}

#[test]
fn validation_scores_each_branch_where_the_modalities_it_reads_have_data() {
    use dis2::data::loader::Loader;
    use dis2::model::{Route, Scenario};
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_with_masked_sar(dir.path(), "val");
    let exp = Experiment::load(&config, &[]).unwrap();
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Dis2Net::new(&vs.root(), &exp.model).unwrap();
    let sar = Scenario::parse("sar", &exp.model.modalities).unwrap();
    let branches = [Route::Teacher, Route::TeacherFill(sar)];
    let scores = dis2::train::validate::validate(&net, &exp, &branches, Device::Cpu, None).unwrap();
    // The same windows, counted here from the batches' reference labels and masks.
    let (mut all, mut without_sar, mut loss) = (0u64, 0u64, 0u64);
    for batch in Loader::sliding_windows(&exp.data, &exp.model, Split::Val).unwrap() {
        let batch = batch.unwrap();
        let labelled = batch.reference.ne(exp.data.ignore_index);
        let reads = labelled
            .logical_and(&batch.masks[0])
            .logical_and(&batch.masks[1]);
        without_sar += reads.sum(tch::Kind::Int64).int64_value(&[]) as u64;
        let every = reads.logical_and(&batch.masks[2]);
        all += every.sum(tch::Kind::Int64).int64_value(&[]) as u64;
        loss += batch
            .labels
            .ne(exp.data.ignore_index)
            .sum(tch::Kind::Int64)
            .int64_value(&[]) as u64;
        let masked_sar = batch.masks[2].logical_not();
        let leaked = batch
            .labels
            .ne(exp.data.ignore_index)
            .logical_and(&masked_sar)
            .sum(tch::Kind::Int64)
            .int64_value(&[]);
        assert_eq!(leaked, 0, "no masked pixel reaches the loss");
    }
    assert!(all < without_sar, "the masks take pixels away");
    assert_eq!(loss, all, "the loss sees what the teacher is scored on");
    assert_eq!(scores[0].pixels, all, "teacher");
    assert_eq!(scores[1].pixels, without_sar, "teacher-fill[sar]");
}

#[test]
fn statistics_count_pixels_the_way_the_loader_does() {
    let dir = tempfile::tempdir().unwrap();
    let config = tiny_with_masked_sar(dir.path(), "train");
    // A masked label file too: its top rows are left out.
    let labels = dir.path().join("synthetic/train/label");
    let first = std::fs::read_dir(&labels)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tif"))
        .min()
        .unwrap();
    add_mask(&first, Mask::Internal, |_, y| y < 10);
    let exp = Experiment::load(&config, &[]).unwrap();
    let (kept, _) = labelled_and_valid(&exp, Split::Train);
    let update = dis2::prepare::update_statistics(&config, false).unwrap();
    let stats = update.stats;
    assert_eq!(stats.class_counts.iter().sum::<u64>(), kept);
    let data = SceneDataset::open(&exp.data, &exp.model, Split::Train).unwrap();
    let total: u64 = data
        .scenes
        .iter()
        .map(|s| (s.width() * s.height()) as u64)
        .sum();
    assert_eq!(
        stats.class_counts.iter().sum::<u64>() + stats.ignored,
        total
    );
    // SAR's moments come from its valid pixels only.
    assert_eq!(stats.bands[2][0].count, {
        let mut n = 0;
        for (i, scene) in data.scenes.iter().enumerate() {
            let w = Window::new(0, 0, scene.width(), scene.height());
            n += data.read(i, w).unwrap().modalities[2]
                .valid
                .iter()
                .filter(|v| **v)
                .count() as u64;
        }
        n
    });
}

#[test]
fn stats_replaces_stale_normalisation() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::tiny_benchmark(dir.path(), 5);
    let text = std::fs::read_to_string(&config).unwrap();
    let start = text.find("    optical: {mean: [").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    let stale = text.replace(
        &text[start..end],
        "    optical: {mean: [1.0, 2.0, 3.0], std: [1.0, 1.0, 1.0]}",
    );
    std::fs::write(&config, &stale).unwrap();
    assert!(Experiment::load(&config, &[]).is_err(), "stale: 3 values");
    let out = dis2(&["stats", "--config", s(&config)]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("replaced stale data.normalisation.optical: 3 value(s) for 4 channel(s)"),
        "{stderr}"
    );
    let exp = Experiment::load(&config, &[]).unwrap();
    assert_eq!(exp.data.normalisation["optical"].mean.len(), 4);
}

/// A generic dataset of 2 scenes (`a`, `b`, 32 x 32): one-band f32 `img`, u8 labels `gt` where
/// the left half is class 0 and the right half class 1, declared nodata `label_nodata`.
fn generic_dataset(root: &Path, label_nodata: Option<f64>, extra: &str) -> PathBuf {
    use dis2::data::raster::{write_geotiff, GeoRef, RasterData, WriteOptions};
    let georef = GeoRef::north_up(500_000.0, 5_000_000.0, 1.0, 32631);
    for stem in ["a", "b"] {
        let img: Vec<f32> = (0..32 * 32).map(|i| (i % 7) as f32).collect();
        let raster = RasterData {
            width: 32,
            height: 32,
            bands: 1,
            data: &img,
        };
        let path = root.join("img").join(format!("{stem}.tif"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_geotiff(&path, &raster, &georef, &WriteOptions::default()).unwrap();
        let gt: Vec<u8> = (0..32 * 32).map(|i| u8::from(i % 32 >= 16)).collect();
        let raster = RasterData {
            width: 32,
            height: 32,
            bands: 1,
            data: &gt,
        };
        let options = WriteOptions {
            nodata: label_nodata,
            ..Default::default()
        };
        let path = root.join("gt").join(format!("{stem}.tif"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        write_geotiff(&path, &raster, &georef, &options).unwrap();
    }
    let yaml = root.join("exp.yaml");
    let text = format!(
        "name: g\nmodel:\n  base_width: 8\n  num_classes: 2\n  crop: [32, 32]\n  modalities:\n    - {{name: img, channels: 1}}\n  scenarios: []\ndata:\n  dataset:\n    generic:\n      train: {{modalities: {{img: {}}}, labels: {}}}\n{extra}",
        root.join("img").display(),
        root.join("gt").display()
    );
    std::fs::write(&yaml, text).unwrap();
    yaml
}

#[test]
fn a_label_nodata_value_that_is_a_class_is_refused_or_resolved_by_the_configuration() {
    // The reproducer: u8 labels declaring nodata 0 where 0 is a real class (half the
    // pixels); `dis2 stats --class-weights` must not report class 0 at 0 %.
    let dir = tempfile::tempdir().unwrap();
    let yaml = generic_dataset(dir.path(), Some(0.0), "");
    let before = std::fs::read_to_string(&yaml).unwrap();
    let err = failed(&dis2(&["stats", "--config", s(&yaml), "--class-weights"]));
    assert!(
        err.contains("gt/a.tif")
            && err.contains("declares nodata 0")
            && err.contains("class id 0")
            && err.contains("data.label_nodata: class")
            && err.contains("data.label_nodata: nodata"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&yaml).unwrap(), before);

    // The class wins: class 0 is half of the pixels.
    let yaml = generic_dataset(dir.path(), Some(0.0), "  label_nodata: class\n");
    let stdout = ok(&dis2(&["stats", "--config", s(&yaml), "--class-weights"]));
    assert!(
        stdout.contains("class 0: 50.00 %") && stdout.contains("class 1: 50.00 %"),
        "{stdout}"
    );
    // Nodata wins, as asked: class 0 has no pixels, and no error.
    let yaml = generic_dataset(dir.path(), Some(0.0), "  label_nodata: nodata\n");
    let stdout = ok(&dis2(&["stats", "--config", s(&yaml)]));
    assert!(stdout.contains("class 0: 0.00 %"), "{stdout}");
    // A nodata value that is no class (255, the ignore index) needs nothing.
    let yaml = generic_dataset(dir.path(), Some(255.0), "");
    ok(&dis2(&["stats", "--config", s(&yaml)]));
}

#[test]
fn codes_with_two_meanings_and_unknown_paths_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let both = generic_dataset(
        dir.path(),
        None,
        "      class_codes: {0: 0, 1: 1}\n      ignore_codes: [1]\n",
    );
    let err = failed(&dis2(&["stats", "--config", s(&both)]));
    assert!(
        err.contains("data.dataset.generic.class_codes: code 1 maps to class id 1 and is also in data.dataset.generic.ignore_codes"),
        "{err}"
    );
    let alone = generic_dataset(dir.path(), None, "      ignore_codes: [1]\n");
    let err = failed(&dis2(&["stats", "--config", s(&alone)]));
    assert!(
        err.contains("data.dataset.generic.ignore_codes: given without class_codes"),
        "{err}"
    );
    // Every unmapped value with its pixel count, in the first scene in order (both scenes have
    // them; they are read in parallel), the same file every time.
    let unmapped = generic_dataset(dir.path(), None, "      class_codes: {0: 0}\n");
    for _ in 0..3 {
        let err = format!(
            "{:#}",
            dis2::prepare::update_statistics(&unmapped, false).unwrap_err()
        );
        assert!(
            err.contains("gt/a.tif: 1 label value(s) that are not classes: 1 (512 px)")
                && err.contains("ignore_codes"),
            "{err}"
        );
    }
    // A relative folder that does not exist: the key and the directory it was looked for in.
    let text = std::fs::read_to_string(&both)
        .unwrap()
        .replace(&dir.path().join("img").display().to_string(), "no/such/img")
        .replace(
            "      class_codes: {0: 0, 1: 1}\n      ignore_codes: [1]\n",
            "",
        );
    std::fs::write(&both, text).unwrap();
    let out = Command::new(common::BIN)
        .args(["stats", "--config", s(&both)])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(
        err.contains(
            "data.dataset.generic.train.modalities.img: folder no/such/img does not exist"
        ) && err.contains("relative paths are resolved against the current directory")
            && err.contains(&dir.path().display().to_string()),
        "{err}"
    );
}
