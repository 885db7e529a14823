//! `make bench-loader`: samples per second of the loader alone on the synthetic benchmark, for
//! batch 8 of 64 x 64 and batch 4 of 128 x 128 crops, compared with the time of a model step.
//!
//! Usage: `bench_loader [DATA_DIR] [BATCHES]` (defaults: target/bench-synthetic, 40). The data
//! are written with `dis2 synth` settings (24 scenes of 256 x 256, seed 42) when absent.

use anyhow::{Context, Result};
use std::path::PathBuf;
use std::time::Instant;

use dis2::config::Experiment;
use dis2::data::layouts::Split;
use dis2::data::loader::Loader;
use dis2::data::synth::{self, SynthOptions};

/// Model step times measured on the 2-core development machine (seconds per batch).
const MODEL_STEPS: [(usize, usize, i64, f64); 2] = [(8, 64, 8, 0.3), (4, 128, 32, 1.0)];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .unwrap_or_else(|| "target/bench-synthetic".into()),
    );
    let batches: usize = match args.next() {
        Some(text) => text
            .parse()
            .with_context(|| format!("BATCHES: expected a count, got {text:?}"))?,
        None => 40,
    };
    let options = SynthOptions {
        out: dir.clone(),
        scenes: 24,
        size: 256,
        seed: 42,
        gaps: false,
    };
    let yaml = dir.join("experiment.yaml");
    if !yaml.is_file() {
        let t = Instant::now();
        synth::generate(&options)?;
        dis2::prepare::write_synthetic_experiment(&options)?;
        println!(
            "wrote the benchmark to {} in {:.2} s",
            dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    println!("rayon threads: {}", rayon::current_num_threads());
    for (batch, crop, width, step) in MODEL_STEPS {
        let overrides = vec![
            format!("model.crop=[{crop}, {crop}]"),
            format!("model.base_width={width}"),
            format!("data.sampling.batch_size={batch}"),
            format!("data.sampling.samples_per_epoch={}", batch * batches),
        ];
        let exp = Experiment::load(&yaml, &overrides)?;
        let t = Instant::now();
        let mut samples = 0;
        for b in Loader::train(&exp.data, &exp.model, exp.seed, Split::Train, 0)? {
            samples += b?.specs.len();
        }
        let secs = t.elapsed().as_secs_f64();
        let rate = samples as f64 / secs;
        let needed = batch as f64 / step;
        println!(
            "batch {batch} of {crop}x{crop}: {rate:8.1} samples/s ({:.3} s per batch); a model step at width {width} takes ~{step} s = {needed:.1} samples/s -> loader is {:.1}x faster",
            secs / (samples as f64 / batch as f64),
            rate / needed
        );
    }
    Ok(())
}
