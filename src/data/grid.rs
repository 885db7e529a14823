//! Modalities on different grids (docs/data.md, "Grids and georeferencing").
//!
//! Each scene is read on one grid, that of its reference file: the modality named by
//! `data.grid.reference` (`dis2 predict --grid-reference`), by default the model's first. Every
//! other file of the scene, modalities and labels, is either on that grid already, and then read
//! as it is (bit for bit what dis2 read before grids existed), or resampled onto it window by
//! window by GDAL's warper ([`super::warp`]), its validity decided by the same mask model as an
//! aligned read's (masks, alpha, nodata, NaN; [`super::validity`]) and invalid wherever it does
//! not cover the grid. `strict` refuses instead.
//!
//! Mixed georeferencing follows one rule: what a file lacks is taken from the scene's grid, never
//! guessed. A file without any georeferencing lies pixel for pixel on the grid (so it must have
//! the grid's size); a geotransform without a CRS is in the grid's CRS. The grid is the
//! reference's, completed by the other files in the same way: a reference without a CRS takes
//! the CRS of the first file that declares one, a reference without any georeferencing that of
//! the first file of its size that has some. Each completion and each resampling is said once
//! per process on stderr ([`announce`]).

use anyhow::{anyhow, bail, Context, Result};
use gdal::spatial_ref::SpatialRef;
use gdal::Dataset;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use super::config::{GridConfig, Resampling};
use super::raster::{self, Pixels, RasterInfo, Window};
use super::validity::{AlphaRule, NodataRule};
pub use super::warp::Warp;
use super::warp::{self, Target};

/// Downsampling factor (source pixels per grid pixel, along a side) from which continuous bands
/// are averaged rather than interpolated by default.
pub(crate) const LARGE_DOWNSAMPLING: f64 = 2.0;

/// The default resampling of a file onto a grid: nearest for class values (labels, rasters with
/// a colour table), average when downsampling by [`LARGE_DOWNSAMPLING`] or more, else bilinear.
pub(crate) fn default_resampling(categorical: bool, downsampling: f64) -> Resampling {
    if categorical {
        Resampling::Nearest
    } else if downsampling >= LARGE_DOWNSAMPLING {
        Resampling::Average
    } else {
        Resampling::Bilinear
    }
}

/// Where messages send the user: the configuration keys or the predict flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridKeys {
    pub reference: &'static str,
    pub strict: &'static str,
}

impl GridKeys {
    /// The keys of an experiment file.
    pub const CONFIG: Self = Self {
        reference: "data.grid.reference",
        strict: "data.grid.strict",
    };
    /// The flags of `dis2 predict`.
    pub const PREDICT: Self = Self {
        reference: "--grid-reference",
        strict: "--strict-grid",
    };
    /// The flags of `dis2 blocks`, whose grid is the label raster's.
    pub const BLOCKS: Self = Self {
        reference: "--labels",
        strict: "--strict-grid",
    };
}

/// A scene's grid: the header of its reference file, with the georeferencing completed by the
/// scene's other files (see the module documentation). Outputs are written on it.
#[derive(Debug, Clone, PartialEq)]
pub struct SceneGrid {
    /// How messages name the reference (`modality optical`, `--optical`).
    pub role: String,
    pub info: RasterInfo,
}

/// One file of a scene to place on its grid.
#[derive(Debug, Clone)]
pub struct GridFile {
    /// How messages name it (`modality sar`, `labels`, `--sar`).
    pub role: String,
    /// Its key in [`GridConfig::resampling`]: the modality name, or `labels`.
    pub key: String,
    pub header: RasterInfo,
    /// It holds class values (labels): nearest-neighbour by default.
    pub categorical: bool,
}

/// A file as read on its scene's grid: as it is, or resampled window by window.
#[derive(Debug, Clone, PartialEq)]
pub struct GridSource {
    pub path: PathBuf,
    /// How it is resampled onto the grid; `None`: it is on the grid.
    pub warp: Option<Arc<Warp>>,
    /// What its bands marked as alpha are (as its header was read: [`RasterInfo::alpha`]).
    pub alpha: AlphaRule,
}

/// Something said once per process about how a scene is read (see [`announce`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The message without file names: notes with the same key are said once.
    pub key: String,
    /// The message with an example file.
    pub text: String,
}

/// A scene placed on its grid.
#[derive(Debug, Clone)]
pub struct GridPlan {
    pub grid: SceneGrid,
    /// One per file, in the order given.
    pub sources: Vec<GridSource>,
    pub notes: Vec<Note>,
}

/// Places `files` on the grid of `files[reference]` (see the module documentation).
///
/// # Errors
/// With `config.strict`, any file off the grid (the error of [`RasterInfo::check_aligned`]);
/// otherwise a file off the grid that cannot be resampled onto it: one without georeferencing
/// (it must have the grid's size), a grid without a geotransform (a reference without
/// georeferencing or placed by GCPs only), or a file that does not overlap the grid. Each error
/// names the files and the key or flag that chooses the reference.
pub fn plan(
    files: &[GridFile],
    reference: usize,
    config: &GridConfig,
    keys: &GridKeys,
) -> Result<GridPlan> {
    let mut notes = Vec::new();
    let grid = reference_grid(files, reference, &mut notes);
    let mut sources = Vec::with_capacity(files.len());
    for (i, file) in files.iter().enumerate() {
        let (path, alpha) = (file.header.path.clone(), file.header.alpha);
        if i == reference {
            sources.push(GridSource {
                path,
                warp: None,
                alpha,
            });
            continue;
        }
        let warp = place(file, &grid, config, keys, &mut notes)?;
        sources.push(GridSource {
            path,
            warp: warp.map(Arc::new),
            alpha,
        });
    }
    Ok(GridPlan {
        grid,
        sources,
        notes,
    })
}

/// The reference's header, its missing georeferencing completed from the other files.
fn reference_grid(files: &[GridFile], reference: usize, notes: &mut Vec<Note>) -> SceneGrid {
    let r = &files[reference];
    let mut info = r.header.clone();
    let others = files.iter().enumerate().filter(|(i, _)| *i != reference);
    if !info.is_georeferenced() {
        let donor = others
            .clone()
            .map(|(_, f)| f)
            .find(|f| f.header.is_georeferenced() && same_size(&f.header, &info));
        if let Some(d) = donor {
            info.geo_transform = d.header.geo_transform;
            info.crs_wkt = d.header.crs_wkt.clone();
            info.gcps = d.header.gcps.clone();
            info.gcp_crs_wkt = d.header.gcp_crs_wkt.clone();
            notes.push(note(
                format!(
                    "{} has no georeferencing: the grid takes that of {} (same size)",
                    r.role, d.role
                ),
                &[&r.header.path, &d.header.path],
            ));
        }
    } else if info.geo_transform.is_some() && info.crs_wkt.is_none() {
        let donor = others
            .map(|(_, f)| f)
            .find(|f| declared_crs(&f.header).is_some());
        if let Some(d) = donor {
            info.crs_wkt = declared_crs(&d.header);
            notes.push(note(
                format!(
                    "{} has a geotransform but no CRS: the grid takes {} from {}",
                    r.role,
                    info.crs_label(),
                    d.role
                ),
                &[&r.header.path, &d.header.path],
            ));
        }
    }
    SceneGrid {
        role: r.role.clone(),
        info,
    }
}

fn same_size(a: &RasterInfo, b: &RasterInfo) -> bool {
    (a.width, a.height) == (b.width, b.height)
}

/// The CRS a file declares: that of its geotransform, else that of its GCPs.
fn declared_crs(info: &RasterInfo) -> Option<String> {
    info.crs_wkt.clone().or_else(|| {
        (!info.gcps.is_empty())
            .then(|| info.gcp_crs_wkt.clone())
            .flatten()
    })
}

fn note(key: String, paths: &[&Path]) -> Note {
    let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Note {
        text: format!("{key} (e.g. {})", files.join(", ")),
        key,
    }
}

/// How `file` reaches `grid`: `None` when it is on it, else its resampling.
fn place(
    file: &GridFile,
    grid: &SceneGrid,
    config: &GridConfig,
    keys: &GridKeys,
    notes: &mut Vec<Note>,
) -> Result<Option<Warp>> {
    let misfit = match grid.info.check_aligned(&file.header) {
        Ok(()) => {
            notes.extend(completion_note(file, grid));
            return Ok(None);
        }
        Err(e) => e,
    };
    let path = file.header.path.display();
    let reference = format!("{} {}", grid.role, grid.info.path.display());
    if config.strict {
        bail!(
            "{misfit} ({} is set: files off the reference grid are refused, not resampled)",
            keys.strict
        );
    }
    if !file.header.is_georeferenced() {
        bail!(
            "{misfit}: {path} has no georeferencing (no geotransform, no GCPs), so it can only \
             lie pixel for pixel on the grid of {reference}, which needs the same size"
        );
    }
    if grid.info.geo_transform.is_none() {
        let has = match grid.info.gcps.is_empty() {
            true => "no georeferencing",
            false => "only GCPs (orthorectify it first, e.g. with gdalwarp)",
        };
        bail!(
            "{misfit}: {path} cannot be resampled onto the grid of {reference}, which has {has}; \
             choose another reference with {}",
            keys.reference
        );
    }
    let warp = warp_for(file, grid, config).with_context(|| {
        format!(
            "{} {path}: cannot resample it onto the grid of {reference}",
            file.role
        )
    })?;
    notes.push(resampling_note(file, grid, &warp));
    notes.extend(completion_note(file, grid));
    Ok(Some(warp))
}

/// What the rule filled in for a file: its CRS or its whole placement.
fn completion_note(file: &GridFile, grid: &SceneGrid) -> Option<Note> {
    let h = &file.header;
    let key = if !h.is_georeferenced() {
        format!(
            "{} has no georeferencing: it is read pixel for pixel on the grid of {}",
            file.role, grid.role
        )
    } else if declared_crs(h).is_none() {
        match grid.info.crs_wkt.is_some() {
            true => format!(
                "{} has no CRS: its georeferencing is taken in the grid's {}",
                file.role,
                grid.info.crs_label()
            ),
            false => format!(
                "neither {} nor the grid of {} has a CRS: both are taken in one local \
                 coordinate system",
                file.role, grid.role
            ),
        }
    } else {
        return None;
    };
    Some(note(key, &[&h.path]))
}

fn resampling_note(file: &GridFile, grid: &SceneGrid, warp: &Warp) -> Note {
    let key = format!(
        "{} ({}) is resampled ({}) onto the grid of {} ({})",
        file.role,
        describe(&file.header),
        warp.resampling.name(),
        grid.role,
        describe(&grid.info)
    );
    let text = format!(
        "{key}: e.g. {} ({}x{} px) onto {} ({}x{} px)",
        file.header.path.display(),
        file.header.width,
        file.header.height,
        grid.info.path.display(),
        grid.info.width,
        grid.info.height
    );
    Note { key, text }
}

/// Pixel size and CRS, for messages: `20 m, EPSG:32631`, `0.5 x 1 m, EPSG:32631` (x by y, for
/// pixels that are not square), `12 GCPs, EPSG:4326`, `no georeferencing`.
pub fn describe(info: &RasterInfo) -> String {
    match info.geo_transform {
        Some(g) => {
            let size = pixel_size(&g);
            let unit = match info.crs_wkt.as_deref().map(SpatialRef::from_wkt) {
                None => " (no CRS)".to_string(),
                Some(Ok(srs)) if srs.is_geographic() => "°".to_string(),
                Some(Ok(srs)) => match srs.linear_units_name().as_deref() {
                    Some("metre" | "meter" | "Meter") | None => " m".to_string(),
                    Some(other) => format!(" {other}"),
                },
                Some(Err(_)) => String::new(),
            };
            let crs = match info.crs_wkt {
                Some(_) => format!(", {}", info.crs_label()),
                None => String::new(),
            };
            format!("{size}{unit}{crs}")
        }
        None if !info.gcps.is_empty() => {
            let crs = match &info.gcp_crs_wkt {
                Some(wkt) => {
                    let mut placed = info.clone();
                    placed.crs_wkt = Some(wkt.clone());
                    format!(", {}", placed.crs_label())
                }
                None => " (no CRS)".to_string(),
            };
            format!("{} GCPs{crs}", info.gcps.len())
        }
        None => "no georeferencing".to_string(),
    }
}

/// The pixel size of a geotransform: one number for square pixels, else `x x y` (the lengths of a
/// pixel's sides along its columns and its rows).
fn pixel_size(g: &[f64; 6]) -> String {
    let (x, y) = (g[1].hypot(g[4]), g[2].hypot(g[5]));
    if (x - y).abs() <= 1e-9 * x.max(y) {
        number((g[1] * g[5] - g[2] * g[4]).abs().sqrt())
    } else {
        format!("{} x {}", number(x), number(y))
    }
}

/// A pixel size with four significant digits and no trailing zeros.
fn number(v: f64) -> String {
    if v != 0.0 && !(1e-3..1e6).contains(&v.abs()) {
        return format!("{v:.3e}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 7) as usize;
    let text = format!("{v:.digits$}");
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_string(),
        false => text,
    }
}

/// Says each note once per process, on stderr.
pub(crate) fn announce(notes: &[Note]) {
    static SAID: OnceLock<Mutex<BTreeSet<String>>> = OnceLock::new();
    let mut said = SAID
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    for n in notes {
        if said.insert(n.key.clone()) {
            eprintln!("note: {}", n.text);
        }
    }
}

/// The resampling of `file` onto `grid` (which has a geotransform): the configured method or
/// the default for its kind and scale; checks that it overlaps the grid.
fn warp_for(file: &GridFile, grid: &SceneGrid, config: &GridConfig) -> Result<Warp> {
    let target = Target {
        width: grid.info.width,
        height: grid.info.height,
        geo_transform: grid
            .info
            .geo_transform
            .ok_or_else(|| anyhow!("the grid has no geotransform"))?,
        crs_wkt: grid.info.crs_wkt.clone(),
    };
    let src = raster::open(&file.header.path)?;
    let scale = warp::downsampling(&src, &target)?;
    let categorical = file.categorical || has_colour_table(&src)?;
    let resampling = match config.resampling.get(&file.key) {
        Some(r) => *r,
        None => default_resampling(categorical, scale),
    };
    Ok(Warp::new(resampling, file.header.bands, scale, target))
}

fn has_colour_table(ds: &Dataset) -> Result<bool> {
    Ok(ds.raster_count() > 0 && ds.rasterband(1)?.color_table().is_some())
}

impl GridSource {
    /// A file on the grid already, its bands marked as alpha taken as `alpha` says.
    pub(crate) fn on_grid(path: &Path, alpha: AlphaRule) -> Self {
        Self {
            path: path.to_path_buf(),
            warp: None,
            alpha,
        }
    }

    /// Opens the file for reads on the grid.
    pub fn open(&self) -> Result<OpenSource> {
        Ok(OpenSource {
            ds: raster::open(&self.path)?,
            source: self.clone(),
        })
    }

    /// Opens the file and reads `window` of the grid (see [`OpenSource::read`]).
    pub fn read(&self, window: Window) -> Result<Pixels> {
        self.open()?.read(window)
    }

    /// [`Self::read`] with a choice of how the file's declared nodata counts.
    #[cfg(test)]
    pub(crate) fn read_with(&self, window: Window, rule: NodataRule) -> Result<Pixels> {
        self.open()?.read_with(window, rule)
    }
}

/// An open [`GridSource`].
pub struct OpenSource {
    ds: Dataset,
    source: GridSource,
}

impl OpenSource {
    /// Reads `window` of the scene's grid, as [`raster::read_window`] reads a file: values as
    /// `f32` with per-pixel validity by GDAL's mask model (invalid where the file is masked,
    /// nodata, NaN or alpha 0, where it does not cover the grid, and outside the grid).
    pub fn read(&self, window: Window) -> Result<Pixels> {
        self.read_with(window, NodataRule::Honour)
    }

    /// [`Self::read`] with a choice of how the file's declared nodata counts (labels whose
    /// nodata value is also a class, see `data.label_nodata`).
    pub(crate) fn read_with(&self, window: Window, rule: NodataRule) -> Result<Pixels> {
        let (path, alpha) = (&self.source.path, self.source.alpha);
        match &self.source.warp {
            None => raster::read_window_with(&self.ds, path, window, rule, alpha),
            Some(warp) => warp.read(&self.ds, path, window, rule, alpha),
        }
    }

    /// The open file itself, in its own pixels.
    pub fn dataset(&self) -> &Dataset {
        &self.ds
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::raster::{write_geotiff, Crs, GeoRef, RasterData, WriteOptions};
    use gdal::raster::ColorInterpretation;
    use gdal::Gcp;

    const EPSG: u32 = 32631;

    /// A one-band f32 raster whose value is its column + 1000 x its row.
    fn ramp(path: &Path, size: (usize, usize), georef: Option<&GeoRef>) -> RasterInfo {
        let (w, h) = size;
        let data: Vec<f32> = (0..w * h)
            .map(|i| (i % w) as f32 + 1000.0 * (i / w) as f32)
            .collect();
        let raster = RasterData {
            width: w,
            height: h,
            bands: 1,
            data: &data,
        };
        let no_georef = GeoRef {
            geo_transform: None,
            crs: None,
            gcps: Vec::new(),
            gcp_crs: None,
        };
        write_geotiff(
            path,
            &raster,
            georef.unwrap_or(&no_georef),
            &WriteOptions::default(),
        )
        .unwrap();
        RasterInfo::read(path).unwrap()
    }

    fn file(role: &str, header: RasterInfo) -> GridFile {
        GridFile {
            role: role.to_string(),
            key: role.to_string(),
            header,
            categorical: role == "labels",
        }
    }

    fn plan_of(files: &[GridFile], config: &GridConfig) -> Result<GridPlan> {
        plan(files, 0, config, &GridKeys::CONFIG)
    }

    fn err(r: Result<GridPlan>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    #[test]
    fn default_resampling_follows_kind_and_scale() {
        assert_eq!(default_resampling(true, 10.0), Resampling::Nearest);
        assert_eq!(default_resampling(false, 1.9), Resampling::Bilinear);
        assert_eq!(default_resampling(false, 0.25), Resampling::Bilinear);
        assert_eq!(default_resampling(false, 2.0), Resampling::Average);
        assert_eq!(
            Resampling::parse("cubic_spline").unwrap().gdal_name(),
            "cubicspline"
        );
        let e = Resampling::parse("bicubic").unwrap_err().to_string();
        assert!(e.contains("\"bicubic\"") && e.contains("lanczos"), "{e}");
        assert_eq!(number(20.0), "20");
        assert_eq!(number(0.5), "0.5");
        assert_eq!(number(0.000_089_83), "8.983e-5");
    }

    #[test]
    fn finer_and_coarser_files_get_their_defaults_and_aligned_ones_are_read_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let reference = ramp(
            &p("ref.tif"),
            (40, 30),
            Some(&GeoRef::north_up(0.0, 300.0, 10.0, EPSG)),
        );
        let same = ramp(
            &p("same.tif"),
            (40, 30),
            Some(&GeoRef::north_up(0.0, 300.0, 10.0, EPSG)),
        );
        let fine = ramp(
            &p("fine.tif"),
            (160, 120),
            Some(&GeoRef::north_up(0.0, 300.0, 2.5, EPSG)),
        );
        let coarse = ramp(
            &p("coarse.tif"),
            (10, 8),
            Some(&GeoRef::north_up(0.0, 300.0, 40.0, EPSG)),
        );
        let labels = ramp(
            &p("labels.tif"),
            (160, 120),
            Some(&GeoRef::north_up(0.0, 300.0, 2.5, EPSG)),
        );
        let files = [
            file("optical", reference),
            file("same", same),
            file("fine", fine),
            file("coarse", coarse),
            file("labels", labels),
        ];
        let plan = plan_of(&files, &GridConfig::default()).unwrap();
        let methods: Vec<Option<Resampling>> = plan
            .sources
            .iter()
            .map(|s| s.warp.as_ref().map(|w| w.resampling))
            .collect();
        use Resampling::*;
        assert_eq!(
            methods,
            vec![None, None, Some(Average), Some(Bilinear), Some(Nearest)]
        );
        assert_eq!((plan.grid.info.width, plan.grid.info.height), (40, 30));
        let said: Vec<&str> = plan.notes.iter().map(|n| n.key.as_str()).collect();
        assert!(
            said.contains(&"fine (2.5 m, EPSG:32631) is resampled (average) onto the grid of optical (10 m, EPSG:32631)"),
            "{said:?}"
        );
        // Configured methods win.
        let config = GridConfig {
            resampling: [("coarse".to_string(), Cubic)].into(),
            ..Default::default()
        };
        let plan = plan_of(&files, &config).unwrap();
        assert_eq!(plan.sources[3].warp.as_ref().unwrap().resampling, Cubic);
        // Aligned files read exactly as before.
        let window = Window::new(-3, 5, 20, 20);
        assert_eq!(
            plan.sources[1].read(window).unwrap(),
            raster::read_window_at(&p("same.tif"), window).unwrap()
        );
        // Strict mode refuses the others, naming the key.
        let strict = GridConfig {
            strict: true,
            ..Default::default()
        };
        let e = err(plan_of(&files, &strict));
        assert!(
            e.contains("fine.tif")
                && e.contains("size 40x30 vs 160x120")
                && e.contains("data.grid.strict is set"),
            "{e}"
        );
    }

    #[test]
    fn warped_windows_hold_the_warper_values_and_nodata_outside_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        // Grid: 10 m pixels from (0, 300); the coarse file has 20 m pixels and covers only
        // columns 0..20 of the 40 (x from 0 to 200 m) and rows 0..20.
        let reference = ramp(
            &p("ref.tif"),
            (40, 30),
            Some(&GeoRef::north_up(0.0, 300.0, 10.0, EPSG)),
        );
        let coarse = ramp(
            &p("coarse.tif"),
            (10, 10),
            Some(&GeoRef::north_up(0.0, 300.0, 20.0, EPSG)),
        );
        let config = GridConfig {
            resampling: [("coarse".to_string(), Resampling::Nearest)].into(),
            ..Default::default()
        };
        let plan = plan_of(
            &[file("optical", reference), file("coarse", coarse)],
            &config,
        )
        .unwrap();
        let px = plan.sources[1].read(Window::new(-2, 0, 44, 30)).unwrap();
        for row in 0..30 {
            for col in 0..44 {
                let (gx, gy) = (col as i64 - 2, row as i64);
                let inside = (0..20).contains(&gx) && gy < 20;
                let i = row * 44 + col;
                assert_eq!(px.valid[i], inside, "({gx}, {gy})");
                if inside {
                    let want = (gx / 2) as f32 + 1000.0 * (gy / 2) as f32;
                    assert_eq!(px.data[i], want, "({gx}, {gy})");
                }
            }
        }
        // A window the file does not reach at all.
        let beyond = plan.sources[1].read(Window::new(25, 22, 10, 8)).unwrap();
        assert!(beyond.valid.iter().all(|&v| !v));
        // The same pixels read through a strip and through a small window.
        let strip = plan.sources[1].read(Window::new(0, 4, 40, 6)).unwrap();
        let small = plan.sources[1].read(Window::new(3, 5, 4, 4)).unwrap();
        for r in 0..4 {
            for c in 0..4 {
                assert_eq!(small.data[r * 4 + c], strip.data[(r + 1) * 40 + 3 + c]);
            }
        }
    }

    #[test]
    fn files_that_cannot_reach_the_grid_are_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let grid = GeoRef::north_up(0.0, 300.0, 10.0, EPSG);
        let reference = ramp(&p("ref.tif"), (40, 30), Some(&grid));
        let bare = ramp(&p("bare.tif"), (20, 30), None);
        let e = err(plan_of(
            &[
                file("optical", reference.clone()),
                file("dsm", bare.clone()),
            ],
            &GridConfig::default(),
        ));
        assert!(
            e.contains("bare.tif has no georeferencing") && e.contains("pixel for pixel"),
            "{e}"
        );
        let far = ramp(
            &p("far.tif"),
            (10, 10),
            Some(&GeoRef::north_up(9000.0, 300.0, 20.0, EPSG)),
        );
        let e = err(plan_of(
            &[file("optical", reference.clone()), file("sar", far)],
            &GridConfig::default(),
        ));
        assert!(
            e.contains("sar") && e.contains("far.tif") && e.contains("does not overlap the grid"),
            "{e}"
        );
        // A reference without georeferencing cannot take a file of another size.
        let e = err(plan_of(
            &[file("optical", bare), file("sar", reference)],
            &GridConfig::default(),
        ));
        assert!(
            e.contains("has no georeferencing") && e.contains("data.grid.reference"),
            "{e}"
        );
    }

    #[test]
    fn missing_georeferencing_is_taken_from_the_grid_and_said() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let utm = GeoRef::north_up(0.0, 300.0, 10.0, EPSG);
        let mut local = utm.clone();
        local.crs = None;
        // Reference without a CRS: the grid takes the sar's.
        let reference = ramp(&p("ref.tif"), (40, 30), Some(&local));
        let sar = ramp(&p("sar.tif"), (40, 30), Some(&utm));
        let bare = ramp(&p("bare.tif"), (40, 30), None);
        let plan = plan_of(
            &[
                file("optical", reference),
                file("sar", sar),
                file("dsm", bare),
            ],
            &GridConfig::default(),
        )
        .unwrap();
        assert!(plan.sources.iter().all(|s| s.warp.is_none()));
        assert_eq!(plan.grid.info.epsg(), Some(EPSG));
        let keys: Vec<&str> = plan.notes.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "optical has a geotransform but no CRS: the grid takes EPSG:32631 from sar",
                "dsm has no georeferencing: it is read pixel for pixel on the grid of optical",
            ]
        );
        // A reference without any georeferencing takes a same-size file's.
        let bare_ref = ramp(&p("bare_ref.tif"), (40, 30), None);
        let sar = RasterInfo::read(&p("sar.tif")).unwrap();
        let plan = plan_of(
            &[file("optical", bare_ref), file("sar", sar)],
            &GridConfig::default(),
        )
        .unwrap();
        assert_eq!(plan.grid.info.geo_transform, utm.geo_transform);
        assert_eq!(
            GeoRef::of(&plan.grid.info).unwrap().crs.map(|_| ()),
            Some(())
        );
    }

    #[test]
    fn non_square_pixels_are_described_x_by_y() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let tall = GeoRef {
            geo_transform: Some([500_000.0, 0.5, 0.0, 5_000_000.0, 0.0, -1.0]),
            ..GeoRef::north_up(0.0, 0.0, 1.0, EPSG)
        };
        assert_eq!(
            describe(&ramp(&p("tall.tif"), (4, 4), Some(&tall))),
            "0.5 x 1 m, EPSG:32631"
        );
        let square = GeoRef::north_up(500_000.0, 5_000_000.0, 20.0, EPSG);
        assert_eq!(
            describe(&ramp(&p("square.tif"), (4, 4), Some(&square))),
            "20 m, EPSG:32631"
        );
    }

    /// 100 x 100 px of 400 m in UTM zone 60 S (EPSG:32760), all 5.0: 179.82°E to 179.80°W and
    /// 16.98°S to 17.35°S (Fiji, across the antimeridian), placed by a geotransform or by GCPs.
    fn across_the_antimeridian(path: &Path, by_gcps: bool) -> RasterInfo {
        let placed = GeoRef::north_up(800_000.0, 8_120_000.0, 400.0, 32760);
        let georef = match by_gcps {
            false => placed,
            true => GeoRef {
                geo_transform: None,
                crs: None,
                gcps: gcps_of(&placed, 100, 100),
                gcp_crs: Some(Crs::Epsg(32760)),
            },
        };
        let data = vec![5.0f32; 100 * 100];
        let raster = RasterData {
            width: 100,
            height: 100,
            bands: 1,
            data: &data,
        };
        write_geotiff(path, &raster, &georef, &WriteOptions::default()).unwrap();
        RasterInfo::read(path).unwrap()
    }

    #[test]
    fn files_across_the_antimeridian_are_warped_onto_a_geographic_grid_as_gdalwarp_maps_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let utm = across_the_antimeridian(&p("utm.tif"), false);
        let gcps = across_the_antimeridian(&p("gcps.tif"), true);
        // Within ±180° in EPSG:4326: 180.0°W to 179.6°W, 16.8°S to 17.2°S (columns 100..140,
        // rows 30..70 of the grids below).
        let geographic = GeoRef::north_up(-180.0, -16.8, 0.01, 4326);
        let data = vec![5.0f32; 40 * 40];
        let raster = RasterData {
            width: 40,
            height: 40,
            bands: 1,
            data: &data,
        };
        write_geotiff(
            &p("geo.tif"),
            &raster,
            &geographic,
            &WriteOptions::default(),
        )
        .unwrap();
        let geo = RasterInfo::read(&p("geo.tif")).unwrap();
        // 200 x 100 px of 0.01° from 179°E eastwards across 180°, in either convention GDAL
        // reads (179..181 and -181..-179), 16.5°S to 17.5°S.
        for west in [179.0, -181.0] {
            let grid = GeoRef::north_up(west, -16.5, 0.01, 4326);
            let reference = ramp(&p(&format!("grid{west}.tif")), (200, 100), Some(&grid));
            let covered = [
                (&utm, (85..=115, 55..=80)),
                (&gcps, (85..=115, 55..=80)),
                (&geo, (102..=138, 32..=68)),
            ];
            for (file_info, (columns, rows)) in covered {
                let name = file_info.path.display().to_string();
                let files = [
                    file("optical", reference.clone()),
                    file("sar", file_info.clone()),
                ];
                let plan = plan_of(&files, &GridConfig::default())
                    .unwrap_or_else(|e| panic!("{name} onto {west}: {e:#}"));
                assert!(plan.sources[1].warp.is_some(), "{name}");
                let px = plan.sources[1].read(Window::new(0, 0, 200, 100)).unwrap();
                let at =
                    |col: usize, row: usize| (px.valid[row * 200 + col], px.data[row * 200 + col]);
                for col in columns.clone().step_by(5) {
                    for row in rows.clone().step_by(5) {
                        assert_eq!(
                            at(col, row),
                            (true, 5.0),
                            "{name} onto {west}: ({col}, {row})"
                        );
                    }
                }
                let (c0, c1) = (*columns.start(), *columns.end());
                for col in [10, c0 - 8, c1 + 8, 190] {
                    assert!(
                        !at(col, 60).0,
                        "{name} onto {west}: column {col} has no data"
                    );
                }
                for row in [5, 95] {
                    assert!(!at(100, row).0, "{name} onto {west}: row {row} has no data");
                }
            }
        }
        // Whole turns bring a footprint near the grid only where the warper finds the file.
        let elsewhere = GeoRef::north_up(10.0, -16.5, 0.01, 4326);
        let reference = ramp(&p("elsewhere.tif"), (200, 100), Some(&elsewhere));
        let e = err(plan_of(
            &[file("optical", reference), file("sar", utm)],
            &GridConfig::default(),
        ));
        assert!(
            e.contains("utm.tif") && e.contains("does not overlap the grid"),
            "{e}"
        );
    }

    fn gcps_of(georef: &GeoRef, w: usize, h: usize) -> Vec<Gcp> {
        let g = georef.geo_transform.unwrap();
        let mut out = Vec::new();
        for (i, (px, ln)) in [
            (0.0, 0.0),
            (w as f64, 0.0),
            (0.0, h as f64),
            (w as f64, h as f64),
            (w as f64 / 2.0, h as f64 / 3.0),
        ]
        .into_iter()
        .enumerate()
        {
            out.push(Gcp {
                id: (i + 1).to_string(),
                info: String::new(),
                pixel: px,
                line: ln,
                x: g[0] + px * g[1] + ln * g[2],
                y: g[3] + px * g[4] + ln * g[5],
                z: 0.0,
            });
        }
        out
    }

    #[test]
    fn gcp_rasters_are_compared_by_their_gcps_and_warped_through_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let utm = GeoRef::north_up(0.0, 300.0, 10.0, EPSG);
        let as_gcps = |g: &GeoRef, w, h| GeoRef {
            geo_transform: None,
            crs: None,
            gcps: gcps_of(g, w, h),
            gcp_crs: Some(Crs::Epsg(EPSG)),
        };
        let reference = ramp(&p("ref.tif"), (40, 30), Some(&utm));
        // GCPs of the very same grid: aligned, read as it is.
        let on_grid = ramp(&p("on_grid.tif"), (40, 30), Some(&as_gcps(&utm, 40, 30)));
        assert_eq!(on_grid.gcps.len(), 5);
        assert_eq!(on_grid.geo_transform, None);
        reference.check_aligned(&on_grid).unwrap();
        on_grid.check_aligned(&on_grid.clone()).unwrap();
        // GCPs of a 20 m grid over the same corner: compared, found off, warped through them.
        let coarse_grid = GeoRef::north_up(0.0, 300.0, 20.0, EPSG);
        let radar = ramp(
            &p("radar.tif"),
            (40, 30),
            Some(&as_gcps(&coarse_grid, 40, 30)),
        );
        let e = format!("{:#}", reference.check_aligned(&radar).unwrap_err());
        assert!(e.contains("the GCPs of") && e.contains("radar.tif"), "{e}");
        let e = format!("{:#}", on_grid.check_aligned(&radar).unwrap_err());
        assert!(e.contains("GCP 2 differs"), "{e}");
        let config = GridConfig {
            resampling: [("sar".to_string(), Resampling::Nearest)].into(),
            ..Default::default()
        };
        let plan = plan_of(
            &[
                file("optical", reference.clone()),
                file("on_grid", on_grid),
                file("sar", radar.clone()),
            ],
            &config,
        )
        .unwrap();
        assert!(plan.sources[1].warp.is_none() && plan.sources[2].warp.is_some());
        let px = plan.sources[2].read(Window::new(0, 0, 40, 30)).unwrap();
        // Grid pixel (x, y) is radar pixel (x / 2, y / 2).
        for (x, y) in [(0, 0), (7, 3), (39, 29), (21, 14)] {
            let want = (x / 2) as f32 + 1000.0 * (y / 2) as f32;
            assert_eq!(px.data[y * 40 + x], want, "({x}, {y})");
        }
        assert!(px.valid.iter().all(|&v| v));
        // A grid placed by GCPs only takes no file from another grid.
        let e = err(plan_of(
            &[file("sar", radar), file("optical", reference)],
            &GridConfig::default(),
        ));
        assert!(
            e.contains("only GCPs") && e.contains("data.grid.reference"),
            "{e}"
        );
    }

    #[test]
    fn masks_alpha_and_nodata_of_a_warped_file_stay_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let reference = ramp(
            &p("ref.tif"),
            (20, 20),
            Some(&GeoRef::north_up(0.0, 200.0, 10.0, EPSG)),
        );
        let half = GeoRef::north_up(0.0, 200.0, 5.0, EPSG);
        // RGB + alpha at 5 m: alpha 0 on the left half.
        let (w, h) = (40usize, 40usize);
        let mut data = vec![100u8; 4 * w * h];
        for i in 0..w * h {
            data[3 * w * h + i] = if i % w < 20 { 0 } else { 255 };
        }
        let rgba = p("rgba.tif");
        write_geotiff(
            &rgba,
            &RasterData {
                width: w,
                height: h,
                bands: 4,
                data: &data,
            },
            &half,
            &WriteOptions::default(),
        )
        .unwrap();
        {
            let ds = Dataset::open_ex(
                &rgba,
                gdal::DatasetOptions {
                    open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE,
                    ..Default::default()
                },
            )
            .unwrap();
            ds.rasterband(4)
                .unwrap()
                .set_color_interpretation(ColorInterpretation::AlphaBand)
                .unwrap();
        }
        // One band at 5 m with an internal per-dataset mask hiding the top half.
        let masked = p("masked.tif");
        gdal::config::set_config_option("GDAL_TIFF_INTERNAL_MASK", "YES").unwrap();
        ramp(&masked, (w, h), Some(&half));
        {
            let ds = Dataset::open_ex(
                &masked,
                gdal::DatasetOptions {
                    open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE,
                    ..Default::default()
                },
            )
            .unwrap();
            let mut band = ds.rasterband(1).unwrap();
            band.create_mask_band(true).unwrap();
            let mut mask = band.open_mask_band().unwrap();
            let bits: Vec<u8> = (0..w * h)
                .map(|i| if i / w < 20 { 0 } else { 255 })
                .collect();
            let mut buf = gdal::raster::Buffer::new((w, h), bits);
            mask.write((0, 0), (w, h), &mut buf).unwrap();
        }
        // Alpha is a mask, never data (validity.rs): 3 data bands, band 4 their mask.
        let rgb = RasterInfo::read(&rgba).unwrap();
        assert_eq!((rgb.bands, rgb.alpha_bands.clone()), (3, vec![4]));
        let plan = plan_of(
            &[
                file("optical", reference),
                file("rgba", rgb),
                file("masked", RasterInfo::read(&masked).unwrap()),
            ],
            &GridConfig::default(),
        )
        .unwrap();
        let rgba_warp = plan.sources[1].warp.as_ref().unwrap();
        assert_eq!(
            (rgba_warp.bands, rgba_warp.resampling),
            (3, Resampling::Average)
        );
        let px = plan.sources[1].read(Window::new(0, 0, 20, 20)).unwrap();
        assert_eq!(px.bands, 3);
        let m = plan.sources[2].read(Window::new(0, 0, 20, 20)).unwrap();
        for y in 0..20 {
            for x in 0..20 {
                assert_eq!(px.valid[y * 20 + x], x >= 10, "alpha at ({x}, {y})");
                assert_eq!(m.valid[y * 20 + x], y >= 10, "mask at ({x}, {y})");
            }
        }
        assert!(px
            .data
            .iter()
            .zip(px.valid.iter().cycle())
            .all(|(&v, &ok)| !ok || v == 100.0));
    }
    #[test]
    fn a_warped_label_file_follows_the_label_nodata_rule() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        let reference = ramp(
            &p("ref.tif"),
            (20, 20),
            Some(&GeoRef::north_up(0.0, 200.0, 10.0, EPSG)),
        );
        // Labels at 5 m declaring nodata 0, which is also the class of the left half.
        let (w, h) = (40usize, 40usize);
        let classes: Vec<u8> = (0..w * h).map(|i| if i % w < 20 { 0 } else { 3 }).collect();
        let labels = p("labels.tif");
        write_geotiff(
            &labels,
            &RasterData {
                width: w,
                height: h,
                bands: 1,
                data: &classes,
            },
            &GeoRef::north_up(0.0, 200.0, 5.0, EPSG),
            &WriteOptions {
                nodata: Some(0.0),
                ..WriteOptions::default()
            },
        )
        .unwrap();
        let plan = plan_of(
            &[
                file("optical", reference),
                file("labels", RasterInfo::read(&labels).unwrap()),
            ],
            &GridConfig::default(),
        )
        .unwrap();
        let source = &plan.sources[1];
        assert_eq!(
            source.warp.as_ref().unwrap().resampling,
            Resampling::Nearest
        );
        let window = Window::new(0, 0, 20, 20);
        let honoured = source.read_with(window, NodataRule::Honour).unwrap();
        let disregarded = source.read_with(window, NodataRule::Disregard).unwrap();
        for i in 0..20 * 20 {
            let left = i % 20 < 10;
            assert_eq!(honoured.valid[i], !left, "nodata honoured at {i}");
            assert!(disregarded.valid[i], "nodata disregarded at {i}");
            assert_eq!(disregarded.data[i], if left { 0.0 } else { 3.0 });
        }
    }
}
