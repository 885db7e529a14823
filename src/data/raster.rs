//! Rasters through GDAL: header information, windowed reads with a validity mask, the
//! alignment check between the modalities of one sample, and tiled DEFLATE GeoTIFF writing.
//!
//! Validity follows GDAL's mask model ([`super::validity`]): a pixel is invalid in a raster when
//! a data band's mask (mask file, nodata, alpha) or an alpha band says so, when it holds a band's
//! declared nodata value, NaN or an infinity, or when it lies outside the raster (a window may
//! reach past the edge). Invalid pixels are reported in [`Pixels::valid`] and their values are
//! set to 0; the loader later fills them after normalisation and excludes them from the loss.
//! Alpha bands are masks, not data: [`RasterInfo::bands`] and [`Pixels`] count data bands only
//! (unless the user says they are data: [`AlphaRule::Data`]).
//! Values are read with each band's GDAL scale and offset applied, so every reader (and the
//! warper, which resamples values read here) sees the same units.

use anyhow::{anyhow, bail, Context, Result};
use gdal::raster::{
    ColorEntry, ColorInterpretation, ColorTable, GdalDataType, GdalType, RasterBand,
    RasterCreationOptions,
};
use gdal::spatial_ref::SpatialRef;
use gdal::Gcp;
use gdal::{Dataset, DatasetOptions, DriverManager, GdalOpenFlags, Metadata};
use std::path::{Path, PathBuf};

use super::gdal_errors::{checked, close_checked};
use super::validity::{AlphaRule, BandLayout, MaskReader, NodataRule, Region};
use super::vsi;

/// Opens a raster read-only. The path goes to GDAL as it is, so GDAL's virtual file systems
/// (`/vsizip/`, `/vsigzip/`, `/vsicurl/`, `/vsis3/`, ...) are read like files ([`super::vsi`]).
///
/// Errors: GDAL's, with the file named: `raster PATH does not exist` for a local path that names
/// nothing, else `GDAL cannot open raster PATH`; a relative path adds the directory it was looked
/// for in.
pub fn open(path: &Path) -> Result<Dataset> {
    // Verbose: GDAL says why it cannot open a path (its error is the cause reported).
    let options = DatasetOptions {
        open_flags: GdalOpenFlags::GDAL_OF_READONLY | GdalOpenFlags::GDAL_OF_VERBOSE_ERROR,
        ..Default::default()
    };
    Dataset::open_ex(path, options).map_err(|e| {
        let place = vsi::resolved_against(path);
        let what = match vsi::is_missing_local(path) {
            true => format!("raster {} does not exist{place}", path.display()),
            false => format!("GDAL cannot open raster {}{place}", path.display()),
        };
        anyhow::Error::new(e).context(what)
    })
}

/// What a raster's header says: size, bands, type, georeferencing and nodata.
#[derive(Debug, Clone, PartialEq)]
pub struct RasterInfo {
    pub path: PathBuf,
    pub width: usize,
    pub height: usize,
    /// Data bands: every band but the alpha bands (every band with [`AlphaRule::Data`]).
    pub bands: usize,
    /// The alpha bands (1-based band numbers): masks, not data (none with [`AlphaRule::Data`]).
    pub alpha_bands: Vec<usize>,
    /// What bands marked as alpha were taken for when the header was read, and so in every read
    /// of the file on a scene's grid ([`super::grid`]).
    pub alpha: AlphaRule,
    /// The first data band has a colour table (a paletted raster: one band of palette indices).
    pub paletted: bool,
    /// GDAL's name of the first data band's type (`Byte`, `UInt16`, `Float32`, ...).
    pub data_type: String,
    /// The affine geotransform, `None` when the file has none (e.g. a plain JPEG).
    pub geo_transform: Option<[f64; 6]>,
    /// The CRS as WKT, `None` when the file declares none.
    pub crs_wkt: Option<String>,
    /// Ground control points (e.g. SAR in radar geometry); empty when the file has none.
    pub gcps: Vec<Gcp>,
    /// The CRS of the GCPs as WKT, `None` when the file declares none.
    pub gcp_crs_wkt: Option<String>,
    /// The declared nodata value of each data band.
    pub nodata: Vec<Option<f64>>,
}

impl RasterInfo {
    /// Reads the header of `path` (no pixels); alpha bands are masks.
    pub fn read(path: &Path) -> Result<Self> {
        Self::read_with(path, AlphaRule::Mask)
    }

    /// Reads the header of `path` (no pixels), bands marked as alpha taken as `alpha` says.
    pub fn read_with(path: &Path, alpha: AlphaRule) -> Result<Self> {
        Self::of(&open(path)?, path, alpha)
    }

    /// The header of an open dataset, bands marked as alpha taken as `alpha` says.
    ///
    /// Errors: a band of a pixel type dis2 cannot read (complex types are named, with the hint
    /// to convert to amplitude or dB).
    pub fn of(ds: &Dataset, path: &Path, alpha: AlphaRule) -> Result<Self> {
        let (width, height) = ds.raster_size();
        let layout = BandLayout::of(ds, path, alpha)?;
        let mut paletted = false;
        let mut nodata = Vec::with_capacity(layout.data.len());
        let mut data_type = String::new();
        for &b in &layout.data {
            let band = ds
                .rasterband(b)
                .with_context(|| format!("{}: cannot read band {b}", path.display()))?;
            if data_type.is_empty() {
                data_type = band.band_type().name();
                paletted = band.color_table().is_some();
            }
            nodata.push(band.no_data_value());
        }
        let projection = ds.projection();
        let gcp_projection = ds.gcp_projection().unwrap_or_default();
        Ok(Self {
            path: path.to_path_buf(),
            width,
            height,
            bands: layout.data.len(),
            alpha_bands: layout.alpha,
            alpha,
            paletted,
            data_type,
            geo_transform: ds.geo_transform().ok(),
            crs_wkt: (!projection.trim().is_empty()).then_some(projection),
            gcps: ds.gcps().iter().map(Gcp::from).collect(),
            gcp_crs_wkt: (!gcp_projection.trim().is_empty()).then_some(gcp_projection),
            nodata,
        })
    }

    /// Checks that the raster has `expected` data bands for `what` (e.g. `modality optical`).
    /// When one more is expected and the file has an alpha band, the error says that band is a
    /// mask, not data, and how to read it as data: [`AlphaRule::Data`]'s option and key, or
    /// marking the band in the file. A paletted file where 3 or 4 bands are expected (ISPRS colour
    /// labels stored with a palette, say) is named as such, with how to expand its palette.
    pub(crate) fn check_bands(&self, expected: usize, what: &str) -> Result<()> {
        if self.bands == expected {
            return Ok(());
        }
        let path = self.path.display();
        if let Some(&alpha) = self.alpha_bands.first() {
            if self.bands + self.alpha_bands.len() == expected {
                bail!(
                    "{path}: {what} expects {expected} band(s), but band {alpha} of {} is an \
                     alpha band (a transparency mask, used as the validity mask and never read \
                     as data), which leaves {} data band(s). GDAL and rasterio mark the fourth \
                     band of a 4-band byte file as alpha by default. If band {alpha} holds data \
                     (say NIR), read it as data without editing the file: {}; or mark it as \
                     data in the file: gdal_edit.py -colorinterp_{alpha} undefined {path}",
                    self.bands + self.alpha_bands.len(),
                    self.bands,
                    AlphaRule::HOW_TO_READ_AS_DATA
                );
            }
        }
        if self.paletted && self.bands == 1 && (3..=4).contains(&expected) {
            let expand = if expected == 3 { "rgb" } else { "rgba" };
            bail!(
                "{path}: {what} should have {expected} band(s), found 1: the file is paletted \
                 (one band of palette indices and a colour table). Expand the palette into \
                 {expected} bands: gdal_translate -expand {expand} {path} OUT.tif, or, without \
                 copying the pixels, gdal_translate -of VRT -expand {expand} {path} OUT.vrt \
                 (a small file that reads this one), and use OUT in its place"
            );
        }
        let alpha = match self.alpha_bands.len() {
            0 => String::new(),
            n => format!(" (besides {n} alpha band(s), which are masks)"),
        };
        bail!(
            "{path}: {what} should have {expected} band(s), found {}{alpha}",
            self.bands
        )
    }

    /// The EPSG code of the CRS, when GDAL can tell it.
    pub fn epsg(&self) -> Option<u32> {
        let wkt = self.crs_wkt.as_deref()?;
        let mut srs = SpatialRef::from_wkt(wkt).ok()?;
        if srs.auth_code().is_err() {
            let _ = srs.auto_identify_epsg();
        }
        srs.auth_code().ok().and_then(|c| u32::try_from(c).ok())
    }

    /// A short description of the CRS for messages: `EPSG:32631`, its name, or `none`.
    pub(crate) fn crs_label(&self) -> String {
        match (&self.crs_wkt, self.epsg()) {
            (None, _) => "none".to_string(),
            (Some(_), Some(code)) => format!("EPSG:{code}"),
            (Some(wkt), None) => SpatialRef::from_wkt(wkt)
                .ok()
                .and_then(|s| s.name())
                .unwrap_or_else(|| "an unnamed CRS".to_string()),
        }
    }

    /// Whether the file has any georeferencing (a geotransform or GCPs).
    pub(crate) fn is_georeferenced(&self) -> bool {
        self.geo_transform.is_some() || !self.gcps.is_empty()
    }

    /// Checks that `other` covers the same pixels: the same size, and whatever georeferencing
    /// both files have agrees: geotransforms (to 1e-6 pixel) and their CRSs, GCPs and their
    /// CRSs, or one file's GCPs against the other's geotransform (each GCP within half a pixel).
    /// What only one file has is not compared: a raster without any georeferencing (such as the
    /// ISPRS nDSM JPEGs) is pixel-aligned when its size matches, and a geotransform without a CRS
    /// is taken in the other file's CRS. The error names both files and what differs.
    pub fn check_aligned(&self, other: &RasterInfo) -> Result<()> {
        let (a, b) = (self.path.display(), other.path.display());
        if (self.width, self.height) != (other.width, other.height) {
            bail!(
                "{a} and {b} do not line up: size {}x{} vs {}x{} (width x height)",
                self.width,
                self.height,
                other.width,
                other.height
            );
        }
        if let (Some(g1), Some(g2)) = (self.geo_transform, other.geo_transform) {
            let scale = g1[1].abs().max(g1[5].abs()).max(1e-12);
            let close = g1
                .iter()
                .zip(&g2)
                .all(|(x, y)| (x - y).abs() <= 1e-6 * scale);
            if !close {
                bail!("{a} and {b} do not line up: geotransform {g1:?} vs {g2:?}");
            }
        }
        if let (Some(w1), Some(w2)) = (&self.crs_wkt, &other.crs_wkt) {
            if w1 != w2 && !same_crs(w1, w2) {
                bail!(
                    "{a} and {b} do not line up: CRS {} vs {}",
                    self.crs_label(),
                    other.crs_label()
                );
            }
        }
        self.check_gcps(other)
            .map_err(|why| anyhow!("{a} and {b} do not line up: {why}"))
    }

    /// The GCP part of [`Self::check_aligned`]: GCPs against GCPs, or against a geotransform
    /// of a file without GCPs.
    fn check_gcps(&self, other: &RasterInfo) -> std::result::Result<(), String> {
        let crs = |info: &RasterInfo| match info.gcps.is_empty() {
            false => info.gcp_crs_wkt.clone(),
            true => info.crs_wkt.clone(),
        };
        match (self.gcps.is_empty(), other.gcps.is_empty()) {
            (true, true) => return Ok(()),
            (false, false) => same_gcps(&self.gcps, &other.gcps)?,
            (false, true) => gcps_on_transform(self, other)?,
            (true, false) => gcps_on_transform(other, self)?,
        }
        match (crs(self), crs(other)) {
            (Some(w1), Some(w2)) if w1 != w2 && !same_crs(&w1, &w2) => {
                Err("the CRSs of their placements differ".to_string())
            }
            _ => Ok(()),
        }
    }
}

/// Two GCP lists place the pixels alike: the same points, to 1e-6 pixel and 1e-9 relative.
fn same_gcps(a: &[Gcp], b: &[Gcp]) -> std::result::Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} GCPs vs {}", a.len(), b.len()));
    }
    let near = |x: f64, y: f64, tol: f64| (x - y).abs() <= tol * (1.0 + x.abs().max(y.abs()));
    for (i, (p, q)) in a.iter().zip(b).enumerate() {
        let pixel = near(p.pixel, q.pixel, 1e-6) && near(p.line, q.line, 1e-6);
        if !pixel || !near(p.x, q.x, 1e-9) || !near(p.y, q.y, 1e-9) {
            return Err(format!(
                "GCP {} differs: pixel ({}, {}) at ({}, {}) vs pixel ({}, {}) at ({}, {})",
                i + 1,
                p.pixel,
                p.line,
                p.x,
                p.y,
                q.pixel,
                q.line,
                q.x,
                q.y
            ));
        }
    }
    Ok(())
}

/// The GCPs of `placed` fall on the geotransform of `grid` (each within half a pixel); a `grid`
/// without a geotransform has nothing to compare.
fn gcps_on_transform(placed: &RasterInfo, grid: &RasterInfo) -> std::result::Result<(), String> {
    let Some(g) = grid.geo_transform else {
        return Ok(());
    };
    let half = 0.5 * g[1].hypot(g[4]).max(g[2].hypot(g[5]));
    for (i, p) in placed.gcps.iter().enumerate() {
        let x = g[0] + p.pixel * g[1] + p.line * g[2];
        let y = g[3] + p.pixel * g[4] + p.line * g[5];
        if (x - p.x).hypot(y - p.y) > half {
            return Err(format!(
                "the GCPs of {} do not fall on the geotransform of {} (GCP {} places pixel \
                 ({}, {}) at ({}, {}), the geotransform at ({x}, {y}))",
                placed.path.display(),
                grid.path.display(),
                i + 1,
                p.pixel,
                p.line,
                p.x,
                p.y
            ));
        }
    }
    Ok(())
}

fn same_crs(w1: &str, w2: &str) -> bool {
    match (SpatialRef::from_wkt(w1), SpatialRef::from_wkt(w2)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A rectangle of pixels: the column and row of its top-left corner (possibly negative, or past
/// the edge: the part outside the raster reads as invalid) and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    pub x: i64,
    pub y: i64,
    pub width: usize,
    pub height: usize,
}

impl Window {
    pub fn new(x: i64, y: i64, width: usize, height: usize) -> Self {
        Self {
            x,
            y,
            width,
            height,
        }
    }

    /// The part of the window inside a `width` x `height` raster, as (x, y, w, h), or `None`.
    pub(crate) fn clip(&self, width: usize, height: usize) -> Option<(usize, usize, usize, usize)> {
        let x0 = self.x.max(0);
        let y0 = self.y.max(0);
        let x1 = (self.x + self.width as i64).min(width as i64);
        let y1 = (self.y + self.height as i64).min(height as i64);
        (x1 > x0 && y1 > y0).then(|| {
            (
                x0 as usize,
                y0 as usize,
                (x1 - x0) as usize,
                (y1 - y0) as usize,
            )
        })
    }
}

/// Pixels of a window: `bands` planes of `height` x `width` values (band-major, row-major), and
/// one validity flag per pixel (false where any band is nodata, or outside the raster).
#[derive(Debug, Clone, PartialEq)]
pub struct Pixels {
    pub bands: usize,
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
    pub valid: Vec<bool>,
}

impl Pixels {
    /// All-invalid pixels of the given shape (values 0).
    pub fn invalid(bands: usize, width: usize, height: usize) -> Self {
        Self {
            bands,
            width,
            height,
            data: vec![0.0; bands * width * height],
            valid: vec![false; width * height],
        }
    }

    /// The plane of band `b` (0-based).
    pub fn band(&self, b: usize) -> &[f32] {
        let n = self.width * self.height;
        &self.data[b * n..(b + 1) * n]
    }
}

/// Reads `window` of every data band of an open raster as `f32` (from any integer or float
/// type), with GDAL's mask model deciding validity (see the module documentation): masks,
/// alpha, nodata, NaN, infinities and out-of-raster pixels become `valid = false`. Values are
/// what the pixels mean: each band's GDAL scale and offset applied (`stored x scale + offset`),
/// after validity was decided on the stored values (a declared nodata is a stored value). Only
/// the window is read, never the whole scene.
pub(crate) fn read_window(ds: &Dataset, path: &Path, window: Window) -> Result<Pixels> {
    read_window_with(ds, path, window, NodataRule::Honour, AlphaRule::Mask)
}

/// [`read_window`] with a choice of how declared nodata values count and of what bands marked
/// as alpha are.
pub(crate) fn read_window_with(
    ds: &Dataset,
    path: &Path,
    window: Window,
    rule: NodataRule,
    alpha: AlphaRule,
) -> Result<Pixels> {
    let (rw, rh) = ds.raster_size();
    let layout = BandLayout::of(ds, path, alpha)?;
    let mut out = Pixels::invalid(layout.data.len(), window.width, window.height);
    let Some((cx, cy, cw, ch)) = window.clip(rw, rh) else {
        return Ok(out);
    };
    let region = Region {
        x: cx,
        y: cy,
        width: cw,
        height: ch,
    };
    let (ox, oy) = (
        (cx as i64 - window.x) as usize,
        (cy as i64 - window.y) as usize,
    );
    let mut masks = MaskReader::new(ds, path, region, rule, alpha);
    let mut inside = vec![true; cw * ch];
    let mut buf = vec![0f64; cw * ch];
    let plane = window.width * window.height;
    for (slot, &b) in layout.data.iter().enumerate() {
        let band = ds
            .rasterband(b)
            .with_context(|| format!("{}: cannot read band {b}", path.display()))?;
        band.read_into_slice::<f64>(
            (cx as isize, cy as isize),
            (cw, ch),
            (cw, ch),
            &mut buf,
            None,
        )
        .with_context(|| format!("{}: cannot read band {b} window {window:?}", path.display()))?;
        // Validity (nodata included) is decided on the stored values, before the scale.
        masks.apply_band(&band, b, &buf, &mut inside)?;
        let (scale, offset) = value_scale(&band, path, b)?;
        let dst = &mut out.data[slot * plane..(slot + 1) * plane];
        for r in 0..ch {
            let row = &buf[r * cw..(r + 1) * cw];
            let at = (oy + r) * window.width + ox;
            for (d, &v) in dst[at..at + cw].iter_mut().zip(row) {
                *d = (v * scale + offset) as f32;
            }
        }
    }
    masks.apply_alpha(&layout, &mut inside)?;
    for r in 0..ch {
        for c in 0..cw {
            let ok = inside[r * cw + c];
            let i = (oy + r) * window.width + ox + c;
            out.valid[i] = ok;
            if !ok {
                for b in 0..out.bands {
                    out.data[b * plane + i] = 0.0;
                }
            }
        }
    }
    Ok(out)
}

/// Band `b`'s scale and offset (`GDALGetRasterScale` / `GDALGetRasterOffset`; 1 and 0 where
/// unset): the value a pixel means is `stored x scale + offset`, e.g. an Int16 DSM in
/// centimetres with scale 0.01 means metres.
///
/// # Errors
/// A scale that is 0 or not finite, or an offset that is not finite, naming the file and band.
fn value_scale(band: &RasterBand, path: &Path, b: usize) -> Result<(f64, f64)> {
    let scale = band.scale().unwrap_or(1.0);
    let offset = band.offset().unwrap_or(0.0);
    if !scale.is_finite() || scale == 0.0 || !offset.is_finite() {
        bail!(
            "{}: band {b} declares scale {scale} and offset {offset}; expected a finite, non-zero \
             scale and a finite offset (the value meant is stored x scale + offset). Fix them \
             with gdal_edit.py -scale and -offset",
            path.display()
        );
    }
    Ok((scale, offset))
}

/// Opens `path` and reads a window of it (see [`read_window`]).
pub fn read_window_at(path: &Path, window: Window) -> Result<Pixels> {
    read_window(&open(path)?, path, window)
}

/// Where a raster sits, in each form GDAL reads: an affine geotransform with its CRS (or none: a
/// local grid), and ground control points with theirs. Outputs carry what their grid has.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoRef {
    /// The affine geotransform; `None` for a raster placed by GCPs only.
    pub geo_transform: Option<[f64; 6]>,
    /// The CRS of the geotransform; `None` for a geotransform without CRS.
    pub crs: Option<Crs>,
    /// Ground control points (e.g. SAR in radar geometry); empty when none.
    pub gcps: Vec<Gcp>,
    /// The CRS of the GCPs.
    pub gcp_crs: Option<Crs>,
}

/// A coordinate reference system for writing.
#[derive(Debug, Clone, PartialEq)]
pub enum Crs {
    Epsg(u32),
    Wkt(String),
}

impl Crs {
    /// The CRS as a GDAL spatial reference.
    pub fn spatial_ref(&self) -> Result<SpatialRef> {
        match self {
            Crs::Epsg(code) => {
                SpatialRef::from_epsg(*code).with_context(|| format!("unknown CRS EPSG:{code}"))
            }
            Crs::Wkt(wkt) => SpatialRef::from_wkt(wkt).context("unreadable CRS WKT"),
        }
    }
}

impl GeoRef {
    /// North-up georeferencing: top-left corner (`x0`, `y0`) and square pixels of `pixel` units.
    pub fn north_up(x0: f64, y0: f64, pixel: f64, epsg: u32) -> Self {
        Self {
            geo_transform: Some([x0, pixel, 0.0, y0, 0.0, -pixel]),
            crs: Some(Crs::Epsg(epsg)),
            gcps: Vec::new(),
            gcp_crs: None,
        }
    }

    /// The georeferencing of an existing raster, if it has any (a geotransform or GCPs).
    pub fn of(info: &RasterInfo) -> Option<Self> {
        info.is_georeferenced().then(|| Self {
            geo_transform: info.geo_transform,
            crs: info.crs_wkt.clone().map(Crs::Wkt),
            gcps: info.gcps.clone(),
            gcp_crs: info.gcp_crs_wkt.clone().map(Crs::Wkt),
        })
    }

    /// The CRS of the geotransform as a GDAL spatial reference (`None` without one).
    pub fn spatial_ref(&self) -> Result<Option<SpatialRef>> {
        self.crs.as_ref().map(Crs::spatial_ref).transpose()
    }

    /// Sets this georeferencing on `ds`: geotransform and CRS, GCPs and their CRS.
    pub(crate) fn apply(&self, ds: &mut Dataset) -> Result<()> {
        if let Some(gt) = &self.geo_transform {
            ds.set_geo_transform(gt)?;
        }
        if let Some(srs) = self.spatial_ref()? {
            ds.set_spatial_ref(&srs)?;
        }
        if !self.gcps.is_empty() {
            let srs = match &self.gcp_crs {
                Some(crs) => crs.spatial_ref()?,
                None => SpatialRef::new()?,
            };
            ds.set_gcps(self.gcps.clone(), &srs)?;
        }
        Ok(())
    }
}

/// What to write: `bands` planes of `width` x `height` values (band-major, row-major).
pub struct RasterData<'a, T> {
    pub width: usize,
    pub height: usize,
    pub bands: usize,
    pub data: &'a [T],
}

/// Extras of a GeoTIFF: nodata, a colour table (for class maps, index = class id), band names.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    pub nodata: Option<f64>,
    pub colour_table: Option<Vec<[u8; 3]>>,
    pub band_names: Vec<String>,
}

/// Writes a tiled, DEFLATE-compressed GeoTIFF with geotransform, CRS, nodata and optional colour
/// table, through a temporary sibling and a rename. The bytes depend only on the inputs.
///
/// Errors: a write GDAL or the file system could not complete (a full disk) names `path` and
/// the cause, and leaves the file that was at `path`, or nothing, there.
pub fn write_geotiff<T: GdalType + Copy>(
    path: &Path,
    raster: &RasterData<'_, T>,
    georef: &GeoRef,
    options: &WriteOptions,
) -> Result<()> {
    let RasterData {
        width,
        height,
        bands,
        data,
    } = *raster;
    if data.len() != width * height * bands {
        bail!(
            "{}: {} values given for {bands} band(s) of {width}x{height}",
            path.display(),
            data.len()
        );
    }
    check_options::<T>(path, options)?;
    crate::fsutil::write_atomic_with(path, |tmp| {
        checked(tmp, || write_geotiff_now(tmp, raster, georef, options))
    })
}

fn write_geotiff_now<T: GdalType + Copy>(
    tmp: &Path,
    raster: &RasterData<'_, T>,
    georef: &GeoRef,
    options: &WriteOptions,
) -> Result<()> {
    let RasterData {
        width,
        height,
        bands,
        data,
    } = *raster;
    let mut ds = create_gtiff::<T>(tmp, width, height, bands)?;
    configure(&mut ds, bands, Some(georef), options)?;
    let plane = width * height;
    for b in 0..bands {
        let mut band = ds.rasterband(b + 1)?;
        let mut buffer =
            gdal::raster::Buffer::new((width, height), data[b * plane..(b + 1) * plane].to_vec());
        band.write((0, 0), (width, height), &mut buffer)?;
    }
    close_checked(ds, tmp).with_context(|| format!("GDAL cannot finish {}", tmp.display()))
}

/// A colour table needs an 8- or 16-bit unsigned raster.
pub(crate) fn check_options<T: GdalType>(path: &Path, options: &WriteOptions) -> Result<()> {
    if options.colour_table.is_some()
        && !matches!(T::datatype(), GdalDataType::UInt8 | GdalDataType::UInt16)
    {
        bail!(
            "{}: a colour table needs an 8- or 16-bit unsigned raster",
            path.display()
        );
    }
    Ok(())
}

/// Creates an empty tiled, DEFLATE-compressed GTiff (band-interleaved, BigTIFF when needed).
/// A raster of several bands is `PHOTOMETRIC=MINISBLACK`: GDAL would otherwise write 3 or 4
/// bytes per pixel as RGB(A), and readers would take a fourth band for transparency.
pub(crate) fn create_gtiff<T: GdalType + Copy>(
    path: &Path,
    width: usize,
    height: usize,
    bands: usize,
) -> Result<Dataset> {
    let driver = DriverManager::get_driver_by_name("GTiff").context("GDAL has no GTiff driver")?;
    let block = tile_size(width.max(height));
    let float = matches!(T::datatype(), GdalDataType::Float32 | GdalDataType::Float64);
    let mut create = RasterCreationOptions::new();
    for (key, value) in [
        ("TILED", "YES".to_string()),
        ("BLOCKXSIZE", block.to_string()),
        ("BLOCKYSIZE", block.to_string()),
        ("COMPRESS", "DEFLATE".to_string()),
        ("PREDICTOR", if float { "3" } else { "2" }.to_string()),
        ("INTERLEAVE", "BAND".to_string()),
        ("BIGTIFF", "IF_SAFER".to_string()),
    ] {
        create.add_name_value(key, &value)?;
    }
    if bands > 1 {
        create.add_name_value("PHOTOMETRIC", "MINISBLACK")?;
    }
    driver
        .create_with_band_type_with_options::<T, _>(path, width, height, bands, &create)
        .with_context(|| format!("GDAL cannot create {}", path.display()))
}

/// Sets the georeferencing and, on every band, the nodata value, name and colour table; the
/// bands of a raster of several bands are gray (the first) and undefined (the others), never
/// red, green, blue or alpha.
pub(crate) fn configure(
    ds: &mut Dataset,
    bands: usize,
    georef: Option<&GeoRef>,
    options: &WriteOptions,
) -> Result<()> {
    if let Some(georef) = georef {
        georef.apply(ds)?;
    }
    let table = match &options.colour_table {
        None => None,
        Some(colours) => {
            let mut table = ColorTable::default();
            for (i, [r, g, b]) in colours.iter().enumerate() {
                let index = u16::try_from(i).map_err(|_| anyhow!("colour table too long"))?;
                table.set_color_entry(
                    index,
                    &ColorEntry::rgba(i16::from(*r), i16::from(*g), i16::from(*b), 255),
                );
            }
            Some(table)
        }
    };
    for b in 0..bands {
        let mut band = ds.rasterband(b + 1)?;
        if let Some(nodata) = options.nodata {
            band.set_no_data_value(Some(nodata))?;
        }
        if let Some(name) = options.band_names.get(b) {
            band.set_description(name)?;
        }
        if let Some(table) = &table {
            band.set_color_table(table);
        } else if bands > 1 {
            let interp = if b == 0 {
                ColorInterpretation::GrayIndex
            } else {
                ColorInterpretation::Undefined
            };
            band.set_color_interpretation(interp)?;
        }
    }
    Ok(())
}

/// Copies the GeoTIFF at `src` into a Cloud-Optimized GeoTIFF at `dst` by GDAL's COG driver
/// (GDAL 3.1+), which lays out the tiles, the overviews and the internal mask: tiles of the size
/// [`create_gtiff`] uses (so a raster larger than one tile gets overviews), DEFLATE with the
/// predictor for the data type, overviews computed by `overview_resampling` (a GDAL method name:
/// `MODE`, `AVERAGE`, ...) from `src`'s values under its nodata and mask. GDAL reads `src` by
/// blocks, so memory stays within its block cache whatever the size. The colour table, band
/// descriptions, nodata and georeferencing go into the file; category names into the `.aux.xml`
/// beside `dst`, written when it is closed.
///
/// Errors: GDAL's (no COG driver, a failed read or write), caught with [`checked`] and naming
/// `dst`; a partly written `dst` is left for the caller to remove.
pub(crate) fn copy_as_cog(src: &Path, dst: &Path, overview_resampling: &str) -> Result<()> {
    let driver = DriverManager::get_driver_by_name("COG")
        .context("GDAL has no COG driver (GDAL 3.1 or later is needed for --cog)")?;
    checked(dst, || {
        let source = open(src)?;
        let side = source.raster_size();
        let mut create = RasterCreationOptions::new();
        for (key, value) in [
            ("BLOCKSIZE", tile_size(side.0.max(side.1)).to_string()),
            ("COMPRESS", "DEFLATE".to_string()),
            ("PREDICTOR", "YES".to_string()),
            ("OVERVIEW_RESAMPLING", overview_resampling.to_string()),
            ("BIGTIFF", "IF_SAFER".to_string()),
        ] {
            create.add_name_value(key, &value)?;
        }
        let copy = source
            .create_copy(&driver, dst, &create)
            .with_context(|| format!("GDAL cannot copy {} as a COG", src.display()))?;
        close_checked(copy, dst)
    })
}

/// GeoTIFF tiles must be multiples of 16; 256 for large rasters, smaller for small ones.
fn tile_size(side: usize) -> usize {
    side.div_ceil(16).clamp(1, 16) * 16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn georef() -> GeoRef {
        GeoRef::north_up(500_000.0, 5_000_000.0, 0.5, 32631)
    }

    #[test]
    fn writes_and_reads_back_every_common_type() {
        let dir = tempfile::tempdir().unwrap();
        let (w, h) = (5usize, 4usize);
        let values: Vec<f64> = (0..w * h * 2).map(|i| i as f64).collect();
        fn roundtrip<T: GdalType + Copy>(dir: &Path, name: &str, data: Vec<T>) -> Pixels {
            let path = dir.join(name);
            let raster = RasterData {
                width: 5,
                height: 4,
                bands: 2,
                data: &data,
            };
            write_geotiff(&path, &raster, &georef(), &WriteOptions::default()).unwrap();
            read_window_at(&path, Window::new(0, 0, 5, 4)).unwrap()
        }
        let expect: Vec<f32> = values.iter().map(|&v| v as f32).collect();
        let p = dir.path();
        assert_eq!(
            roundtrip(p, "u8.tif", values.iter().map(|&v| v as u8).collect()).data,
            expect
        );
        assert_eq!(
            roundtrip(p, "u16.tif", values.iter().map(|&v| v as u16).collect()).data,
            expect
        );
        assert_eq!(
            roundtrip(p, "i16.tif", values.iter().map(|&v| v as i16).collect()).data,
            expect
        );
        assert_eq!(
            roundtrip(p, "f32.tif", values.iter().map(|&v| v as f32).collect()).data,
            expect
        );
        let px = roundtrip(p, "f64.tif", values.clone());
        assert_eq!(px.data, expect);
        assert!(px.valid.iter().all(|&v| v));
        let info = RasterInfo::read(&p.join("i16.tif")).unwrap();
        assert_eq!((info.width, info.height, info.bands), (w, h, 2));
        assert_eq!(info.data_type, "Int16");
        assert_eq!(info.epsg(), Some(32631));
        assert_eq!(info.geo_transform, georef().geo_transform);
    }

    #[test]
    fn nodata_nan_and_outside_pixels_are_masked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.tif");
        let mut data = vec![1.0f32; 4 * 4];
        data[0] = -99.0;
        data[5] = f32::NAN;
        let raster = RasterData {
            width: 4,
            height: 4,
            bands: 1,
            data: &data,
        };
        let opts = WriteOptions {
            nodata: Some(-99.0),
            ..Default::default()
        };
        write_geotiff(&path, &raster, &georef(), &opts).unwrap();
        let px = read_window_at(&path, Window::new(-1, 0, 3, 2)).unwrap();
        // Column 0 of the window is outside; (0,0) is nodata; (1,1) is NaN.
        assert_eq!(px.valid, vec![false, false, true, false, true, false]);
        assert_eq!(px.data, vec![0.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
        let far = read_window_at(&path, Window::new(10, 10, 2, 2)).unwrap();
        assert!(far.valid.iter().all(|&v| !v));
    }

    #[test]
    fn float32_nodata_is_compared_in_single_precision() {
        // An in-memory band keeps the declared double as it is (GTiff would round it).
        let mem = DriverManager::get_driver_by_name("MEM").unwrap();
        let ds = mem.create_with_band_type::<f32, _>("", 2, 1, 1).unwrap();
        let mut band = ds.rasterband(1).unwrap();
        band.set_no_data_value(Some(-3.40282346639e+38)).unwrap();
        let mut buf = gdal::raster::Buffer::new((2, 1), vec![f32::MIN, 1.0]);
        band.write((0, 0), (2, 1), &mut buf).unwrap();
        let px = read_window(&ds, Path::new("mem"), Window::new(0, 0, 2, 1)).unwrap();
        assert_eq!(px.valid, vec![false, true]);
    }

    /// A 4 x 1 Int16 GeoTIFF holding `stored`, with the given scale, offset and nodata.
    fn scaled_tiff(
        path: &Path,
        stored: [i16; 4],
        scale: Option<f64>,
        offset: Option<f64>,
        nodata: Option<f64>,
    ) {
        let raster = RasterData {
            width: 4,
            height: 1,
            bands: 1,
            data: &stored,
        };
        let options = WriteOptions {
            nodata,
            ..Default::default()
        };
        write_geotiff(path, &raster, &georef(), &options).unwrap();
        let ds = Dataset::open_ex(
            path,
            gdal::DatasetOptions {
                open_flags: gdal::GdalOpenFlags::GDAL_OF_UPDATE,
                ..Default::default()
            },
        )
        .unwrap();
        let mut band = ds.rasterband(1).unwrap();
        if let Some(scale) = scale {
            band.set_scale(scale).unwrap();
        }
        if let Some(offset) = offset {
            band.set_offset(offset).unwrap();
        }
        ds.close().unwrap();
    }

    #[test]
    fn scale_and_offset_are_applied_after_nodata_is_compared_on_the_stored_value() {
        let dir = tempfile::tempdir().unwrap();
        let read = |name: &str, scale, offset, nodata| {
            let path = dir.path().join(name);
            scaled_tiff(&path, [-12, 4, 8, 100], scale, offset, nodata);
            read_window_at(&path, Window::new(0, 0, 4, 1)).unwrap()
        };
        // An offset alone (e.g. temperatures stored in K - 273.15).
        let px = read("offset.tif", None, Some(100.0), None);
        assert_eq!(px.data, vec![88.0, 104.0, 108.0, 200.0]);
        // Scale and offset: stored x scale + offset.
        let px = read("both.tif", Some(0.5), Some(10.0), None);
        assert_eq!(px.data, vec![4.0, 12.0, 14.0, 60.0]);
        assert!(px.valid.iter().all(|&v| v));
        // Nodata 4 is a stored value: stored 4 is invalid; stored -12 means 4 and is valid.
        let px = read("nodata.tif", Some(0.5), Some(10.0), Some(4.0));
        assert_eq!(px.valid, vec![true, false, true, true]);
        assert_eq!(px.data, vec![4.0, 0.0, 14.0, 60.0]);
        // A centimetre DSM: the same metres as a float file would hold.
        let px = read("cm.tif", Some(0.01), None, None);
        let metres: Vec<f32> = [-12i16, 4, 8, 100]
            .iter()
            .map(|&c| (f64::from(c) * 0.01) as f32)
            .collect();
        assert_eq!(px.data, metres);
    }

    #[test]
    fn a_zero_scale_is_an_error_naming_the_file_and_band() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("zero.tif");
        scaled_tiff(&path, [1, 2, 3, 4], Some(0.0), None, None);
        let err = read_window_at(&path, Window::new(0, 0, 4, 1))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("zero.tif") && err.contains("band 1 declares scale 0"),
            "{err}"
        );
    }

    #[test]
    fn misaligned_rasters_are_named_with_what_differs() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, w: usize, g: GeoRef| {
            let path = dir.path().join(name);
            let data = vec![0u8; w * 4];
            let raster = RasterData {
                width: w,
                height: 4,
                bands: 1,
                data: &data,
            };
            write_geotiff(&path, &raster, &g, &WriteOptions::default()).unwrap();
            RasterInfo::read(&path).unwrap()
        };
        let a = write("a.tif", 4, georef());
        let same = write("same.tif", 4, georef());
        a.check_aligned(&same).unwrap();
        let wide = write("wide.tif", 5, georef());
        let err = a.check_aligned(&wide).unwrap_err().to_string();
        assert!(
            err.contains("a.tif") && err.contains("wide.tif") && err.contains("size 4x4 vs 5x4"),
            "{err}"
        );
        let shifted = write(
            "shifted.tif",
            4,
            GeoRef::north_up(500_010.0, 5_000_000.0, 0.5, 32631),
        );
        let err = a.check_aligned(&shifted).unwrap_err().to_string();
        assert!(
            err.contains("shifted.tif") && err.contains("geotransform"),
            "{err}"
        );
        let other_crs = write(
            "utm32.tif",
            4,
            GeoRef::north_up(500_000.0, 5_000_000.0, 0.5, 32632),
        );
        let err = a.check_aligned(&other_crs).unwrap_err().to_string();
        assert!(
            err.contains("CRS EPSG:32631 vs EPSG:32632") && err.contains("utm32.tif"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_and_bad_buffer_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = RasterInfo::read(&dir.path().join("nope.tif"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("nope.tif") && err.contains("does not exist"),
            "{err}"
        );
        let data = [0u8; 3];
        let raster = RasterData {
            width: 2,
            height: 2,
            bands: 1,
            data: &data,
        };
        let err = write_geotiff(
            &dir.path().join("x.tif"),
            &raster,
            &georef(),
            &WriteOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("3 values given"), "{err}");
    }
}
