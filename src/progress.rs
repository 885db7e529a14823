//! Progress of long work (a run's training steps, a scene's windows, a sweep's runs and
//! evaluations): an indicatif bar when stderr is a terminal, plain lines otherwise (or with
//! `--quiet`), so logs of batch jobs stay readable.
//!
//! The reporter counts and rate-limits; what a line says belongs to its caller
//! ([`crate::train::progress`] for steps, `predict` for windows, `sweep` for runs).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// The bar's look unless [`Progress::with_style`] changes it: the prefix (what is counted), the
/// elapsed time, the bar, `pos/len`, the message and the ETA.
const TEMPLATE: &str = "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} ETA {eta}";

/// A bar on a terminal, or plain lines to stderr at most one per interval (10 s, or a minute
/// when quiet).
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    position: u64,
    every: Duration,
    /// When the last plain line was written; `None`: the next one is due at once.
    last: Option<Instant>,
    started: Instant,
}

impl Progress {
    /// `total` units starting at `first`: a bar when stderr is a terminal and `quiet` is off;
    /// plain lines otherwise.
    pub fn new(total: u64, first: u64, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(total).with_position(first);
            bar.set_style(style(TEMPLATE, None));
            bar.reset_eta();
            bar
        });
        let every = Duration::from_secs(if quiet { 60 } else { 10 });
        Self {
            bar,
            total,
            position: first,
            every,
            last: None,
            started: Instant::now(),
        }
    }

    /// The bar drawn with another indicatif `template` (and the characters of its filled,
    /// current and empty parts).
    pub(crate) fn with_style(self, template: &str, bar_chars: Option<&str>) -> Self {
        if let Some(bar) = &self.bar {
            bar.set_style(style(template, bar_chars));
        }
        self
    }

    /// The first plain line only after one interval (not at the start).
    pub(crate) fn with_first_line_after_interval(mut self) -> Self {
        self.last = Some(Instant::now());
        self
    }

    /// Whether a bar is drawn (else progress is told in plain lines).
    pub(crate) fn has_bar(&self) -> bool {
        self.bar.is_some()
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// Whole seconds since the reporter was made.
    pub(crate) fn elapsed_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    pub(crate) fn set_position(&mut self, position: u64) {
        self.position = position;
        if let Some(bar) = &self.bar {
            bar.set_position(position);
        }
    }

    pub(crate) fn inc(&mut self, n: u64) {
        self.set_position(self.position + n);
    }

    /// The bar's `{prefix}`.
    pub(crate) fn set_prefix(&self, prefix: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_prefix(prefix.into());
        }
    }

    /// The bar's `{msg}`.
    pub(crate) fn set_message(&self, message: impl Into<String>) {
        if let Some(bar) = &self.bar {
            bar.set_message(message.into());
        }
    }

    /// Whether a plain progress line is due (never with a bar).
    pub(crate) fn line_due(&self) -> bool {
        self.bar.is_none() && self.last.is_none_or(|t| t.elapsed() >= self.every)
    }

    /// Writes a plain progress line and starts the next interval.
    pub fn log(&mut self, line: &str) {
        eprintln!("{line}");
        self.last = Some(Instant::now());
    }

    /// A line that must be seen (results, checkpoints, what starts), above the bar if there is
    /// one.
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Leaves the finished bar on screen.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }

    /// Removes the bar.
    pub(crate) fn finish_and_clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn style(template: &str, bar_chars: Option<&str>) -> ProgressStyle {
    let style =
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
    match bar_chars {
        Some(chars) => style.progress_chars(chars),
        None => style,
    }
}
