//! How far two sets of class maps agree: the share of pixels with the same class, over the pixels
//! that both maps classify (255, the class maps' nodata, left out). Used to compare bf16 with fp32
//! predictions and CUDA with CPU ones (docs/model.md, "Precision"; scripts/gpu-check.sh).
//!
//! Usage: `class_agreement A B` with A and B two class-map GeoTIFFs, or two folders whose
//! same-named `.tif` files are compared (and summed over).

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use dis2::data::raster::{read_window_at, RasterInfo, Window};

/// The class map's values (band 1), row-major.
fn read_classes(path: &Path) -> Result<Vec<f32>> {
    let info = RasterInfo::read(path)?;
    let px = read_window_at(path, Window::new(0, 0, info.width, info.height))?;
    Ok(px.band(0).to_vec())
}

/// (pixels compared, pixels agreeing) of two class maps of the same size.
fn compare(a: &Path, b: &Path) -> Result<(u64, u64)> {
    let (x, y) = (read_classes(a)?, read_classes(b)?);
    if x.len() != y.len() {
        bail!(
            "{} and {} differ in size ({} and {} pixels)",
            a.display(),
            b.display(),
            x.len(),
            y.len()
        );
    }
    let nodata = f32::from(dis2::predict::NODATA_CLASS);
    let both = x
        .iter()
        .zip(&y)
        .filter(|(p, q)| **p != nodata && **q != nodata);
    let (mut n, mut same) = (0u64, 0u64);
    for (p, q) in both {
        n += 1;
        same += u64::from(p == q);
    }
    Ok((n, same))
}

/// The pairs to compare: the two files, or the same-named `.tif` files of two folders.
fn pairs(a: &Path, b: &Path) -> Result<Vec<(PathBuf, PathBuf)>> {
    if !a.is_dir() {
        return Ok(vec![(a.to_path_buf(), b.to_path_buf())]);
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(a).with_context(|| format!("cannot list {}", a.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tif") {
            let other = b.join(path.file_name().unwrap_or_default());
            if !other.is_file() {
                bail!("{} has no counterpart {}", path.display(), other.display());
            }
            out.push((path, other));
        }
    }
    out.sort();
    if out.is_empty() {
        bail!("no .tif files in {}", a.display());
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [a, b] = &args[..] else {
        bail!("usage: class_agreement A.tif B.tif | class_agreement DIR_A DIR_B");
    };
    let (mut n, mut same) = (0u64, 0u64);
    for (x, y) in pairs(a, b)? {
        let (pn, ps) = compare(&x, &y)?;
        println!(
            "  {}: {:.4} % of {pn} pixels",
            x.file_name().unwrap_or_default().to_string_lossy(),
            100.0 * ps as f64 / pn.max(1) as f64
        );
        n += pn;
        same += ps;
    }
    println!(
        "class agreement: {:.4} % of {n} pixels ({} differ)",
        100.0 * same as f64 / n.max(1) as f64,
        n - same
    );
    Ok(())
}
