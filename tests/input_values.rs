//! What input values mean: GDAL's scale and offset applied on every read (predict, aligned and
//! warped, and `dis2 stats`), and each scene's inputs measured against the checkpoint's
//! normalisation (issue 23, items 2 and 5).

use std::path::{Path, PathBuf};

use dis2::data::raster::{write_geotiff, GeoRef, RasterData, RasterInfo, WriteOptions};
use gdal::{Dataset, DatasetOptions, GdalOpenFlags};

mod common;
use common::{ok_with_stderr, predict, read_all, s};

/// Sets band 1's GDAL scale and offset of the raster at `path`.
fn set_scale(path: &Path, scale: f64, offset: f64) {
    let ds = Dataset::open_ex(
        path,
        DatasetOptions {
            open_flags: GdalOpenFlags::GDAL_OF_UPDATE | GdalOpenFlags::GDAL_OF_RASTER,
            ..Default::default()
        },
    )
    .unwrap();
    let mut band = ds.rasterband(1).unwrap();
    band.set_scale(scale).unwrap();
    band.set_offset(offset).unwrap();
    ds.close().unwrap();
}

/// Writes `data` (one band, the size of `like`) at `path` with `georef`.
fn write_like<T: gdal::raster::GdalType + Copy>(
    path: &Path,
    like: &RasterInfo,
    data: &[T],
    georef: &GeoRef,
) {
    let raster = RasterData {
        width: like.width,
        height: like.height,
        bands: 1,
        data,
    };
    write_geotiff(path, &raster, georef, &WriteOptions::default()).unwrap();
}

/// The DSM at `metres` (float32 metres) as the reproducer stores it: Int16 centimetres
/// with scale 0.01 at `cm`, and the same heights as float32 metres at `exact` (each value
/// `centimetres x 0.01`, the value the scaled file means). Both are placed by `georef`
/// (default: the DSM's own).
fn centimetre_pair(metres: &Path, cm: &Path, exact: &Path, georef: Option<GeoRef>) {
    let info = RasterInfo::read(metres).unwrap();
    let georef = georef.unwrap_or_else(|| GeoRef::of(&info).unwrap());
    let px = read_all(metres);
    assert!(
        px.valid.iter().all(|&v| v),
        "the synthetic DSM has no nodata"
    );
    let counts: Vec<i16> = px
        .data
        .iter()
        .map(|&m| (m * 100.0).round() as i16)
        .collect();
    let meant: Vec<f32> = counts
        .iter()
        .map(|&c| (f64::from(c) * 0.01) as f32)
        .collect();
    write_like(cm, &info, &counts, &georef);
    set_scale(cm, 0.01, 0.0);
    write_like(exact, &info, &meant, &georef);
}

/// `dis2 predict` of the synthetic model with `--optical`, `--dsm dsm` and `--sar`; returns the
/// class map and stderr.
fn classes(
    ck: &Path,
    scene: &[PathBuf],
    dsm: &Path,
    out: &Path,
    extra: &[&str],
) -> (Vec<f32>, String) {
    let mut args = vec!["--checkpoint", s(ck), "--optical", s(&scene[0])];
    args.extend(["--dsm", s(dsm), "--sar", s(&scene[2]), "--out", s(out)]);
    args.extend(extra);
    let (_, stderr) = ok_with_stderr(&predict(&args));
    (read_all(out).data, stderr)
}

#[test]
fn a_centimetre_dsm_with_scale_is_classified_as_its_metres_aligned_and_warped() {
    // The reproducer: a DSM stored as Int16 centimetres with scale 0.01.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scene = common::synthetic_scene(d, 100);
    let ck = common::synthetic_checkpoint(d);
    centimetre_pair(&scene[1], &d.join("cm.tif"), &d.join("m.tif"), None);
    let (metres, _) = classes(&ck, &scene, &d.join("m.tif"), &d.join("a.tif"), &[]);
    let (scaled, _) = classes(&ck, &scene, &d.join("cm.tif"), &d.join("b.tif"), &[]);
    assert_eq!(scaled, metres, "aligned: the class maps agree everywhere");

    // The same pair on another grid (a third of a pixel off): resampled onto the optical's.
    let mut georef = GeoRef::of(&RasterInfo::read(&scene[1]).unwrap()).unwrap();
    let gt = georef.geo_transform.as_mut().unwrap();
    gt[0] += gt[1] / 3.0;
    gt[3] += gt[5] / 3.0;
    centimetre_pair(
        &scene[1],
        &d.join("wcm.tif"),
        &d.join("wm.tif"),
        Some(georef),
    );
    let (metres, said) = classes(&ck, &scene, &d.join("wm.tif"), &d.join("c.tif"), &[]);
    assert!(said.contains("is resampled"), "{said}");
    let (scaled, _) = classes(&ck, &scene, &d.join("wcm.tif"), &d.join("e.tif"), &[]);
    assert_eq!(scaled, metres, "warped: the class maps agree everywhere");
}

#[test]
fn stats_over_a_metres_scene_and_a_centimetres_scene_give_the_true_mean() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::tiny_benchmark(dir.path(), 3);
    let dsm_dir = dir.path().join("synthetic/train/dsm");
    let mut dsms: Vec<PathBuf> = std::fs::read_dir(&dsm_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "tif"))
        .collect();
    dsms.sort();
    assert!(dsms.len() >= 2, "{dsms:?}");
    // Every train DSM in whole centimetres, as float32 metres: the true statistics.
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    for dsm in &dsms {
        let (cm, m) = (scratch.join("cm.tif"), scratch.join("m.tif"));
        centimetre_pair(dsm, &cm, &m, None);
        std::fs::copy(&m, dsm).unwrap();
    }
    let truth = dis2::prepare::update_statistics(&config, false)
        .unwrap()
        .stats;
    // The first scene stored as Int16 centimetres with scale 0.01.
    centimetre_pair(
        &dsms[0],
        &scratch.join("cm.tif"),
        &scratch.join("m.tif"),
        None,
    );
    std::fs::copy(scratch.join("cm.tif"), &dsms[0]).unwrap();
    assert_eq!(RasterInfo::read(&dsms[0]).unwrap().data_type, "Int16");
    let mixed = dis2::prepare::update_statistics(&config, false)
        .unwrap()
        .stats;
    let (t, m) = (truth.bands[1][0], mixed.bands[1][0]);
    assert_eq!(m.count, t.count);
    assert!(
        (m.mean - t.mean).abs() < 1e-9 && (m.std() - t.std()).abs() < 1e-9,
        "DSM mean {} sd {} (true: {} sd {})",
        m.mean,
        m.std(),
        t.mean,
        t.std()
    );
}

/// Writes `px` (all bands) at `path` as `T`, each value mapped by `f`, placed like `like`; where
/// `px` is invalid the value is `nodata` (declared), or 0 when none is given.
fn write_mapped<T: gdal::raster::GdalType + Copy>(
    path: &Path,
    like: &Path,
    f: impl Fn(f32) -> T,
    nodata: Option<T>,
) where
    f64: From<T>,
{
    let info = RasterInfo::read(like).unwrap();
    let px = read_all(like);
    let plane = px.width * px.height;
    let data: Vec<T> = (0..px.bands * plane)
        .map(|i| match (px.valid[i % plane], nodata) {
            (true, _) => f(px.data[i]),
            (false, Some(n)) => n,
            (false, None) => f(0.0),
        })
        .collect();
    let raster = RasterData {
        width: px.width,
        height: px.height,
        bands: px.bands,
        data: &data,
    };
    let options = WriteOptions {
        nodata: nodata.map(f64::from),
        ..Default::default()
    };
    write_geotiff(path, &raster, &GeoRef::of(&info).unwrap(), &options).unwrap();
}

/// The synthetic optical (8 bits) stretched to 16 bits: every value x 257.
fn sixteen_bits(optical: &Path, out: &Path) {
    write_mapped(out, optical, |v| (v * 257.0) as u16, None);
}

/// Runs `dis2 predict` with the synthetic model and `inputs`; returns the raw output.
fn run_predict(
    ck: &Path,
    inputs: &[(&str, &Path)],
    out: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec!["--checkpoint", s(ck)];
    for (flag, file) in inputs {
        args.extend([*flag, s(file)]);
    }
    args.extend(["--out", s(out)]);
    args.extend(extra);
    predict(&args)
}

#[test]
fn optical_stretched_to_16_bits_is_refused_unless_accepted_and_8_bits_pass_silently() {
    // The reproducer: 8-bit statistics, optical values x 257.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scene = common::synthetic_scene(d, 100);
    let ck = common::synthetic_checkpoint(d);
    let wide = d.join("optical16.tif");
    sixteen_bits(&scene[0], &wide);
    let run = |optical: &Path, out: &Path, extra: &[&str]| {
        let inputs = [
            ("--optical", optical),
            ("--dsm", scene[1].as_path()),
            ("--sar", scene[2].as_path()),
        ];
        run_predict(&ck, &inputs, out, extra)
    };

    // A scene of the training distribution: not a word.
    let (_, said) = ok_with_stderr(&run(&scene[0], &d.join("eight.tif"), &[]));
    assert!(
        !said.contains("warning") && !said.contains("unlike"),
        "{said}"
    );

    let out = d.join("refused.tif");
    let err = common::failed(&run(&wide, &out, &[]));
    for part in [
        "optical16.tif (modality optical) is unlike the data the checkpoint was trained on",
        "where the training statistics expect about",
        "Likely cause: another bit depth (8-bit data stretched to 16 bits is x257",
        "pass --accept-input-range",
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    assert!(!out.exists(), "no class map is left");

    let (_, said) = ok_with_stderr(&run(&wide, &out, &["--accept-input-range"]));
    assert!(
        said.contains("warning: ") && said.contains("Classified anyway (--accept-input-range)"),
        "{said}"
    );
    assert!(out.exists());
}

#[test]
fn a_centimetre_dsm_for_metres_is_refused_and_linear_sar_for_db_is_warned() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let scene = common::synthetic_scene(d, 100);
    let ck = common::synthetic_checkpoint(d);
    // Centimetres without a scale: the counts read as metres.
    let counts = d.join("dsm_cm.tif");
    write_mapped(&counts, &scene[1], |m| (m * 100.0).round() as i16, None);
    let out = d.join("c.tif");
    let inputs = [
        ("--optical", scene[0].as_path()),
        ("--dsm", counts.as_path()),
    ];
    let err = common::failed(&run_predict(&ck, &inputs, &out, &[]));
    for part in [
        "dsm_cm.tif (modality dsm)",
        "centimetres for metres is x100",
        "Refused",
    ] {
        assert!(err.contains(part), "{part:?} in {err}");
    }
    // The same counts with GDAL's scale 0.01 are metres: no word.
    set_scale(&counts, 0.01, 0.0);
    let (_, said) = ok_with_stderr(&run_predict(&ck, &inputs, &out, &[]));
    assert!(!said.contains("warning"), "{said}");

    // SAR backscatter in linear power for a model trained in dB: squeezed, warned.
    let linear = d.join("sar_linear.tif");
    let nodata = dis2::data::synth::SAR_NODATA;
    write_mapped(&linear, &scene[2], |db| 10f32.powf(db / 10.0), Some(nodata));
    let inputs = [
        ("--optical", scene[0].as_path()),
        ("--sar", linear.as_path()),
    ];
    let (_, said) = ok_with_stderr(&run_predict(&ck, &inputs, &out, &[]));
    for part in ["warning: ", "sar_linear.tif (modality sar)", "linear power"] {
        assert!(said.contains(part), "{part:?} in {said}");
    }
}

#[test]
fn eval_refuses_a_split_in_another_bit_depth_unless_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let config = common::tiny_benchmark(dir.path(), 4);
    let optical = dir.path().join("synthetic/test/optical");
    for entry in std::fs::read_dir(&optical).unwrap() {
        let path = entry.unwrap().path();
        let wide = dir.path().join("wide.tif");
        sixteen_bits(&path, &wide);
        std::fs::copy(&wide, &path).unwrap();
    }
    let ck = common::synthetic_checkpoint(dir.path());
    let eval = |extra: &[&str]| {
        let out = dir.path().join("eval");
        let mut args = vec!["eval", "--checkpoint", s(&ck), "--config", s(&config)];
        args.extend([
            "--overlays",
            "0",
            "--out",
            s(&out),
            "--device",
            "cpu",
            "--quiet",
        ]);
        args.extend(extra);
        common::dis2(&args)
    };
    let err = common::failed(&eval(&[]));
    assert!(
        err.contains("(modality optical) is unlike") && err.contains("--accept-input-range"),
        "{err}"
    );
    let (_, said) = ok_with_stderr(&eval(&["--accept-input-range"]));
    assert!(said.contains("Classified anyway"), "{said}");
    assert!(dir.path().join("eval/metrics.json").is_file());
}
