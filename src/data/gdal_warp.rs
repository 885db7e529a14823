//! Safe wrappers of the two GDAL C functions dis2 needs that the gdal crate (0.19) does not bind:
//! the warper as `gdalwarp` runs it (`GDALWarp`, into an existing dataset) and GDAL's
//! pixel-to-pixel transformer (`GDALCreateGenImgProjTransformer2`). All unsafe code for them is
//! in this file; [`super::grid`] decides what to warp and how.

use anyhow::{bail, Result};
use gdal::Dataset;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::ptr::{null, null_mut};

/// GDAL's last error message on this thread, or a placeholder when it left none.
fn last_error() -> String {
    // SAFETY: CPLGetLastErrorMsg returns a pointer to a thread-local, NUL-terminated string
    // (never null), valid until the next GDAL call on this thread; it is copied at once.
    let msg = unsafe { CStr::from_ptr(gdal_sys::CPLGetLastErrorMsg()) };
    let text = msg.to_string_lossy().trim().to_string();
    if text.is_empty() {
        "GDAL gave no reason".to_string()
    } else {
        text
    }
}

/// Warps `src` into `dst` with GDAL's warper, as `gdalwarp [args] src dst` does when `dst`
/// exists: `dst`'s size, geotransform, CRS and band nodata define the output grid; `src`'s
/// per-dataset mask marks the pixels it does not give (dis2 hands it validity decided by
/// [`super::validity`]). `args` are gdalwarp's options (e.g. `["-r", "bilinear"]`). Pixels of
/// `dst` that `src` does not reach keep their values.
///
/// # Errors
/// Options GDAL refuses, or a failed warp, with GDAL's message.
pub(crate) fn warp_into(src: &Dataset, dst: &Dataset, args: &[&str]) -> Result<()> {
    let owned: Vec<CString> = args
        .iter()
        .map(|a| CString::new(*a))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*mut c_char> = owned.iter().map(|a| a.as_ptr() as *mut c_char).collect();
    argv.push(null_mut());
    // SAFETY: argv is a NULL-terminated array of NUL-terminated strings that outlive the call;
    // GDALWarpAppOptionsNew copies what it keeps.
    let options = unsafe { gdal_sys::GDALWarpAppOptionsNew(argv.as_mut_ptr(), null_mut()) };
    if options.is_null() {
        bail!("GDAL refuses the warp options {args:?}: {}", last_error());
    }
    let mut sources = [src.c_dataset()];
    let mut usage_error: c_int = 0;
    // SAFETY: both handles are open datasets owned by the callers for the whole call; GDALWarp
    // neither closes nor keeps them, and returns `dst`'s handle (not a new dataset) on success.
    let out = unsafe {
        gdal_sys::CPLErrorReset();
        gdal_sys::GDALWarp(
            null(),
            dst.c_dataset(),
            1,
            sources.as_mut_ptr(),
            options,
            &mut usage_error,
        )
    };
    let failed = out.is_null().then(last_error);
    // SAFETY: `options` came from GDALWarpAppOptionsNew and is freed once.
    unsafe { gdal_sys::GDALWarpAppOptionsFree(options) };
    match failed {
        Some(reason) => bail!("GDAL's warper failed: {reason}"),
        None => Ok(()),
    }
}

/// GDAL's transformer from the pixels of one dataset to the pixels of another, through
/// whatever georeferencing each has (geotransform, GCPs; CRSs reprojected when both declare one),
/// as the warper uses it.
pub(crate) struct PixelTransformer {
    arg: *mut c_void,
}

impl PixelTransformer {
    /// The transformer from `src`'s pixels to `dst`'s.
    ///
    /// # Errors
    /// When GDAL cannot relate the two (e.g. a dataset without any georeferencing).
    pub(crate) fn new(src: &Dataset, dst: &Dataset) -> Result<Self> {
        // SAFETY: both handles are open datasets; the transformer copies what it needs from
        // them (geotransforms, GCPs, CRSs) and does not keep the handles.
        let arg = unsafe {
            gdal_sys::CPLErrorReset();
            gdal_sys::GDALCreateGenImgProjTransformer2(src.c_dataset(), dst.c_dataset(), null_mut())
        };
        if arg.is_null() {
            bail!("{}", last_error());
        }
        Ok(Self { arg })
    }

    /// Transforms `points` (column, row) of the source into the destination's pixel space, in
    /// place; `false` where GDAL could not transform a point.
    pub(crate) fn src_to_dst(&self, points: &mut [(f64, f64)]) -> Vec<bool> {
        self.transform(points, false)
    }

    /// Transforms `points` (column, row) of the destination into the source's pixel space, in
    /// place; `false` where GDAL could not transform a point.
    pub(crate) fn dst_to_src(&self, points: &mut [(f64, f64)]) -> Vec<bool> {
        self.transform(points, true)
    }

    fn transform(&self, points: &mut [(f64, f64)], dst_to_src: bool) -> Vec<bool> {
        let n = points.len();
        let mut x: Vec<f64> = points.iter().map(|p| p.0).collect();
        let mut y: Vec<f64> = points.iter().map(|p| p.1).collect();
        let mut z = vec![0.0f64; n];
        let mut ok = vec![0 as c_int; n];
        // SAFETY: `arg` is a live transformer; the four arrays hold `n` elements each.
        unsafe {
            gdal_sys::GDALGenImgProjTransform(
                self.arg,
                c_int::from(dst_to_src),
                n as c_int,
                x.as_mut_ptr(),
                y.as_mut_ptr(),
                z.as_mut_ptr(),
                ok.as_mut_ptr(),
            );
        }
        for (p, (&px, &py)) in points.iter_mut().zip(x.iter().zip(&y)) {
            *p = (px, py);
        }
        ok.iter().map(|&s| s != 0).collect()
    }
}

impl Drop for PixelTransformer {
    fn drop(&mut self) {
        // SAFETY: `arg` came from GDALCreateGenImgProjTransformer2 and is destroyed once.
        unsafe { gdal_sys::GDALDestroyGenImgProjTransformer(self.arg) };
    }
}
