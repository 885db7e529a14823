//! GDAL's mask model, read in one place: which bands of a raster hold data, and which pixels of
//! a window are valid (GDAL RFC 15, `GDALGetMaskBand` / `GDALGetMaskFlags`).
//!
//! A pixel of a window is valid when, for every data band:
//! - its value is finite (NaN and infinities are invalid in any raster);
//! - the band's mask says so (mask value not 0). GDAL gives each band the first of: a mask file
//!   (an internal TIFF mask or a `.msk` sidecar, per dataset or per band), the band's declared
//!   nodata (`GMF_NODATA`; per dataset for `NODATA_VALUES`), the alpha band of a 2- or 4-band
//!   raster (`GMF_ALPHA`), or nothing (`GMF_ALL_VALID`);
//! - and it is not the band's declared nodata value, also where a mask file takes the nodata's
//!   place in GDAL's order (dis2 honours both: a pixel any of them marks is invalid). This one
//!   comparison is made on the stored values read (before the band's scale and offset, as GDAL
//!   declares nodata) rather than through GDAL's nodata mask band: it is
//!   the same test without a second read, and it compares in the band's precision (GDAL's mask
//!   treats a Float32 band's -3.40282346639e+38, which some writers declare for f32::MIN, as
//!   matching nothing);
//!
//! and every alpha band of the raster is not 0 there (alpha bands GDAL does not use as the mask,
//! e.g. the fifth band of RGB + NIR + alpha, are applied too). An alpha band is a mask, never a
//! data band: [`BandLayout`] leaves it out of the bands a model reads.
//!
//! Unless the user says it is data ([`AlphaRule::Data`]: `--alpha-as-data`, `data.alpha_as_data`):
//! GDAL and rasterio write a 4-band byte GeoTIFF as RGB + alpha by default, so the NIR band of an
//! RGB + NIR file often comes marked as alpha. Then every band is data and no band is a mask
//! (GDAL's alpha mask included); this is the one place that decides it, for every command.
//!
//! A file on another grid than its scene's is read the same way before it is resampled
//! (`super::warp`): the warper gets this validity as the file's mask and applies no rule of
//! its own, and the grid pixels the file does not cover are invalid.

use anyhow::{bail, Context, Result};
use gdal::raster::{GdalDataType, RasterBand};
use gdal::Dataset;
use std::ffi::CStr;
use std::path::Path;

/// How a read treats the bands' declared nodata values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodataRule {
    /// Pixels holding a band's declared nodata value are invalid (every raster by default).
    #[default]
    Honour,
    /// The declaration is disregarded (labels whose nodata value is also a class, when
    /// `data.label_nodata: class` says so); masks, alpha and NaN still apply.
    Disregard,
}

/// What a band whose colour interpretation is `Alpha` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlphaRule {
    /// A transparency mask (GDAL's mask model): it decides which pixels are valid and is not
    /// read as data.
    #[default]
    Mask,
    /// Data like any other band, and no band is a mask (`--alpha-as-data`,
    /// `data.alpha_as_data: true`): for files whose fourth band (NIR, say) GDAL's or rasterio's
    /// defaults marked as alpha, read without editing them.
    Data,
}

impl AlphaRule {
    /// The rule of `--alpha-as-data` / `data.alpha_as_data`.
    pub(crate) fn data_if(alpha_as_data: bool) -> Self {
        match alpha_as_data {
            true => Self::Data,
            false => Self::Mask,
        }
    }

    /// Where messages about an alpha band send the user: the option and the key that read it as
    /// data.
    pub(crate) const HOW_TO_READ_AS_DATA: &'static str = "--alpha-as-data (dis2 predict, dis2 \
         blocks) or data.alpha_as_data: true in the experiment file (training, stats, eval; \
         also --set data.alpha_as_data=true)";
}

/// The bands of a raster by role, 1-based as in GDAL: data bands in file order, and the alpha
/// bands (colour interpretation `Alpha`), which are masks; with [`AlphaRule::Data`] every band is
/// data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BandLayout {
    pub data: Vec<usize>,
    pub alpha: Vec<usize>,
}

impl BandLayout {
    /// The roles of `ds`'s bands under `rule`; a band of a pixel type dis2 cannot read (complex,
    /// unknown) is an error naming the file, the band and the type.
    pub fn of(ds: &Dataset, path: &Path, rule: AlphaRule) -> Result<Self> {
        let mut layout = Self {
            data: Vec::new(),
            alpha: Vec::new(),
        };
        for b in 1..=ds.raster_count() {
            let band = ds
                .rasterband(b)
                .with_context(|| format!("{}: cannot read band {b}", path.display()))?;
            check_pixel_type(&band, path, b)?;
            if rule == AlphaRule::Mask && is_alpha(&band) {
                layout.alpha.push(b);
            } else {
                layout.data.push(b);
            }
        }
        Ok(layout)
    }
}

/// Refuses complex and unknown pixel types, naming them (SAR often comes as CInt16/CFloat32).
fn check_pixel_type(band: &RasterBand, path: &Path, b: usize) -> Result<()> {
    if !matches!(band.band_type(), GdalDataType::Unknown) {
        return Ok(());
    }
    // SAFETY: the handle belongs to `band`, alive for this call; GDAL returns a static string.
    let name = unsafe {
        let kind = gdal_sys::GDALGetRasterDataType(band.c_rasterband());
        let text = gdal_sys::GDALGetDataTypeName(kind);
        (!text.is_null()).then(|| CStr::from_ptr(text).to_string_lossy().into_owned())
    }
    .unwrap_or_else(|| "unknown".to_string());
    if name.starts_with('C') {
        bail!(
            "{}: band {b} has the complex pixel type {name}; dis2 reads real values. Convert it \
             to amplitude (|z|) or to intensity in dB (10 log10 |z|^2) first, e.g. with \
             gdal_calc.py or a VRT pixel function (mod, intensity, dB)",
            path.display()
        );
    }
    bail!(
        "{}: band {b} has the pixel type {name}, which dis2 does not read (expected an integer \
         or floating-point type)",
        path.display()
    )
}

fn is_alpha(band: &RasterBand) -> bool {
    // SAFETY: the handle belongs to `band`. (The crate's `color_interpretation` panics on
    // interpretations newer than its table, e.g. GDAL 3.10's NIR.)
    let interp = unsafe { gdal_sys::GDALGetRasterColorInterpretation(band.c_rasterband()) };
    interp == gdal_sys::GDALColorInterp::GCI_AlphaBand
}

/// The part of a window inside the raster: column, row, width and height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Region {
    pub(crate) x: usize,
    pub(crate) y: usize,
    pub(crate) width: usize,
    pub(crate) height: usize,
}

/// Validity of one region, band by band: what was applied already.
pub(crate) struct MaskReader<'a> {
    ds: &'a Dataset,
    path: &'a Path,
    region: Region,
    rule: NodataRule,
    alpha: AlphaRule,
    /// The per-dataset mask was applied (it is shared by every band).
    shared_done: bool,
    /// GDAL uses the alpha band as the bands' mask (so it was applied with them).
    alpha_by_gdal: bool,
    buf: Vec<u8>,
}

impl<'a> MaskReader<'a> {
    pub(crate) fn new(
        ds: &'a Dataset,
        path: &'a Path,
        region: Region,
        rule: NodataRule,
        alpha: AlphaRule,
    ) -> Self {
        Self {
            ds,
            path,
            region,
            rule,
            alpha,
            shared_done: false,
            alpha_by_gdal: false,
            buf: vec![0; region.width * region.height],
        }
    }

    /// Clears `valid` (one flag per pixel of the region) where data band `b`, whose stored
    /// values over the region (before scale and offset) are `values`, is invalid: non-finite,
    /// masked, or its declared nodata.
    pub(crate) fn apply_band(
        &mut self,
        band: &RasterBand,
        b: usize,
        values: &[f64],
        valid: &mut [bool],
    ) -> Result<()> {
        for (ok, v) in valid.iter_mut().zip(values) {
            *ok &= v.is_finite();
        }
        let flags = band
            .mask_flags()
            .with_context(|| format!("{}: band {b}: no mask flags", self.path.display()))?;
        let honour = self.rule == NodataRule::Honour;
        if flags.is_nodata() && flags.is_per_dataset() {
            // NODATA_VALUES: a pixel is nodata when every band holds its value; GDAL's mask.
            if honour && !self.shared_done {
                self.apply_mask_of(band, b, valid)?;
                self.shared_done = true;
            }
            return Ok(());
        }
        let alpha_is_data = flags.is_alpha() && self.alpha == AlphaRule::Data;
        if !flags.is_nodata() && !flags.is_all_valid() && !alpha_is_data {
            // A mask file (per dataset or per band) or the alpha band.
            self.alpha_by_gdal |= flags.is_alpha();
            if !(flags.is_per_dataset() && self.shared_done) {
                self.apply_mask_of(band, b, valid)?;
                self.shared_done |= flags.is_per_dataset();
            }
        }
        // The band's own nodata: GDAL's nodata mask is this comparison, done here on the values
        // already read (no second read) and in the band's precision; also where a mask file
        // took the nodata's place in GDAL's order, or where GDAL found the value out of the
        // type's range and reports all valid.
        if honour {
            if let Some(nodata) = band.no_data_value() {
                let float32 = matches!(band.band_type(), GdalDataType::Float32);
                for (ok, &v) in valid.iter_mut().zip(values) {
                    *ok &= !is_nodata(v, nodata, float32);
                }
            }
        }
        Ok(())
    }

    /// Clears `valid` where an alpha band of `layout` that GDAL did not use as the mask is 0.
    pub(crate) fn apply_alpha(&mut self, layout: &BandLayout, valid: &mut [bool]) -> Result<()> {
        if self.alpha_by_gdal {
            return Ok(());
        }
        for &a in &layout.alpha {
            let band = self
                .ds
                .rasterband(a)
                .with_context(|| format!("{}: cannot read band {a}", self.path.display()))?;
            self.read_into_buf(&band, a, "alpha band")?;
            for (ok, &m) in valid.iter_mut().zip(&self.buf) {
                *ok &= m != 0;
            }
        }
        Ok(())
    }

    fn apply_mask_of(&mut self, band: &RasterBand, b: usize, valid: &mut [bool]) -> Result<()> {
        let mask = band
            .open_mask_band()
            .with_context(|| format!("{}: band {b}: cannot open its mask", self.path.display()))?;
        self.read_into_buf(&mask, b, "mask of band")?;
        for (ok, &m) in valid.iter_mut().zip(&self.buf) {
            *ok &= m != 0;
        }
        Ok(())
    }

    /// Reads the region of `band` as bytes into `self.buf` (masks are 0/255, alpha 0..=255;
    /// wider alpha saturates, so 0 stays 0).
    fn read_into_buf(&mut self, band: &RasterBand, b: usize, what: &str) -> Result<()> {
        let Region {
            x,
            y,
            width,
            height,
        } = self.region;
        band.read_into_slice::<u8>(
            (x as isize, y as isize),
            (width, height),
            (width, height),
            &mut self.buf,
            None,
        )
        .with_context(|| {
            format!(
                "{}: cannot read the {what} {b} at column {x}, row {y} ({width}x{height})",
                self.path.display()
            )
        })
    }
}

/// `v` is the declared `nodata`, compared in the band's own precision as GDAL does: a Float32
/// band declaring -3.40282346639e+38 holds f32::MIN, which is not that double.
fn is_nodata(v: f64, nodata: f64, float32: bool) -> bool {
    if nodata.is_nan() {
        return v.is_nan();
    }
    if float32 {
        (v as f32) == (nodata as f32)
    } else {
        v == nodata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::raster::{
        create_gtiff, read_window_at, read_window_with, GeoRef, RasterInfo, Window,
    };
    use gdal::raster::{Buffer, RasterCreationOptions};
    use gdal::{DatasetOptions, DriverManager, GdalOpenFlags};

    /// A `w x h` GTiff of `bands` u8 bands, every value 7, and `extra` creation options.
    fn tiff(path: &Path, bands: usize, extra: &[(&str, &str)]) -> (usize, usize) {
        let (w, h) = (4usize, 2usize);
        let mut options = RasterCreationOptions::new();
        for (k, v) in extra {
            options.add_name_value(k, v).unwrap();
        }
        let driver = DriverManager::get_driver_by_name("GTiff").unwrap();
        let ds = driver
            .create_with_band_type_with_options::<u8, _>(path, w, h, bands, &options)
            .unwrap();
        for b in 1..=bands {
            let mut band = ds.rasterband(b).unwrap();
            let mut buf = Buffer::new((w, h), vec![7u8; w * h]);
            band.write((0, 0), (w, h), &mut buf).unwrap();
        }
        (w, h)
    }

    fn update(path: &Path) -> Dataset {
        Dataset::open_ex(
            path,
            DatasetOptions {
                open_flags: GdalOpenFlags::GDAL_OF_UPDATE | GdalOpenFlags::GDAL_OF_RASTER,
                ..Default::default()
            },
        )
        .unwrap()
    }

    /// Adds a mask (per dataset, or of band `band` only) that is 0 where `keep` is false.
    fn add_mask(path: &Path, per_dataset: bool, band: usize, internal: bool, keep: &[bool]) {
        let ds = update(path);
        let value = if internal { "YES" } else { "NO" };
        gdal::config::set_thread_local_config_option("GDAL_TIFF_INTERNAL_MASK", value).unwrap();
        {
            let mut b = ds.rasterband(band).unwrap();
            b.create_mask_band(per_dataset).unwrap();
            let mut mask = b.open_mask_band().unwrap();
            let (w, h) = ds.raster_size();
            let values: Vec<u8> = keep.iter().map(|&k| if k { 255 } else { 0 }).collect();
            mask.write((0, 0), (w, h), &mut Buffer::new((w, h), values))
                .unwrap();
        }
        ds.close().unwrap();
        gdal::config::clear_thread_local_config_option("GDAL_TIFF_INTERNAL_MASK").unwrap();
    }

    fn flags(path: &Path, band: usize) -> (bool, bool, bool, bool) {
        let ds = Dataset::open(path).unwrap();
        let f = ds.rasterband(band).unwrap().mask_flags().unwrap();
        (
            f.is_all_valid(),
            f.is_per_dataset(),
            f.is_alpha(),
            f.is_nodata(),
        )
    }

    const LEFT_HALF_OUT: [bool; 8] = [false, false, true, true, false, false, true, true];

    #[test]
    fn internal_per_dataset_mask_marks_pixels_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.tif");
        tiff(&path, 2, &[]);
        add_mask(&path, true, 1, true, &LEFT_HALF_OUT);
        assert!(!dir.path().join("m.tif.msk").exists(), "internal");
        assert_eq!(flags(&path, 2), (false, true, false, false));
        let px = read_window_at(&path, Window::new(0, 0, 4, 2)).unwrap();
        assert_eq!(px.valid, LEFT_HALF_OUT);
        assert_eq!(px.band(1), &[0., 0., 7., 7., 0., 0., 7., 7.]);
        // A window past the edge: the outside is invalid, the mask is read at the right place.
        let px = read_window_at(&path, Window::new(1, -1, 3, 2)).unwrap();
        assert_eq!(px.valid, vec![false, false, false, false, true, true]);
    }

    #[test]
    fn msk_sidecar_and_per_band_masks_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = dir.path().join("s.tif");
        tiff(&sidecar, 1, &[]);
        add_mask(&sidecar, true, 1, false, &LEFT_HALF_OUT);
        assert!(dir.path().join("s.tif.msk").exists(), "a .msk sidecar");
        let px = read_window_at(&sidecar, Window::new(0, 0, 4, 2)).unwrap();
        assert_eq!(px.valid, LEFT_HALF_OUT);

        // A mask of band 2 only (GTiff keeps per-band masks in a .msk): a pixel is invalid when
        // any data band is.
        let per_band = dir.path().join("b.tif");
        tiff(&per_band, 2, &[]);
        let keep = [true, true, true, true, true, false, true, true];
        add_mask(&per_band, false, 2, false, &keep);
        assert_eq!(flags(&per_band, 1), (true, false, false, false));
        assert_eq!(flags(&per_band, 2), (false, false, false, false));
        let px = read_window_at(&per_band, Window::new(0, 0, 4, 2)).unwrap();
        assert_eq!(px.valid, keep);
    }

    #[test]
    fn a_mask_file_and_the_declared_nodata_both_count_unless_nodata_is_disregarded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.tif");
        tiff(&path, 1, &[]);
        {
            let ds = update(&path);
            let mut band = ds.rasterband(1).unwrap();
            band.set_no_data_value(Some(9.0)).unwrap();
            let mut buf = Buffer::new((1, 1), vec![9u8]);
            band.write((3, 1), (1, 1), &mut buf).unwrap();
        }
        add_mask(&path, true, 1, true, &LEFT_HALF_OUT);
        let px = read_window_at(&path, Window::new(0, 0, 4, 2)).unwrap();
        assert_eq!(
            px.valid,
            vec![false, false, true, true, false, false, true, false]
        );
        let ds = Dataset::open(&path).unwrap();
        let window = Window::new(0, 0, 4, 2);
        let px =
            read_window_with(&ds, &path, window, NodataRule::Disregard, AlphaRule::Mask).unwrap();
        assert_eq!(px.valid, LEFT_HALF_OUT, "the mask still applies");
        assert_eq!(px.band(0)[7], 9.0);
    }

    #[test]
    fn an_alpha_band_is_a_mask_not_data() {
        let dir = tempfile::tempdir().unwrap();
        // RGB + alpha: GDAL's own mask of bands 1-3 (GMF_ALPHA).
        let rgba = dir.path().join("rgba.tif");
        tiff(&rgba, 4, &[("PHOTOMETRIC", "RGB"), ("ALPHA", "YES")]);
        let alpha = [255u8, 0, 255, 255, 0, 255, 255, 1];
        {
            let ds = update(&rgba);
            let mut band = ds.rasterband(4).unwrap();
            band.write((0, 0), (4, 2), &mut Buffer::new((4, 2), alpha.to_vec()))
                .unwrap();
        }
        assert_eq!(flags(&rgba, 1), (false, true, true, false));
        let info = RasterInfo::read(&rgba).unwrap();
        assert_eq!((info.bands, info.alpha_bands.clone()), (3, vec![4]));
        let px = read_window_at(&rgba, Window::new(0, 0, 4, 2)).unwrap();
        assert_eq!(px.bands, 3);
        let expected: Vec<bool> = alpha.iter().map(|&a| a != 0).collect();
        assert_eq!(px.valid, expected);
        info.check_bands(3, "modality optical").unwrap();
        let err = info
            .check_bands(4, "modality optical")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("rgba.tif")
                && err.contains("band 4 of 4 is an alpha band")
                && err.contains("gdal_edit.py -colorinterp_4 undefined"),
            "{err}"
        );

        // RGB + NIR + alpha: GDAL uses no mask for 5 bands; dis2 applies the alpha itself.
        let five = dir.path().join("five.tif");
        tiff(&five, 5, &[("PHOTOMETRIC", "RGB")]);
        {
            let ds = update(&five);
            let mut band = ds.rasterband(5).unwrap();
            band.set_color_interpretation(gdal::raster::ColorInterpretation::AlphaBand)
                .unwrap();
            band.write((0, 0), (4, 2), &mut Buffer::new((4, 2), alpha.to_vec()))
                .unwrap();
        }
        assert!(flags(&five, 1).0, "GDAL: all valid");
        let info = RasterInfo::read(&five).unwrap();
        assert_eq!((info.bands, info.alpha_bands), (4, vec![5]));
        let px = read_window_at(&five, Window::new(0, 0, 4, 2)).unwrap();
        assert_eq!((px.bands, px.valid.clone()), (4, expected));
    }

    #[test]
    fn written_multiband_rasters_are_gray_and_undefined_never_rgba() {
        let dir = tempfile::tempdir().unwrap();
        for bands in [3, 4] {
            let path = dir.path().join(format!("p{bands}.tif"));
            let mut ds = create_gtiff::<u8>(&path, 4, 2, bands).unwrap();
            let georef = GeoRef::north_up(0.0, 0.0, 1.0, 32631);
            crate::data::raster::configure(&mut ds, bands, Some(&georef), &Default::default())
                .unwrap();
            ds.close().unwrap();
            let info = RasterInfo::read(&path).unwrap();
            assert_eq!((info.bands, info.alpha_bands.len()), (bands, 0));
            let ds = Dataset::open(&path).unwrap();
            let interp: Vec<String> = (1..=bands)
                .map(|b| ds.rasterband(b).unwrap().color_interpretation().name())
                .collect();
            let mut expected = vec!["Gray".to_string()];
            expected.resize(bands, "Undefined".to_string());
            assert_eq!(interp, expected);
        }
    }

    #[test]
    fn complex_pixels_are_named_with_the_hint_to_convert() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slc.tif");
        tiff(&dir.path().join("src.tif"), 1, &[]);
        let made = std::process::Command::new("gdal_translate")
            .args(["-q", "-ot", "CInt16"])
            .arg(dir.path().join("src.tif"))
            .arg(&path)
            .status();
        if !matches!(made, Ok(s) if s.success()) {
            eprintln!("skipped: gdal_translate is not available");
            return;
        }
        let err = RasterInfo::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("slc.tif")
                && err.contains("band 1 has the complex pixel type CInt16")
                && err.contains("amplitude")
                && err.contains("dB"),
            "{err}"
        );
    }
}
