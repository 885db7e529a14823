//! `dis2` command-line entry point: parse arguments, run the command, print errors as a chain.

use clap::Parser;

fn main() {
    dis2::alloc::tune_allocator();
    let cli = dis2::cli::Cli::parse();
    if let Err(err) = dis2::cli::run(cli) {
        eprintln!("error: {err}");
        for cause in err.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}
