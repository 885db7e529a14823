//! Stopping cleanly when a scheduler asks: SIGTERM, SIGUSR1 (Slurm's `--signal=USR1@T` warning)
//! or SIGINT ask a long job to stop at its next safe point (training: the end of the step, after
//! a checkpoint; `dis2 sweep`: between runs and evaluations; `dis2 predict --list`: between
//! scenes). The process then exits with [`EXIT_STATUS`], which a batch script reads as "requeue
//! me" (docs/train.md, "Preemption").
//!
//! The handler only records the request in an atomic (the async-signal-safe pattern); the work
//! polls [`requested`]. A later signal ends the process at once with status 128 + its number,
//! except a repeat of the first signal within [`REPEAT_WINDOW_NS`]: launchers that forward a
//! signal (srun, a batch script) can deliver one request twice. SIGINT is never taken as such a
//! repeat, so Ctrl-C twice always ends the process.

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
use std::fmt;
use std::sync::atomic::{AtomicI32, AtomicI64, Ordering};
use std::sync::OnceLock;

/// The exit status of a job stopped on a signal with its work saved (`EX_TEMPFAIL` of
/// `sysexits.h`: try again later). `scripts/slurm/*.sbatch` requeue on it.
pub const EXIT_STATUS: i32 = 75;

/// The signals that ask for a stop.
const SIGNALS: [i32; 3] = [SIGTERM, SIGUSR1, SIGINT];

/// A repeat of the first signal this soon after it is the same request (1 s, in nanoseconds).
const REPEAT_WINDOW_NS: i64 = 1_000_000_000;

/// The first stop signal's number; 0 while none came.
static FIRST: AtomicI32 = AtomicI32::new(0);
/// When it came (`CLOCK_MONOTONIC`, ns); 0 until recorded.
static FIRST_AT_NS: AtomicI64 = AtomicI64::new(0);

/// Installs the handlers of SIGTERM, SIGUSR1 and SIGINT for the rest of the process (a second
/// call does nothing). Only work that polls [`requested`] installs them: elsewhere these signals
/// keep their default action.
///
/// # Errors
/// The operating system refuses a handler (naming the signal).
pub fn install() -> Result<()> {
    static INSTALLED: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        for signal in SIGNALS {
            // SAFETY: the action only touches atomics, reads the monotonic clock and may call
            // _exit, all async-signal-safe.
            unsafe { signal_hook::low_level::register(signal, move || on_signal(signal)) }
                .map_err(|e| format!("cannot install the {} handler: {e}", name(signal)))?;
        }
        Ok(())
    });
    installed
        .clone()
        .map_err(anyhow::Error::msg)
        .context("preemption signals")
}

/// The name of the first stop signal received (`SIGTERM`), if one was.
pub fn requested() -> Option<&'static str> {
    match FIRST.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(name(signal)),
    }
}

/// The signal handler: records the first request, ends the process on a later one.
fn on_signal(signal: i32) {
    let now = monotonic_ns();
    match FIRST.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => FIRST_AT_NS.store(now, Ordering::SeqCst),
        Err(first) => {
            let first_at = FIRST_AT_NS.load(Ordering::SeqCst);
            if ends_at_once(first, first_at, signal, now) {
                signal_hook::low_level::exit(128 + signal);
            }
        }
    }
}

/// Whether `signal` at `now` ends the process, the first request having been `first` at
/// `first_at` (0: being recorded by another thread, the same delivery).
fn ends_at_once(first: i32, first_at: i64, signal: i32, now: i64) -> bool {
    let repeat = signal == first && (first_at == 0 || now - first_at < REPEAT_WINDOW_NS);
    signal == SIGINT || !repeat
}

fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; async-signal-safe (POSIX).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

fn name(signal: i32) -> &'static str {
    signal_hook::low_level::signal_name(signal).unwrap_or("a stop signal")
}

/// The error of work stopped on a signal with what it finished kept: `dis2` prints it and exits
/// with [`EXIT_STATUS`] ([`is_stop`]).
#[derive(Debug)]
pub struct Stopped {
    /// What asked for the stop: a signal's name, or another rank of a data-parallel job.
    pub reason: String,
    /// Where the work stopped, what it kept and how it continues.
    pub detail: String,
}

impl fmt::Display for Stopped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} received: {}", self.reason, self.detail)
    }
}

impl std::error::Error for Stopped {}

/// A [`Stopped`] error for the signal received, if one was: work calls it at its safe points
/// (`detail` says where it stopped and how it continues).
pub(crate) fn check(detail: impl FnOnce() -> String) -> Result<()> {
    match requested() {
        None => Ok(()),
        Some(signal) => Err(Stopped {
            reason: signal.to_string(),
            detail: detail(),
        }
        .into()),
    }
}

/// Whether `error` (or one of its causes) is a [`Stopped`].
pub fn is_stop(error: &anyhow::Error) -> bool {
    error.chain().any(|e| e.is::<Stopped>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forwarded_repeat_is_the_same_request_and_a_later_signal_ends_the_process() {
        let s = 1_000_000_000;
        // srun or the batch script forwarding the signal the task also got directly.
        assert!(!ends_at_once(SIGUSR1, 5 * s, SIGUSR1, 5 * s + s / 10));
        assert!(!ends_at_once(SIGTERM, 0, SIGTERM, 5 * s));
        // The same signal later, another signal, Ctrl-C twice: end now.
        assert!(ends_at_once(SIGTERM, 5 * s, SIGTERM, 7 * s));
        assert!(ends_at_once(SIGUSR1, 5 * s, SIGTERM, 5 * s + 1));
        assert!(ends_at_once(SIGINT, 5 * s, SIGINT, 5 * s + 1));
    }

    #[test]
    fn a_stop_is_found_under_context() {
        let stop: anyhow::Error = Stopped {
            reason: "SIGTERM".into(),
            detail: "after step 3".into(),
        }
        .into();
        assert_eq!(stop.to_string(), "SIGTERM received: after step 3");
        let wrapped = Err::<(), _>(stop).context("sweep run t").unwrap_err();
        assert!(is_stop(&wrapped));
        assert!(!is_stop(&anyhow::anyhow!("other")));
        assert_eq!(name(SIGUSR1), "SIGUSR1");
    }
}
