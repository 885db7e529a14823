//! `dis2 synth` and `dis2 stats`: their arguments and what they print.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

use crate::data::config::ClassInfo;
use crate::data::stats::Gaps;
use crate::data::synth::{self, SynthOptions};

/// `dis2 synth`.
#[derive(Debug, Args)]
pub struct SynthArgs {
    /// Output folder (gets train/, val/, test/ and experiment.yaml) [default: data/synthetic,
    /// with --gaps data/synthetic-gaps].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Number of scenes (about 70 % train, 15 % val, 15 % test).
    #[arg(long, default_value_t = 40, value_name = "N")]
    pub scenes: usize,
    /// Side of each square scene in pixels (0.5 m each).
    #[arg(long, default_value_t = 256, value_name = "PIXELS")]
    pub size: usize,
    /// Seed: the same seed writes the same bytes.
    #[arg(long, default_value_t = 42, value_name = "K")]
    pub seed: u64,
    /// Draw partial coverage as real scenes have it: SAR swath edges, DSM voids (nodata), and
    /// clouds with shadows in the optical image, their masks in {split}/clouds/ (0 clear,
    /// 1 cloud, 2 shadow); the experiment is built from experiments/synthetic-gaps.yaml.
    #[arg(long)]
    pub gaps: bool,
}

/// `dis2 stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// The experiment YAML; its `data.normalisation` is rewritten in place.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Also write median-frequency `data.class_weights`.
    #[arg(long)]
    pub class_weights: bool,
}

/// Writes the benchmark and its experiment YAML, and says where.
pub(crate) fn synth(args: &SynthArgs) -> Result<()> {
    let default_out = if args.gaps {
        "data/synthetic-gaps"
    } else {
        "data/synthetic"
    };
    let options = SynthOptions {
        out: args.out.clone().unwrap_or_else(|| default_out.into()),
        scenes: args.scenes,
        size: args.size,
        seed: args.seed,
        gaps: args.gaps,
    };
    let (files, test_patterns) = synth::generate_counted(&options)?;
    println!(
        "wrote {} rasters of {} scenes ({}x{} px, 0.5 m, EPSG:{}) under {}",
        files.len(),
        args.scenes,
        args.size,
        args.size,
        synth::EPSG,
        options.out.display()
    );
    if args.gaps {
        println!(
            "test split ({} scenes), pixels per missing-modality pattern:",
            test_patterns.scenes
        );
        for line in test_patterns.lines() {
            println!("  {line}");
        }
    }
    let yaml = crate::prepare::write_synthetic_experiment(&options)?;
    println!("experiment: {}", yaml.display());
    Ok(())
}

/// Computes the statistics, writes them back and prints them.
pub(crate) fn stats(args: &StatsArgs) -> Result<()> {
    let update = crate::prepare::update_statistics(&args.config, args.class_weights)?;
    for stale in &update.replaced {
        eprintln!("replaced stale {stale}");
    }
    let stats = update.stats;
    let exp = crate::config::Experiment::load(&args.config, &[])?;
    for (m, norm) in exp.model.modalities.iter().zip(stats.normalisation()) {
        println!(
            "{:<10} mean {:?}\n{:<10} std  {:?}",
            m.name, norm.mean, "", norm.std
        );
    }
    let classes = exp.data.class_table(exp.model.num_classes as usize);
    print!("{}", class_shares(&classes, &stats.class_counts));
    println!(
        "ignored pixels (unlabelled, ignored, or without data in the labels or a modality): {}",
        stats.ignored
    );
    let names: Vec<&str> = exp
        .model
        .modalities
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    print!("{}", gaps_table(&names, &stats.gaps));
    if args.class_weights {
        println!("class weights:");
        let width = name_width(&classes);
        for (c, (class, weight)) in classes.iter().zip(stats.class_weights()).enumerate() {
            println!("  {c:>3} {:<width$} {weight:.4}", class.name);
        }
    }
    println!("updated {}", args.config.display());
    Ok(())
}

/// The width of the longest class name, for aligned columns.
fn name_width(classes: &[ClassInfo]) -> usize {
    classes
        .iter()
        .map(|c| c.name.chars().count())
        .max()
        .unwrap_or(0)
}

/// Each class's id, name and share of the labelled pixels (%), one line each.
fn class_shares(classes: &[ClassInfo], counts: &[u64]) -> String {
    let total: u64 = counts.iter().sum();
    let mut out = String::from("labelled pixels per class (id name: share):\n");
    for (c, (class, &count)) in classes.iter().zip(counts).enumerate() {
        let share = 100.0 * count as f64 / total.max(1) as f64;
        out.push_str(&format!("  {c:>3} {}: {share:.2} %\n", class.name));
    }
    out
}

/// The labelled pixels of the train split each modality's gaps (nodata, masks, user masks)
/// remove, and those any modality's remove, as a table.
fn gaps_table(modalities: &[&str], gaps: &Gaps) -> String {
    let mut out = format!(
        "train split: {} labelled pixels; without data in\n{:<10} {:>12} {:>9}\n",
        gaps.labelled, "modality", "pixels", "share"
    );
    let rows = modalities
        .iter()
        .zip(&gaps.unavailable)
        .map(|(name, &n)| (*name, n))
        .chain([("any", gaps.any)]);
    for (name, n) in rows {
        out.push_str(&format!("{name:<10} {n:>12} {:>7.2} %\n", gaps.share(n)));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn synth_and_stats_parse_and_bad_values_name_the_flag() {
        let cli = Cli::try_parse_from([
            "dis2", "synth", "--out", "x", "--scenes", "5", "--size", "64", "--seed", "3",
        ])
        .unwrap();
        let Command::Synth(args) = cli.command else {
            panic!("not synth")
        };
        assert_eq!((args.scenes, args.size, args.seed), (5, 64, 3));
        assert!(!args.gaps);
        let cli = Cli::try_parse_from(["dis2", "synth", "--gaps"]).unwrap();
        let Command::Synth(args) = cli.command else {
            panic!("not synth")
        };
        assert!(args.gaps && args.out.is_none(), "--gaps, out by default");
        let dir = tempfile::tempdir().unwrap();
        let err = crate::cli::run(
            Cli::try_parse_from(["dis2", "synth", "--out", "x", "--scenes", "2"]).unwrap(),
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("--scenes: need at least 3"));
        let err = crate::cli::run(
            Cli::try_parse_from(["dis2", "synth", "--out", "x", "--size", "8"]).unwrap(),
        );
        assert!(format!("{:#}", err.unwrap_err()).contains("--size: must be between 32 and 8192"));
        let missing = dir.path().join("none.yaml");
        let cli =
            Cli::try_parse_from(["dis2", "stats", "--config", missing.to_str().unwrap()]).unwrap();
        let err = format!("{:#}", crate::cli::run(cli).unwrap_err());
        assert!(
            err.contains("cannot read configuration file") && err.contains("none.yaml"),
            "{err}"
        );
        assert!(
            Cli::try_parse_from(["dis2", "stats"]).is_err(),
            "--config is required"
        );
    }

    #[test]
    fn the_gaps_table_has_a_row_per_modality_and_one_for_any() {
        let gaps = crate::data::stats::Gaps {
            labelled: 200,
            unavailable: vec![0, 50],
            any: 50,
        };
        let table = super::gaps_table(&["optical", "sar"], &gaps);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 5, "{table}");
        assert!(lines[0].contains("200 labelled pixels"), "{table}");
        assert!(lines[2].starts_with("optical") && lines[2].ends_with("0.00 %"));
        assert!(
            lines[3].starts_with("sar")
                && lines[3].contains(" 50 ")
                && lines[3].ends_with("25.00 %")
        );
        assert!(lines[4].starts_with("any") && lines[4].ends_with("25.00 %"));
    }

    /// `dis2 stats` names the classes of the configuration, with their ids.
    #[test]
    fn class_shares_name_each_class_with_its_id() {
        let class = |name: &str| crate::data::config::ClassInfo {
            name: name.into(),
            colour: [0, 0, 0],
        };
        let table = super::class_shares(&[class("building"), class("low vegetation")], &[1, 3]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        assert!(lines[0].contains("per class"), "{table}");
        assert_eq!(lines[1].trim_start(), "0 building: 25.00 %", "{table}");
        assert_eq!(
            lines[2].trim_start(),
            "1 low vegetation: 75.00 %",
            "{table}"
        );
    }

    #[test]
    fn stats_on_a_config_without_data_names_the_synth_command() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = dir.path().join("e.yaml");
        let root = dir.path().join("nothing");
        let text = format!(
            "name: t\nmodel:\n  num_classes: 6\n  crop: [32, 32]\n  modalities:\n    - {{name: optical, channels: 4}}\n    - {{name: sar, channels: 1}}\ndata:\n  dataset:\n    synthetic: {{root: {}}}\n",
            root.display()
        );
        std::fs::write(&yaml, &text).unwrap();
        let cli =
            Cli::try_parse_from(["dis2", "stats", "--config", yaml.to_str().unwrap()]).unwrap();
        let err = format!("{:#}", crate::cli::run(cli).unwrap_err());
        assert!(
            err.contains("has no train/ folder") && err.contains("dis2 synth --out"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&yaml).unwrap(),
            text,
            "the file is left alone on error"
        );
    }
}
