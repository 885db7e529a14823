//! Raster paths as GDAL takes them: paths of the file system, and of GDAL's virtual file systems
//! (`/vsizip/`, `/vsitar/`, `/vsigzip/`, `/vsicurl/`, `/vsis3/`, `/vsigs/`, `/vsiaz/`, ...; GDAL's
//! "GDAL Virtual File Systems" page).
//!
//! Every raster path goes to GDAL as it is written: dis2 never asks the operating system whether
//! a raster exists before GDAL opens it ([`super::raster::open`] says what GDAL found). What the
//! dataset layouts need besides (whether a file or folder is there, a folder's listing) is asked
//! of GDAL's virtual file layer (`VSIStatExL`, `VSIReadDir`) for a virtual path, and of the file
//! system for any other, so a layout's root may be a folder inside an archive or a bucket.
//!
//! Relative paths: GDAL resolves the archive of `/vsizip/a.zip/x.tif` against the working
//! directory, as the file system resolves `a.tif`; messages say which directory that was, and a
//! scene list resolves both against its own folder ([`resolve`]).

use anyhow::{Context, Result};
use std::ffi::CString;
use std::path::{Path, PathBuf};

/// The handlers whose path names a file of the file system (or another virtual path) followed by
/// a member: `/vsizip/ARCHIVE/MEMBER`, `/vsigzip/FILE`.
const ARCHIVE_HANDLERS: [&str; 5] = ["/vsizip/", "/vsitar/", "/vsigzip/", "/vsi7z/", "/vsirar/"];

/// `path` is one of GDAL's virtual file systems (it starts with `/vsi`).
pub(crate) fn is_virtual(path: &Path) -> bool {
    path.to_str().is_some_and(|p| p.starts_with("/vsi"))
}

/// The handler prefix and the relative file-system path after it, for an archive path whose
/// archive is given relative to the working directory (`/vsizip/` and `a/b.zip/x.tif`); `None`
/// for anything else (absolute archives `/vsizip//data/b.zip/...`, chained handlers, the
/// `{...}` form, network handlers, plain paths).
fn relative_archive(path: &Path) -> Option<(&'static str, &str)> {
    let text = path.to_str()?;
    let handler = ARCHIVE_HANDLERS.iter().find(|h| text.starts_with(**h))?;
    let rest = &text[handler.len()..];
    let chained = rest
        .strip_prefix("vsi")
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(name, _)| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    let relative = !rest.is_empty() && !rest.starts_with(['/', '{']) && !chained;
    relative.then_some((*handler, rest))
}

/// `path` as written in a file in the folder `base`: a relative path is joined to `base`, also the
/// archive of a virtual archive path (`/vsizip/a.zip/x.tif` becomes `/vsizip/BASE/a.zip/x.tif`);
/// absolute and network paths are kept as they are.
pub(crate) fn resolve(base: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if let Some((handler, rest)) = relative_archive(p) {
        let inner = base.join(rest);
        let joiner = if inner.is_absolute() { "/" } else { "" };
        return PathBuf::from(format!("{handler}{joiner}{}", inner.display()));
    }
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// For messages about a path that was not found: where a relative path was looked for (dis2 and
/// GDAL resolve relative paths, also the archive of `/vsizip/a.zip/x.tif`, against the directory
/// dis2 runs in); empty for absolute and network paths.
pub(crate) fn resolved_against(path: &Path) -> String {
    let relative = match is_virtual(path) {
        true => relative_archive(path).is_some(),
        false => !path.is_absolute(),
    };
    if !relative {
        return String::new();
    }
    let cwd = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| "(unknown)".to_string());
    format!(" (relative paths are resolved against the current directory {cwd})")
}

/// What is at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nature {
    File,
    Folder,
    Other,
}

/// What GDAL's virtual file layer finds at `path` (following links); `None`: nothing.
fn stat_virtual(path: &Path) -> Option<Nature> {
    const EXISTS: i32 = 0x1;
    const NATURE: i32 = 0x2;
    let c_path = CString::new(path.to_str()?).ok()?;
    // SAFETY: VSIStatBufL is the platform's `struct stat64`, which libc declares; the buffer
    // outlives the call, which fills it and keeps no pointer to it or to the path.
    let (status, mode) = unsafe {
        let mut buf: libc::stat64 = std::mem::zeroed();
        let status = gdal_sys::VSIStatExL(
            c_path.as_ptr(),
            (&mut buf as *mut libc::stat64).cast(),
            EXISTS | NATURE,
        );
        (status, buf.st_mode)
    };
    if status != 0 {
        return None;
    }
    Some(match mode & libc::S_IFMT {
        libc::S_IFDIR => Nature::Folder,
        libc::S_IFREG => Nature::File,
        _ => Nature::Other,
    })
}

/// A file (not a folder) is at `path`, as GDAL would find it: through GDAL's virtual file layer
/// for a virtual path, the file system otherwise.
pub(crate) fn is_file(path: &Path) -> bool {
    match is_virtual(path) {
        true => stat_virtual(path) == Some(Nature::File),
        false => path.is_file(),
    }
}

/// A folder is at `path` (see [`is_file`]).
pub(crate) fn is_dir(path: &Path) -> bool {
    match is_virtual(path) {
        true => stat_virtual(path) == Some(Nature::Folder),
        false => path.is_dir(),
    }
}

/// Anything is at `path` (see [`is_file`]).
pub(crate) fn exists(path: &Path) -> bool {
    match is_virtual(path) {
        true => stat_virtual(path).is_some(),
        false => path.exists(),
    }
}

/// A local path names nothing: the file system's answer, for the message of a file GDAL could
/// not open; always false for a virtual path (GDAL's own message says what it found).
pub(crate) fn is_missing_local(path: &Path) -> bool {
    !is_virtual(path) && !path.exists()
}

/// The entries of the folder `dir` (files and folders, hidden ones included), as paths under
/// `dir`, in no particular order: GDAL's `VSIReadDir` for a virtual folder, the file system's
/// listing otherwise.
///
/// # Errors
/// A folder that cannot be listed, naming it.
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    if !is_virtual(dir) {
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list folder {}", dir.display()))?;
        return entries
            .map(|e| {
                e.map(|e| e.path())
                    .with_context(|| format!("cannot list folder {}", dir.display()))
            })
            .collect();
    }
    // GDAL answers an empty folder, and one it cannot list, with no list at all.
    let names = gdal::vsi::read_dir(dir, false).unwrap_or_default();
    if names.is_empty() && !is_dir(dir) {
        anyhow::bail!("cannot list folder {}", dir.display());
    }
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_archives_resolve_against_the_base_and_others_stay() {
        let base = Path::new("/lists");
        assert_eq!(resolve(base, "a.tif"), PathBuf::from("/lists/a.tif"));
        assert_eq!(resolve(base, "/data/a.tif"), PathBuf::from("/data/a.tif"));
        assert_eq!(
            resolve(base, "/vsizip/opt.zip/optical.tif"),
            PathBuf::from("/vsizip//lists/opt.zip/optical.tif")
        );
        assert_eq!(
            resolve(Path::new("rel"), "/vsigzip/d.tif.gz"),
            PathBuf::from("/vsigzip/rel/d.tif.gz")
        );
        for kept in [
            "/vsizip//data/opt.zip/optical.tif",
            "/vsizip//vsicurl/https://example.org/a.zip/b.tif",
            "/vsizip/vsicurl/https://example.org/a.zip/b.tif",
            "/vsizip/{/data/a.zip}/b.tif",
            "/vsis3/bucket/key.tif",
            "/vsicurl/https://example.org/a.tif",
        ] {
            assert_eq!(resolve(base, kept), PathBuf::from(kept), "{kept}");
        }
        assert_eq!(
            resolve(base, "/vsizip/vsi_data.zip/b.tif"),
            PathBuf::from("/vsizip//lists/vsi_data.zip/b.tif")
        );
        assert!(resolved_against(Path::new("/vsizip/a.zip/b.tif")).contains("current directory"));
        assert!(resolved_against(Path::new("a.tif")).contains("current directory"));
        for absolute in ["/vsizip//d/a.zip/b.tif", "/vsis3/bucket/b.tif", "/d/a.tif"] {
            assert_eq!(resolved_against(Path::new(absolute)), "", "{absolute}");
        }
    }

    #[test]
    fn files_and_folders_in_an_archive_are_found_through_gdal() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let zip_path = dir.path().join("d.zip");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&zip_path).unwrap());
        let options = zip::write::FileOptions::default();
        zip.start_file("sub/a.tif", options).unwrap();
        zip.write_all(b"abc").unwrap();
        zip.finish().unwrap();
        let root = format!("/vsizip/{}", zip_path.display());
        let member = PathBuf::from(format!("{root}/sub/a.tif"));
        let folder = PathBuf::from(format!("{root}/sub"));
        assert!(is_virtual(&member) && !is_virtual(&zip_path));
        assert!(is_file(&member) && exists(&member) && !is_dir(&member));
        assert!(is_dir(&folder) && !is_file(&folder));
        assert_eq!(read_dir(&folder).unwrap(), vec![member.clone()]);
        let none = PathBuf::from(format!("{root}/none.tif"));
        assert!(!exists(&none) && !is_missing_local(&none));
        assert!(read_dir(&PathBuf::from(format!("{root}/none"))).is_err());
        assert!(is_file(&zip_path) && !is_missing_local(&zip_path));
        assert!(is_missing_local(&dir.path().join("none.tif")));
    }
}
