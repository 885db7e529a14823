//! `dis2 blocks`: its arguments and their conversion into a [`BlocksRequest`].

use anyhow::{bail, Result};
use clap::Args;
use std::path::PathBuf;

use crate::blocks::{grid_map, split_blocks, BlocksRequest};
use crate::data::validity::AlphaRule;

/// `dis2 blocks`.
#[derive(Debug, Args)]
pub struct BlocksArgs {
    /// A modality and its files: `NAME=FILE` or, one per acquisition, `NAME=FILE1,FILE2,...`
    /// (a modality with one file is shared by every acquisition). Repeatable.
    #[arg(long = "modality", value_name = "NAME=FILE[,FILE...]", required = true)]
    pub modalities: Vec<String>,
    /// The label raster (integer codes): the blocks are cut on its grid, and modality files on
    /// other grids are resampled onto it.
    #[arg(long, value_name = "FILE")]
    pub labels: PathBuf,
    /// Blocks per column and row of the grid, `ROWSxCOLS`.
    #[arg(long, value_name = "RxC", default_value = "4x4")]
    pub grid: String,
    /// Output folder: `{train,val,test}/<modality>/`, `{...}/label/`, `blocks.json`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Read bands the modality files mark as alpha as data (GDAL's and rasterio's defaults mark
    /// the NIR band of a 4-band byte RGB + NIR file as alpha). A file with such a band needs
    /// this or --alpha-as-mask.
    #[arg(long, conflicts_with = "alpha_as_mask")]
    pub alpha_as_data: bool,
    /// Read bands the modality files mark as alpha as transparency masks (NaN in the blocks
    /// where they are 0), not as data.
    #[arg(long)]
    pub alpha_as_mask: bool,
    /// Refuse modality files that are not on the labels' grid instead of resampling them.
    #[arg(long)]
    pub strict_grid: bool,
}

/// `NAME=FILE[,FILE...]`.
fn parse_modality(item: &str) -> Result<(String, Vec<PathBuf>)> {
    let Some((name, files)) = item.split_once('=') else {
        bail!("--modality {item:?}: expected NAME=FILE[,FILE...], e.g. optical=t0.tif,t1.tif");
    };
    let files: Vec<PathBuf> = files
        .split(',')
        .filter(|f| !f.is_empty())
        .map(PathBuf::from)
        .collect();
    if name.is_empty() || files.is_empty() {
        bail!("--modality {item:?}: expected NAME=FILE[,FILE...], e.g. optical=t0.tif,t1.tif");
    }
    Ok((name.to_string(), files))
}

/// `RxC`, e.g. `4x4`.
fn parse_grid(text: &str) -> Result<(usize, usize)> {
    let parsed = text
        .split_once('x')
        .and_then(|(r, c)| Some((r.trim().parse().ok()?, c.trim().parse().ok()?)));
    match parsed {
        Some(grid) => Ok(grid),
        None => bail!("--grid {text:?}: expected ROWSxCOLS, e.g. 4x4"),
    }
}

pub(crate) fn run(args: &BlocksArgs) -> Result<()> {
    let request = BlocksRequest {
        modalities: args
            .modalities
            .iter()
            .map(|m| parse_modality(m))
            .collect::<Result<_>>()?,
        labels: args.labels.clone(),
        grid: parse_grid(&args.grid)?,
        out: args.out.clone(),
        alpha: match (args.alpha_as_data, args.alpha_as_mask) {
            (true, _) => Some(AlphaRule::Data),
            (_, true) => Some(AlphaRule::Mask),
            _ => None,
        },
        strict_grid: args.strict_grid,
    };
    let report = split_blocks(&request)?;
    print!("{}", grid_map(&report, request.grid.1));
    let scenes = |split: &str| {
        report
            .blocks
            .iter()
            .filter(|b| b.split.as_str() == split)
            .count()
            * report.acquisitions
    };
    println!(
        "(T test, V val, . train) wrote {} train, {} val and {} test scenes ({} acquisition(s) per \
         block) and blocks.json into {}",
        scenes("train"),
        scenes("val"),
        scenes("test"),
        report.acquisitions,
        request.out.display()
    );
    Ok(())
}
