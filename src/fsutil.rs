//! Write-then-rename helpers: an interrupted run never leaves a half-written file behind, and a
//! failed write (a full disk) fails the run naming the file and the cause, with the earlier file,
//! or nothing, left at the path. Append-only logs are appended to in whole records, each checked.

use anyhow::{Context, Result};
use std::fs::{File, OpenOptions};
use std::io::Write;
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

/// Calls `write` on a temporary path beside `path`, syncs what it wrote to disk
/// ([`sync_file`]) and renames it over `path`. When `write` or the sync fails, the temporary
/// file is removed and `path` keeps what it held; the error names `path`.
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
    if let Err(err) = write(&tmp).and_then(|()| commit_temp(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(err.context(format!("writing {}", path.display())));
    }
    Ok(())
}

/// Writes `bytes` to `path` through a temporary file and a rename (see [`write_atomic_with`]).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, |tmp| {
        std::fs::write(tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))
    })
}

/// Syncs the finished temporary file `tmp` to disk and renames it to `path`; the temporary file
/// stays where it is when either fails (the caller removes it).
fn commit_temp(tmp: &Path, path: &Path) -> Result<()> {
    sync_file(tmp)?;
    std::fs::rename(tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Syncs the file at `path` to disk (fsync). A file system may accept a write and fail it later
/// (delayed allocation, network and quota-limited file systems report "No space left on device"
/// or "Disk quota exceeded" at the sync or the close): the error names the file and the cause.
pub(crate) fn sync_file(path: &Path) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("cannot write {} to disk", path.display()))
}

/// Appends `bytes` to the log at `path`, created when missing (see [`append_to`]).
pub(crate) fn append(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = open_append(path)?;
    append_to(&mut file, path, bytes)
}

/// Opens the log at `path` for appending (`O_APPEND`, so that [`append_to`] can cut a failed
/// record off), created when missing.
pub(crate) fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {} for appending", path.display()))
}

/// Appends one record, `bytes`, to `file` (opened by [`open_append`] from `path`), checking the
/// write and the flush. On failure the file is cut back to its length before, so the log holds
/// whole records only, and the error names `path` and the cause.
pub(crate) fn append_to(file: &mut File, path: &Path, bytes: &[u8]) -> Result<()> {
    let before = file
        .metadata()
        .with_context(|| format!("cannot read the length of {}", path.display()))?
        .len();
    if let Err(err) = file.write_all(bytes).and_then(|()| file.flush()) {
        let _ = file.set_len(before);
        return Err(err).with_context(|| {
            format!(
                "cannot append {} bytes to {} (left as it was, {before} bytes)",
                bytes.len(),
                path.display()
            )
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// A tmpfs of `size` (mount's syntax: `8k`, `2m`) on a temporary directory, unmounted when
    /// dropped, also when the test fails; `None`, with the reason printed, where this process may
    /// not mount one (not root, no CAP_SYS_ADMIN).
    pub(crate) struct Tmpfs {
        pub(crate) dir: tempfile::TempDir,
    }

    impl Tmpfs {
        pub(crate) fn mount(size: &str) -> Option<Self> {
            let dir = tempfile::tempdir().unwrap();
            let mounted = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path())
                .output();
            match mounted {
                Ok(out) if out.status.success() => Some(Self { dir }),
                Ok(out) => {
                    let why = String::from_utf8_lossy(&out.stderr);
                    eprintln!(
                        "skipped: cannot mount a {size} tmpfs ({}): {why}",
                        out.status
                    );
                    None
                }
                Err(e) => {
                    eprintln!("skipped: cannot run mount: {e}");
                    None
                }
            }
        }

        /// Fills what is left of the file system with a file of zeros.
        fn fill(&self) {
            let mut filler = File::create(self.dir.path().join("filler")).unwrap();
            while filler.write_all(&[0; 4096]).is_ok() {}
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.dir.path())
                .status();
        }
    }

    #[test]
    fn a_full_disk_fails_the_write_and_keeps_the_old_file() {
        let Some(disk) = Tmpfs::mount("16k") else {
            return;
        };
        let path = disk.dir.path().join("results.json");
        write_atomic(&path, b"earlier").unwrap();
        disk.fill();
        let err = format!("{:#}", write_atomic(&path, &[b'x'; 8192]).unwrap_err());
        assert!(
            err.contains("results.json") && err.contains("No space left on device"),
            "{err}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"earlier");
        assert!(!temp_sibling(&path).exists());
    }

    #[test]
    fn a_full_disk_fails_an_append_and_leaves_whole_records() {
        let Some(disk) = Tmpfs::mount("8k") else {
            return;
        };
        let path = disk.dir.path().join("metrics.jsonl");
        let line = format!("{{\"step\": 1, \"loss\": \"{}\"}}\n", "0".repeat(300));
        let mut appended = 0;
        let err = loop {
            match append(&path, line.as_bytes()) {
                Ok(()) => appended += 1,
                Err(err) => break format!("{err:#}"),
            }
            assert!(
                appended < 100,
                "8 KiB hold fewer than 100 lines of 300 bytes"
            );
        };
        assert!(
            err.contains("metrics.jsonl") && err.contains("No space left on device"),
            "{err}"
        );
        assert!(appended > 0);
        // The line that did not fit is cut off again: whole lines only.
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            line.repeat(appended)
        );
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_failed_append_names_the_file_and_the_cause() {
        // /dev/full fails every write with ENOSPC.
        let err = format!(
            "{:#}",
            append(Path::new("/dev/full"), b"line\n").unwrap_err()
        );
        assert!(
            err.contains("/dev/full") && err.contains("No space left on device"),
            "{err}"
        );
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
