//! Routes per pixel in `dis2 predict`: every route and fallback of the rule, the context margin,
//! user masks on another grid, DSM voids, the real Sentinel-1 scene covering part of an optical
//! grid, the route map as GDAL reads it, the summary's shares, and `--one-route`.

use std::path::{Path, PathBuf};

use dis2::data::raster::{write_geotiff, GeoRef, RasterData, RasterInfo, WriteOptions};
use dis2::model::{Fallback, RouteTable, ROUTE_NODATA};
use dis2::predict::{predict_scene, PredictOptions, Predictor, SceneJob, Summary};
use tch::Device;

mod common;
use common::{
    category_names, failed, ok_with_stderr, predict, read_all, real_sar, s, synthetic_checkpoint,
    synthetic_checkpoint_with, synthetic_experiment,
};

const SIZE: usize = 160;
const MARGIN: usize = 8;

/// A copy of the one-band raster `src` at `dst`, valid everywhere except where `gap(x, y)`,
/// which holds `nodata` (the declared nodata value). Pixels `src` lacks get its mean.
fn with_gap(src: &Path, dst: &Path, gap: impl Fn(usize, usize) -> bool, nodata: f32) {
    let info = RasterInfo::read(src).unwrap();
    let px = read_all(src);
    let valid: Vec<f32> = (px.data.iter().zip(&px.valid))
        .filter(|(_, &ok)| ok)
        .map(|(&v, _)| v)
        .collect();
    let mean = valid.iter().sum::<f32>() / valid.len().max(1) as f32;
    let mut data = px.data.clone();
    for y in 0..info.height {
        for x in 0..info.width {
            let at = y * info.width + x;
            data[at] = match (gap(x, y), px.valid[at]) {
                (true, _) => nodata,
                (false, true) => px.data[at],
                (false, false) => mean,
            };
        }
    }
    let raster = RasterData {
        width: info.width,
        height: info.height,
        bands: 1,
        data: &data,
    };
    let options = WriteOptions {
        nodata: Some(f64::from(nodata)),
        ..Default::default()
    };
    write_geotiff(dst, &raster, &GeoRef::of(&info).unwrap(), &options).unwrap();
}

/// The scene of these tests: SIZE x SIZE synthetic optical, a DSM with a void over rows from
/// 112 and a SAR cut off from column 96. Returns [optical, dsm, sar].
fn gapped_scene(dir: &Path) -> Vec<PathBuf> {
    let files = common::synthetic_scene(dir, SIZE);
    let (dsm, sar) = (dir.join("dsm_void.tif"), dir.join("sar_cut.tif"));
    with_gap(&files[1], &dsm, |_, y| y >= 112, -9999.0);
    with_gap(&files[2], &sar, |x, _| x >= 96, -99.0);
    vec![files[0].clone(), dsm, sar]
}

/// The route codes of a route map, row-major (255 where nodata).
fn codes(path: &Path) -> Vec<u8> {
    let px = read_all(path);
    (px.data.iter().zip(&px.valid))
        .map(|(&v, &ok)| if ok { v as u8 } else { ROUTE_NODATA })
        .collect()
}

/// The expected pattern of every pixel: bit i where modality i is not given, or unavailable
/// (`unavailable[i](x, y)`) within `margin` pixels inside the scene.
fn expected_patterns(
    given: [bool; 3],
    unavailable: &[&dyn Fn(usize, usize) -> bool; 3],
    margin: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; SIZE * SIZE];
    for y in 0..SIZE {
        for x in 0..SIZE {
            for i in 0..3 {
                let near = (y.saturating_sub(margin)..(y + margin + 1).min(SIZE)).any(|yy| {
                    (x.saturating_sub(margin)..(x + margin + 1).min(SIZE))
                        .any(|xx| unavailable[i](xx, yy))
                });
                if !given[i] || near {
                    out[y * SIZE + x] |= 1 << i;
                }
            }
        }
    }
    out
}

/// The route code of each pixel by the rule of docs/predict.md: the pattern with the margin,
/// unless it has no route, or only the filled teacher while the pixel's own pattern (without the
/// margin) has the teacher or a student.
fn expected_codes(
    table: &RouteTable,
    given: [bool; 3],
    unavailable: &[&dyn Fn(usize, usize) -> bool; 3],
    margin: usize,
    allow_fill: bool,
) -> Vec<u8> {
    let trained = |p: u8| {
        let fallback = table.resolve(p, allow_fill).fallback;
        matches!(fallback, Fallback::Exact | Fallback::Superset)
    };
    let own = expected_patterns(given, unavailable, 0);
    (expected_patterns(given, unavailable, margin).into_iter())
        .zip(own)
        .map(|(p, o)| {
            let lost = table.resolve(p, allow_fill).code == ROUTE_NODATA;
            let p = if lost || (!trained(p) && trained(o)) {
                o
            } else {
                p
            };
            table.resolve(p, allow_fill).code
        })
        .collect()
}

fn job(files: &[PathBuf], names: &[&str], out: &Path) -> SceneJob {
    SceneJob {
        inputs: (names.iter())
            .zip(files)
            .filter(|(n, _)| !n.is_empty())
            .map(|(n, f)| (n.to_string(), f.clone()))
            .collect(),
        out: out.to_path_buf(),
        routes: Some(out.with_extension("routes.tif")),
        ..Default::default()
    }
}

fn share(summary: &Summary, label: &str) -> u64 {
    (summary.routes.iter())
        .find(|(l, _)| l == label)
        .map_or(0, |(_, n)| *n)
}

/// Every route of a checkpoint with student[sar] and student[dsm+sar]: the teacher where all
/// three are available, student[sar] where the SAR is cut off, student[dsm+sar] in the DSM void
/// (exactly where both lack; as the smallest superset where only the DSM lacks), nodata where a
/// cloud mask removes the optical image too. The route map equals the rule applied to each
/// pixel's own availability with the margin, whichever windows cover it (overlap 16 and 0, two
/// batch sizes give the same map).
#[test]
fn every_route_and_fallback_follows_the_rule_pixel_by_pixel() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint_with(dir.path(), "two", |exp| {
        exp.model.scenarios = Some(vec![
            vec!["sar".to_string()],
            vec!["dsm".to_string(), "sar".to_string()],
        ]);
    });
    let files = gapped_scene(dir.path());
    // A cloud over the bottom-right corner: nonzero = optical missing.
    let cloud = |x: usize, y: usize| x >= 136 && y >= 136;
    let mask: Vec<u8> = (0..SIZE * SIZE)
        .map(|i| u8::from(cloud(i % SIZE, i / SIZE)))
        .collect();
    let mask_path = dir.path().join("cloud.tif");
    let info = RasterInfo::read(&files[0]).unwrap();
    let raster = RasterData {
        width: SIZE,
        height: SIZE,
        bands: 1,
        data: &mask,
    };
    write_geotiff(
        &mask_path,
        &raster,
        &GeoRef::of(&info).unwrap(),
        &WriteOptions::default(),
    )
    .unwrap();
    let predictor = Predictor::load(&ck, Device::Cpu).unwrap();
    let cfg = &predictor.info().model;
    let table = RouteTable::of(cfg).unwrap();
    let unavailable: [&dyn Fn(usize, usize) -> bool; 3] =
        [&cloud, &|_, y| y >= 112, &|x, _| x >= 96];
    let expected = expected_codes(&table, [true; 3], &unavailable, MARGIN, false);
    let mut maps = Vec::new();
    for (n, (overlap, batch)) in [(16, 8), (0, 3)].into_iter().enumerate() {
        let mut job = job(
            &files,
            &["optical", "dsm", "sar"],
            &dir.path().join(format!("c{n}.tif")),
        );
        job.missing_masks = vec![("optical".to_string(), mask_path.clone())];
        let options = PredictOptions {
            overlap: Some(overlap),
            batch,
            margin: MARGIN,
            announce_fill: false,
            ..Default::default()
        };
        let summary = predict_scene(&predictor, &job, &options).unwrap();
        let map = codes(job.routes.as_ref().unwrap());
        for (i, (&got, &want)) in map.iter().zip(&expected).enumerate() {
            assert_eq!(
                got,
                want,
                "pixel ({}, {}): {} instead of {}",
                i % SIZE,
                i / SIZE,
                table.label(got),
                table.label(want)
            );
        }
        // The class map is nodata exactly where the route map is.
        let classes = read_all(&job.out);
        assert!((classes.valid.iter().zip(&map)).all(|(&v, &c)| v == (c != ROUTE_NODATA)));
        for label in ["teacher", "student[sar]", "student[dsm+sar]"] {
            let n = expected
                .iter()
                .filter(|&&c| table.label(c) == label)
                .count() as u64;
            assert!(n > 0, "{label} covers no pixel");
            assert_eq!(share(&summary, label), n, "{label}");
        }
        let nodata = expected.iter().filter(|&&c| c == ROUTE_NODATA).count() as u64;
        assert!(nodata > 0);
        assert_eq!(summary.nodata_pixels, nodata);
        assert_eq!(
            summary.valid_pixels + summary.nodata_pixels,
            (SIZE * SIZE) as u64
        );
        let kinds: Vec<Fallback> = summary.fallbacks.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            kinds,
            [Fallback::Exact, Fallback::Superset, Fallback::NoModality]
        );
        assert!(
            summary.route.starts_with("routes per pixel: teacher "),
            "{}",
            summary.route
        );
        maps.push(map);
    }
    assert_eq!(
        maps[0], maps[1],
        "the windows do not change a pixel's route"
    );
}

/// A checkpoint without any student for a missing DSM: nodata there without `allow_fill`
/// (and nodata where the DSM and the SAR both lack, since student[sar] cannot serve them), the
/// teacher filled with it.
#[test]
fn without_a_student_the_pixels_are_nodata_or_filled_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint_with(dir.path(), "sar_only", |exp| {
        exp.model.scenarios = Some(vec![vec!["sar".to_string()]]);
    });
    let files = gapped_scene(dir.path());
    let predictor = Predictor::load(&ck, Device::Cpu).unwrap();
    let table = RouteTable::of(&predictor.info().model).unwrap();
    let unavailable: [&dyn Fn(usize, usize) -> bool; 3] =
        [&|_, _| false, &|_, y| y >= 112, &|x, _| x >= 96];
    for allow_fill in [false, true] {
        let job = job(
            &files,
            &["optical", "dsm", "sar"],
            &dir.path().join(format!("f{allow_fill}.tif")),
        );
        let options = PredictOptions {
            allow_fill,
            announce_fill: false,
            margin: MARGIN,
            ..Default::default()
        };
        let summary = predict_scene(&predictor, &job, &options).unwrap();
        let map = codes(job.routes.as_ref().unwrap());
        let want = expected_codes(&table, [true; 3], &unavailable, MARGIN, allow_fill);
        assert_eq!(map, want);
        let kinds: Vec<Fallback> = summary.fallbacks.iter().map(|(k, _)| *k).collect();
        match allow_fill {
            false => {
                assert_eq!(kinds, [Fallback::Exact, Fallback::NoStudent]);
                assert!(summary.nodata_pixels >= (SIZE * (SIZE - 112)) as u64);
            }
            true => {
                assert_eq!(kinds, [Fallback::Exact, Fallback::Fill]);
                assert_eq!(summary.nodata_pixels, 0);
                assert!(share(&summary, "teacher-fill[dsm]") > 0);
                assert!(share(&summary, "teacher-fill[dsm+sar]") > 0);
            }
        }
    }
}

/// With `--route-blend 0` (the hard switch) each pixel of the composite holds its own route's
/// probabilities: equal to a run of that route alone (`--one-route` with the inputs the route
/// reads) on the pixels it took.
#[test]
fn the_composite_equals_each_route_run_alone_on_its_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = gapped_scene(dir.path());
    let predictor = Predictor::load(&ck, Device::Cpu).unwrap();
    let table = RouteTable::of(&predictor.info().model).unwrap();
    let with_probs = |names: &[&str], name: &str, per_pixel: bool| {
        let mut job = job(&files, names, &dir.path().join(format!("{name}.tif")));
        job.probs = Some(dir.path().join(format!("{name}.probs.tif")));
        let options = PredictOptions {
            per_pixel,
            announce_fill: false,
            route_blend: 0,
            ..Default::default()
        };
        predict_scene(&predictor, &job, &options).unwrap();
        (
            read_all(job.probs.as_ref().unwrap()),
            codes(job.routes.as_ref().unwrap()),
        )
    };
    let (composite, map) = with_probs(&["optical", "dsm", "sar"], "composite", true);
    let alone = [
        (
            "teacher",
            with_probs(&["optical", "dsm", "sar"], "teacher", false).0,
        ),
        (
            "student[sar]",
            with_probs(&["optical", "dsm", ""], "no_sar", false).0,
        ),
        (
            "student[dsm]",
            with_probs(&["optical", "", "sar"], "no_dsm", false).0,
        ),
        (
            "student[dsm+sar]",
            with_probs(&["optical", "", ""], "optical", false).0,
        ),
    ];
    let plane = SIZE * SIZE;
    for (label, probs) in &alone {
        let mut compared = 0;
        for (i, &code) in map.iter().enumerate() {
            if table.label(code) != *label {
                continue;
            }
            for c in 0..composite.bands {
                let (a, b) = (composite.data[c * plane + i], probs.data[c * plane + i]);
                assert!(
                    (a - b).abs() < 1e-4,
                    "{label}, pixel {i}, class {c}: {a} vs {b}"
                );
            }
            compared += 1;
        }
        assert!(compared > 500, "{label}: only {compared} pixels");
    }
}

/// Probabilities and route map of one prediction of `names` (empty: not given) from `files`
/// with `options`, written as `dir/name.tif`.
fn probs_of(
    predictor: &Predictor,
    files: &[PathBuf],
    names: &[&str],
    dir: &Path,
    name: &str,
    options: &PredictOptions,
) -> (dis2::data::raster::Pixels, Vec<u8>) {
    let mut job = job(files, names, &dir.join(format!("{name}.tif")));
    job.probs = Some(dir.join(format!("{name}.probs.tif")));
    predict_scene(predictor, &job, options).unwrap();
    (
        read_all(job.probs.as_ref().unwrap()),
        codes(job.routes.as_ref().unwrap()),
    )
}

/// Route blending at the boundary of a SAR cut off from column 96 (student[sar] from column 88
/// with the margin): on the teacher's side, a pixel at Chebyshev distance d < B from the
/// student's pixels holds `w P_teacher + (1 - w) P_student`, w = 0.5 - 0.5 cos(pi d / B), each
/// route's probabilities those of the route run alone on the same scene; farther in, the
/// teacher's own; on the student's side (where the teacher's inputs lack) the student's own,
/// so the teacher never contributes there. `--route-blend 0` is the hard switch. The route map
/// does not change with the blend.
#[test]
fn routes_mix_by_a_raised_cosine_on_the_richer_side_of_a_boundary() {
    const BLEND: usize = 12;
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = gapped_scene(dir.path());
    let files = vec![
        files[0].clone(),
        common::synthetic_scene(dir.path(), SIZE)[1].clone(),
        files[2].clone(),
    ];
    let predictor = Predictor::load(&ck, Device::Cpu).unwrap();
    let table = RouteTable::of(&predictor.info().model).unwrap();
    let all = ["optical", "dsm", "sar"];
    let per_pixel = |blend: usize| PredictOptions {
        margin: MARGIN,
        route_blend: blend,
        announce_fill: false,
        ..Default::default()
    };
    let one_route = PredictOptions {
        per_pixel: false,
        announce_fill: false,
        ..Default::default()
    };
    let d = dir.path();
    let (blended, map) = probs_of(&predictor, &files, &all, d, "blended", &per_pixel(BLEND));
    let (hard, hard_map) = probs_of(&predictor, &files, &all, d, "hard", &per_pixel(0));
    let (teacher, _) = probs_of(&predictor, &files, &all, d, "teacher", &one_route);
    let no_sar = ["optical", "dsm", ""];
    let (student, _) = probs_of(&predictor, &files, &no_sar, d, "student", &one_route);
    assert_eq!(map, hard_map, "the route map is each pixel's own route");
    let edge = 96 - MARGIN;
    let plane = SIZE * SIZE;
    let mut mixed = 0;
    for y in 0..SIZE {
        for x in 0..SIZE {
            let i = y * SIZE + x;
            let want = if x < edge { "teacher" } else { "student[sar]" };
            assert_eq!(table.label(map[i]), want, "pixel ({x}, {y})");
            let w = match edge.saturating_sub(x) {
                0 => 0.0,
                dist if dist >= BLEND => 1.0,
                dist => 0.5 - 0.5 * (std::f32::consts::PI * dist as f32 / BLEND as f32).cos(),
            };
            let hard_w = if x < edge { 1.0 } else { 0.0 };
            mixed += usize::from(w > 0.0 && w < 1.0);
            for c in 0..blended.bands {
                let (t, s) = (teacher.data[c * plane + i], student.data[c * plane + i]);
                let at = c * plane + i;
                for (got, w, what) in [
                    (blended.data[at], w, "blended"),
                    (hard.data[at], hard_w, "hard"),
                ] {
                    let expected = w * t + (1.0 - w) * s;
                    assert!(
                        (got - expected).abs() < 1e-4,
                        "{what}, pixel ({x}, {y}), class {c}: {got} vs {expected} (w {w})"
                    );
                }
            }
        }
    }
    assert_eq!(mixed, (BLEND - 1) * SIZE, "pixels in the band");
}

/// Where the DSM lacks (student[dsm+sar], whose missing set contains every other route's),
/// no richer route contributes: the composite equals that student run alone there, with a
/// route blend wider than the margin.
#[test]
fn the_richer_route_never_contributes_where_its_inputs_lack() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = gapped_scene(dir.path());
    let predictor = Predictor::load(&ck, Device::Cpu).unwrap();
    let table = RouteTable::of(&predictor.info().model).unwrap();
    let options = PredictOptions {
        margin: MARGIN,
        route_blend: 24,
        announce_fill: false,
        ..Default::default()
    };
    let one_route = PredictOptions {
        per_pixel: false,
        announce_fill: false,
        ..Default::default()
    };
    let d = dir.path();
    let (composite, map) = probs_of(
        &predictor,
        &files,
        &["optical", "dsm", "sar"],
        d,
        "c",
        &options,
    );
    let (poorest, _) = probs_of(&predictor, &files, &["optical", "", ""], d, "o", &one_route);
    let plane = SIZE * SIZE;
    let mut compared = 0;
    for (i, &code) in map.iter().enumerate() {
        if table.label(code) != "student[dsm+sar]" {
            continue;
        }
        for c in 0..composite.bands {
            let (a, b) = (composite.data[c * plane + i], poorest.data[c * plane + i]);
            assert!((a - b).abs() < 1e-4, "pixel {i}, class {c}: {a} vs {b}");
        }
        compared += 1;
    }
    assert!(compared > 1000, "only {compared} pixels");
}

/// A cloud mask on a grid twice as coarse, given in a scene list (`missing.optical=`), routes
/// the cloud to student[optical]; the route map carries the codes, a colour table and the
/// category names GIS tools show; stderr names the route once with its share; a mask of a
/// modality not given is refused naming the flag.
#[test]
fn a_cloud_mask_on_another_grid_and_the_route_map_as_gdal_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = common::synthetic_scene(dir.path(), SIZE);
    let info = RasterInfo::read(&files[0]).unwrap();
    let gt = info.geo_transform.unwrap();
    // 80 x 80 pixels of twice the size; cloud over coarse columns 10-29 and rows 20-49, the
    // mask's nodata (255) over its last rows: not missing there.
    let (cw, chh) = (SIZE / 2, SIZE / 2);
    let values: Vec<u8> = (0..cw * chh)
        .map(|i| {
            let (x, y) = (i % cw, i / cw);
            match y >= 70 {
                true => 255,
                false => u8::from((10..30).contains(&x) && (20..50).contains(&y)),
            }
        })
        .collect();
    let coarse = GeoRef {
        geo_transform: Some([gt[0], gt[1] * 2.0, 0.0, gt[3], 0.0, gt[5] * 2.0]),
        ..GeoRef::of(&info).unwrap()
    };
    let clouds = dir.path().join("clouds.tif");
    let raster = RasterData {
        width: cw,
        height: chh,
        bands: 1,
        data: &values,
    };
    let options = WriteOptions {
        nodata: Some(255.0),
        ..Default::default()
    };
    write_geotiff(&clouds, &raster, &coarse, &options).unwrap();
    let list = dir.path().join("scenes.txt");
    std::fs::write(
        &list,
        format!(
            "optical={} dsm={} sar={} missing.optical=clouds.tif out=c.tif routes=r.tif\n",
            s(&files[0]),
            s(&files[1]),
            s(&files[2])
        ),
    )
    .unwrap();
    let (stdout, stderr) = ok_with_stderr(&predict(&["--checkpoint", s(&ck), "--list", s(&list)]));
    assert!(stdout.contains("routes per pixel: teacher"), "{stdout}");
    assert!(stdout.contains("student[optical]"), "{stdout}");
    let notes: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("lack optical:"))
        .collect();
    assert_eq!(notes.len(), 1, "{stderr}");
    assert!(
        notes[0].contains("% of pixels lack optical: student[optical]"),
        "{stderr}"
    );

    let routes = dir.path().join("r.tif");
    let table = RouteTable::of(&synthetic_experiment().model).unwrap();
    let student = table
        .labels()
        .iter()
        .position(|l| l == "student[optical]")
        .unwrap() as u8;
    let map = codes(&routes);
    // The cloud covers fine pixels 20-59 x 40-99; with the margin, 28-51 x 48-91 are surely
    // inside and pixels 12 or more outside surely not (the synthetic SAR may have gaps: only
    // pixels with every input valid are checked outside).
    for y in 48..92 {
        for x in 28..52 {
            assert_eq!(map[y * SIZE + x], student, "({x}, {y})");
        }
    }
    let (dsm, sar) = (read_all(&files[1]), read_all(&files[2]));
    let mut teacher = 0;
    for y in 0..SIZE {
        for x in 0..SIZE {
            let far = !(8..72).contains(&x) || !(28..112).contains(&y);
            let i = y * SIZE + x;
            if far && dsm.valid[i] && sar.valid[i] && map[i] == 0 {
                teacher += 1;
            }
            if far && map[i] == student {
                panic!("({x}, {y}) is far from the cloud but took student[optical]");
            }
        }
    }
    assert!(teacher > SIZE * SIZE / 4, "teacher on {teacher} pixels");

    let ds = gdal::Dataset::open(&routes).unwrap();
    let band = ds.rasterband(1).unwrap();
    assert_eq!(band.no_data_value(), Some(255.0));
    let colours = band.color_table().unwrap();
    let rgb = |code: usize| {
        let e = colours.entry_as_rgb(code).unwrap();
        (e.r, e.g, e.b)
    };
    assert_eq!(rgb(0), (44, 160, 44), "the teacher is green");
    assert!(
        (1..table.len()).all(|c| rgb(c) != rgb(0)),
        "every other route has its colour"
    );
    let names = category_names(&band);
    assert_eq!(names, table.labels());
    assert_eq!(names[0], "teacher");
    assert!(names.contains(&"student[dsm+sar]".to_string()), "{names:?}");
    assert_eq!(ds.geo_transform().unwrap(), gt);

    let out = dir.path().join("x.tif");
    let err = failed(&predict(&[
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&files[0]),
        "--missing-mask",
        &format!("sar={}", s(&clouds)),
        "--out",
        s(&out),
    ]));
    assert!(
        err.contains("--missing-mask sar=") && err.contains("no --sar input"),
        "{err}"
    );
    assert!(!out.exists());
}

/// The real Sentinel-1 scene covering the right part of a wider optical grid (100 columns of
/// 20 m more on the left): every pixel is classified, by the student of the missing DSM inside
/// the SAR's footprint and by student[dsm+sar] outside it, where `--one-route` leaves nodata.
#[test]
fn a_real_sentinel1_scene_covering_part_of_an_optical_grid() {
    let Some(sar) = real_sar() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let info = RasterInfo::read(&sar).unwrap();
    let gt = info.geo_transform.unwrap();
    let (w, h) = (info.width + 100, info.height);
    let values: Vec<u8> = (0..4 * w * h).map(|i| ((i * 37) % 251) as u8).collect();
    let georef = GeoRef {
        geo_transform: Some([gt[0] - 100.0 * gt[1], gt[1], 0.0, gt[3], 0.0, gt[5]]),
        ..GeoRef::of(&info).unwrap()
    };
    let optical = dir.path().join("optical.tif");
    let raster = RasterData {
        width: w,
        height: h,
        bands: 4,
        data: &values,
    };
    write_geotiff(&optical, &raster, &georef, &WriteOptions::default()).unwrap();
    let (out, routes) = (dir.path().join("c.tif"), dir.path().join("r.tif"));
    let args = [
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&optical),
        "--sar",
        s(&sar),
        "--out",
        s(&out),
        "--routes",
        s(&routes),
    ];
    let (stdout, _) = ok_with_stderr(&predict(&args));
    assert!(
        stdout.contains("student[dsm]") && stdout.contains("student[dsm+sar]"),
        "{stdout}"
    );
    let table = RouteTable::of(&synthetic_experiment().model).unwrap();
    let code = |l: &str| table.labels().iter().position(|x| x == l).unwrap() as u8;
    let map = codes(&routes);
    assert!(
        read_all(&out).valid.iter().all(|&v| v),
        "every pixel classified"
    );
    for y in 0..h {
        for x in 0..w {
            let want = match x {
                x if x < 100 => Some(code("student[dsm+sar]")),
                // The warper may leave the footprint's edge pixel out.
                x if x >= 100 + MARGIN + 2 && x + MARGIN + 2 < w => Some(code("student[dsm]")),
                _ => None,
            };
            if let Some(want) = want {
                if y >= MARGIN + 2 && y + MARGIN + 2 < h {
                    assert_eq!(map[y * w + x], want, "({x}, {y})");
                }
            }
        }
    }
    let mut one = args.to_vec();
    one.push("--one-route");
    let (stdout, _) = ok_with_stderr(&predict(&one));
    assert!(
        stdout.contains("student (missing: dsm)") && stdout.contains("nodata"),
        "{stdout}"
    );
    let px = read_all(&out);
    assert!((0..h).all(|y| (0..100).all(|x| !px.valid[y * w + x])));
}

/// `--one-route` is the behaviour before routes per pixel: the branch of the files given and
/// nodata wherever any given input lacks data (the margin plays no part), while routes per pixel
/// classify those pixels.
#[test]
fn one_route_leaves_nodata_where_any_input_lacks_data() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = gapped_scene(dir.path());
    let predictor = Predictor::load(&ck, Device::Cpu).unwrap();
    let run = |per_pixel: bool, name: &str| {
        let job = job(&files, &["optical", "dsm", "sar"], &dir.path().join(name));
        let options = PredictOptions {
            per_pixel,
            announce_fill: false,
            ..Default::default()
        };
        let summary = predict_scene(&predictor, &job, &options).unwrap();
        (summary, read_all(&job.out))
    };
    let (one, classes) = run(false, "one.tif");
    assert_eq!(one.route, "teacher (all modalities given)");
    let (dsm, sar) = (read_all(&files[1]), read_all(&files[2]));
    for i in 0..SIZE * SIZE {
        assert_eq!(classes.valid[i], dsm.valid[i] && sar.valid[i], "pixel {i}");
    }
    assert_eq!(one.routes, [("teacher".to_string(), one.valid_pixels)]);
    let (many, _) = run(true, "many.tif");
    assert_eq!(many.nodata_pixels, 0);
    assert!(one.nodata_pixels > (SIZE * SIZE / 3) as u64);

    // Nothing to classify: the error names the given input without data, not every file.
    let empty = dir.path().join("sar_empty.tif");
    with_gap(&files[2], &empty, |_, _| true, -99.0);
    let only = job(&[empty], &["sar"], &dir.path().join("empty.tif"));
    let err = predict_scene(&predictor, &only, &PredictOptions::default()).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("every pixel is nodata in at least one input: --sar")
            && err.contains("sar_empty.tif"),
        "{err}"
    );
    assert!(!dir.path().join("empty.tif").exists());

    // The per-pixel options have no effect with one route, and are refused naming the flag.
    for (flag, value) in [("--route-blend", "4"), ("--context-margin", "4")] {
        let out = dir.path().join("refused.tif");
        let err = failed(&predict(&[
            "--checkpoint",
            s(&ck),
            "--optical",
            s(&files[0]),
            "--out",
            s(&out),
            "--one-route",
            flag,
            value,
        ]));
        assert!(
            err.contains("--context-margin and --route-blend shape the routes per pixel")
                && err.contains("--one-route runs one branch per scene"),
            "{err}"
        );
        assert!(!out.exists());
    }
}
