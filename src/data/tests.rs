//! Tests of the data layer on small fake trees of every layout, written with GDAL into temporary
//! folders, on the synthetic benchmark, and on the real Sentinel-1 fixtures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gdal::raster::GdalType;
use gdal::DriverManager;

use super::config::*;
use super::dataset::SceneDataset;
use super::labels::ISPRS_CLASSES;
use super::layouts::Split;
use super::loader::{load_sample, Batch, Loader, LoaderOptions};
use super::normalise::Normaliser;
use super::raster::{self, GeoRef, RasterData, RasterInfo, Window, WriteOptions};
use super::sampling::{Augment, RandomCropSampler, SampleSpec, SlidingWindowSampler};
use super::synth::{self, SynthOptions};
use crate::config::Experiment;
use crate::model::config::{ModalitySpec, ModelConfig};

const N: usize = 16;

fn georef() -> GeoRef {
    GeoRef::north_up(370_000.0, 5_810_000.0, 0.05, 32633)
}

fn tif<T: GdalType + Copy>(path: &Path, bands: usize, data: &[T], nodata: Option<f64>) {
    let raster = RasterData {
        width: N,
        height: N,
        bands,
        data,
    };
    raster::write_geotiff(
        path,
        &raster,
        &georef(),
        &WriteOptions {
            nodata,
            ..Default::default()
        },
    )
    .unwrap();
}

/// A single-band image without georeferencing, like the ISPRS nDSM JPEGs.
fn jpeg(path: &Path, value: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mem = DriverManager::get_driver_by_name("MEM").unwrap();
    let ds = mem.create_with_band_type::<u8, _>("", N, N, 1).unwrap();
    let mut buf = gdal::raster::Buffer::new((N, N), vec![value; N * N]);
    ds.rasterband(1)
        .unwrap()
        .write((0, 0), (N, N), &mut buf)
        .unwrap();
    let jpg = DriverManager::get_driver_by_name("JPEG").unwrap();
    ds.create_copy(&jpg, path, &Default::default()).unwrap();
}

/// RGB label: the top half class `top`, the bottom half class `bottom` (ISPRS colours); `black`
/// paints row 0 black (an eroded boundary).
fn isprs_label(path: &Path, top: usize, bottom: usize, black: bool) {
    let mut data = vec![0u8; 3 * N * N];
    for r in 0..N {
        for c in 0..N {
            let colour = if black && r == 0 {
                [0, 0, 0]
            } else {
                ISPRS_CLASSES[if r < N / 2 { top } else { bottom }].1
            };
            for b in 0..3 {
                data[b * N * N + r * N + c] = colour[b];
            }
        }
    }
    tif(path, 3, &data, None);
}

fn model(modalities: &[(&str, i64)], num_classes: i64) -> ModelConfig {
    ModelConfig {
        base_width: 8,
        num_classes,
        crop: [16, 16],
        heads: 8,
        ffn_dim: 64,
        depth: 1,
        modalities: modalities
            .iter()
            .map(|(n, c)| ModalitySpec {
                name: n.to_string(),
                channels: *c,
            })
            .collect(),
        scenarios: None,
        decoder: Default::default(),
        fusion: Default::default(),
    }
}

fn data_config(dataset: DatasetConfig) -> DataConfig {
    DataConfig {
        dataset,
        ..Default::default()
    }
}

fn err_of<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.unwrap_err())
}

// ---------------------------------------------------------------------------------------------
// Potsdam

fn potsdam_tree(root: &Path, eroded: bool) {
    use super::layouts::{POTSDAM_TEST, POTSDAM_TRAIN};
    for tile in POTSDAM_TRAIN.iter().chain(&POTSDAM_TEST) {
        let (a, b) = tile.split_once('_').unwrap();
        tif(
            &root.join(format!("4_Ortho_RGBIR/top_potsdam_{tile}_RGBIR.tif")),
            4,
            &vec![100u8; 4 * N * N],
            None,
        );
        tif(
            &root.join(format!("2_Ortho_RGB/top_potsdam_{tile}_RGB.tif")),
            3,
            &vec![100u8; 3 * N * N],
            None,
        );
        tif(
            &root.join(format!("1_DSM/dsm_potsdam_{a:0>2}_{b:0>2}.tif")),
            1,
            &vec![35.5f32; N * N],
            Some(-32768.0),
        );
        jpeg(
            &root.join(format!(
                "1_DSM_normalisation/dsm_potsdam_{a:0>2}_{b:0>2}_normalized_lastools.jpg"
            )),
            40,
        );
        let label = if eroded {
            root.join(format!(
                "5_Labels_all_noBoundary/top_potsdam_{tile}_label_noBoundary.tif"
            ))
        } else {
            root.join(format!("5_Labels_all/top_potsdam_{tile}_label.tif"))
        };
        isprs_label(&label, 1, 3, eroded);
    }
}

fn potsdam(root: &Path, eroded: bool, modalities: &[(&str, PotsdamProduct)]) -> DataConfig {
    data_config(DatasetConfig::Potsdam(PotsdamConfig {
        root: root.to_path_buf(),
        modalities: modalities
            .iter()
            .map(|(n, p)| (n.to_string(), *p))
            .collect(),
        eroded_labels: eroded,
        val_tiles: vec!["7_9".into()],
        colour_tolerance: 0,
    }))
}

#[test]
fn potsdam_tree_loads_with_colour_labels_and_standard_splits() {
    let dir = tempfile::tempdir().unwrap();
    potsdam_tree(dir.path(), false);
    let m = model(&[("optical", 4), ("dsm", 1)], 6);
    let cfg = potsdam(
        dir.path(),
        false,
        &[
            ("optical", PotsdamProduct::Rgbir),
            ("dsm", PotsdamProduct::Ndsm),
        ],
    );
    let train = SceneDataset::open(&cfg, &m, Split::Train).unwrap();
    assert_eq!(train.len(), 23);
    assert!(train.scenes.iter().all(|s| s.id != "7_9"));
    assert_eq!(SceneDataset::open(&cfg, &m, Split::Val).unwrap().len(), 1);
    assert_eq!(SceneDataset::open(&cfg, &m, Split::Test).unwrap().len(), 14);
    let sample = train.read(0, Window::new(0, 0, N, N)).unwrap();
    assert_eq!(sample.modalities[0].bands, 4);
    assert!(
        sample.modalities[1]
            .data
            .iter()
            .all(|&v| (35.0..=45.0).contains(&v)),
        "nDSM JPEG values"
    );
    assert_eq!(sample.labels[0], 1, "building (0, 0, 255) in the top half");
    assert_eq!(
        sample.labels[N * N - 1],
        3,
        "tree (0, 255, 0) in the bottom half"
    );
    // The 1_DSM GeoTIFF also lines up.
    let cfg = potsdam(
        dir.path(),
        false,
        &[
            ("optical", PotsdamProduct::Rgbir),
            ("dsm", PotsdamProduct::Dsm),
        ],
    );
    let ds = SceneDataset::open(&cfg, &m, Split::Test).unwrap();
    assert_eq!(
        ds.read(0, Window::new(0, 0, 4, 4)).unwrap().modalities[1].data[0],
        35.5
    );
}

#[test]
fn potsdam_eroded_labels_ignore_black_and_full_labels_reject_it() {
    let dir = tempfile::tempdir().unwrap();
    potsdam_tree(dir.path(), true);
    let m = model(&[("optical", 4), ("dsm", 1)], 6);
    let cfg = potsdam(
        dir.path(),
        true,
        &[
            ("optical", PotsdamProduct::Rgbir),
            ("dsm", PotsdamProduct::Ndsm),
        ],
    );
    let ds = SceneDataset::open(&cfg, &m, Split::Train).unwrap();
    let s = ds.read(0, Window::new(0, 0, N, N)).unwrap();
    assert!(
        s.labels[..N].iter().all(|&l| l == 255),
        "black boundary row is ignored"
    );
    assert_eq!(s.labels[N], 1);
    // The same black pixels in a full (not eroded) label are an unknown colour.
    let label = dir.path().join("5_Labels_all/top_potsdam_2_10_label.tif");
    isprs_label(&label, 1, 3, true);
    let file = dir
        .path()
        .join("5_Labels_all_noBoundary/top_potsdam_2_10_label_noBoundary.tif");
    std::fs::remove_file(file).unwrap();
    let err = err_of(SceneDataset::open(&cfg, &m, Split::Train));
    assert!(
        err.contains("1 file(s) missing") && err.contains("top_potsdam_2_10_label_noBoundary.tif"),
        "{err}"
    );
}

#[test]
fn potsdam_bad_colour_band_count_and_names_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    potsdam_tree(dir.path(), false);
    let m = model(&[("optical", 4), ("dsm", 1)], 6);
    let cfg = potsdam(
        dir.path(),
        false,
        &[
            ("optical", PotsdamProduct::Rgbir),
            ("dsm", PotsdamProduct::Ndsm),
        ],
    );
    let label = dir.path().join("5_Labels_all/top_potsdam_2_10_label.tif");
    let mut data = vec![255u8; 3 * N * N];
    data[5] = 12;
    tif(&label, 3, &data, None);
    let ds = SceneDataset::open(&cfg, &m, Split::Train).unwrap();
    let err = err_of(ds.read(0, Window::new(0, 0, N, N)));
    assert!(
        err.contains("top_potsdam_2_10_label.tif")
            && err.contains("unknown label colour (12, 255, 255)"),
        "{err}"
    );
    // RGB has 3 bands, the model wants 4.
    let rgb = potsdam(
        dir.path(),
        false,
        &[
            ("optical", PotsdamProduct::Rgb),
            ("dsm", PotsdamProduct::Ndsm),
        ],
    );
    let err = err_of(SceneDataset::open(&rgb, &m, Split::Train));
    assert!(
        err.contains("top_potsdam_")
            && err.contains("_RGB.tif")
            && err.contains("should have 4 band(s), found 3"),
        "{err}"
    );
    // Modality names must match the model's.
    let other = model(&[("optical", 4), ("sar", 1)], 6);
    let err = err_of(SceneDataset::open(&cfg, &other, Split::Train));
    assert!(
        err.contains(
            "provides modalities [dsm, optical] but model.modalities names [optical, sar]"
        ),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Vaihingen

fn vaihingen_tree(root: &Path) {
    use super::layouts::{VAIHINGEN_TEST, VAIHINGEN_TRAIN};
    for area in VAIHINGEN_TRAIN.iter().chain(&VAIHINGEN_TEST) {
        tif(
            &root.join(format!("top/top_mosaic_09cm_area{area}.tif")),
            3,
            &vec![90u8; 3 * N * N],
            None,
        );
        tif(
            &root.join(format!("dsm/dsm_09cm_matching_area{area}.tif")),
            1,
            &vec![260.0f32; N * N],
            None,
        );
        isprs_label(
            &root.join(format!(
                "gts_for_participants/top_mosaic_09cm_area{area}.tif"
            )),
            0,
            2,
            false,
        );
        isprs_label(
            &root.join(format!(
                "gts_eroded_for_participants/top_mosaic_09cm_area{area}_noBoundary.tif"
            )),
            0,
            2,
            true,
        );
    }
}

fn vaihingen(root: &Path, eroded: bool) -> DataConfig {
    data_config(DatasetConfig::Vaihingen(VaihingenConfig {
        root: root.to_path_buf(),
        modalities: BTreeMap::from([
            ("optical".into(), VaihingenProduct::Irrg),
            ("dsm".into(), VaihingenProduct::Dsm),
        ]),
        eroded_labels: eroded,
        val_areas: vec![],
        colour_tolerance: 0,
    }))
}

#[test]
fn vaihingen_tree_loads_and_misaligned_modalities_are_named() {
    let dir = tempfile::tempdir().unwrap();
    vaihingen_tree(dir.path());
    let m = model(&[("optical", 3), ("dsm", 1)], 6);
    let ds = SceneDataset::open(&vaihingen(dir.path(), false), &m, Split::Train).unwrap();
    assert_eq!(ds.len(), 16);
    assert_eq!(ds.scenes[0].id, "area1");
    let s = ds.read(0, Window::new(0, 0, N, N)).unwrap();
    assert_eq!((s.labels[0], s.labels[N * N - 1]), (0, 2));
    assert_eq!(
        SceneDataset::open(&vaihingen(dir.path(), false), &m, Split::Val)
            .unwrap()
            .len(),
        17
    );
    let eroded = SceneDataset::open(&vaihingen(dir.path(), true), &m, Split::Test).unwrap();
    assert!(eroded
        .read(0, Window::new(0, 0, N, 1))
        .unwrap()
        .labels
        .iter()
        .all(|&l| l == 255));
    // A DSM on another grid: 4 pixels (0.2 m) to the east.
    let dsm = dir.path().join("dsm/dsm_09cm_matching_area3.tif");
    let data = vec![1.0f32; N * N];
    let shifted = GeoRef::north_up(370_000.2, 5_810_000.0, 0.05, 32633);
    raster::write_geotiff(
        &dsm,
        &RasterData {
            width: N,
            height: N,
            bands: 1,
            data: &data,
        },
        &shifted,
        &WriteOptions::default(),
    )
    .unwrap();
    // Strict: refused, naming both files and what differs.
    let mut strict = vaihingen(dir.path(), false);
    strict.grid.strict = true;
    let err = err_of(SceneDataset::open(&strict, &m, Split::Train));
    assert!(
        err.contains("top_mosaic_09cm_area3.tif") && err.contains("dsm_09cm_matching_area3.tif"),
        "{err}"
    );
    assert!(err.contains("do not line up: geotransform"), "{err}");
    assert!(err.contains("data.grid.strict is set"), "{err}");
    // Otherwise resampled onto the optical grid: no data in its first 4 columns.
    let ds = SceneDataset::open(&vaihingen(dir.path(), false), &m, Split::Train).unwrap();
    let area3 = ds.scenes.iter().position(|s| s.id == "area3").unwrap();
    assert!(ds.scenes[area3].modalities[1].warp.is_some());
    assert!(ds.scenes[area3].modalities[0].warp.is_none());
    let s = ds.read(area3, Window::new(0, 0, N, N)).unwrap();
    for (i, &ok) in s.modalities[1].valid.iter().enumerate() {
        assert_eq!(ok, i % N >= 4, "pixel {i}");
    }
    assert!(s.modalities[1]
        .data
        .iter()
        .zip(&s.modalities[1].valid)
        .all(|(&v, &ok)| !ok || v == 1.0));
}

/// `tree`'s files written into the zip archive `archive`, under the folder `prefix`.
fn zip_tree(tree: &Path, archive: &Path, prefix: &str) {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(archive).unwrap());
    let mut folders = vec![tree.to_path_buf()];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            let name = format!("{prefix}/{}", path.strip_prefix(tree).unwrap().display());
            zip.start_file(name, zip::write::FileOptions::default())
                .unwrap();
            zip.write_all(&std::fs::read(&path).unwrap()).unwrap();
        }
    }
    zip.finish().unwrap();
}

#[test]
fn layouts_read_a_root_inside_a_zip_archive_through_gdal() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    vaihingen_tree(&tree);
    let archive = dir.path().join("vaihingen.zip");
    zip_tree(&tree, &archive, "Vaihingen");
    let root = PathBuf::from(format!("/vsizip/{}/Vaihingen", archive.display()));
    let m = model(&[("optical", 3), ("dsm", 1)], 6);
    let zipped = SceneDataset::open(&vaihingen(&root, false), &m, Split::Train).unwrap();
    let on_disk = SceneDataset::open(&vaihingen(&tree, false), &m, Split::Train).unwrap();
    assert_eq!(zipped.len(), 16);
    assert!(zipped.scenes[0].modalities[0].path.starts_with(&root));
    let whole = Window::new(0, 0, N, N);
    assert_eq!(
        zipped.read(0, whole).unwrap(),
        on_disk.read(0, whole).unwrap()
    );
    let wrong = PathBuf::from(format!("/vsizip/{}/Potsdam", archive.display()));
    let err = err_of(SceneDataset::open(
        &vaihingen(&wrong, false),
        &m,
        Split::Train,
    ));
    assert!(
        err.contains("data.dataset.vaihingen.root: folder /vsizip/") && err.contains("/Potsdam"),
        "{err}"
    );

    // A layout that lists folders: generic entries inside the archive.
    let generic_tree = dir.path().join("generic");
    for stem in ["a", "b"] {
        let g = |p: &str| generic_tree.join(format!("{p}/{stem}.tif"));
        tif(&g("img"), 3, &vec![7u16; 3 * N * N], None);
        tif(&g("height"), 1, &vec![2.0f32; N * N], None);
        tif(&g("gt"), 1, &vec![1u8; N * N], None);
    }
    let archive = dir.path().join("generic.zip");
    zip_tree(&generic_tree, &archive, "g");
    let root = PathBuf::from(format!("/vsizip/{}/g", archive.display()));
    let m = model(&[("optical", 3), ("height", 1)], 3);
    let ds = SceneDataset::open(&generic(&root, "gt"), &m, Split::Train).unwrap();
    let ids: Vec<&str> = ds.scenes.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(ds.read(1, whole).unwrap().labels, vec![1; N * N]);
}

#[test]
fn paletted_colour_labels_are_named_with_how_to_expand_them() {
    let dir = tempfile::tempdir().unwrap();
    vaihingen_tree(dir.path());
    let label = dir
        .path()
        .join("gts_for_participants/top_mosaic_09cm_area1.tif");
    let palette: Vec<[u8; 3]> = ISPRS_CLASSES.iter().map(|c| c.1).collect();
    let raster = RasterData {
        width: N,
        height: N,
        bands: 1,
        data: &vec![2u8; N * N],
    };
    let options = WriteOptions {
        colour_table: Some(palette),
        ..Default::default()
    };
    raster::write_geotiff(&label, &raster, &georef(), &options).unwrap();
    let m = model(&[("optical", 3), ("dsm", 1)], 6);
    let err = err_of(SceneDataset::open(
        &vaihingen(dir.path(), false),
        &m,
        Split::Train,
    ));
    assert!(
        err.contains("top_mosaic_09cm_area1.tif")
            && err.contains("labels (RGB colours) should have 3 band(s), found 1")
            && err.contains("the file is paletted")
            && err.contains("gdal_translate -of VRT -expand rgb"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// WHU-OPT-SAR

#[test]
fn whu_opt_sar_maps_codes_and_splits_by_stem() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for (stem, code) in [
        ("NH49E001013", 10u8),
        ("NH49E001014", 20),
        ("NH49E001015", 40),
        ("NH49E001016", 70),
    ] {
        tif(
            &root.join(format!("optical/{stem}.tif")),
            4,
            &vec![50u8; 4 * N * N],
            None,
        );
        tif(
            &root.join(format!("sar/{stem}.tif")),
            1,
            &vec![30u8; N * N],
            None,
        );
        let mut lbl = vec![code; N * N];
        lbl[0] = 0;
        tif(&root.join(format!("lbl/{stem}.tif")), 1, &lbl, None);
    }
    let codes = BTreeMap::from([
        (10, 0),
        (20, 1),
        (30, 2),
        (40, 3),
        (50, 4),
        (60, 5),
        (70, 6),
    ]);
    let cfg = |codes: BTreeMap<i64, i64>| {
        data_config(DatasetConfig::WhuOptSar(WhuOptSarConfig {
            root: root.to_path_buf(),
            class_codes: codes,
            ignore_codes: vec![0],
            val: vec!["NH49E001015".into()],
            test: vec!["NH49E001016".into()],
        }))
    };
    let m = model(&[("optical", 4), ("sar", 1)], 7);
    let train = SceneDataset::open(&cfg(codes.clone()), &m, Split::Train).unwrap();
    assert_eq!(
        train
            .scenes
            .iter()
            .map(|s| s.id.as_str())
            .collect::<Vec<_>>(),
        ["NH49E001013", "NH49E001014"]
    );
    let test = SceneDataset::open(&cfg(codes.clone()), &m, Split::Test).unwrap();
    let s = test.read(0, Window::new(0, 0, N, N)).unwrap();
    assert_eq!((s.labels[0], s.labels[1]), (255, 6));
    let mut fewer = codes;
    fewer.remove(&20);
    let ds = SceneDataset::open(&cfg(fewer), &m, Split::Train).unwrap();
    let err = err_of(ds.read(1, Window::new(0, 0, N, N)));
    assert!(
        err.contains("lbl/NH49E001014.tif")
            && err.contains("label value(s) that are not classes: 20 (")
            && err.contains("data.dataset.whu_opt_sar.class_codes")
            && err.contains("data.dataset.whu_opt_sar.ignore_codes"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Generic

fn generic(root: &Path, labels: &str) -> DataConfig {
    let s = |p: &str| root.join(p).to_string_lossy().into_owned();
    data_config(DatasetConfig::Generic(GenericConfig {
        train: GenericSplit {
            modalities: BTreeMap::from([
                ("optical".into(), s("img/*.tif")),
                ("height".into(), s("height")),
            ]),
            labels: Some(s(labels)),
        },
        val: None,
        test: None,
        class_codes: None,
        ignore_codes: vec![],
    }))
}

#[test]
fn generic_matches_stems_masks_nodata_and_checks_label_range() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    for stem in ["a", "b"] {
        tif(
            &root.join(format!("img/{stem}.tif")),
            3,
            &vec![7u16; 3 * N * N],
            None,
        );
        let mut h = vec![2.0f32; N * N];
        h[0] = -9999.0;
        h[1] = f32::NAN;
        tif(
            &root.join(format!("height/{stem}.tif")),
            1,
            &h,
            Some(-9999.0),
        );
        tif(
            &root.join(format!("gt/{stem}.tif")),
            1,
            &vec![1u8; N * N],
            None,
        );
    }
    std::fs::write(root.join("img/notes.txt"), "not a raster").unwrap();
    let m = model(&[("optical", 3), ("height", 1)], 3);
    let mut cfg = generic(root, "gt");
    cfg.normalisation = BTreeMap::from([
        (
            "optical".into(),
            Normalisation {
                mean: vec![5.0; 3],
                std: vec![2.0; 3],
            },
        ),
        (
            "height".into(),
            Normalisation {
                mean: vec![0.0],
                std: vec![1.0],
            },
        ),
    ]);
    let ds = SceneDataset::open(&cfg, &m, Split::Train).unwrap();
    assert_eq!(ds.len(), 2);
    // Nodata and NaN pixels: masked, input filled with 0, label ignored, excluded from `valid`.
    let norm = Normaliser::from_config(&cfg, &m).unwrap();
    let spec = SampleSpec {
        scene: 0,
        window: Window::new(0, 0, N, N),
        out_width: N,
        out_height: N,
        augment: Augment::default(),
    };
    let s = load_sample(&ds, &spec, &norm).unwrap();
    assert_eq!(&s.masks[1][..3], &[false, false, true]);
    assert_eq!(&s.inputs[1][..3], &[0.0, 0.0, 2.0]);
    assert_eq!(s.inputs[0][0], 1.0, "(7 - 5) / 2");
    assert_eq!(&s.labels[..3], &[255, 255, 1]);
    assert_eq!(&s.valid[..3], &[false, false, true]);
    // A stem missing in one modality.
    std::fs::remove_file(root.join("height/b.tif")).unwrap();
    let err = err_of(SceneDataset::open(&cfg, &m, Split::Train));
    assert!(
        err.contains("matched by file stem")
            && err.contains("modality height")
            && err.contains("lacks stem(s) b"),
        "{err}"
    );
    tif(&root.join("height/b.tif"), 1, &vec![2.0f32; N * N], None);
    // A label value out of range.
    let mut gt = vec![1u8; N * N];
    gt[3] = 9;
    tif(&root.join("gt/b.tif"), 1, &gt, None);
    let ds = SceneDataset::open(&cfg, &m, Split::Train).unwrap();
    let err = err_of(ds.read(1, Window::new(0, 0, N, N)));
    assert!(
        err.contains("gt/b.tif") && err.contains("not classes: 9 (1 px)"),
        "{err}"
    );
    // A label with the wrong band count, and no val split configured.
    tif(&root.join("gt/b.tif"), 3, &vec![1u8; 3 * N * N], None);
    let err = err_of(SceneDataset::open(&cfg, &m, Split::Train));
    assert!(
        err.contains("gt/b.tif")
            && err.contains("labels (class values) should have 1 band(s), found 3"),
        "{err}"
    );
    let err = err_of(SceneDataset::open(&cfg, &m, Split::Val));
    assert!(
        err.contains("data.dataset.generic.val: not configured"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Real Sentinel-1 fixtures

fn fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/real");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: no real fixtures at {}", dir.display());
        None
    }
}

const S1_MARCH: &str = "S1A__IW___D_20170309T054356_VV_grd_mli_geo_norm_db.tif";
const S1_DECEMBER: &str = "S1A__IW___D_20171210T054359_VV_grd_mli_geo_norm_db.tif";

/// Writes a copy of a fixture whose first 5 rows and columns are nodata (-99).
fn masked_copy(path: &Path, copy: &Path) {
    let info = RasterInfo::read(path).unwrap();
    let (w, h) = (info.width, info.height);
    let mut data = raster::read_window_at(path, Window::new(0, 0, w, h))
        .unwrap()
        .data;
    for r in 0..h {
        for c in 0..w {
            if r < 5 || c < 5 {
                data[r * w + c] = -99.0;
            }
        }
    }
    let georef = GeoRef::of(&info).unwrap();
    let opts = WriteOptions {
        nodata: Some(-99.0),
        ..Default::default()
    };
    raster::write_geotiff(
        copy,
        &RasterData {
            width: w,
            height: h,
            bands: 1,
            data: &data,
        },
        &georef,
        &opts,
    )
    .unwrap();
}

#[test]
fn real_sentinel1_fixtures_read_as_db_with_crs_and_geotransform() {
    let Some(dir) = fixtures() else { return };
    let path = dir.join(S1_MARCH);
    let info = RasterInfo::read(&path).unwrap();
    assert_eq!((info.width, info.height, info.bands), (268, 217, 1));
    assert_eq!(info.data_type, "Float32");
    assert_eq!(info.epsg(), Some(32631));
    assert_eq!(info.nodata, vec![Some(-99.0)]);
    let gt = info.geo_transform.unwrap();
    assert_eq!((gt[1], gt[2], gt[4], gt[5]), (20.0, 0.0, 0.0, -20.0));
    assert!(
        gt[0] > 166_000.0 && gt[0] < 834_000.0,
        "UTM easting {}",
        gt[0]
    );
    let px = raster::read_window_at(&path, Window::new(0, 0, 268, 217)).unwrap();
    assert!(
        px.valid.iter().all(|&v| v),
        "the fixture holds no nodata pixel"
    );
    let (lo, hi) = px
        .data
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    assert!(
        lo > -40.0 && hi < 20.0 && hi - lo > 20.0,
        "dB range {lo}..{hi}"
    );
    // The two dates have the same size and pixel size but not the same origin (24.4 km apart):
    // as two modalities of one sample they are refused.
    let err = err_of(info.check_aligned(&RasterInfo::read(&dir.join(S1_DECEMBER)).unwrap()));
    assert!(
        err.contains(S1_MARCH)
            && err.contains(S1_DECEMBER)
            && err.contains("geotransform [620048.241204"),
        "{err}"
    );
    // A copy with a masked border keeps the georeferencing and reads the border as invalid.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("masked.tif");
    masked_copy(&path, &copy);
    let again = RasterInfo::read(&copy).unwrap();
    info.check_aligned(&again).unwrap();
    assert_eq!(again.epsg(), Some(32631));
    let w = raster::read_window_at(&copy, Window::new(3, 3, 4, 4)).unwrap();
    assert_eq!(
        w.valid,
        [
            [false; 4],
            [false; 4],
            [false, false, true, true],
            [false, false, true, true]
        ]
        .concat()
    );
    assert_eq!(w.data[10], px.data[5 * 268 + 5]);
}

#[test]
fn real_fixture_through_the_loader_with_a_masked_border() {
    let Some(dir) = fixtures() else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("vv")).unwrap();
    std::os::unix::fs::symlink(dir.join(S1_MARCH), tmp.path().join("vv/arles.tif")).unwrap();
    masked_copy(&dir.join(S1_MARCH), &tmp.path().join("masked/arles.tif"));
    let s = |p: &str| tmp.path().join(p).to_string_lossy().into_owned();
    let cfg = data_config(DatasetConfig::Generic(GenericConfig {
        train: GenericSplit {
            modalities: BTreeMap::from([("vv".into(), s("vv")), ("masked".into(), s("masked"))]),
            labels: None,
        },
        val: None,
        test: None,
        class_codes: None,
        ignore_codes: vec![],
    }));
    let m = model(&[("vv", 1), ("masked", 1)], 2);
    let ds = Arc::new(SceneDataset::open(&cfg, &m, Split::Train).unwrap());
    let windows = SlidingWindowSampler {
        crop: [64, 64],
        stride: [64, 64],
    }
    .windows(&ds);
    assert_eq!(
        windows.len(),
        4 * 5,
        "217 rows -> 4 windows, 268 columns -> 5"
    );
    let norm = Arc::new(Normaliser::identity(&[1, 1]));
    let loader = Loader::new(
        ds,
        windows,
        norm,
        LoaderOptions {
            batch_size: 8,
            prefetch: 2,
            drop_last: false,
        },
    );
    let batches: Vec<Batch> = loader.map(|b| b.unwrap()).collect();
    assert_eq!(
        batches
            .iter()
            .map(|b| b.labels.size()[0])
            .collect::<Vec<_>>(),
        vec![8, 8, 4]
    );
    assert_eq!(batches[0].inputs[0].size(), vec![8, 1, 64, 64]);
    assert!(
        batches
            .iter()
            .all(|b| b.labels.eq(255).all().int64_value(&[]) == 1),
        "no labels: all ignored"
    );
    // First window: rows and columns 0..5 are nodata in the masked copy only.
    let first = &batches[0];
    let valid = first.valid.get(0);
    assert_eq!(
        valid.sum(tch::Kind::Int64).int64_value(&[]),
        64 * 64 - (5 * 64 + 5 * 59)
    );
    assert_eq!(
        first.masks[0].get(0).sum(tch::Kind::Int64).int64_value(&[]),
        64 * 64
    );
    assert_eq!(
        first.inputs[1].get(0).get(0).double_value(&[0, 0]),
        0.0,
        "masked pixel filled"
    );
    assert_eq!(
        first.inputs[1].get(0).get(0).double_value(&[6, 6]),
        first.inputs[0].get(0).get(0).double_value(&[6, 6])
    );
}

// ---------------------------------------------------------------------------------------------
// Synthetic benchmark, loader, stats

fn synth_into(dir: &Path, seed: u64, size: usize) -> SynthOptions {
    let options = SynthOptions {
        out: dir.to_path_buf(),
        scenes: 4,
        size,
        seed,
        gaps: false,
    };
    synth::generate(&options).unwrap();
    options
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn synth_same_seed_same_bytes_and_a_different_seed_differs() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    synth_into(a.path(), 11, 64);
    synth_into(b.path(), 11, 64);
    synth_into(c.path(), 12, 64);
    let fa = files_under(a.path());
    assert_eq!(fa.len(), 16);
    let rel = |f: &PathBuf, d: &Path| f.strip_prefix(d).unwrap().to_path_buf();
    let mut differs = 0;
    for f in &fa {
        let bytes = std::fs::read(f).unwrap();
        assert_eq!(
            bytes,
            std::fs::read(b.path().join(rel(f, a.path()))).unwrap(),
            "{}",
            f.display()
        );
        differs += usize::from(bytes != std::fs::read(c.path().join(rel(f, a.path()))).unwrap());
    }
    assert_eq!(differs, 16);
    assert!(a.path().join("train/optical/scene_0000.tif").is_file());
    assert!(a.path().join("val/sar/scene_0002.tif").is_file());
    assert!(a.path().join("test/label/scene_0003.tif").is_file());
}

#[test]
fn synth_rerun_with_fewer_scenes_leaves_only_its_own_files() {
    let dir = tempfile::tempdir().unwrap();
    synth::generate(&SynthOptions {
        out: dir.path().to_path_buf(),
        scenes: 7,
        size: 32,
        seed: 1,
        gaps: false,
    })
    .unwrap();
    let keep = dir.path().join("train/optical/notes.txt");
    std::fs::write(&keep, "mine").unwrap();
    assert_eq!(files_under(dir.path()).len(), 7 * 4 + 1);
    let written = synth::generate(&SynthOptions {
        out: dir.path().to_path_buf(),
        scenes: 3,
        size: 32,
        seed: 1,
        gaps: false,
    })
    .unwrap();
    let mut expected = written.clone();
    expected.push(keep);
    expected.sort();
    assert_eq!(files_under(dir.path()), expected);
    assert!(dir.path().join("test/sar/scene_0002.tif").is_file());
}

#[test]
fn synth_output_opens_in_gdalinfo_with_crs_geotransform_and_colour_table() {
    let dir = tempfile::tempdir().unwrap();
    synth_into(dir.path(), 3, 64);
    let label = dir.path().join("train/label/scene_0000.tif");
    let info = RasterInfo::read(&label).unwrap();
    assert_eq!(info.epsg(), Some(synth::EPSG));
    assert_eq!(info.geo_transform.unwrap()[1], 0.5);
    let ds = raster::open(&label).unwrap();
    let band = ds.rasterband(1).unwrap();
    let table = band.color_table().unwrap();
    let water = table.entry_as_rgb(5).unwrap();
    assert_eq!((water.r, water.g, water.b), (0, 0, 128));
    let sar = RasterInfo::read(&dir.path().join("train/sar/scene_0000.tif")).unwrap();
    assert_eq!(
        (sar.data_type.as_str(), sar.nodata[0]),
        ("Float32", Some(-99.0))
    );
    let optical = RasterInfo::read(&dir.path().join("train/optical/scene_0000.tif")).unwrap();
    assert_eq!((optical.bands, optical.data_type.as_str()), (4, "Byte"));
    match std::process::Command::new("gdalinfo").arg(&label).output() {
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{text}");
            for needle in [
                "WGS 84 / UTM zone 32N",
                "Pixel Size = (0.500000000000000,-0.500000000000000)",
                "Color Table",
                "COMPRESSION=DEFLATE",
                "Block=64x64",
            ] {
                assert!(text.contains(needle), "gdalinfo lacks {needle:?}:\n{text}");
            }
        }
        Err(e) => println!("skipped the gdalinfo check: {e}"),
    }
}

/// Balanced accuracy of the best single threshold separating two samples of a feature.
fn separability(a: &[f64], b: &[f64]) -> f64 {
    let mut cuts: Vec<f64> = a.iter().chain(b).copied().collect();
    cuts.sort_by(f64::total_cmp);
    let step = (cuts.len() / 200).max(1);
    cuts.iter()
        .step_by(step)
        .map(|&t| {
            let pa = a.iter().filter(|&&v| v < t).count() as f64 / a.len() as f64;
            let pb = b.iter().filter(|&&v| v >= t).count() as f64 / b.len() as f64;
            let acc = 0.5 * (pa + pb);
            acc.max(1.0 - acc)
        })
        .fold(0.0, f64::max)
}

#[test]
fn synthetic_modalities_complement_each_other() {
    use synth::{BUILDING, IMPERVIOUS, LOW_VEGETATION, TREE, WATER};
    let mut f: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for i in 0..6 {
        let s = synth::generate_scene(5, i, 256);
        let n = s.size * s.size;
        for p in 0..n {
            let bright = (0..3).map(|b| f64::from(s.optical[b * n + p])).sum::<f64>() / 3.0;
            let nir = f64::from(s.optical[3 * n + p]);
            let red = f64::from(s.optical[p]);
            let ndvi = (nir - red) / (nir + red + 1.0);
            let (h, sar) = (f64::from(s.dsm[p]), f64::from(s.sar[p]));
            if sar == f64::from(synth::SAR_NODATA) {
                continue;
            }
            let features: Vec<(&str, f64)> = match s.label[p] {
                BUILDING => vec![("bld_bright", bright), ("bld_h", h), ("bld_sar", sar)],
                IMPERVIOUS => vec![
                    ("imp_ndvi", ndvi),
                    ("imp_bright", bright),
                    ("imp_h", h),
                    ("imp_sar", sar),
                ],
                TREE => vec![("tree_ndvi", ndvi), ("tree_h", h), ("tree_sar", sar)],
                LOW_VEGETATION => vec![("low_ndvi", ndvi), ("low_h", h), ("low_sar", sar)],
                WATER => vec![("water_bright", bright), ("water_h", h), ("water_sar", sar)],
                _ => vec![],
            };
            let mut push = |k: &'static str, v: f64| f.entry(k).or_default().push(v);
            for (k, v) in features {
                push(k, v);
            }
            if s.label[p] == IMPERVIOUS && s.shadow[p] {
                push("shimp_bright", bright);
                push("shimp_sar", sar);
            }
        }
    }
    let sep = |a: &str, b: &str| separability(&f[a], &f[b]);
    // Building vs impervious: optical overlaps, the DSM separates, SAR mostly separates.
    let (opt, dsm, sar) = (
        sep("bld_bright", "imp_bright"),
        sep("bld_h", "imp_h"),
        sep("bld_sar", "imp_sar"),
    );
    println!("building/impervious: optical {opt:.3} dsm {dsm:.3} sar {sar:.3}");
    assert!(
        opt < 0.7 && dsm > 0.97 && sar > 0.8,
        "building/impervious: optical {opt:.3} dsm {dsm:.3} sar {sar:.3}"
    );
    // Tree vs low vegetation: the same green/NIR; height and SAR volume scattering separate.
    let (opt, dsm, sar) = (
        sep("tree_ndvi", "low_ndvi"),
        sep("tree_h", "low_h"),
        sep("tree_sar", "low_sar"),
    );
    println!("tree/low vegetation: optical {opt:.3} dsm {dsm:.3} sar {sar:.3}");
    assert!(
        opt < 0.7 && dsm > 0.97 && sar > 0.75,
        "tree/low vegetation: optical {opt:.3} dsm {dsm:.3} sar {sar:.3}"
    );
    // Impervious vs low vegetation: neither height nor SAR tells them apart; optical does.
    let (opt, dsm, sar) = (
        sep("imp_ndvi", "low_ndvi"),
        sep("imp_h", "low_h"),
        sep("imp_sar", "low_sar"),
    );
    println!("impervious/low vegetation: optical {opt:.3} dsm {dsm:.3} sar {sar:.3}");
    assert!(
        opt > 0.9 && dsm < 0.7 && sar < 0.7,
        "impervious/low vegetation: optical {opt:.3} dsm {dsm:.3} sar {sar:.3}"
    );
    // Water vs shadowed impervious: both dark in optical, water very dark in SAR.
    let (opt, sar) = (
        sep("water_bright", "shimp_bright"),
        sep("water_sar", "shimp_sar"),
    );
    println!("water/shadowed impervious: optical {opt:.3} sar {sar:.3}");
    assert!(
        opt < 0.8 && sar > 0.85,
        "water/shadowed impervious: optical {opt:.3} sar {sar:.3}"
    );
}

fn synthetic_experiment(dir: &Path) -> Experiment {
    let options = SynthOptions {
        out: dir.to_path_buf(),
        scenes: 4,
        size: 96,
        seed: 9,
        gaps: false,
    };
    synth::generate(&options).unwrap();
    let yaml = crate::prepare::write_synthetic_experiment(&options).unwrap();
    Experiment::load(
        &yaml,
        &[
            "data.sampling.samples_per_epoch=12".into(),
            "data.sampling.batch_size=4".into(),
        ],
    )
    .unwrap()
}

#[test]
fn loader_batches_are_shaped_normalised_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let exp = synthetic_experiment(dir.path());
    let batches: Vec<Batch> = Loader::train(&exp.data, &exp.model, exp.seed, Split::Train, 0)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(batches.len(), 3);
    let b = &batches[0];
    assert_eq!(
        b.inputs.iter().map(|t| t.size()).collect::<Vec<_>>(),
        vec![vec![4, 4, 64, 64], vec![4, 1, 64, 64], vec![4, 1, 64, 64]]
    );
    assert_eq!(
        (b.labels.size(), b.labels.kind()),
        (vec![4, 64, 64], tch::Kind::Int64)
    );
    assert_eq!(b.valid.kind(), tch::Kind::Bool);
    let mean = f64::try_from(b.inputs[1].mean(tch::Kind::Float)).unwrap();
    assert!(mean.abs() < 1.5, "normalised DSM mean {mean}");
    let max_label =
        i64::try_from(b.labels.where_self(&b.valid, &b.labels.zeros_like()).max()).unwrap();
    assert!((0..6).contains(&max_label));
    // Same seed and epoch: the same batches; computed on one thread, sample by sample: the same.
    let again: Vec<Batch> = Loader::train(&exp.data, &exp.model, exp.seed, Split::Train, 0)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    let ds = SceneDataset::open(&exp.data, &exp.model, Split::Train).unwrap();
    let norm = Normaliser::from_config(&exp.data, &exp.model).unwrap();
    let specs = RandomCropSampler::from_config(&exp.data, &exp.model, exp.seed).epoch(&ds, 0);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let single: Vec<Batch> = pool.install(|| {
        specs
            .chunks(4)
            .map(|c| {
                Batch::from_samples(
                    &c.iter()
                        .map(|s| load_sample(&ds, s, &norm).unwrap())
                        .collect::<Vec<_>>(),
                )
                .unwrap()
            })
            .collect()
    });
    for ((x, y), z) in batches.iter().zip(&again).zip(&single) {
        assert_eq!(x.specs, y.specs);
        assert_eq!(x.specs, z.specs);
        for m in 0..3 {
            assert!(x.inputs[m].equal(&y.inputs[m]) && x.inputs[m].equal(&z.inputs[m]));
        }
        assert!(x.labels.equal(&y.labels) && x.labels.equal(&z.labels) && x.valid.equal(&z.valid));
    }
    // Another epoch: other crops.
    let next: Vec<Batch> = Loader::train(&exp.data, &exp.model, exp.seed, Split::Train, 1)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_ne!(next[0].specs, batches[0].specs);
    // Validation grid: 96 px scenes, 64 px windows -> 2 x 2 windows per scene; the val split has 1 scene.
    let val: Vec<Batch> = Loader::sliding_windows(&exp.data, &exp.model, Split::Val)
        .unwrap()
        .map(|b| b.unwrap())
        .collect();
    assert_eq!(val.iter().map(|b| b.specs.len()).sum::<usize>(), 4);
    // Dropping a loader part-way stops its worker.
    let mut early = Loader::train(&exp.data, &exp.model, exp.seed, Split::Train, 2).unwrap();
    assert!(early.next().is_some());
    drop(early);
}

#[test]
fn augmented_crops_keep_labels_with_their_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let exp = synthetic_experiment(dir.path());
    let ds = SceneDataset::open(&exp.data, &exp.model, Split::Train).unwrap();
    let norm = Normaliser::identity(&[4, 1, 1]);
    let window = Window::new(10, 20, 32, 48);
    let plain = SampleSpec {
        scene: 0,
        window,
        out_width: 32,
        out_height: 48,
        augment: Augment::default(),
    };
    let base = load_sample(&ds, &plain, &norm).unwrap();
    let turned = SampleSpec {
        out_width: 48,
        out_height: 32,
        augment: Augment {
            flip_x: true,
            flip_y: false,
            rot90: 1,
        },
        ..plain
    };
    let t = load_sample(&ds, &turned, &norm).unwrap();
    assert_eq!((t.width, t.height), (48, 32));
    // Every (DSM value, label) pair survives the rotation: the multiset is unchanged.
    let mut a: Vec<(i64, i64)> = base.inputs[1]
        .iter()
        .zip(&base.labels)
        .map(|(v, l)| ((v * 100.0) as i64, *l))
        .collect();
    let mut b: Vec<(i64, i64)> = t.inputs[1]
        .iter()
        .zip(&t.labels)
        .map(|(v, l)| ((v * 100.0) as i64, *l))
        .collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    // A horizontal flip then a quarter turn counter-clockwise is a transpose.
    for r in 0..32 {
        for c in 0..48 {
            assert_eq!(t.labels[r * 48 + c], base.labels[c * 32 + r]);
            assert_eq!(t.inputs[0][r * 48 + c], base.inputs[0][c * 32 + r]);
        }
    }
}

#[test]
fn stats_write_back_matches_a_direct_computation_and_keeps_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let options = SynthOptions {
        out: dir.path().to_path_buf(),
        scenes: 4,
        size: 64,
        seed: 2,
        gaps: false,
    };
    synth::generate(&options).unwrap();
    let yaml = crate::prepare::write_synthetic_experiment(&options).unwrap();
    let mut text = std::fs::read_to_string(&yaml).unwrap();
    text = text.replace("  ignore_index: 255\n", "  ignore_index: 255 # kept\n");
    std::fs::write(&yaml, &text).unwrap();
    let stats = crate::prepare::update_statistics(&yaml, true)
        .unwrap()
        .stats;
    let updated = std::fs::read_to_string(&yaml).unwrap();
    assert!(
        updated.starts_with("# The synthetic multimodal benchmark")
            && updated.contains("ignore_index: 255 # kept"),
        "{updated}"
    );
    let exp = Experiment::load(&yaml, &[]).unwrap();
    assert_eq!(exp.data.class_weights.as_ref().map(Vec::len), Some(6));
    let weights = super::loader::class_weights(&exp.data).unwrap();
    assert_eq!(weights.size(), vec![6]);
    assert_eq!(
        weights.double_value(&[0]) as f32,
        stats.class_weights()[0] as f32
    );
    // Mean of the DSM over the train scenes, computed directly.
    let mut values = Vec::new();
    for f in files_under(&dir.path().join("train/dsm")) {
        values.extend(
            raster::read_window_at(&f, Window::new(0, 0, 64, 64))
                .unwrap()
                .data,
        );
    }
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / values.len() as f64;
    let written = exp.data.normalisation["dsm"].mean[0];
    assert!(
        (written - mean).abs() < 1e-3 * mean.abs().max(1.0),
        "{written} vs {mean}"
    );
    assert_eq!(
        stats.class_counts.iter().sum::<u64>() + stats.ignored,
        2 * 64 * 64
    );
}

// ---------------------------------------------------------------------------------------------
// Missing masks (data.missing_masks)

/// A 0/1 mask at twice the pixel size of `scene`'s grid (so it is resampled by nearest), over
/// the scene's extent: 1 in the left half, 0 in the right, nodata (255) in the top quarter.
fn coarse_mask(path: &Path, grid: &RasterInfo) {
    let gt = grid.geo_transform.unwrap();
    let (w, h) = (grid.width / 2, grid.height / 2);
    let data: Vec<u8> = (0..w * h)
        .map(|i| match (i % w < w / 2, i / w < h / 4) {
            (_, true) => 255,
            (true, false) => 1,
            (false, false) => 0,
        })
        .collect();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let raster = RasterData {
        width: w,
        height: h,
        bands: 1,
        data: &data,
    };
    let georef = GeoRef::north_up(gt[0], gt[3], 2.0 * gt[1], synth::EPSG);
    let options = WriteOptions {
        nodata: Some(255.0),
        ..Default::default()
    };
    raster::write_geotiff(path, &raster, &georef, &options).unwrap();
}

#[test]
fn missing_masks_mark_their_modality_missing_on_the_scene_grid() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = synthetic_experiment(dir.path());
    let plain = SceneDataset::open(&exp.data, &exp.model, Split::Train).unwrap();
    let scene = &plain.scenes[0];
    let (w, h) = (scene.width(), scene.height());
    let masks = dir.path().join("clouds");
    coarse_mask(
        &masks.join("train").join(format!("{}.tif", scene.id)),
        &scene.grid.info,
    );
    std::fs::create_dir_all(masks.join("val")).unwrap();
    let folder = format!("{}/{{split}}", masks.display());
    exp.data.missing_masks = BTreeMap::from([("sar".to_string(), folder)]);
    let ds = SceneDataset::open(&exp.data, &exp.model, Split::Train).unwrap();
    let sar = exp
        .model
        .modalities
        .iter()
        .position(|m| m.name == "sar")
        .unwrap();
    assert!(ds.scenes[0].missing_masks[sar]
        .as_ref()
        .unwrap()
        .warp
        .is_some());
    assert!(ds.scenes[1].missing_masks.iter().all(Option::is_none));
    let whole = Window::new(0, 0, w, h);
    let before = plain.read_modality(0, sar, whole).unwrap();
    let after = ds.read_modality(0, sar, whole).unwrap();
    assert!(
        before.valid.iter().all(|&v| v),
        "the synthetic SAR is whole"
    );
    assert_eq!(after.data, before.data, "values are untouched");
    for (i, &ok) in after.valid.iter().enumerate() {
        let (col, row) = (i % w, i / w);
        let missing = col < w / 2 && row >= h / 4;
        assert_eq!(ok, !missing, "pixel ({col}, {row})");
    }
    // Other modalities and other scenes read as before.
    let other = (sar + 1) % exp.model.modalities.len();
    assert_eq!(
        ds.read_modality(0, other, whole).unwrap(),
        plain.read_modality(0, other, whole).unwrap()
    );
    assert_eq!(ds.read(1, whole).unwrap(), plain.read(1, whole).unwrap());
    // The loader's sample and the statistics see the mask as a gap.
    let raw = ds.read(0, whole).unwrap();
    let gone = (w / 2) * (h - h / 4);
    assert_eq!(
        raw.modalities[sar].valid.iter().filter(|&&v| !v).count(),
        gone
    );
    let stats = super::stats::compute(&ds).unwrap();
    let plain_stats = super::stats::compute(&plain).unwrap();
    assert_eq!(plain_stats.gaps.any, 0);
    assert_eq!(stats.gaps.labelled, plain_stats.gaps.labelled);
    assert_eq!(stats.gaps.unavailable[sar], gone as u64);
    assert_eq!(stats.gaps.any, gone as u64);
    assert_eq!(
        stats.class_counts.iter().sum::<u64>() + stats.gaps.any,
        plain_stats.class_counts.iter().sum::<u64>()
    );
}

#[test]
fn missing_masks_errors_name_the_key_the_split_and_the_modalities() {
    let dir = tempfile::tempdir().unwrap();
    let mut exp = synthetic_experiment(dir.path());
    let folder = dir.path().join("masks/{split}").display().to_string();
    exp.data.missing_masks = BTreeMap::from([("sar".to_string(), folder)]);
    std::fs::create_dir_all(dir.path().join("masks/train")).unwrap();
    assert!(SceneDataset::open(&exp.data, &exp.model, Split::Train).is_ok());
    let err = err_of(SceneDataset::open(&exp.data, &exp.model, Split::Val));
    assert!(
        err.contains("data.missing_masks.sar")
            && err.contains("val split")
            && err.contains("masks/val")
            && err.contains("does not exist"),
        "{err}"
    );
    exp.data.missing_masks = BTreeMap::from([("clouds".to_string(), "x".to_string())]);
    let err = err_of(SceneDataset::open(&exp.data, &exp.model, Split::Train));
    assert!(
        err.contains("data.missing_masks.clouds") && err.contains("optical"),
        "{err}"
    );
    let err = err_of(exp.data.validate(&exp.model));
    assert!(
        err.contains("missing_masks.clouds") && err.contains("dsm"),
        "{err}"
    );
}
