//! Modalities on different grids and every form of georeferencing, with real files: the real
//! Sentinel-1 scene of `../shared/fixtures/real` (20 m, EPSG:32631) with a finer optical raster
//! over part of it, a DSM in another CRS (Lambert-93, EPSG:2154) and labels on a third grid, all
//! written here with GDAL; through `dis2 predict`, the dataset, the loader, `stats` and `eval`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use dis2::config::Experiment;
use dis2::data::config::{DatasetConfig, GenericConfig, GenericSplit, GridConfig, Resampling};
use dis2::data::dataset::SceneDataset;
use dis2::data::grid::{self, GridFile, GridKeys};
use dis2::data::layouts::Split;
use dis2::data::raster::{
    self, read_window_at, write_geotiff, Crs, GeoRef, Pixels, RasterData, RasterInfo, Window,
    WriteOptions,
};
use dis2::data::synth;
use gdal::spatial_ref::{CoordTransform, SpatialRef};
use gdal::Gcp;

mod common;
use common::{
    dis2, failed, ok_with_stderr, predict, read_all, read_json, real_sar, s, synthetic_checkpoint,
    synthetic_experiment, synthetic_scene,
};

/// Optical: 5 m pixels, 400 x 300, from column 200 and row 50 of the Sentinel-1 grid, so that
/// its columns from 272 on lie east of the SAR scene.
const OPTICAL: (usize, usize) = (400, 300);
const SAR_EAST_EDGE: usize = 272;
/// The DSM (4 m, EPSG:2154) leaves out the southern 60 rows of the optical raster or so.
const DSM_SOUTH_GAP_M: f64 = 300.0;

fn utm(epsg: u32) -> SpatialRef {
    let mut srs = SpatialRef::from_epsg(epsg).unwrap();
    srs.set_axis_mapping_strategy(gdal::spatial_ref::AxisMappingStrategy::TraditionalGisOrder);
    srs
}

/// The files of one real scene, each in its own folder (for a generic dataset) under `root`.
struct RealScene {
    optical: PathBuf,
    sar: PathBuf,
    dsm: PathBuf,
    labels: PathBuf,
    /// Optical grid: top-left corner (EPSG:32631).
    origin: (f64, f64),
    /// DSM grid in EPSG:2154: top-left corner and size.
    dsm_grid: ((f64, f64), (usize, usize)),
}

fn write<T: gdal::raster::GdalType + Copy>(
    path: &Path,
    size: (usize, usize),
    bands: usize,
    data: &[T],
    georef: &GeoRef,
) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let raster = RasterData {
        width: size.0,
        height: size.1,
        bands,
        data,
    };
    write_geotiff(path, &raster, georef, &WriteOptions::default()).unwrap();
}

fn real_scene(root: &Path, sar: &Path) -> RealScene {
    let info = RasterInfo::read(sar).unwrap();
    let g = info.geo_transform.unwrap();
    let origin = (g[0] + 200.0 * 20.0, g[3] - 50.0 * 20.0);
    let (w, h) = OPTICAL;
    let optical_georef = GeoRef::north_up(origin.0, origin.1, 5.0, 32631);
    let mut optical = vec![0u8; 4 * w * h];
    for b in 0..4 {
        for r in 0..h {
            for c in 0..w {
                optical[(b * h + r) * w + c] = ((c * 3 + r * 5 + b * 40) % 200 + 20) as u8;
            }
        }
    }
    let scene = RealScene {
        optical: root.join("optical/arles.tif"),
        sar: root.join("sar/arles.tif"),
        dsm: root.join("dsm/arles.tif"),
        labels: root.join("labels/arles.tif"),
        origin,
        dsm_grid: ((0.0, 0.0), (0, 0)),
    };
    write(&scene.optical, OPTICAL, 4, &optical, &optical_georef);
    data_not_alpha(&scene.optical, 4);
    std::fs::create_dir_all(scene.sar.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(sar, &scene.sar).unwrap();
    // Labels: 10 m pixels over the optical extent, class (column / 10 + row / 10) mod 6.
    let (lw, lh) = (w / 2, h / 2);
    let labels: Vec<u8> = (0..lw * lh)
        .map(|i| ((i % lw / 10 + i / lw / 10) % 6) as u8)
        .collect();
    write(
        &scene.labels,
        (lw, lh),
        1,
        &labels,
        &GeoRef::north_up(origin.0, origin.1, 10.0, 32631),
    );
    let dsm_grid = write_dsm(&scene.dsm, origin);
    RealScene { dsm_grid, ..scene }
}

/// Marks band `band` of a GeoTIFF as data: GDAL takes the fourth band of a 4-band Byte GeoTIFF
/// for alpha unless told otherwise.
fn data_not_alpha(path: &Path, band: usize) {
    let ds = gdal::Dataset::open_ex(
        path,
        gdal::DatasetOptions {
            open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE,
            ..Default::default()
        },
    )
    .unwrap();
    ds.rasterband(band)
        .unwrap()
        .set_color_interpretation(gdal::raster::ColorInterpretation::Undefined)
        .unwrap();
}

/// A DSM in Lambert-93 with 4 m pixels covering the optical extent with a margin, except its
/// southern `DSM_SOUTH_GAP_M` metres; heights are a smooth function of the position.
fn write_dsm(path: &Path, origin: (f64, f64)) -> ((f64, f64), (usize, usize)) {
    let to_l93 = CoordTransform::new(&utm(32631), &utm(2154)).unwrap();
    let (w, h) = (OPTICAL.0 as f64 * 5.0, OPTICAL.1 as f64 * 5.0);
    let mut xs = [origin.0, origin.0 + w, origin.0, origin.0 + w];
    let mut ys = [origin.1, origin.1, origin.1 - h, origin.1 - h];
    to_l93.transform_coords(&mut xs, &mut ys, &mut []).unwrap();
    let x0 = xs.iter().cloned().fold(f64::MAX, f64::min) - 100.0;
    let x1 = xs.iter().cloned().fold(f64::MIN, f64::max) + 100.0;
    let y1 = ys.iter().cloned().fold(f64::MIN, f64::max) + 100.0;
    let south = ys.iter().cloned().fold(f64::MAX, f64::min);
    let y0 = south + DSM_SOUTH_GAP_M;
    let size = (((x1 - x0) / 4.0) as usize, ((y1 - y0) / 4.0) as usize);
    let heights: Vec<f32> = (0..size.0 * size.1)
        .map(|i| (i % size.0) as f32 * 0.01 + (i / size.0) as f32 * 0.02)
        .collect();
    write(
        path,
        size,
        1,
        &heights,
        &GeoRef::north_up(x0, y1, 4.0, 2154),
    );
    ((x0, y1), size)
}

/// Whether the DSM covers optical pixel (column, row): `Some` away from its edges, `None`
/// within one DSM pixel of them (where the warper's approximation may go either way).
fn dsm_covers(scene: &RealScene, to_l93: &CoordTransform, col: usize, row: usize) -> Option<bool> {
    let mut x = [scene.origin.0 + (col as f64 + 0.5) * 5.0];
    let mut y = [scene.origin.1 - (row as f64 + 0.5) * 5.0];
    to_l93.transform_coords(&mut x, &mut y, &mut []).unwrap();
    let ((x0, y0), (w, h)) = scene.dsm_grid;
    let (u, v) = ((x[0] - x0) / 4.0, (y0 - y[0]) / 4.0);
    let margin = u.min(v).min(w as f64 - u).min(h as f64 - v);
    (margin.abs() > 1.0).then_some(margin > 0.0)
}

#[test]
fn predict_resamples_sar_and_a_dsm_in_another_crs_onto_the_optical_grid() {
    let Some(sar) = real_sar() else { return };
    let dir = tempfile::tempdir().unwrap();
    let scene = real_scene(dir.path(), &sar);
    let ck = synthetic_checkpoint(dir.path());
    let classes = dir.path().join("classes.tif");
    let (stdout, stderr) = ok_with_stderr(&predict(&[
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&scene.optical),
        "--sar",
        s(&scene.sar),
        "--dsm",
        s(&scene.dsm),
        "--out",
        s(&classes),
        "--one-route",
    ]));
    assert!(
        stdout.contains("400x300 px") && stdout.contains("teacher"),
        "{stdout}"
    );
    // Said once, from what to what.
    for said in [
        "--sar (20 m, EPSG:32631) is resampled (bilinear) onto the grid of --optical (5 m, EPSG:32631)",
        "--dsm (4 m, EPSG:2154) is resampled (bilinear) onto the grid of --optical (5 m, EPSG:32631)",
    ] {
        assert_eq!(stderr.matches(said).count(), 1, "{said}\n{stderr}");
    }
    // The output grid is the optical one.
    let out = RasterInfo::read(&classes).unwrap();
    let optical = RasterInfo::read(&scene.optical).unwrap();
    assert_eq!((out.width, out.height), OPTICAL);
    assert_eq!(out.geo_transform, optical.geo_transform);
    assert_eq!(out.epsg(), Some(32631));
    // The nodata border: east of the SAR scene, south of the DSM.
    let px = read_all(&classes);
    let to_l93 = CoordTransform::new(&utm(32631), &utm(2154)).unwrap();
    let (mut checked, mut south_gap) = (0, 0);
    for row in 0..OPTICAL.1 {
        for col in 0..OPTICAL.0 {
            let Some(dsm) = dsm_covers(&scene, &to_l93, col, row) else {
                continue;
            };
            let expected = col < SAR_EAST_EDGE && dsm;
            assert_eq!(px.valid[row * OPTICAL.0 + col], expected, "({col}, {row})");
            checked += 1;
            south_gap += usize::from(!dsm && col < SAR_EAST_EDGE);
        }
    }
    assert!(checked > OPTICAL.0 * OPTICAL.1 * 9 / 10, "{checked}");
    assert!(
        south_gap > 40 * SAR_EAST_EDGE,
        "the DSM leaves a southern band: {south_gap}"
    );

    // Strict: today's refusal, naming the flag.
    let err = failed(&predict(&[
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&scene.optical),
        "--sar",
        s(&scene.sar),
        "--out",
        s(&dir.path().join("strict.tif")),
        "--strict-grid",
    ]));
    assert!(
        err.contains("do not line up") && err.contains("--strict-grid is set"),
        "{err}"
    );

    // On the SAR grid instead: the optical raster is averaged onto it (4x coarser).
    let on_sar = dir.path().join("on_sar.tif");
    let (_, stderr) = ok_with_stderr(&predict(&[
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&scene.optical),
        "--sar",
        s(&scene.sar),
        "--out",
        s(&on_sar),
        "--grid-reference",
        "sar",
        "--one-route",
    ]));
    assert!(
        stderr.contains("--optical (5 m, EPSG:32631) is resampled (average) onto the grid of --sar (20 m, EPSG:32631)"),
        "{stderr}"
    );
    let out = RasterInfo::read(&on_sar).unwrap();
    assert_eq!((out.width, out.height), (268, 217));
    assert_eq!(
        out.geo_transform,
        RasterInfo::read(&sar).unwrap().geo_transform
    );
    let px = read_all(&on_sar);
    for (row, col, inside) in [
        (60, 210, true),
        (120, 260, true),
        (10, 10, false),
        (200, 100, false),
    ] {
        assert_eq!(px.valid[row * 268 + col], inside, "({col}, {row})");
    }
}

/// The SAR scene resampled onto the optical grid (nearest) by dis2's own reader, written as a
/// file: a pre-aligned input.
fn pre_aligned_sar(scene: &RealScene, dst: &Path) {
    let files: Vec<GridFile> = [("optical", &scene.optical), ("sar", &scene.sar)]
        .iter()
        .map(|(name, path)| GridFile {
            role: name.to_string(),
            key: name.to_string(),
            header: RasterInfo::read(path).unwrap(),
            categorical: false,
        })
        .collect();
    let config = GridConfig {
        resampling: BTreeMap::from([("sar".to_string(), Resampling::Nearest)]),
        ..Default::default()
    };
    let plan = grid::plan(&files, 0, &config, &GridKeys::CONFIG).unwrap();
    let px = plan.sources[1]
        .read(Window::new(0, 0, OPTICAL.0, OPTICAL.1))
        .unwrap();
    let data: Vec<f32> = px
        .data
        .iter()
        .zip(&px.valid)
        .map(|(&v, &ok)| if ok { v } else { f32::NAN })
        .collect();
    let raster = RasterData {
        width: OPTICAL.0,
        height: OPTICAL.1,
        bands: 1,
        data: &data,
    };
    let options = WriteOptions {
        nodata: Some(f64::NAN),
        ..Default::default()
    };
    let georef = GeoRef::of(&plan.grid.info).unwrap();
    write_geotiff(dst, &raster, &georef, &options).unwrap();
}

#[test]
fn a_pre_aligned_pair_is_read_as_it_is_and_gives_the_same_result_bit_for_bit() {
    let Some(sar) = real_sar() else { return };
    let dir = tempfile::tempdir().unwrap();
    let scene = real_scene(dir.path(), &sar);
    let ck = synthetic_checkpoint(dir.path());
    let aligned = dir.path().join("sar_on_optical.tif");
    pre_aligned_sar(&scene, &aligned);
    let run = |name: &str, sar: &Path, extra: &[&str]| {
        let (classes, probs) = (
            dir.path().join(format!("{name}.tif")),
            dir.path().join(format!("{name}_p.tif")),
        );
        let mut args = vec![
            "--checkpoint",
            s(&ck),
            "--optical",
            s(&scene.optical),
            "--sar",
            s(sar),
            "--out",
            s(&classes),
            "--probs",
            s(&probs),
            "--one-route",
        ];
        args.extend_from_slice(extra);
        let (_, stderr) = ok_with_stderr(&predict(&args));
        (read_all(&classes), read_all(&probs), stderr)
    };
    // Already on the grid: nothing is resampled; the same as the strict reading of before.
    let (classes, probs, stderr) = run("aligned", &aligned, &[]);
    assert!(!stderr.contains("resampled"), "{stderr}");
    let (strict_classes, strict_probs, _) = run("strict", &aligned, &["--strict-grid"]);
    assert_eq!(classes, strict_classes);
    assert!(same_bits(&probs, &strict_probs));
    // Resampled on the fly, window by window, with the same method: the same bits.
    let (fly_classes, fly_probs, stderr) =
        run("on_the_fly", &scene.sar, &["--resampling", "sar=nearest"]);
    assert!(stderr.contains("is resampled (nearest)"), "{stderr}");
    assert_eq!(fly_classes, classes);
    assert!(same_bits(&fly_probs, &probs));
    assert!(classes.valid.iter().any(|v| !v) && classes.valid.iter().any(|&v| v));
}

fn same_bits(a: &Pixels, b: &Pixels) -> bool {
    a.valid == b.valid
        && a.data.len() == b.data.len()
        && a.data
            .iter()
            .zip(&b.data)
            .all(|(x, y)| x.to_bits() == y.to_bits())
}

/// A copy of `src` under `dst` with georeferencing `georef`.
fn copy_with(src: &Path, dst: &Path, georef: &GeoRef) {
    let info = RasterInfo::read(src).unwrap();
    let px = read_all(src);
    let raster = RasterData {
        width: info.width,
        height: info.height,
        bands: info.bands,
        data: &px.data,
    };
    let options = WriteOptions {
        nodata: info.nodata[0],
        ..Default::default()
    };
    std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
    write_geotiff(dst, &raster, georef, &options).unwrap();
}

#[test]
fn a_geotransform_without_crs_is_carried_to_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic_scene(dir.path(), 96);
    let ck = synthetic_checkpoint(dir.path());
    // The reproducer: `gdal_edit.py -a_srs None` on the three inputs.
    for f in &files[..3] {
        let mut ds = gdal::Dataset::open_ex(
            f,
            gdal::DatasetOptions {
                open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE,
                ..Default::default()
            },
        )
        .unwrap();
        ds.set_projection("").unwrap();
    }
    let input = RasterInfo::read(&files[0]).unwrap();
    assert_eq!(input.crs_wkt, None, "the CRS is stripped");
    let (classes, probs) = (dir.path().join("c.tif"), dir.path().join("p.tif"));
    ok_with_stderr(&predict(&[
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
    ]));
    for out in [&classes, &probs] {
        let info = RasterInfo::read(out).unwrap();
        assert_eq!(info.geo_transform, input.geo_transform, "{}", out.display());
        assert_eq!(info.crs_wkt, None);
    }
}

/// Five GCPs placing the pixels of `info`'s geotransform.
fn gcps_of(info: &RasterInfo) -> Vec<Gcp> {
    let g = info.geo_transform.unwrap();
    let (w, h) = (info.width as f64, info.height as f64);
    [(0.0, 0.0), (w, 0.0), (0.0, h), (w, h), (w / 3.0, h / 2.0)]
        .into_iter()
        .enumerate()
        .map(|(i, (pixel, line))| Gcp {
            id: format!("{}", i + 1),
            info: String::new(),
            pixel,
            line,
            x: g[0] + pixel * g[1] + line * g[2],
            y: g[3] + pixel * g[4] + line * g[5],
            z: 0.0,
        })
        .collect()
}

#[test]
fn gcp_inputs_keep_their_gcps_and_mixed_inputs_follow_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic_scene(dir.path(), 96);
    let ck = synthetic_checkpoint(dir.path());
    let info = RasterInfo::read(&files[0]).unwrap();
    let by_gcps = GeoRef {
        geo_transform: None,
        crs: None,
        gcps: gcps_of(&info),
        gcp_crs: Some(Crs::Epsg(synth::EPSG)),
    };
    let gcp_files: Vec<PathBuf> = files[..3]
        .iter()
        .map(|f| {
            let name = f.parent().unwrap().file_name().unwrap().to_owned();
            let dst = dir.path().join("gcp").join(name).with_extension("tif");
            copy_with(f, &dst, &by_gcps);
            dst
        })
        .collect();
    let classes = dir.path().join("c.tif");
    let (_, stderr) = ok_with_stderr(&predict(&[
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&gcp_files[0]),
        "--dsm",
        s(&gcp_files[1]),
        "--sar",
        s(&gcp_files[2]),
        "--out",
        s(&classes),
    ]));
    assert!(!stderr.contains("resampled"), "{stderr}");
    let out = RasterInfo::read(&classes).unwrap();
    assert_eq!(out.geo_transform, None);
    assert_eq!(out.gcps, by_gcps.gcps);
    let mut placed = out.clone();
    placed.crs_wkt = out.gcp_crs_wkt.clone();
    assert_eq!(placed.epsg(), Some(synth::EPSG));
    // GCPs on the same pixels as a geotransform line up with it; shifted ones do not.
    info.check_aligned(&RasterInfo::read(&gcp_files[1]).unwrap())
        .unwrap();

    // Mixed: a DSM without any georeferencing lies pixel for pixel on the optical grid...
    let bare = dir.path().join("bare/dsm.tif");
    let none = GeoRef {
        geo_transform: None,
        crs: None,
        gcps: Vec::new(),
        gcp_crs: None,
    };
    copy_with(&files[1], &bare, &none);
    let mixed = dir.path().join("mixed.tif");
    let (_, stderr) = ok_with_stderr(&predict(&[
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&files[0]),
        "--dsm",
        s(&bare),
        "--out",
        s(&mixed),
    ]));
    assert!(
        stderr.contains(
            "--dsm has no georeferencing: it is read pixel for pixel on the grid of --optical"
        ),
        "{stderr}"
    );
    assert_eq!(
        RasterInfo::read(&mixed).unwrap().geo_transform,
        info.geo_transform
    );
    // ... and so must have its size.
    let small = dir.path().join("bare/small.tif");
    let px = read_window_at(&files[1], Window::new(0, 0, 50, 50)).unwrap();
    let raster = RasterData {
        width: 50,
        height: 50,
        bands: 1,
        data: &px.data,
    };
    write_geotiff(&small, &raster, &none, &WriteOptions::default()).unwrap();
    let err = failed(&predict(&[
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&files[0]),
        "--dsm",
        s(&small),
        "--out",
        s(&mixed),
    ]));
    assert!(
        err.contains("small.tif has no georeferencing") && err.contains("size 96x96 vs 50x50"),
        "{err}"
    );
}

/// The real scene as a generic dataset (train and test: the same scene), with the model and
/// normalisation of experiments/synthetic.yaml; written as `dir/experiment.yaml`.
fn real_experiment(dir: &Path, scene: &RealScene) -> (Experiment, PathBuf) {
    let folder = |p: &Path| p.parent().unwrap().to_string_lossy().into_owned();
    let split = GenericSplit {
        modalities: BTreeMap::from([
            ("optical".to_string(), folder(&scene.optical)),
            ("dsm".to_string(), folder(&scene.dsm)),
            ("sar".to_string(), folder(&scene.sar)),
        ]),
        labels: Some(folder(&scene.labels)),
    };
    let mut exp = synthetic_experiment();
    exp.data.dataset = DatasetConfig::Generic(GenericConfig {
        train: split.clone(),
        val: Some(split.clone()),
        test: Some(split),
        class_codes: None,
        ignore_codes: Vec::new(),
    });
    let path = dir.join("experiment.yaml");
    std::fs::write(&path, serde_yaml::to_string(&exp).unwrap()).unwrap();
    (Experiment::load(&path, &[]).unwrap(), path)
}

#[test]
fn datasets_loader_stats_and_eval_read_every_file_on_the_reference_grid() {
    let Some(sar) = real_sar() else { return };
    let dir = tempfile::tempdir().unwrap();
    let scene = real_scene(&dir.path().join("data"), &sar);
    let (exp, config) = real_experiment(dir.path(), &scene);
    let dataset = SceneDataset::open(&exp.data, &exp.model, Split::Test).unwrap();
    let s0 = &dataset.scenes[0];
    assert_eq!((s0.width(), s0.height()), OPTICAL);
    let warped: Vec<bool> = s0.modalities.iter().map(|m| m.warp.is_some()).collect();
    assert_eq!(warped, vec![false, true, true]);
    assert_eq!(
        s0.label.as_ref().unwrap().warp.as_ref().unwrap().resampling,
        Resampling::Nearest
    );
    // Labels: 10 m classes, each over 2 x 2 optical pixels.
    let whole = Window::new(0, 0, OPTICAL.0, OPTICAL.1);
    let raw = dataset.read(0, whole).unwrap();
    for (col, row) in [(0, 0), (19, 19), (20, 0), (399, 299), (123, 45)] {
        let want = ((col / 2 / 10 + row / 2 / 10) % 6) as i64;
        assert_eq!(raw.labels[row * OPTICAL.0 + col], want, "({col}, {row})");
    }
    let valid = |m: usize| raw.modalities[m].valid.iter().filter(|v| **v).count() as u64;
    assert_eq!(valid(0), (OPTICAL.0 * OPTICAL.1) as u64);
    assert_eq!(
        raw.modalities[2].valid.iter().filter(|v| **v).count(),
        SAR_EAST_EDGE * OPTICAL.1
    );
    // Statistics count what is read on the grid.
    // (Strips of 256 rows: the SAR, in the same CRS, is exactly as in one read; the DSM's
    // reprojection is approximated per window by GDAL, to 1/8 pixel, so its edge may differ.)
    let stats = dis2::data::stats::compute(&dataset).unwrap();
    assert_eq!(stats.bands[2][0].count, valid(2));
    assert!(stats.bands[1][0].count.abs_diff(valid(1)) <= OPTICAL.0 as u64);
    assert_eq!(
        stats.class_counts.iter().sum::<u64>() + stats.ignored,
        (OPTICAL.0 * OPTICAL.1) as u64
    );
    // Training batches.
    let batch = dis2::data::loader::Loader::train(&exp.data, &exp.model, 7, Split::Train, 0)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(batch.inputs[2].size(), vec![8, 1, 64, 64]);

    // eval scores the class map on the optical grid, also with the optical dropped (one branch
    // per scene: the pixels where every given input has data; routes per pixel: tests/eval.rs).
    let ck = synthetic_checkpoint(dir.path());
    let all_valid = |drop_optical: bool| -> u64 {
        (0..OPTICAL.0 * OPTICAL.1)
            .filter(|&i| {
                (drop_optical || raw.modalities[0].valid[i])
                    && raw.modalities[1].valid[i]
                    && raw.modalities[2].valid[i]
                    && raw.labels[i] != exp.data.ignore_index
            })
            .count() as u64
    };
    for drop in [None, Some("optical")] {
        let out = dir.path().join(format!("eval-{drop:?}"));
        let mut args = vec![
            "eval",
            "--checkpoint",
            s(&ck),
            "--config",
            s(&config),
            "--out",
            s(&out),
            "--overlays",
            "1",
            "--one-route",
            "--device",
            "cpu",
            "--quiet",
        ];
        if let Some(d) = drop {
            args.extend(["--drop", d]);
        }
        ok_with_stderr(&dis2(&args));
        let doc = read_json(&out.join("metrics.json"));
        assert_eq!(
            doc["pixels"].as_u64(),
            Some(all_valid(drop.is_some())),
            "{drop:?}"
        );
    }
}

#[test]
fn strict_configuration_keeps_the_refusal_and_names_the_key() {
    let Some(sar) = real_sar() else { return };
    let dir = tempfile::tempdir().unwrap();
    let scene = real_scene(&dir.path().join("data"), &sar);
    let (mut exp, _) = real_experiment(dir.path(), &scene);
    exp.data.grid.strict = true;
    let err = format!(
        "{:#}",
        SceneDataset::open(&exp.data, &exp.model, Split::Train).unwrap_err()
    );
    assert!(
        err.contains("scene arles")
            && err.contains("do not line up")
            && err.contains("data.grid.strict"),
        "{err}"
    );
    // A reference of the configuration: the scene takes the SAR grid.
    exp.data.grid.strict = false;
    exp.data.grid.reference = Some("sar".to_string());
    let dataset = SceneDataset::open(&exp.data, &exp.model, Split::Train).unwrap();
    assert_eq!(
        (dataset.scenes[0].width(), dataset.scenes[0].height()),
        (268, 217)
    );
    assert!(dataset.scenes[0].modalities[2].warp.is_none());
    let e = format!(
        "{:#}",
        exp.data
            .grid
            .validate(&exp.model, ["grid.reference", "grid.resampling"])
            .and_then(|_| {
                let mut bad = exp.data.grid.clone();
                bad.reference = Some("lidar".into());
                bad.validate(&exp.model, ["grid.reference", "grid.resampling"])
            })
            .unwrap_err()
    );
    assert!(
        e.contains("grid.reference: \"lidar\" is not a modality"),
        "{e}"
    );
    let _ = raster::open(&scene.optical).unwrap();
}

#[test]
fn sweep_trains_and_scores_a_dataset_on_different_grids() {
    let Some(sar) = real_sar() else { return };
    let dir = tempfile::tempdir().unwrap();
    let scene = real_scene(&dir.path().join("data"), &sar);
    let (_, config) = real_experiment(dir.path(), &scene);
    let out = dir.path().join("sweep");
    let output = Command::new(common::BIN)
        .args(["sweep", "--config", s(&config), "--out", s(&out)])
        .args(["--methods", "teacher-fill", "--scenarios", "sar"])
        .args(["--set", "data.sampling.samples_per_epoch=8"])
        .args(["--set", "data.sampling.batch_size=4"])
        .args(["--set", "train.epochs=1", "--set", "train.val_batches=1"])
        .args(["--device", "cpu"])
        .output()
        .unwrap();
    let (_, stderr) = ok_with_stderr(&output);
    assert!(
        stderr.contains("modality sar (20 m, EPSG:32631) is resampled (bilinear)"),
        "{stderr}"
    );
    let doc = read_json(&out.join("results.json"));
    assert_eq!(doc["cells_missing"], 0, "{doc}");
    let cells = &doc["methods"][0]["cells"];
    assert!(cells["full"]["miou"]["mean"].as_f64().is_some(), "{doc}");
    assert!(cells["sar"]["miou"]["mean"].as_f64().is_some(), "{doc}");
}

#[test]
fn blocks_resample_modalities_on_other_grids_onto_the_labels_grid() {
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic_scene(dir.path(), 96);
    let labels = RasterInfo::read(&files[3]).unwrap();
    // A DSM at twice the labels' pixel size over the same area, all 7.
    let mut coarse = GeoRef::of(&labels).unwrap();
    let g = coarse.geo_transform.as_mut().unwrap();
    (g[1], g[5]) = (2.0 * g[1], 2.0 * g[5]);
    let dsm = dir.path().join("coarse/dsm.tif");
    write(&dsm, (48, 48), 1, &vec![7.0f32; 48 * 48], &coarse);
    let blocks = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let optical = format!("optical={}", s(&files[0]));
        let dsm = format!("dsm={}", s(&dsm));
        let mut args = vec!["blocks", "--grid", "2x2", "--labels", s(&files[3])];
        args.extend(["--modality", &optical, "--modality", &dsm, "--out", s(&out)]);
        args.extend(extra);
        dis2(&args)
    };
    let (_, stderr) = ok_with_stderr(&blocks("resampled", &[]));
    assert!(
        stderr.contains("--modality dsm")
            && stderr.contains("is resampled")
            && stderr.contains("onto the grid of --labels"),
        "{stderr}"
    );
    let out = dir.path().join("resampled/test");
    let block = RasterInfo::read(&out.join("dsm/r0c0.tif")).unwrap();
    let label = RasterInfo::read(&out.join("label/r0c0.tif")).unwrap();
    assert_eq!((block.width, block.height), (48, 48));
    assert_eq!(block.geo_transform, label.geo_transform);
    let px = read_all(&out.join("dsm/r0c0.tif"));
    for y in 1..47 {
        for x in 1..47 {
            assert!(px.valid[y * 48 + x], "({x}, {y})");
        }
    }
    assert!(px
        .data
        .iter()
        .zip(&px.valid)
        .all(|(&v, &ok)| !ok || v == 7.0));
    // --strict-grid keeps the refusal.
    let err = failed(&blocks("strict", &["--strict-grid"]));
    assert!(
        err.contains("dsm.tif") && err.contains("do not line up") && err.contains("--strict-grid"),
        "{err}"
    );
}
