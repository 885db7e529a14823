//! `dis2` command-line entry point: parse arguments, run the command, print errors as a chain.

fn main() {
    quiet_closed_pipe();
    dis2::alloc::tune_allocator();
    let cli = dis2::cli::parse();
    if let Err(err) = dis2::cli::run(cli) {
        // Stopped on a signal with its work saved: a status a requeue understands.
        let (prefix, status) = match dis2::preempt::is_stop(&err) {
            true => ("stopped", dis2::preempt::EXIT_STATUS),
            false => ("error", 1),
        };
        eprintln!("{prefix}: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(status);
    }
}

/// Output into a pipe whose reader has gone (`dis2 sweep --list | head`) ends the process the way
/// it ends other Unix tools, by SIGPIPE, instead of Rust's panic on the failed print.
#[cfg(unix)]
fn quiet_closed_pipe() {
    // SAFETY: restores the default disposition of one signal, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

#[cfg(not(unix))]
fn quiet_closed_pipe() {}
