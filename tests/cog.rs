//! `dis2 predict --cog`: every raster output a Cloud-Optimized GeoTIFF as GDAL reads it (the
//! COG layout, overviews on every band and on the mask, colour table, category names, band
//! descriptions and nodata kept), holding at full resolution the very values of the plain
//! GeoTIFF; outputs of a scene list too.

use std::path::Path;

use gdal::raster::{GdalType, RasterBand};
use gdal::{Dataset, Metadata};

mod common;
use common::{category_names, ok, predict, s, synthetic_checkpoint, synthetic_scene};

/// Larger than one 256-pixel tile, so that the COG driver makes overviews.
const SIZE: usize = 320;

/// Every value of a band, as stored, in Rust's shortest exact notation: equal texts are equal
/// values bit for bit (`NaN`, the f32 probabilities' nodata, included).
fn values<T: GdalType + Copy + std::fmt::Debug>(band: &RasterBand) -> Vec<String> {
    let buffer = band.read_band_as::<T>().unwrap();
    buffer.data().iter().map(|v| format!("{v:?}")).collect()
}

/// GDAL's mask flags of a band: all valid, per dataset, nodata, alpha.
fn mask_flags(band: &RasterBand) -> [bool; 4] {
    let f = band.mask_flags().unwrap();
    [
        f.is_all_valid(),
        f.is_per_dataset(),
        f.is_nodata(),
        f.is_alpha(),
    ]
}

/// The colour table of a band, entry by entry.
fn colours(band: &RasterBand) -> Option<Vec<Option<gdal::raster::RgbaEntry>>> {
    let table = band.color_table()?;
    Some(
        (0..table.entry_count())
            .map(|i| table.entry_as_rgb(i))
            .collect(),
    )
}

/// Asserts that the raster at `cog` is a COG with overviews on every band (and on the mask when
/// it has one), and that its bands hold bit for bit the values of `plain`'s, with the same
/// nodata, descriptions, colour table, category names and georeferencing.
fn assert_cog_of<T: GdalType + Copy + std::fmt::Debug>(cog: &Path, plain: &Path) {
    let (c, p) = (Dataset::open(cog).unwrap(), Dataset::open(plain).unwrap());
    let what = cog.display();
    assert_eq!(
        c.metadata_item("LAYOUT", "IMAGE_STRUCTURE").as_deref(),
        Some("COG"),
        "{what}"
    );
    assert_eq!(p.metadata_item("LAYOUT", "IMAGE_STRUCTURE"), None);
    assert_eq!(c.raster_count(), p.raster_count(), "{what}");
    assert_eq!(c.geo_transform().unwrap(), p.geo_transform().unwrap());
    assert_eq!(c.projection(), p.projection());
    for b in 1..=p.raster_count() {
        let (cb, pb) = (c.rasterband(b).unwrap(), p.rasterband(b).unwrap());
        assert!(cb.overview_count().unwrap() >= 1, "{what} band {b}");
        assert_eq!(pb.overview_count().unwrap(), 0);
        assert_eq!(cb.description().unwrap(), pb.description().unwrap());
        assert_eq!(
            cb.no_data_value().map(f64::to_bits),
            pb.no_data_value().map(f64::to_bits)
        );
        assert_eq!(mask_flags(&cb), mask_flags(&pb), "{what} band {b}");
        if mask_flags(&pb)[1] {
            let mask = cb.open_mask_band().unwrap();
            assert!(mask.overview_count().unwrap() >= 1, "{what}: mask");
            let plain_mask = pb.open_mask_band().unwrap();
            assert!(
                values::<u8>(&mask) == values::<u8>(&plain_mask),
                "{what}: mask"
            );
        }
        assert_eq!(colours(&cb), colours(&pb), "{what} band {b}");
        assert_eq!(category_names(&cb), category_names(&pb), "{what} band {b}");
        assert!(
            values::<T>(&cb) == values::<T>(&pb),
            "{what} band {b}: values differ"
        );
    }
}

/// The class map, f32 probabilities and route map of one scene, plain and with `--cog` (given in
/// a scene list): same values, COG layout; categories in the overviews of the class and route
/// maps (MODE keeps them), probabilities averaged within [0, 1].
#[test]
fn cog_outputs_hold_the_plain_values_with_overviews_colours_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = synthetic_scene(dir.path(), SIZE);
    let plain = dir.path().join("plain");
    let inputs = |args: &mut Vec<String>| {
        for (name, file) in ["optical", "dsm", "sar"].iter().zip(&files) {
            args.extend([format!("--{name}"), s(file).to_string()]);
        }
    };
    let mut args: Vec<String> = ["--checkpoint", s(&ck), "--quiet"].map(String::from).into();
    inputs(&mut args);
    for (flag, name) in [
        ("--out", "c.tif"),
        ("--probs", "p.tif"),
        ("--routes", "r.tif"),
    ] {
        args.extend([flag.to_string(), s(&plain.join(name)).to_string()]);
    }
    ok(&predict(
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    ));

    let list = dir.path().join("scenes.txt");
    std::fs::write(
        &list,
        format!(
            "optical={} dsm={} sar={} out=cog/c.tif probs=cog/p.tif routes=cog/r.tif\n",
            s(&files[0]),
            s(&files[1]),
            s(&files[2])
        ),
    )
    .unwrap();
    ok(&predict(&[
        "--checkpoint",
        s(&ck),
        "--quiet",
        "--cog",
        "--list",
        s(&list),
    ]));
    let cog = dir.path().join("cog");
    assert_cog_of::<u8>(&cog.join("c.tif"), &plain.join("c.tif"));
    assert_cog_of::<f32>(&cog.join("p.tif"), &plain.join("p.tif"));
    assert_cog_of::<u8>(&cog.join("r.tif"), &plain.join("r.tif"));

    let ds = Dataset::open(cog.join("r.tif")).unwrap();
    // GDAL's GeoTIFF driver reads the .aux.xml with the georeferencing, on first use.
    ds.geo_transform().unwrap();
    let names = category_names(&ds.rasterband(1).unwrap());
    assert_eq!(names[0], "teacher", "{names:?}");
    let ds = Dataset::open(cog.join("c.tif")).unwrap();
    let overview = ds.rasterband(1).unwrap().overview(0).unwrap();
    assert_eq!(overview.size(), (SIZE / 2, SIZE / 2));
    let classes = overview.read_band_as::<u8>().unwrap();
    assert!(
        classes.data().iter().all(|&c| c < 6 || c == 255),
        "a class map's overview holds classes and nodata only"
    );
    let ds = Dataset::open(cog.join("p.tif")).unwrap();
    let overview = ds.rasterband(2).unwrap().overview(0).unwrap();
    let buffer = overview.read_band_as::<f32>().unwrap();
    let probs = buffer.data();
    assert!(probs.iter().all(|p| p.is_nan() || (0.0..=1.0).contains(p)));
    assert!(probs.iter().any(|&p| p > 0.0 && p < 1.0));
    let mut left: Vec<String> = std::fs::read_dir(&cog)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["c.tif", "p.tif", "r.tif", "r.tif.aux.xml"]);
}

/// u8 probabilities: their internal mask becomes the COG's, with overviews of its own.
#[test]
fn the_mask_of_u8_probabilities_gets_overviews() {
    let dir = tempfile::tempdir().unwrap();
    let ck = synthetic_checkpoint(dir.path());
    let files = synthetic_scene(dir.path(), SIZE);
    let run = |name: &str, cog: bool| {
        let (out, probs) = (
            dir.path().join(format!("{name}-c.tif")),
            dir.path().join(format!("{name}-p.tif")),
        );
        let mut args = vec![
            "--checkpoint",
            s(&ck),
            "--optical",
            s(&files[0]),
            "--sar",
            s(&files[2]),
            "--out",
            s(&out),
            "--probs",
            s(&probs),
            "--probs-type",
            "u8",
            "--quiet",
        ];
        if cog {
            args.push("--cog");
        }
        ok(&predict(&args));
        probs
    };
    let (plain, cog) = (run("plain", false), run("cog", true));
    let ds = Dataset::open(&plain).unwrap();
    assert!(
        mask_flags(&ds.rasterband(1).unwrap())[1],
        "u8 probabilities have a mask"
    );
    assert_cog_of::<u8>(&cog, &plain);
}
