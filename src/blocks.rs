//! `dis2 blocks`: turns one co-registered scene (a modality per sensor, possibly several
//! acquisitions, and a label raster) into train/val/test splits of spatial blocks, in the folder
//! layout of the generic dataset (docs/data.md).
//!
//! The scene is cut into a `rows x columns` grid of blocks; block `(r, c)` goes to
//! `[test, val, train, train][(r + c) mod 4]`, so every grid row and column holds test,
//! validation and training blocks (a quarter, a quarter and a half of the scene) and no test pixel
//! is in a training file: a network trained on the training blocks has never seen a test pixel,
//! not even as context. Each acquisition of a block is a scene of its split (the modalities with
//! a single file, such as a DEM, are shared by every acquisition):
//!
//! ```text
//! OUT/{train,val,test}/<modality>/r<R>c<C>[_t<D>].tif   float32, NaN where the input is invalid
//! OUT/{train,val,test}/label/r<R>c<C>[_t<D>].tif        uint16 codes as read (65535: no data)
//! OUT/blocks.json                                        the grid, each block's split, label counts
//! ```
//!
//! Every block keeps its georeferencing (the geotransform moved to its corner, the CRS). The
//! blocks are cut on the label raster's grid: a modality file on another grid is resampled onto
//! it as every command does ([`crate::data::grid`]; refused with `--strict-grid`). A modality file
//! with a band marked as alpha is refused unless the request says what that band is
//! ([`AlphaRule`]: `--alpha-as-data` or `--alpha-as-mask`), so no band is dropped unsaid.

use anyhow::{bail, Context, Result};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::data::config::GridConfig;
use crate::data::grid::{self, GridFile, GridKeys, GridSource};
use crate::data::layouts::Split;
use crate::data::raster::{
    read_window_at, GeoRef, Pixels, RasterData, RasterInfo, Window, WriteOptions,
};
use crate::data::validity::AlphaRule;

/// Label value written where the label raster has no data.
pub(crate) const LABEL_NODATA: u16 = u16::MAX;

/// What `dis2 blocks` asks for.
#[derive(Debug, Clone)]
pub(crate) struct BlocksRequest {
    /// Per modality (model name), its files: one per acquisition, or one shared by all.
    pub modalities: Vec<(String, Vec<PathBuf>)>,
    /// The label raster (integer codes).
    pub labels: PathBuf,
    /// Grid rows and columns.
    pub grid: (usize, usize),
    pub out: PathBuf,
    /// What the modalities' bands marked as alpha are; `None`: not said, and a modality file
    /// with such a band is refused.
    pub alpha: Option<AlphaRule>,
    /// Refuse modality files off the labels' grid instead of resampling them (`--strict-grid`).
    pub strict_grid: bool,
}

/// One block of the grid: its pixel window in the scene and its split.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Block {
    pub row: usize,
    pub col: usize,
    pub window: Window,
    pub split: Split,
}

/// What `dis2 blocks` wrote.
#[derive(Debug, Clone)]
pub(crate) struct BlocksReport {
    pub blocks: Vec<Block>,
    /// Acquisitions per block (scenes per block in each split).
    pub acquisitions: usize,
    /// Per split, label code -> pixels (one acquisition's worth).
    pub label_counts: BTreeMap<String, BTreeMap<i64, u64>>,
}

/// The split of block `(row, col)`: `[test, val, train, train][(row + col) mod 4]`.
pub(crate) fn block_split(row: usize, col: usize) -> Split {
    match (row + col) % 4 {
        0 => Split::Test,
        1 => Split::Val,
        _ => Split::Train,
    }
}

/// The blocks of a `width x height` scene cut into a `rows x cols` grid (block edges at
/// `floor(i * size / n)`).
///
/// # Errors
/// A grid with a split left empty (fewer than 2 x 2 blocks), or blocks under 8 pixels.
pub(crate) fn grid_blocks(
    width: usize,
    height: usize,
    rows: usize,
    cols: usize,
) -> Result<Vec<Block>> {
    if rows == 0 || cols == 0 || height / rows < 8 || width / cols < 8 {
        bail!(
            "--grid {rows}x{cols}: blocks of a {width}x{height} scene must be at least 8 pixels \
             on each side"
        );
    }
    let edge = |i: usize, size: usize, n: usize| i * size / n;
    let mut blocks = Vec::new();
    for r in 0..rows {
        for c in 0..cols {
            let (x0, x1) = (edge(c, width, cols), edge(c + 1, width, cols));
            let (y0, y1) = (edge(r, height, rows), edge(r + 1, height, rows));
            blocks.push(Block {
                row: r,
                col: c,
                window: Window::new(x0 as i64, y0 as i64, x1 - x0, y1 - y0),
                split: block_split(r, c),
            });
        }
    }
    for split in Split::ALL {
        if !blocks.iter().any(|b| b.split == split) {
            bail!(
                "--grid {rows}x{cols}: no {} block; use at least 2 x 2 blocks (4 x 4 gives each \
                 grid row and column one test and one validation block)",
                split.as_str()
            );
        }
    }
    Ok(blocks)
}

/// Cuts the scene of `req` into blocks and writes the splits (see the module documentation).
///
/// # Errors
/// Inputs that cannot be placed on the labels' grid (see [`grid::plan`]) or labels without
/// georeferencing, a modality file with an alpha band when [`BlocksRequest::alpha`] is `None`, a
/// modality whose file count is neither 1 nor the acquisition count, label values that are not
/// integer codes below 65535, an output folder holding something else, unwritable outputs.
pub(crate) fn split_blocks(req: &BlocksRequest) -> Result<BlocksReport> {
    let labels_info = RasterInfo::read(&req.labels)?;
    let (acquisitions, sources) = place_inputs(req, &labels_info)?;
    let georef = GeoRef::of(&labels_info).with_context(|| {
        format!(
            "{}: no georeferencing (geotransform or GCPs); the blocks would lose their place",
            req.labels.display()
        )
    })?;
    let (rows, cols) = req.grid;
    let blocks = grid_blocks(labels_info.width, labels_info.height, rows, cols)?;
    prepare_out(&req.out)?;
    let full = Window::new(0, 0, labels_info.width, labels_info.height);
    for (name, files) in &sources {
        for (d, source) in files.iter().enumerate() {
            let pixels = source.read(full)?;
            // A single file serves every acquisition.
            let dates: Vec<usize> = if files.len() == 1 {
                (0..acquisitions).collect()
            } else {
                vec![d]
            };
            for block in &blocks {
                let cut = cut_f32(&pixels, block.window);
                for &date in &dates {
                    let path = block_path(&req.out, block, name, date, acquisitions);
                    write_block(&path, &cut, block, &georef)?;
                }
            }
        }
    }
    let labels = read_window_at(&req.labels, full)?;
    let label_counts = write_labels(req, &labels, &blocks, acquisitions, &georef)?;
    let report = BlocksReport {
        blocks,
        acquisitions,
        label_counts,
    };
    write_manifest(req, &report)?;
    Ok(report)
}

/// Each modality's files (by name) as read on the labels' grid.
type ModalitySources = Vec<(String, Vec<GridSource>)>;

/// Checks the inputs and places every modality file on the labels' grid (resampled when it is
/// on another); returns the acquisition count and each modality's files as read on that grid.
fn place_inputs(req: &BlocksRequest, labels: &RasterInfo) -> Result<(usize, ModalitySources)> {
    if req.modalities.is_empty() {
        bail!("--modality: give at least one, e.g. --modality optical=a.tif");
    }
    let acquisitions = req
        .modalities
        .iter()
        .map(|(_, f)| f.len())
        .max()
        .unwrap_or(1);
    let config = GridConfig {
        strict: req.strict_grid,
        ..GridConfig::default()
    };
    let reference = GridFile {
        role: "--labels".to_string(),
        key: "labels".to_string(),
        header: labels.clone(),
        categorical: true,
    };
    let mut sources = Vec::with_capacity(req.modalities.len());
    for (name, files) in &req.modalities {
        if files.is_empty() || (files.len() != 1 && files.len() != acquisitions) {
            bail!(
                "--modality {name}: {} file(s); give one per acquisition ({acquisitions}) or one \
                 shared by all",
                files.len()
            );
        }
        let mut placed = Vec::with_capacity(files.len());
        for file in files {
            let header = modality_header(name, file, req.alpha)?;
            let grid_file = GridFile {
                role: format!("--modality {name}"),
                key: name.clone(),
                header,
                categorical: false,
            };
            let plan = grid::plan(
                &[reference.clone(), grid_file],
                0,
                &config,
                &GridKeys::BLOCKS,
            )?;
            grid::announce(&plan.notes);
            placed.extend(plan.sources.into_iter().skip(1));
        }
        sources.push((name.clone(), placed));
    }
    Ok((acquisitions, sources))
}

/// The header of a modality file; one with a band marked as alpha is refused when `alpha` does
/// not say what that band is.
fn modality_header(name: &str, file: &Path, alpha: Option<AlphaRule>) -> Result<RasterInfo> {
    let header = RasterInfo::read_with(file, alpha.unwrap_or_default())
        .with_context(|| format!("--modality {name}"))?;
    if let (None, Some(&band)) = (alpha, header.alpha_bands.first()) {
        bail!(
            "--modality {name}: {}: band {band} of {} is marked as alpha, which dis2 reads as a \
             transparency mask, not as data: the blocks of {name} would have {} band(s). GDAL and \
             rasterio mark the fourth band of a 4-band byte file as alpha by default. Say what it \
             is: --alpha-as-data (it holds data, say NIR: every band goes into the blocks, as \
             data) or --alpha-as-mask (it is transparency: NaN in the blocks where it is 0)",
            file.display(),
            header.bands + header.alpha_bands.len(),
            header.bands
        );
    }
    Ok(header)
}

/// Creates `out`, or empties the split folders of an earlier `dis2 blocks` run there.
fn prepare_out(out: &Path) -> Result<()> {
    let ours = out.join("blocks.json").is_file();
    for split in Split::ALL {
        let dir = out.join(split.as_str());
        if dir.exists() {
            if !ours {
                bail!(
                    "{} exists and is not from `dis2 blocks` (no blocks.json beside it); pick \
                     another --out",
                    dir.display()
                );
            }
            std::fs::remove_dir_all(&dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))
}

/// `OUT/<split>/<folder>/r<R>c<C>[_t<D>].tif`.
fn block_path(out: &Path, block: &Block, folder: &str, date: usize, dates: usize) -> PathBuf {
    let stem = if dates > 1 {
        format!("r{}c{}_t{date}", block.row, block.col)
    } else {
        format!("r{}c{}", block.row, block.col)
    };
    out.join(block.split.as_str())
        .join(folder)
        .join(format!("{stem}.tif"))
}

/// The block's pixels, band-major, NaN where invalid.
fn cut_f32(pixels: &Pixels, w: Window) -> Vec<f32> {
    let (x0, y0) = (w.x as usize, w.y as usize);
    let mut out = Vec::with_capacity(pixels.bands * w.width * w.height);
    for b in 0..pixels.bands {
        let plane = pixels.band(b);
        for y in y0..y0 + w.height {
            for x in x0..x0 + w.width {
                let i = y * pixels.width + x;
                out.push(if pixels.valid[i] { plane[i] } else { f32::NAN });
            }
        }
    }
    out
}

/// The georeferencing of a block: the scene's geotransform moved to the block's corner, its GCPs
/// moved to the block's pixel and line coordinates (a GCP outside the block still places it).
fn block_georef(scene: &GeoRef, w: Window) -> GeoRef {
    let (c, r) = (w.x as f64, w.y as f64);
    let geo_transform = scene.geo_transform.map(|g| {
        [
            g[0] + c * g[1] + r * g[2],
            g[1],
            g[2],
            g[3] + c * g[4] + r * g[5],
            g[4],
            g[5],
        ]
    });
    let gcps = scene
        .gcps
        .iter()
        .map(|p| gdal::Gcp {
            pixel: p.pixel - c,
            line: p.line - r,
            ..p.clone()
        })
        .collect();
    GeoRef {
        geo_transform,
        crs: scene.crs.clone(),
        gcps,
        gcp_crs: scene.gcp_crs.clone(),
    }
}

fn write_block(path: &Path, data: &[f32], block: &Block, scene: &GeoRef) -> Result<()> {
    let w = block.window;
    let raster = RasterData {
        width: w.width,
        height: w.height,
        bands: data.len() / (w.width * w.height),
        data,
    };
    let georef = block_georef(scene, w);
    crate::data::raster::write_geotiff(path, &raster, &georef, &WriteOptions::default())
}

/// Writes every block's labels (uint16 codes) for every acquisition; returns the label counts
/// per split.
fn write_labels(
    req: &BlocksRequest,
    labels: &Pixels,
    blocks: &[Block],
    acquisitions: usize,
    scene: &GeoRef,
) -> Result<BTreeMap<String, BTreeMap<i64, u64>>> {
    let any_invalid = labels.valid.iter().any(|v| !v);
    let mut counts: BTreeMap<String, BTreeMap<i64, u64>> = BTreeMap::new();
    for block in blocks {
        let codes = label_codes(req, labels, block.window)?;
        let split = counts.entry(block.split.as_str().to_string()).or_default();
        for &c in codes.iter().filter(|&&c| c != LABEL_NODATA) {
            *split.entry(i64::from(c)).or_default() += 1;
        }
        let raster = RasterData {
            width: block.window.width,
            height: block.window.height,
            bands: 1,
            data: codes.as_slice(),
        };
        let options = WriteOptions {
            nodata: any_invalid.then_some(f64::from(LABEL_NODATA)),
            band_names: vec!["label".to_string()],
            ..WriteOptions::default()
        };
        let georef = block_georef(scene, block.window);
        for date in 0..acquisitions {
            let path = block_path(&req.out, block, "label", date, acquisitions);
            crate::data::raster::write_geotiff(&path, &raster, &georef, &options)?;
        }
    }
    Ok(counts)
}

/// The label codes of a block; [`LABEL_NODATA`] where the label raster has no data.
fn label_codes(req: &BlocksRequest, labels: &Pixels, w: Window) -> Result<Vec<u16>> {
    let cut = cut_f32(labels, w);
    cut.iter()
        .map(|&v| {
            if v.is_nan() {
                return Ok(LABEL_NODATA);
            }
            if v.fract() != 0.0 || !(0.0..f32::from(LABEL_NODATA)).contains(&v) {
                bail!(
                    "{}: label value {v} is not an integer code in 0..65535",
                    req.labels.display()
                );
            }
            Ok(v as u16)
        })
        .collect()
}

/// `OUT/blocks.json`: the grid, the split rule, each block and the label counts per split.
fn write_manifest(req: &BlocksRequest, report: &BlocksReport) -> Result<()> {
    let blocks: Vec<serde_json::Value> = report
        .blocks
        .iter()
        .map(|b| {
            json!({"row": b.row, "col": b.col, "x": b.window.x, "y": b.window.y,
                "width": b.window.width, "height": b.window.height, "split": b.split.as_str()})
        })
        .collect();
    let inputs: BTreeMap<&str, Vec<String>> = req
        .modalities
        .iter()
        .map(|(n, f)| {
            (
                n.as_str(),
                f.iter().map(|p| p.display().to_string()).collect(),
            )
        })
        .collect();
    let doc = json!({
        "grid": [req.grid.0, req.grid.1],
        "rule": "block (row, col) -> [test, val, train, train][(row + col) mod 4]",
        "acquisitions": report.acquisitions,
        "inputs": inputs,
        "labels": req.labels.display().to_string(),
        "blocks": blocks,
        "label_counts": report.label_counts,
    });
    let text = serde_json::to_string_pretty(&doc)?;
    crate::fsutil::write_atomic(&req.out.join("blocks.json"), text.as_bytes())
}

/// The grid as text, one letter per block (T test, V val, . train).
pub(crate) fn grid_map(report: &BlocksReport, cols: usize) -> String {
    let mut text = String::new();
    for row in report.blocks.chunks(cols.max(1)) {
        let line: String = row
            .iter()
            .map(|b| match b.split {
                Split::Test => 'T',
                Split::Val => 'V',
                Split::Train => '.',
            })
            .collect();
        text.push_str(&line);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::raster::Crs;

    #[test]
    fn every_grid_row_and_column_has_each_split() {
        let blocks = grid_blocks(100, 101, 4, 4).unwrap();
        assert_eq!(blocks.len(), 16);
        for i in 0..4 {
            for split in Split::ALL {
                let in_row = blocks
                    .iter()
                    .filter(|b| b.row == i && b.split == split)
                    .count();
                let in_col = blocks
                    .iter()
                    .filter(|b| b.col == i && b.split == split)
                    .count();
                let want = if split == Split::Train { 2 } else { 1 };
                assert_eq!(
                    (in_row, in_col),
                    (want, want),
                    "{split:?} in row/column {i}"
                );
            }
        }
        // Edges at floor(i * size / n): the blocks tile the scene exactly.
        let area: usize = blocks
            .iter()
            .map(|b| b.window.width * b.window.height)
            .sum();
        assert_eq!(area, 100 * 101);
        assert_eq!(blocks[15].window, Window::new(75, 75, 25, 26));
        let report = BlocksReport {
            blocks,
            acquisitions: 1,
            label_counts: BTreeMap::new(),
        };
        assert_eq!(grid_map(&report, 4), "TV..\nV..T\n..TV\n.TV.\n");
        assert!(grid_blocks(100, 100, 1, 1).is_err());
        assert!(grid_blocks(100, 100, 1, 2)
            .unwrap_err()
            .to_string()
            .contains("no train"));
        assert!(grid_blocks(30, 30, 4, 4)
            .unwrap_err()
            .to_string()
            .contains("8 pixels"));
    }

    #[test]
    fn a_block_keeps_its_place() {
        let scene = GeoRef::north_up(500_000.0, 5_100_000.0, 10.0, 32633);
        let g = block_georef(&scene, Window::new(25, 50, 25, 25));
        assert_eq!(
            g.geo_transform,
            Some([500_250.0, 10.0, 0.0, 5_099_500.0, 0.0, -10.0])
        );
        // A GCP keeps its ground position and moves to the block's pixel coordinates.
        let gcp = gdal::Gcp {
            id: "1".into(),
            info: String::new(),
            pixel: 30.0,
            line: 60.0,
            x: 500_300.0,
            y: 5_099_400.0,
            z: 0.0,
        };
        let radar = GeoRef {
            geo_transform: None,
            crs: None,
            gcps: vec![gcp],
            gcp_crs: Some(Crs::Epsg(4326)),
        };
        let g = block_georef(&radar, Window::new(25, 50, 25, 25));
        assert_eq!((g.gcps[0].pixel, g.gcps[0].line), (5.0, 10.0));
        assert_eq!((g.gcps[0].x, g.gcps[0].y), (500_300.0, 5_099_400.0));
        assert_eq!(g.geo_transform, None);
        assert_eq!(g.gcp_crs, Some(Crs::Epsg(4326)));
    }
}
