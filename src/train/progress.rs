//! Progress of long work: an indicatif bar on a terminal, plain log lines otherwise (or with
//! `--quiet`), so logs of batch jobs stay readable.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// What one step reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    pub epoch: u64,
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub samples_per_s: f64,
}

pub enum Progress {
    Bar(ProgressBar),
    /// Plain lines to stderr, at most one per `every`, plus the first and last steps.
    Lines {
        total: u64,
        every: Duration,
        last: Option<Instant>,
        started: Instant,
    },
}

impl Progress {
    /// A bar when stderr is a terminal and `quiet` is off; plain lines otherwise.
    pub fn new(total_steps: u64, first_step: u64, quiet: bool) -> Self {
        if !quiet && std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total_steps).with_position(first_step);
            let style = ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.reset_eta();
            Self::Bar(bar)
        } else {
            let every = if quiet {
                Duration::from_secs(60)
            } else {
                Duration::from_secs(10)
            };
            Self::Lines {
                total: total_steps,
                every,
                last: None,
                started: Instant::now(),
            }
        }
    }

    pub fn step(&mut self, r: &StepReport) {
        let msg = format!(
            "loss {:.4} lr {:.2e} {:.1} samples/s",
            r.loss, r.lr, r.samples_per_s
        );
        match self {
            Self::Bar(bar) => {
                bar.set_prefix(format!("epoch {}", r.epoch));
                bar.set_message(msg);
                bar.set_position(r.step);
            }
            Self::Lines {
                total,
                every,
                last,
                started,
            } => {
                let due = last.is_none_or(|t| t.elapsed() >= *every) || r.step >= *total;
                if due {
                    let elapsed = started.elapsed().as_secs();
                    eprintln!(
                        "epoch {} step {}/{} {msg} [{elapsed} s]",
                        r.epoch, r.step, total
                    );
                    *last = Some(Instant::now());
                }
            }
        }
    }

    /// A line that must be seen (validation results, checkpoints), above the bar if there is one.
    pub fn println(&self, line: &str) {
        match self {
            Self::Bar(bar) => bar.println(line),
            Self::Lines { .. } => eprintln!("{line}"),
        }
    }

    pub fn finish(&self) {
        if let Self::Bar(bar) = self {
            bar.finish();
        }
    }
}
