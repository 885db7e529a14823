//! Write-then-rename helpers: an interrupted run never leaves a half-written file behind.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The temporary sibling that `path` is written to before the rename: same directory, so the
/// rename stays on one file system and is atomic.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Removes the temporary siblings of `path` (`.NAME.tmp-PID...`) that processes which are gone
/// left behind (a killed run); those of running processes are kept. Best effort: what cannot be
/// listed or removed is left.
pub(crate) fn remove_stale_temps(path: &Path) {
    let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return;
    };
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&prefix) else {
            continue;
        };
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let Ok(pid) = digits.parse::<u32>() else {
            continue;
        };
        if pid != std::process::id() && !process_alive(pid) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Whether process `pid` exists (signal 0 checks without sending anything).
#[cfg(unix)]
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Elsewhere no temporary is taken for stale.
#[cfg(not(unix))]
fn process_alive(_pid: u32) -> bool {
    true
}

/// Calls `write` on a temporary path beside `path`, then renames it over `path`. The temporary
/// file is removed when `write` fails.
pub(crate) fn write_atomic_with<F>(path: &Path, write: F) -> Result<()>
where
    F: FnOnce(&Path) -> Result<()>,
{
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create directory {}", dir.display()))?;
    }
    remove_stale_temps(path);
    let tmp = temp_sibling(path);
    if let Err(err) = write(&tmp) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err.context(format!("writing {}", path.display())));
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        std::fs::write(tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    #[cfg(unix)]
    fn temporaries_of_dead_processes_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("classes.tif");
        // A process id that is not running: a child that has exited and been waited for.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = dir.path().join(format!(".classes.tif.tmp-{dead}"));
        let live = dir.path().join(format!(
            ".classes.tif.tmp-{}",
            std::os::unix::process::parent_id()
        ));
        let other = dir.path().join(format!(".other.tif.tmp-{dead}"));
        for p in [&stale, &live, &other] {
            std::fs::write(p, b"x").unwrap();
        }
        write_atomic(&path, b"new").unwrap();
        assert!(!stale.exists(), "left by a process that is gone");
        assert!(live.exists() && other.exists());
    }

    #[test]
    fn failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.txt");
        write_atomic(&path, b"good").unwrap();
        let err = write_atomic_with(&path, |tmp| {
            std::fs::write(tmp, b"half")?;
            anyhow::bail!("interrupted")
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"good");
        assert!(!temp_sibling(&path).exists());
    }
}
