//! `dis2 predict` end to end: the binary on synthetic and real scenes, its outputs against the
//! model run directly, inputs GDAL reads through its virtual file systems, the checkpoint a run
//! directory names, and its errors.

use std::io::Write;
use std::path::Path;
use std::process::Command;

use dis2::checkpoint;
use dis2::data::raster::{
    self, read_window_at, write_geotiff, GeoRef, RasterData, RasterInfo, Window, WriteOptions,
};
use dis2::data::synth;
use dis2::model::Route;
use dis2::tiling::WindowLayout;
use tch::{Device, Tensor};

mod common;
use common::{
    failed, ok, predict, read_all, real_sar, s, synthetic_checkpoint, synthetic_checkpoint_with,
    synthetic_experiment,
};

/// Writes a copy of a one-band f32 raster with the first `border` rows and columns set to
/// `nodata` (declared as the band's nodata value).
fn with_nodata_border(src: &Path, dst: &Path, border: usize, nodata: f32) {
    let info = RasterInfo::read(src).unwrap();
    let px = read_all(src);
    let mut data = px.data.clone();
    for y in 0..info.height {
        for x in 0..info.width {
            if y < border || x < border || !px.valid[y * info.width + x] {
                data[y * info.width + x] = nodata;
            }
        }
    }
    let raster = RasterData {
        width: info.width,
        height: info.height,
        bands: 1,
        data: &data,
    };
    let opts = WriteOptions {
        nodata: Some(f64::from(nodata)),
        ..Default::default()
    };
    write_geotiff(dst, &raster, &GeoRef::of(&info).unwrap(), &opts).unwrap();
}

/// The normalised `channels x 64 x 64` window at (row, col) of a raster, 0 where invalid.
fn normalised_window(path: &Path, name: &str, row: usize, col: usize) -> Tensor {
    let exp = synthetic_experiment();
    let norm = &exp.data.normalisation[name];
    let px = read_window_at(path, Window::new(col as i64, row as i64, 64, 64)).unwrap();
    let mut values = Vec::new();
    for b in 0..px.bands {
        for (v, &ok) in px.band(b).iter().zip(&px.valid) {
            values.push(if ok {
                ((f64::from(*v) - norm.mean[b]) / norm.std[b]) as f32
            } else {
                0.0
            });
        }
    }
    Tensor::from_slice(&values).view([1, px.bands as i64, 64, 64])
}

#[test]
fn blended_scene_equals_single_windows_and_keeps_georeferencing() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = common::synthetic_scene(dir.path(), 160);
    let (classes, probs, preview) = (
        dir.path().join("out/classes.tif"),
        dir.path().join("out/probs.tif"),
        dir.path().join("out/preview.png"),
    );
    let stdout = ok(&predict(&[
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
        "--preview",
        s(&preview),
        "--batch",
        "4",
    ]));
    assert!(
        stdout.contains("160x160 px, 9 windows") && stdout.contains("teacher"),
        "{stdout}"
    );
    // Georeferencing and colour table.
    let input = RasterInfo::read(&files[0]).unwrap();
    let out = RasterInfo::read(&classes).unwrap();
    assert_eq!((out.width, out.height, out.bands), (160, 160, 1));
    assert_eq!(out.data_type, "Byte");
    assert_eq!(out.geo_transform, input.geo_transform);
    assert_eq!(out.epsg(), Some(synth::EPSG));
    assert_eq!(out.nodata, vec![Some(255.0)]);
    let ds = raster::open(&classes).unwrap();
    let band = ds.rasterband(1).unwrap();
    let table = band.color_table().unwrap();
    for (i, (_, [r, g, b])) in synth::CLASSES.iter().enumerate() {
        let e = table.entry_as_rgb(i).unwrap();
        assert_eq!(
            (e.r, e.g, e.b),
            (i16::from(*r), i16::from(*g), i16::from(*b))
        );
    }
    let pinfo = RasterInfo::read(&probs).unwrap();
    assert_eq!((pinfo.bands, pinfo.data_type.as_str()), (6, "Float32"));
    // The 160 x 160 map at the top-left, the legend of the checkpoint's classes and nodata below.
    let preview_img = image::open(&preview).unwrap().to_rgb8();
    let classes_table = checkpoint::read_info(&ck).unwrap().class_table();
    let size = dis2::figures::preview_size(160, 160, &classes_table);
    assert_eq!(
        (preview_img.width() as usize, preview_img.height() as usize),
        size
    );
    assert!(size.0 >= 160 && size.1 > 160, "{size:?}");
    let first = read_all(&classes).data[0] as usize;
    assert_eq!(preview_img.get_pixel(0, 0).0, synth::CLASSES[first].1);

    // Inside each window, where its blend weight is 1, the result is that window run alone.
    let loaded = checkpoint::load(&ck, Device::Cpu).unwrap();
    let p = read_all(&probs);
    let class_px = read_all(&classes);
    let layout = WindowLayout::new((160, 160), (64, 64), 16).unwrap();
    assert_eq!(layout.len(), 9);
    let weights = layout.weights();
    let mut compared = 0;
    for w in layout.windows() {
        let (row, col) = (w.y as usize, w.x as usize);
        let inputs = [
            normalised_window(&files[0], "optical", row, col),
            normalised_window(&files[1], "dsm", row, col),
            normalised_window(&files[2], "sar", row, col),
        ];
        let refs: Vec<Option<&Tensor>> = inputs.iter().map(Some).collect();
        let alone =
            tch::no_grad(|| loaded.net.forward_route(&Route::Teacher, &refs, false)).unwrap();
        let alone: Vec<f32> = Vec::try_from(alone.contiguous().view([-1])).unwrap();
        for y in 0..64 {
            for x in 0..64 {
                let at = (row + y) * 160 + col + x;
                if weights[y * 64 + x] < 1.0 || !p.valid[at] {
                    continue;
                }
                for c in 0..6 {
                    let got = p.data[c * 160 * 160 + at];
                    let want = alone[(c * 64 + y) * 64 + x];
                    assert!(
                        (got - want).abs() < 1e-4,
                        "window {w:?} pixel ({y}, {x}) class {c}: {got} vs {want}"
                    );
                }
                compared += 1;
            }
        }
    }
    assert!(
        compared > 9 * 32 * 32 / 2,
        "only {compared} pixels compared"
    );
    // The class map is the arg max of the probabilities.
    for i in (0..160 * 160).step_by(7) {
        if !p.valid[i] {
            continue;
        }
        let best = (0..6)
            .max_by(|&a, &b| p.data[a * 25600 + i].total_cmp(&p.data[b * 25600 + i]))
            .unwrap();
        assert_eq!(class_px.data[i] as usize, best, "pixel {i}");
    }
}

#[test]
fn nodata_of_any_input_is_nodata_in_the_class_map() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = common::synthetic_scene(dir.path(), 112);
    let dsm = dir.path().join("dsm_border.tif");
    with_nodata_border(&files[1], &dsm, 9, -9999.0);
    let classes = dir.path().join("classes.tif");
    ok(&predict(&[
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&files[0]),
        "--dsm",
        s(&dsm),
        "--sar",
        s(&files[2]),
        "--out",
        s(&classes),
        "--probs",
        s(&dir.path().join("p8.tif")),
        "--probs-type",
        "u8",
        "--one-route",
    ]));
    let (d, sar, out) = (read_all(&dsm), read_all(&files[2]), read_all(&classes));
    let mut nodata = 0;
    for i in 0..112 * 112 {
        let invalid = !d.valid[i] || !sar.valid[i];
        // Reading turns the class map's nodata (255) into valid = false.
        assert_eq!(!out.valid[i], invalid, "pixel {i}");
        assert!(out.data[i] < 6.0);
        nodata += usize::from(invalid);
    }
    assert!(nodata >= 9 * 112, "the border is nodata");
    assert_eq!(
        RasterInfo::read(&dir.path().join("p8.tif"))
            .unwrap()
            .data_type,
        "Byte"
    );
}

#[test]
fn real_sentinel1_scene_runs_the_students_and_keeps_its_crs() {
    let Some(sar) = real_sar() else { return };
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let info = RasterInfo::read(&sar).unwrap();
    // A copy with a nodata border, since the fixture has no nodata pixel.
    let masked = dir.path().join("sar_masked.tif");
    with_nodata_border(&sar, &masked, 6, -99.0);
    let classes = dir.path().join("sar_only.tif");
    let stdout = ok(&predict(&[
        "--checkpoint",
        s(&ck),
        "--sar",
        s(&masked),
        "--out",
        s(&classes),
        "--one-route",
    ]));
    assert!(
        stdout.contains("student (missing: optical, dsm)"),
        "{stdout}"
    );
    let out = RasterInfo::read(&classes).unwrap();
    assert_eq!((out.width, out.height), (268, 217));
    assert_eq!(out.geo_transform, info.geo_transform);
    assert_eq!(out.epsg(), Some(32631));
    let px = read_all(&classes);
    for y in 0..217 {
        for x in 0..268 {
            assert_eq!(!px.valid[y * 268 + x], y < 6 || x < 6, "({y}, {x})");
        }
    }

    // With an aligned optical raster as well: the student for missing dsm.
    let optical = dir.path().join("optical.tif");
    let n = 268 * 217;
    let values: Vec<u8> = (0..4 * n).map(|i| ((i * 37) % 251) as u8).collect();
    let raster = RasterData {
        width: 268,
        height: 217,
        bands: 4,
        data: &values,
    };
    write_geotiff(
        &optical,
        &raster,
        &GeoRef::of(&info).unwrap(),
        &WriteOptions::default(),
    )
    .unwrap();
    let both = dir.path().join("both.tif");
    let stdout = ok(&predict(&[
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&optical),
        "--sar",
        s(&sar),
        "--out",
        s(&both),
    ]));
    assert!(stdout.contains("student (missing: dsm)"), "{stdout}");
    let out = RasterInfo::read(&both).unwrap();
    assert_eq!(out.geo_transform, info.geo_transform);
    assert_eq!(out.epsg(), Some(32631));
    assert!(read_all(&both).valid.iter().all(|&v| v));
}

#[test]
fn scene_lists_are_sharded_and_small_scenes_padded() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    // 40 x 40: smaller than one 64 x 64 window.
    let files = common::synthetic_scene(dir.path(), 40);
    let list = dir.path().join("scenes.txt");
    let mut text = String::from("# three scenes\n");
    for k in 0..3 {
        text.push_str(&format!(
            "optical=optical/scene.tif dsm={} out=out/{k}.tif\n",
            s(&files[1])
        ));
    }
    std::fs::write(&list, text).unwrap();
    let stdout = ok(&predict(&[
        "--checkpoint",
        s(&ck),
        "--list",
        s(&list),
        "--shard",
        "1/2",
    ]));
    assert!(stdout.contains("40x40 px, 1 windows"), "{stdout}");
    let out = dir.path().join("out");
    assert!(!out.join("0.tif").exists() && !out.join("2.tif").exists());
    let info = RasterInfo::read(&out.join("1.tif")).unwrap();
    assert_eq!((info.width, info.height), (40, 40));
    assert!(read_all(&out.join("1.tif")).data.iter().all(|&c| c < 6.0));
}

#[test]
fn bad_inputs_are_reported_with_files_and_expectations() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = common::synthetic_scene(dir.path(), 64);
    let out = dir.path().join("o.tif");
    let base = ["--checkpoint", s(&ck), "--out", s(&out)];
    let with = |extra: &[&str]| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend_from_slice(extra);
        predict(&a)
    };

    let err = failed(&with(&["--optical", s(&files[0]), "--lidar", s(&files[1])]));
    assert!(
        err.contains("lidar")
            && err.contains("--optical")
            && err.contains("--dsm")
            && err.contains("--sar"),
        "{err}"
    );

    let err = failed(&with(&["--optical", s(&files[1])]));
    assert!(
        err.contains("should have 4 band(s), found 1") && err.contains("dsm/scene.tif"),
        "{err}"
    );

    let shifted = dir.path().join("shifted.tif");
    let info = RasterInfo::read(&files[1]).unwrap();
    let px = read_all(&files[1]);
    let mut g = GeoRef::of(&info).unwrap();
    g.geo_transform.as_mut().unwrap()[0] += 10.0;
    let raster = RasterData {
        width: 64,
        height: 64,
        bands: 1,
        data: &px.data,
    };
    write_geotiff(&shifted, &raster, &g, &WriteOptions::default()).unwrap();
    // Off the grid: refused in strict mode (resampled otherwise, see the grid tests).
    let err = failed(&with(&[
        "--optical",
        s(&files[0]),
        "--dsm",
        s(&shifted),
        "--strict-grid",
    ]));
    assert!(
        err.contains("optical/scene.tif")
            && err.contains("shifted.tif")
            && err.contains("geotransform")
            && err.contains("--strict-grid is set"),
        "{err}"
    );

    let empty = dir.path().join("empty.tif");
    std::fs::write(&empty, b"").unwrap();
    let err = failed(&with(&["--optical", s(&files[0]), "--dsm", s(&empty)]));
    assert!(err.contains("empty.tif"), "{err}");

    let nodata = dir.path().join("all_nodata.tif");
    with_nodata_border(&files[2], &nodata, 64, -99.0);
    let err = failed(&with(&[
        "--optical",
        s(&files[0]),
        "--sar",
        s(&nodata),
        "--one-route",
    ]));
    assert!(
        err.contains("every pixel is nodata") && err.contains("all_nodata.tif"),
        "{err}"
    );
    assert!(!out.exists(), "no output is left behind");
    assert_eq!(
        std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".tmp-"))
            .count(),
        0
    );

    let err = failed(&with(&[
        "--optical",
        s(&files[0]),
        "--list",
        s(&out),
        "--shard",
        "2/2",
    ]));
    assert!(err.contains("--list"), "{err}");
    let list = dir.path().join("l.txt");
    std::fs::write(&list, format!("optical={} out=x.tif\n", s(&files[0]))).unwrap();
    let err = failed(&predict(&[
        "--checkpoint",
        s(&ck),
        "--list",
        s(&list),
        "--shard",
        "2/2",
    ]));
    assert!(
        err.contains("--shard \"2/2\"") && err.contains("i < n"),
        "{err}"
    );
}

#[test]
fn a_missing_set_without_student_needs_allow_fill() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint_with(dir.path(), "sar_only", |exp| {
        exp.model.scenarios = Some(vec![vec!["sar".to_string()], vec!["optical".to_string()]]);
    });
    let files = common::synthetic_scene(dir.path(), 64);
    let out = dir.path().join("o.tif");
    let args = [
        "--checkpoint",
        s(&ck),
        "--optical",
        s(&files[0]),
        "--sar",
        s(&files[2]),
        "--out",
        s(&out),
    ];
    let err = failed(&predict(&args));
    assert!(
        err.contains("no student for missing: dsm")
            && err.contains("[missing: sar], [missing: optical]")
            && err.contains("--allow-fill"),
        "{err}"
    );
    assert!(!out.exists());
    let mut fill = args.to_vec();
    fill.push("--allow-fill");
    let output = predict(&fill);
    let stdout = ok(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stdout.contains("teacher with dsm filled"), "{stdout}");
    assert!(stderr.contains("filled with the training mean"), "{stderr}");
    assert_eq!(RasterInfo::read(&out).unwrap().width, 64);
}

#[test]
fn inline_and_background_reading_give_the_same_bytes() {
    use dis2::predict::{predict_scene, PredictOptions, Predictor, ProbsType, SceneJob};
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = common::synthetic_scene(dir.path(), 100);
    let predictor = Predictor::load(&ck, Device::Cpu).unwrap();
    let mut outputs = Vec::new();
    for (prefetch, batch) in [(0, 1), (2, 3)] {
        let job = SceneJob {
            inputs: vec![
                ("dsm".to_string(), files[1].clone()),
                ("optical".to_string(), files[0].clone()),
            ],
            out: dir.path().join(format!("c{prefetch}.tif")),
            probs: Some(dir.path().join(format!("p{prefetch}.tif"))),
            preview: None,
            ..Default::default()
        };
        let options = PredictOptions {
            prefetch,
            batch,
            overlap: Some(8),
            probs_type: ProbsType::F32,
            ..Default::default()
        };
        let summary = predict_scene(&predictor, &job, &options).unwrap();
        assert_eq!(summary.windows, 4, "stride 56 over 100 px: 2 x 2 windows");
        assert!(summary.route.contains("missing: sar"), "{}", summary.route);
        outputs.push((read_all(&job.out), read_all(job.probs.as_ref().unwrap())));
    }
    assert_eq!(outputs[0].0, outputs[1].0);
    let (a, b) = (&outputs[0].1, &outputs[1].1);
    assert_eq!(a.valid, b.valid);
    let max_diff = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max);
    assert!(max_diff < 1e-5, "probabilities differ by {max_diff}");
}

/// The inference settings guard splits the threads once, by the work (a nested guard changes
/// nothing; `ThreadSplit::choose`'s own cases are unit tests), bounds GDAL's block cache, and
/// leaves both as it found them when dropped: a library call (eval inside a sweep) does not
/// change the process for what follows.
#[test]
fn inference_settings_are_restored_and_not_compounded() {
    use dis2::predict::{cores, InferenceSettings, InferenceWork, ThreadSplit, GDAL_CACHE_BYTES};
    let threads = tch::get_num_threads();
    // SAFETY: getters of GDAL's global cache size.
    let cache = || unsafe { gdal_sys::GDALGetCacheMax64() };
    let before = cache();
    let work = |base_width, side| InferenceWork {
        base_width,
        window: [side, side],
        batch: 8,
    };
    let cores = cores();
    for work in [work(32, 128), work(8, 64)] {
        let model = i32::try_from(ThreadSplit::choose(cores, &work).model).unwrap();
        {
            let outer = InferenceSettings::enter(Device::Cpu, &work);
            let inside = tch::get_num_threads();
            assert_eq!(inside, model, "{work:?}");
            assert_eq!(outer.split().map(|s| s.model as i32), Some(model));
            {
                let inner = InferenceSettings::enter(Device::Cpu, &work);
                assert_eq!(tch::get_num_threads(), inside);
                assert_eq!(inner.split(), None);
            }
            assert_eq!(tch::get_num_threads(), inside);
            if std::env::var_os("GDAL_CACHEMAX").is_none() {
                assert_eq!(cache(), before.min(GDAL_CACHE_BYTES));
            }
        }
        assert_eq!(tch::get_num_threads(), threads);
        assert_eq!(cache(), before);
    }
}

/// `file` as the member `name` of the zip archive `archive`.
fn zip_one(file: &Path, archive: &Path, name: &str) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(archive).unwrap());
    zip.start_file(name, zip::write::FileOptions::default())
        .unwrap();
    zip.write_all(&std::fs::read(file).unwrap()).unwrap();
    zip.finish().unwrap();
}

/// `file` gzipped into `gz`.
fn gzip(file: &Path, gz: &Path) {
    let out = std::fs::File::create(gz).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    encoder.write_all(&std::fs::read(file).unwrap()).unwrap();
    encoder.finish().unwrap();
}

#[test]
fn inputs_in_archives_go_to_gdal_as_they_are_in_flags_and_scene_lists() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = common::synthetic_scene(dir.path(), 64);
    zip_one(&files[0], &dir.path().join("opt.zip"), "optical.tif");
    gzip(&files[1], &dir.path().join("dsm.tif.gz"));
    let zipped = format!("/vsizip/{}/optical.tif", s(&dir.path().join("opt.zip")));
    let gzipped = format!("/vsigzip/{}", s(&dir.path().join("dsm.tif.gz")));
    let run = |optical: &str, dsm: &str, out: &str| {
        let out = dir.path().join(out);
        let args = ["--checkpoint", s(&ck), "--out", s(&out)];
        predict(
            &[
                &args[..],
                &["--optical", optical, "--dsm", dsm, "--sar", s(&files[2])],
            ]
            .concat(),
        )
    };
    ok(&run(s(&files[0]), s(&files[1]), "plain.tif"));
    ok(&run(&zipped, &gzipped, "virtual.tif"));
    let plain = read_all(&dir.path().join("plain.tif"));
    assert_eq!(read_all(&dir.path().join("virtual.tif")), plain);

    // A scene list resolves a relative archive against its folder, as it does a relative file.
    let lists = dir.path().join("lists");
    std::fs::create_dir(&lists).unwrap();
    std::fs::rename(dir.path().join("opt.zip"), lists.join("opt.zip")).unwrap();
    let list = lists.join("scenes.txt");
    std::fs::write(
        &list,
        format!(
            "optical=/vsizip/opt.zip/optical.tif dsm={gzipped} sar={} out=listed.tif\n",
            s(&files[2])
        ),
    )
    .unwrap();
    ok(&predict(&["--checkpoint", s(&ck), "--list", s(&list)]));
    assert_eq!(read_all(&lists.join("listed.tif")), plain);

    // What GDAL cannot open is GDAL's error, with the flag and the file.
    let missing = format!("/vsizip/{}/nope.tif", s(&lists.join("opt.zip")));
    let err = failed(&run(&missing, &gzipped, "missing.tif"));
    assert!(
        err.contains("--optical")
            && err.contains(&format!("GDAL cannot open raster {missing}"))
            && err.contains("does not exist in the file system"),
        "{err}"
    );
    // A relative path that names nothing: where it was looked for.
    let out = Command::new(common::BIN)
        .args(["predict", "--device", "cpu", "--checkpoint", s(&ck)])
        .args(["--optical", "nope.tif", "--out", "x.tif"])
        .current_dir(&lists)
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(
        err.contains("--optical")
            && err.contains("raster nope.tif does not exist")
            && err.contains(&format!("current directory {}", s(&lists))),
        "{err}"
    );
}

#[test]
fn a_run_directory_names_its_best_checkpoint_and_a_missing_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let step = run.join("checkpoints/step-000001");
    std::fs::create_dir_all(&step).unwrap();
    synthetic_checkpoint(&step);
    std::os::unix::fs::symlink("step-000001", run.join("checkpoints/best")).unwrap();
    std::fs::write(run.join("run.yaml"), "kind: teacher\n").unwrap();
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/synthetic.yaml"),
        run.join("config.yaml"),
    )
    .unwrap();
    let files = common::synthetic_scene(dir.path(), 64);
    let with = |checkpoint: &Path, out: &str| {
        let out = dir.path().join(out);
        predict(&[
            "--checkpoint",
            s(checkpoint),
            "--optical",
            s(&files[0]),
            "--dsm",
            s(&files[1]),
            "--sar",
            s(&files[2]),
            "--out",
            s(&out),
        ])
    };
    ok(&with(&run, "by_run.tif"));
    ok(&with(&step.join("model"), "by_file.tif"));
    assert_eq!(
        read_all(&dir.path().join("by_run.tif")),
        read_all(&dir.path().join("by_file.tif"))
    );

    // A `best` link whose step directory is gone: the link and where it points.
    std::fs::rename(&step, run.join("checkpoints/moved")).unwrap();
    let err = failed(&with(&run, "dangling.tif"));
    assert!(
        err.contains("checkpoints/best dangles")
            && err.contains("points to step-000001")
            && !err.contains("best.yaml"),
        "{err}"
    );
    let eval = |checkpoint: &str| {
        Command::new(common::BIN)
            .args(["eval", "--device", "cpu", "--checkpoint", checkpoint])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let err = failed(&eval("run"));
    assert!(
        err.contains("--checkpoint run") && err.contains("dangles"),
        "{err}"
    );
    // A path that does not exist is said to be missing, not outside a run.
    let err = failed(&eval("runs/nope"));
    assert!(
        err.contains("checkpoint runs/nope does not exist")
            && err.contains("runs/nope.safetensors")
            && err.contains(&format!("current directory {}", s(dir.path())))
            && !err.contains("not inside a run directory"),
        "{err}"
    );
}
