//! TensorBoard event files, written record by record with each append checked (a record that
//! cannot be written whole, on a full disk, is cut off again and fails the run naming the file
//! and the cause), and a reader that checks what was written (record framing with its masked
//! CRC-32C, then the `Event` protocol buffers). `tensorboard-rs` builds the summaries and frames
//! each record (`RecordWriter` into memory, its `masked_crc32c`); its file writer is not used
//! because it panics on a failed write, on a thread of its own.

use anyhow::{bail, Context, Result};
use protobuf::Message;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};
use tensorboard_proto::event::Event;
use tensorboard_proto::summary::Summary;
use tensorboard_rs::masked_crc32c::masked_crc32c;
use tensorboard_rs::record_writer::RecordWriter;
use tensorboard_rs::summary;

/// Scalars and images of one run, under `<run>/tensorboard`.
pub(crate) struct RunLog {
    /// `None`: a log that writes nothing ([`RunLog::disabled`]).
    events: Option<EventFile>,
}

impl RunLog {
    /// Opens a new event file in `dir` (created if needed). A resumed run adds a second file to
    /// the same directory; TensorBoard reads them as one run.
    pub(crate) fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create TensorBoard directory {}", dir.display()))?;
        let mut events = EventFile::create(dir)?;
        let mut version = Event::new();
        version.set_wall_time(wall_time());
        version.set_file_version("brain.Event:2".to_string());
        events.append(&version)?;
        Ok(Self {
            events: Some(events),
        })
    }

    /// A log that writes nothing: the other ranks of a data-parallel run (rank 0 writes).
    pub(crate) fn disabled() -> Self {
        Self { events: None }
    }

    pub(crate) fn scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<()> {
        self.summary(summary::scalar(tag, value as f32), step)
    }

    /// An RGB image, `rgb` holding `height * width * 3` bytes row by row.
    pub fn image(
        &mut self,
        tag: &str,
        rgb: &[u8],
        height: usize,
        width: usize,
        step: u64,
    ) -> Result<()> {
        if rgb.len() != height * width * 3 || height == 0 || width == 0 {
            bail!(
                "image {tag:?}: {} bytes for {height}x{width} RGB",
                rgb.len()
            );
        }
        if self.events.is_none() {
            return Ok(());
        }
        // tensorboard-rs builds its PNG as `RgbImage::new(dim[1], dim[2])`, i.e. (width, height),
        // so the dimensions go in as [3, width, height] for row-major RGB bytes.
        self.summary(summary::image(tag, rgb, &[3, width, height]), step)
    }

    /// Syncs the event file to disk: a write the file system failed late fails here.
    pub(crate) fn flush(&mut self) -> Result<()> {
        match &self.events {
            Some(events) => crate::fsutil::sync_file(&events.path),
            None => Ok(()),
        }
    }

    fn summary(&mut self, summary: Summary, step: u64) -> Result<()> {
        let Some(events) = &mut self.events else {
            return Ok(());
        };
        let mut event = Event::new();
        event.set_wall_time(wall_time());
        event.set_step(step as i64);
        event.set_summary(summary);
        events.append(&event)
    }
}

/// One event file, appended to record by record.
struct EventFile {
    path: PathBuf,
    file: File,
}

impl EventFile {
    /// A new file named as TensorBoard's writers name them,
    /// `events.out.tfevents.SECONDS.HOST.PID.N`, N the first free number.
    fn create(dir: &Path) -> Result<Self> {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let stem = format!(
            "events.out.tfevents.{seconds:010}.{}.{}",
            hostname(),
            std::process::id()
        );
        for n in 0.. {
            let path = dir.join(format!("{stem}.{n}"));
            match std::fs::OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => return Ok(Self { path, file }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create TensorBoard event file {}", path.display())
                    })
                }
            }
        }
        unreachable!("an unbounded range ends only by returning")
    }

    /// Appends `event` as one TFRecord (framed by `tensorboard-rs`'s `RecordWriter` in memory),
    /// checked ([`crate::fsutil::append_to`]).
    fn append(&mut self, event: &Event) -> Result<()> {
        let data = event
            .write_to_bytes()
            .context("cannot encode a TensorBoard event")?;
        let mut record = Vec::with_capacity(data.len() + 16);
        RecordWriter::new(&mut record)
            .write(&data)
            .context("cannot frame a TensorBoard record")?;
        crate::fsutil::append_to(&mut self.file, &self.path, &record)
    }
}

/// Seconds since 1970 as TensorBoard's events carry them.
fn wall_time() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name, as event file names carry it (`localhost` when it cannot be read).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into the buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match rc == 0 && end > 0 {
        true => String::from_utf8_lossy(&buf[..end]).into_owned(),
        false => "localhost".to_string(),
    }
}

/// One value read back from an event file.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Scalar {
        tag: String,
        step: i64,
        value: f32,
    },
    /// An image with the PNG bytes it holds.
    Image {
        tag: String,
        step: i64,
        png: Vec<u8>,
    },
}

/// Reads every event file in `dir` (sorted by name) and returns the scalars and images in order.
/// Fails on a bad length or data checksum, a truncated record or an undecodable event.
pub fn read_records(dir: &Path) -> Result<Vec<Record>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("events.out.tfevents."))
        })
        .collect();
    files.sort();
    let mut records = Vec::new();
    for file in files {
        let bytes =
            std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        for payload in split_records(&bytes).with_context(|| format!("in {}", file.display()))? {
            let event = Event::parse_from_bytes(payload)
                .with_context(|| format!("undecodable event in {}", file.display()))?;
            if !event.has_summary() {
                continue;
            }
            for value in event.get_summary().get_value() {
                let tag = value.get_tag().to_string();
                let step = event.get_step();
                if value.has_simple_value() {
                    records.push(Record::Scalar {
                        tag,
                        step,
                        value: value.get_simple_value(),
                    });
                } else if value.has_image() {
                    let png = value.get_image().get_encoded_image_string().to_vec();
                    records.push(Record::Image { tag, step, png });
                }
            }
        }
    }
    Ok(records)
}

/// Splits TFRecord framing: u64 length, masked CRC of the length, data, masked CRC of the data.
pub(crate) fn split_records(mut bytes: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < 12 {
            bail!("truncated record header ({} bytes left)", bytes.len());
        }
        let len_bytes = &bytes[..8];
        let len = u64::from_le_bytes(len_bytes.try_into()?) as usize;
        let len_crc = u32::from_le_bytes(bytes[8..12].try_into()?);
        if len_crc != masked_crc32c(len_bytes) {
            bail!("bad length checksum");
        }
        let rest = &bytes[12..];
        if rest.len() < len + 4 {
            bail!(
                "truncated record: {len} bytes announced, {} left",
                rest.len().saturating_sub(4)
            );
        }
        let data = &rest[..len];
        let data_crc = u32::from_le_bytes(rest[len..len + 4].try_into()?);
        if data_crc != masked_crc32c(data) {
            bail!("bad data checksum");
        }
        out.push(data);
        bytes = &rest[len + 4..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answer() {
        // CRC-32C of "123456789" is 0xE3069283 (RFC 3720 check value).
        let crc = masked_crc32c(b"123456789")
            .wrapping_sub(0xa282_ead8)
            .rotate_left(15);
        assert_eq!(crc, 0xE306_9283);
    }

    #[test]
    fn scalars_and_images_read_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = RunLog::create(dir.path()).unwrap();
            log.scalar("loss/total", 1.5, 1).unwrap();
            log.scalar("loss/total", 0.25, 2).unwrap();
            log.scalar("lr", 0.01, 2).unwrap();
            let (h, w) = (2, 3);
            let rgb: Vec<u8> = (0..h * w * 3).map(|i| i as u8 * 10).collect();
            log.image("pred", &rgb, h, w, 2).unwrap();
            assert!(log.image("bad", &rgb, 5, 5, 2).is_err());
            log.flush().unwrap();
        }
        let records = read_records(dir.path()).unwrap();
        let scalars: Vec<_> = records
            .iter()
            .filter_map(|r| match r {
                Record::Scalar { tag, step, value } => Some((tag.as_str(), *step, *value)),
                _ => None,
            })
            .collect();
        assert_eq!(
            scalars,
            vec![
                ("loss/total", 1, 1.5),
                ("loss/total", 2, 0.25),
                ("lr", 2, 0.01)
            ]
        );
        let png = records.iter().find_map(|r| match r {
            Record::Image { png, .. } => Some(png.clone()),
            _ => None,
        });
        let img = image::load_from_memory(&png.expect("an image record"))
            .unwrap()
            .to_rgb8();
        assert_eq!((img.height(), img.width()), (2, 3));
        assert_eq!(img.get_pixel(1, 0).0, [30, 40, 50]);
    }

    #[test]
    fn a_full_disk_fails_the_log_and_leaves_whole_records() {
        let Some(disk) = crate::fsutil::tests::Tmpfs::mount("8k") else {
            return;
        };
        let mut log = RunLog::create(disk.dir.path()).unwrap();
        let mut logged = 0u64;
        let err = loop {
            match log.scalar("loss/total", 0.5, logged) {
                Ok(()) => logged += 1,
                Err(err) => break format!("{err:#}"),
            }
            assert!(logged < 10_000, "8 KiB hold fewer than 10 000 scalars");
        };
        assert!(
            err.contains("events.out.tfevents.") && err.contains("No space left on device"),
            "{err}"
        );
        // The record that did not fit is cut off again: every one before it reads back.
        let steps: Vec<i64> = read_records(disk.dir.path())
            .unwrap()
            .into_iter()
            .map(|r| match r {
                Record::Scalar { step, .. } => step,
                Record::Image { .. } => unreachable!("only scalars were logged"),
            })
            .collect();
        assert_eq!(steps, (0..logged as i64).collect::<Vec<_>>());
    }

    #[test]
    fn corrupt_files_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = RunLog::create(dir.path()).unwrap();
            log.scalar("x", 1.0, 1).unwrap();
        }
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let err = format!("{:#}", read_records(dir.path()).unwrap_err());
        assert!(err.contains("checksum"), "{err}");
    }
}
