//! A GeoTIFF written by row bands: created as a tiled, DEFLATE-compressed file under a temporary
//! name beside its destination, filled band of rows by band of rows as prediction finishes them,
//! closed ([`StreamingTiff::close`]) and renamed into place ([`Closed::commit`]). Dropped
//! before the rename, the temporary file is removed, so an interrupted run leaves nothing
//! half-written.
//!
//! Every GDAL call runs under [`gdal_errors::checked`], on the thread that makes it (predict
//! writes on its blending thread): a block GDAL could not write (a full disk) fails the call that
//! wrote it, or [`StreamingTiff::close`], naming the file and the cause. `close` flushes and
//! closes the dataset and syncs the file to disk; only then can it be renamed, so that a scene's
//! outputs are all closed before any is renamed.
//!
//! GDAL keeps partly written tiles in its block cache until they are complete, so memory stays at
//! about one row of tiles (256 rows x width) per band, whatever the raster's height.
//!
//! A temporary file left by a run that was killed (its process is gone) is removed when the same
//! destination is written again ([`crate::fsutil::remove_stale_temps`]).
//!
//! With `--cog` ([`Layout::cog`]), `close` then copies the streamed file into a Cloud-Optimized
//! GeoTIFF by GDAL's COG driver (a second temporary, `.NAME.tmp-PID.cog`), with overviews
//! computed as each output's [`Values`] ask, and removes the streamed one: the one place where
//! any raster output becomes a COG. GDAL reads the streamed file by blocks, so memory stays
//! within its block cache.

use anyhow::{anyhow, bail, Context, Result};
use gdal::raster::{Buffer, GdalType};
use gdal::Dataset;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use crate::data::gdal_errors::{self, checked};
use crate::data::raster::{
    check_options, configure, copy_as_cog, create_gtiff, GeoRef, WriteOptions,
};
use crate::fsutil::temp_sibling;

/// What a raster output's values are, declared where the output is created: it decides how its
/// overviews are computed when it is written as a COG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Values {
    /// Categories (class ids, route codes): an overview pixel is the most frequent valid value
    /// of the pixels it covers (GDAL's `MODE`), always one of the categories; a mean would be
    /// another category, and one pixel picked (`NEAREST`) breaks areas into noise.
    Categorical,
    /// Quantities (probabilities, confidences): the mean of the valid pixels it covers
    /// (`AVERAGE`).
    Continuous,
}

impl Values {
    /// GDAL's name of the overview resampling.
    fn overview_resampling(self) -> &'static str {
        match self {
            Self::Categorical => "MODE",
            Self::Continuous => "AVERAGE",
        }
    }
}

/// How a raster output is written: a tiled GeoTIFF, or with `cog` (`--cog`) a Cloud-Optimized
/// GeoTIFF whose overviews suit its `values`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) values: Values,
    pub(crate) cog: bool,
}

/// An open GeoTIFF being written by rows (see the module documentation).
pub(crate) struct StreamingTiff<T: GdalType + Copy> {
    ds: Option<Dataset>,
    tmp: PathBuf,
    path: PathBuf,
    width: usize,
    height: usize,
    bands: usize,
    /// The file has an internal per-dataset mask ([`Self::create_masked`]).
    masked: bool,
    layout: Layout,
    _type: PhantomData<T>,
}

impl<T: GdalType + Copy> StreamingTiff<T> {
    /// Creates the temporary file for a `width` x `height` raster of `bands` bands, finished as
    /// `layout` says.
    pub(crate) fn create(
        path: &Path,
        (width, height): (usize, usize),
        bands: usize,
        georef: Option<&GeoRef>,
        options: &WriteOptions,
        layout: Layout,
    ) -> Result<Self> {
        if width == 0 || height == 0 || bands == 0 {
            bail!(
                "{}: cannot write an empty raster ({width}x{height}, {bands} band(s))",
                path.display()
            );
        }
        check_options::<T>(path, options)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        crate::fsutil::remove_stale_temps(path);
        let tmp = temp_sibling(path);
        let mut ds = checked(&tmp, || create_gtiff::<T>(&tmp, width, height, bands))?;
        let mut out = Self {
            ds: None,
            tmp,
            path: path.to_path_buf(),
            width,
            height,
            bands,
            masked: false,
            layout,
            _type: PhantomData,
        };
        // From here on, a failure removes the temporary file (Drop).
        let setup = checked(&out.tmp, || configure(&mut ds, bands, georef, options));
        out.ds = Some(ds);
        setup.with_context(|| format!("cannot set up {}", out.tmp.display()))?;
        Ok(out)
    }

    /// [`Self::create`] with an internal per-dataset mask (GDAL's `GMF_PER_DATASET`), written
    /// with [`Self::write_mask_rows`]: how a raster without a spare value (u8 probabilities)
    /// says where it has no data.
    pub(crate) fn create_masked(
        path: &Path,
        size: (usize, usize),
        bands: usize,
        georef: Option<&GeoRef>,
        options: &WriteOptions,
        layout: Layout,
    ) -> Result<Self> {
        let mut out = Self::create(path, size, bands, georef, options, layout)?;
        let ds = out
            .ds
            .as_ref()
            .ok_or_else(|| anyhow!("{}: not open", out.tmp.display()))?;
        gdal::config::set_thread_local_config_option("GDAL_TIFF_INTERNAL_MASK", "YES")?;
        let made = checked(&out.tmp, || {
            Ok(ds
                .rasterband(1)
                .and_then(|mut band| band.create_mask_band(true))?)
        });
        gdal::config::clear_thread_local_config_option("GDAL_TIFF_INTERNAL_MASK")?;
        made.with_context(|| format!("cannot add a mask to {}", out.tmp.display()))?;
        out.masked = true;
        Ok(out)
    }

    /// Names band 1's values (`names[v]` for value `v`: GDAL's category names, which GIS tools
    /// show in place of the value). GeoTIFF keeps them in the `.aux.xml` file beside it, written
    /// when the file is closed and renamed with it.
    pub(crate) fn set_category_names(&mut self, names: &[String]) -> Result<()> {
        let ds = self
            .ds
            .as_ref()
            .ok_or_else(|| anyhow!("{}: already finished", self.path.display()))?;
        let owned = (names.iter())
            .map(|n| std::ffi::CString::new(n.as_str()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut list: Vec<*mut std::ffi::c_char> =
            owned.iter().map(|n| n.as_ptr().cast_mut()).collect();
        list.push(std::ptr::null_mut());
        checked(&self.tmp, || {
            let band = ds.rasterband(1)?;
            // SAFETY: the band is open for writing; GDAL copies the null-terminated list of
            // C strings, which outlive the call.
            let err = unsafe {
                gdal_sys::GDALSetRasterCategoryNames(band.c_rasterband(), list.as_mut_ptr())
            };
            if err != gdal_sys::CPLErr::CE_None {
                bail!("GDAL refused the category names");
            }
            Ok(())
        })
        .with_context(|| format!("cannot name the values of {}", self.path.display()))
    }

    /// Writes `rows` full-width rows of the mask from `first_row` (255 where `valid`, else 0).
    pub(crate) fn write_mask_rows(
        &mut self,
        first_row: usize,
        rows: usize,
        valid: &[bool],
    ) -> Result<()> {
        if !self.masked || first_row + rows > self.height || valid.len() != rows * self.width {
            bail!(
                "{}: cannot write {} mask values as rows {first_row}..{} (mask: {})",
                self.path.display(),
                valid.len(),
                first_row + rows,
                self.masked
            );
        }
        let ds = self
            .ds
            .as_ref()
            .ok_or_else(|| anyhow!("{}: already finished", self.path.display()))?;
        let values: Vec<u8> = valid.iter().map(|&ok| if ok { 255 } else { 0 }).collect();
        let mut buffer = Buffer::new((self.width, rows), values);
        checked(&self.tmp, || {
            let band = ds.rasterband(1)?;
            let mut mask = band.open_mask_band()?;
            Ok(mask.write((0, first_row as isize), (self.width, rows), &mut buffer)?)
        })
        .with_context(|| format!("cannot write the mask of {}", self.path.display()))
    }

    /// Writes `rows` full-width rows starting at `first_row` of band `band` (0-based); `data` is
    /// `rows x width`, row-major.
    pub(crate) fn write_rows(
        &mut self,
        band: usize,
        first_row: usize,
        rows: usize,
        data: &[T],
    ) -> Result<()> {
        if band >= self.bands || first_row + rows > self.height || data.len() != rows * self.width {
            bail!(
                "{}: cannot write {} values as rows {first_row}..{} of band {} ({}x{}, {} band(s))",
                self.path.display(),
                data.len(),
                first_row + rows,
                band + 1,
                self.width,
                self.height,
                self.bands
            );
        }
        if rows == 0 {
            return Ok(());
        }
        let ds = self
            .ds
            .as_ref()
            .ok_or_else(|| anyhow!("{}: already finished", self.path.display()))?;
        let mut buffer = Buffer::new((self.width, rows), data.to_vec());
        checked(&self.tmp, || {
            let mut raster = ds.rasterband(band + 1)?;
            Ok(raster.write((0, first_row as isize), (self.width, rows), &mut buffer)?)
        })
        .with_context(|| {
            format!(
                "cannot write rows {first_row}..{} of {}",
                first_row + rows,
                self.path.display()
            )
        })
    }

    /// Flushes and closes the file, copies it into a COG when its [`Layout`] says so, and syncs
    /// the result to disk, ready for [`Closed::commit`]. On failure (a full disk) the temporary
    /// files are removed and the destination keeps what it held; the error names the
    /// destination and the cause.
    pub(crate) fn close(mut self) -> Result<Closed> {
        let ds = self
            .ds
            .take()
            .ok_or_else(|| anyhow!("{}: already finished", self.path.display()))?;
        // From here on, a failure removes the temporary file (Closed's Drop).
        let closed = Closed {
            tmp: self.tmp.clone(),
            path: self.path.clone(),
            renamed: false,
        };
        gdal_errors::close_checked(ds, &self.tmp)
            .with_context(|| format!("cannot finish {}", self.path.display()))?;
        let closed = match self.layout.cog {
            true => closed.into_cog(self.layout.values)?,
            false => closed,
        };
        crate::fsutil::sync_file(&closed.tmp)
            .with_context(|| format!("cannot finish {}", self.path.display()))?;
        Ok(closed)
    }
}

/// A GeoTIFF written, closed and synced under its temporary name; dropped before
/// [`Closed::commit`], it is removed.
pub(crate) struct Closed {
    tmp: PathBuf,
    path: PathBuf,
    renamed: bool,
}

/// GDAL's sidecar of `path` (`path.aux.xml`), where GeoTIFF keeps category names.
fn aux_xml(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".aux.xml");
    PathBuf::from(name)
}

impl Closed {
    /// This file copied into a Cloud-Optimized GeoTIFF ([`copy_as_cog`]) under a second
    /// temporary name, overviews computed as `values` ask; this one is removed, also on failure.
    fn into_cog(self, values: Values) -> Result<Closed> {
        let mut name = self.tmp.as_os_str().to_owned();
        name.push(".cog");
        let cog = Closed {
            tmp: PathBuf::from(name),
            path: self.path.clone(),
            renamed: false,
        };
        // From here on, a failure removes both temporaries (their Drop).
        copy_as_cog(&self.tmp, &cog.tmp, values.overview_resampling())
            .with_context(|| format!("cannot write {} as a COG", self.path.display()))?;
        Ok(cog)
    }

    /// Renames the file to its destination, with the `.aux.xml` sidecar GDAL wrote beside it if
    /// any; a sidecar of an earlier file at the destination is removed when this one has none
    /// (its category names would otherwise be read as this file's).
    pub(crate) fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                self.tmp.display(),
                self.path.display()
            )
        })?;
        self.renamed = true;
        let (aux, stale) = (aux_xml(&self.tmp), aux_xml(&self.path));
        if aux.exists() {
            std::fs::rename(&aux, &stale).with_context(|| {
                format!(
                    "cannot rename {} beside {}",
                    aux.display(),
                    self.path.display()
                )
            })?;
        } else if let Err(e) = std::fs::remove_file(&stale) {
            if e.kind() != std::io::ErrorKind::NotFound {
                return Err(e).with_context(|| {
                    format!("cannot remove the earlier sidecar {}", stale.display())
                });
            }
        }
        Ok(())
    }
}

impl Drop for Closed {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.tmp);
        }
        let _ = std::fs::remove_file(aux_xml(&self.tmp));
    }
}

impl<T: GdalType + Copy> Drop for StreamingTiff<T> {
    fn drop(&mut self) {
        if let Some(ds) = self.ds.take() {
            gdal_errors::discard(ds, &self.tmp);
            let _ = std::fs::remove_file(&self.tmp);
            let _ = std::fs::remove_file(aux_xml(&self.tmp));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::raster::{open, read_window, Window};

    const PLAIN: Layout = Layout {
        values: Values::Categorical,
        cog: false,
    };

    #[test]
    fn rows_written_in_bands_read_back_with_colours_and_georef() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tif");
        let georef = GeoRef::north_up(500_000.0, 5_000_000.0, 0.5, 32631);
        let opts = WriteOptions {
            nodata: Some(255.0),
            colour_table: Some(vec![[1, 2, 3], [4, 5, 6]]),
            band_names: vec!["class".into()],
        };
        let (w, h) = (37usize, 300usize);
        let mut tiff =
            StreamingTiff::<u8>::create(&path, (w, h), 1, Some(&georef), &opts, PLAIN).unwrap();
        let all: Vec<u8> = (0..w * h).map(|i| (i % 2) as u8).collect();
        for first in (0..h).step_by(48) {
            let rows = 48.min(h - first);
            tiff.write_rows(0, first, rows, &all[first * w..(first + rows) * w])
                .unwrap();
        }
        let closed = tiff.close().unwrap();
        assert!(
            !path.exists(),
            "nothing at the destination before the rename"
        );
        closed.commit().unwrap();
        let ds = open(&path).unwrap();
        let band = ds.rasterband(1).unwrap();
        assert_eq!(band.no_data_value(), Some(255.0));
        let entry = band.color_table().unwrap().entry_as_rgb(1).unwrap();
        assert_eq!((entry.r, entry.g, entry.b), (4, 5, 6));
        assert_eq!(Some(ds.geo_transform().unwrap()), georef.geo_transform);
        let px = read_window(&ds, &path, Window::new(0, 0, w, h)).unwrap();
        let back: Vec<u8> = px.data.iter().map(|&v| v as u8).collect();
        assert_eq!(back, all);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn unfinished_files_are_removed_and_bad_rows_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.tif");
        let mut tiff =
            StreamingTiff::<f32>::create(&path, (4, 4), 2, None, &WriteOptions::default(), PLAIN)
                .unwrap();
        let err = tiff.write_rows(2, 0, 1, &[0.0; 4]).unwrap_err().to_string();
        assert!(err.contains("p.tif") && err.contains("band 3"), "{err}");
        assert!(tiff.write_rows(0, 3, 2, &[0.0; 8]).is_err());
        drop(tiff);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_cog_that_cannot_be_written_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tif");
        let layout = Layout {
            values: Values::Categorical,
            cog: true,
        };
        let opts = WriteOptions::default();
        let mut tiff =
            StreamingTiff::<u8>::create(&path, (300, 300), 1, None, &opts, layout).unwrap();
        tiff.write_rows(0, 0, 300, &[1; 300 * 300]).unwrap();
        // A folder where the COG's temporary file goes: GDAL cannot create the file.
        let mut blocker = temp_sibling(&path).into_os_string();
        blocker.push(".cog");
        std::fs::create_dir(&blocker).unwrap();
        let err = format!("{:#}", tiff.close().err().unwrap());
        assert!(err.contains("c.tif") && err.contains("as a COG"), "{err}");
        std::fs::remove_dir(&blocker).unwrap();
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_sidecar_of_an_earlier_file_does_not_survive_a_rewrite() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tif");
        let write = |names: &[String]| {
            let opts = WriteOptions::default();
            let mut tiff =
                StreamingTiff::<u8>::create(&path, (4, 4), 1, None, &opts, PLAIN).unwrap();
            if !names.is_empty() {
                tiff.set_category_names(names).unwrap();
            }
            tiff.write_rows(0, 0, 4, &[0; 16]).unwrap();
            tiff.close().unwrap().commit().unwrap();
        };
        write(&["water".to_string()]);
        let sidecar = aux_xml(&path);
        assert!(std::fs::read_to_string(&sidecar).unwrap().contains("water"));
        write(&[]);
        assert!(!sidecar.exists(), "the earlier category names are gone");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
