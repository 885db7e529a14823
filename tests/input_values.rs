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
    assert!(px.valid.iter().all(|&v| v), "the synthetic DSM has no nodata");
    let counts: Vec<i16> = px.data.iter().map(|&m| (m * 100.0).round() as i16).collect();
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
fn classes(ck: &Path, scene: &[PathBuf], dsm: &Path, out: &Path, extra: &[&str]) -> (Vec<f32>, String) {
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
    centimetre_pair(&scene[1], &d.join("wcm.tif"), &d.join("wm.tif"), Some(georef));
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
    let truth = dis2::prepare::update_statistics(&config, false).unwrap().stats;
    // The first scene stored as Int16 centimetres with scale 0.01.
    centimetre_pair(&dsms[0], &scratch.join("cm.tif"), &scratch.join("m.tif"), None);
    std::fs::copy(scratch.join("cm.tif"), &dsms[0]).unwrap();
    assert_eq!(RasterInfo::read(&dsms[0]).unwrap().data_type, "Int16");
    let mixed = dis2::prepare::update_statistics(&config, false).unwrap().stats;
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
