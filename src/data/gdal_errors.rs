//! GDAL's errors of a write, caught. GDAL reports a block it could not write (a full disk:
//! "_tiffWriteProc:No space left on device") through its error handler only: the gdal crate
//! passes on the results of `GDALFlushCache` and `GDALClose` with GDAL 3.7 and later, and
//! writes of cached blocks happen inside those calls. [`checked`] runs GDAL work under an error
//! handler of its own that records every failure; [`close_checked`] finishes a written dataset
//! under it. Every GeoTIFF dis2 writes goes through both (`raster::write_geotiff` and predict's
//! `StreamingTiff`); `crate::fsutil` then syncs the file and renames it into place.

use anyhow::{anyhow, Result};
use gdal::Dataset;
use gdal_sys::CPLErr;
use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::io::Write;
use std::path::Path;

/// How many of GDAL's messages an error quotes: the first says why, the rest where.
const SHOWN: usize = 3;

/// Runs `work`, GDAL calls on this thread about the file at `path`, and fails when GDAL raised
/// an error (`CE_Failure` or `CE_Fatal`) meanwhile, even where `work` itself returned `Ok`. The
/// error names `path` and quotes GDAL's messages (with the system's cause, such as "No space left
/// on device"). Warnings are printed as GDAL's default handler prints them.
///
/// GDAL keeps a stack of error handlers per thread: the handler is pushed on the calling thread
/// only and popped when `work` returns (or panics), so GDAL work on other threads (predict's
/// reader) neither reaches it nor is disturbed by it.
pub(crate) fn checked<R>(path: &Path, work: impl FnOnce() -> Result<R>) -> Result<R> {
    let trap = Trap::push();
    let result = work();
    let failures = trap.pop();
    if failures.is_empty() {
        return result;
    }
    let shown = failures.len().min(SHOWN);
    let more = match failures.len() - shown {
        0 => String::new(),
        n => format!(" (and {n} more)"),
    };
    let gdal = anyhow!(
        "GDAL failed writing {}: {}{more}",
        path.display(),
        failures[..shown].join("; ")
    );
    match result {
        Ok(_) => Err(gdal),
        Err(err) => Err(err.context(gdal)),
    }
}

/// Flushes GDAL's cached blocks of `ds` (written at `path`) and closes it, with every error GDAL
/// raises on the way reported ([`checked`]): the one way a written dataset is finished.
pub(crate) fn close_checked(mut ds: Dataset, path: &Path) -> Result<()> {
    checked(path, move || {
        ds.flush_cache()?;
        ds.close()?;
        Ok(())
    })
}

/// Closes `ds` without a word: a half-written file about to be removed (its write failed, or was
/// abandoned), whose further errors say nothing new.
pub(crate) fn discard(ds: Dataset, path: &Path) {
    let _ = checked(path, move || {
        drop(ds);
        Ok(())
    });
}

/// The messages of the failures recorded since the handler was pushed.
type Failures = RefCell<Vec<String>>;

/// A handler on this thread's stack of GDAL error handlers, popped when dropped.
struct Trap {
    /// Boxed: GDAL holds its address as the handler's user data.
    failures: Box<Failures>,
}

impl Trap {
    fn push() -> Self {
        let failures: Box<Failures> = Box::default();
        let data = std::ptr::from_ref::<Failures>(&failures)
            .cast_mut()
            .cast::<c_void>();
        // SAFETY: `record` matches GDAL's handler signature; `data` stays valid until the handler
        // is popped in `drop`, on this thread (the trap is neither sent nor shared: `checked`
        // holds it on its stack). Debug messages stay with the handler below (GDAL's default).
        unsafe {
            gdal_sys::CPLPushErrorHandlerEx(Some(record), data);
            gdal_sys::CPLSetCurrentErrorHandlerCatchDebug(0);
        }
        Self { failures }
    }

    /// Pops the handler and returns what it recorded.
    fn pop(self) -> Vec<String> {
        let failures = self.failures.take();
        drop(self);
        failures
    }
}

impl Drop for Trap {
    fn drop(&mut self) {
        // SAFETY: pops the handler `push` pushed on this thread.
        unsafe { gdal_sys::CPLPopErrorHandler() };
    }
}

/// The handler: failures are recorded for [`checked`], warnings printed as GDAL prints them.
unsafe extern "C" fn record(class: CPLErr::Type, number: c_int, message: *const c_char) {
    let text = if message.is_null() {
        String::new()
    } else {
        // SAFETY: GDAL passes a NUL-terminated message that lives for the call.
        unsafe { CStr::from_ptr(message) }
            .to_string_lossy()
            .into_owned()
    };
    if class == CPLErr::CE_Failure || class == CPLErr::CE_Fatal {
        // SAFETY: the user data of the handler on top of this thread's stack, this handler's:
        // the `Failures` its `Trap` keeps alive until it pops it.
        let failures = unsafe { gdal_sys::CPLGetErrorHandlerUserData() }.cast::<Failures>();
        // SAFETY: see above; `try_borrow_mut` because nothing may panic across the C boundary.
        if let Some(Ok(mut list)) = unsafe { failures.as_ref() }.map(RefCell::try_borrow_mut) {
            // Each tile that fails says the same: once is enough.
            if !list.contains(&text) {
                list.push(text);
            }
        }
    } else if class == CPLErr::CE_Warning {
        let _ = writeln!(std::io::stderr(), "Warning {number}: {text}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::raster::create_gtiff;
    use std::ffi::CString;

    /// Raises `message` through GDAL's `CPLError` on this thread.
    fn raise(class: CPLErr::Type, message: &str) {
        let text = CString::new(message).unwrap();
        // SAFETY: a "%s" format with one NUL-terminated string argument.
        unsafe { gdal_sys::CPLError(class, 1, c"%s".as_ptr(), text.as_ptr()) };
    }

    #[test]
    fn failures_fail_the_work_and_warnings_do_not() {
        let path = Path::new("out.tif");
        let err = checked(path, || {
            raise(CPLErr::CE_Failure, "disk on fire");
            Ok(1)
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("out.tif") && err.contains("disk on fire"),
            "{err}"
        );
        let warned = checked(path, || {
            raise(CPLErr::CE_Warning, "only a warning");
            Ok(2)
        });
        assert_eq!(warned.unwrap(), 2);
        // Popped: a later failure outside `checked` is not recorded by a stale handler.
        raise(
            CPLErr::CE_Failure,
            "after the trap (printed by GDAL, expected)",
        );
        assert_eq!(checked(path, || Ok(3)).unwrap(), 3);
    }

    #[test]
    fn failures_on_other_threads_are_theirs() {
        let path = Path::new("out.tif");
        let result = checked(path, || {
            std::thread::spawn(|| raise(CPLErr::CE_Failure, "another thread (printed, expected)"))
                .join()
                .unwrap();
            Ok(())
        });
        assert!(result.is_ok(), "{result:?}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_full_device_fails_the_close_with_the_cause() {
        // Every write to /dev/full fails with ENOSPC; GDAL 3.6's close returns nothing.
        let full = Path::new("/dev/full");
        let ds = create_gtiff::<u8>(full, 64, 64, 1).unwrap();
        {
            let mut band = ds.rasterband(1).unwrap();
            let mut buffer = gdal::raster::Buffer::new((64, 64), vec![7u8; 64 * 64]);
            band.write((0, 0), (64, 64), &mut buffer).unwrap();
        }
        let err = format!("{:#}", close_checked(ds, full).unwrap_err());
        assert!(
            err.contains("/dev/full") && err.contains("No space left on device"),
            "{err}"
        );
    }
}
