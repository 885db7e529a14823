//! docs/figures/synthetic-gaps.png: the first scene of the default benchmark with gaps
//! (`dis2 synth --gaps`, seed 42, 256 px) that has a SAR edge, DSM voids and clouds.
//!
//! `cargo run --release --example gaps_figure [-- OUT.png]`

use anyhow::{Context, Result};
use dis2::data::synth;

fn main() -> Result<()> {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "docs/figures/synthetic-gaps.png".to_string());
    let (seed, size) = (42, 256);
    for index in 0..40 {
        let mut scene = synth::generate_scene(seed, index, size);
        let gaps = scene.draw_gaps(seed, index);
        if gaps.sar_edge_fraction > 0.0 && gaps.dsm_void_fraction > 0.0 && gaps.cloud_cover > 0.0 {
            dis2::figures::gaps_png(out.as_ref(), &scene)
                .with_context(|| format!("cannot write {out}"))?;
            println!(
                "scene_{index:04}: SAR edge {:.0} %, DSM voids {:.1} %, cloud cover {:.0} %; wrote {out}",
                100.0 * gaps.sar_edge_fraction,
                100.0 * gaps.dsm_void_fraction,
                100.0 * gaps.cloud_cover
            );
            return Ok(());
        }
    }
    anyhow::bail!("none of the 40 scenes of seed {seed} has all three kinds of gap")
}
