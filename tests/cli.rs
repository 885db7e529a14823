//! The built binary as a user meets it: starts from a bare shell, links CUDA, reports clearly.

use std::process::Command;

mod common;
use common::BIN;

/// Runs the binary from `/` with an environment holding nothing but PATH.
fn run_bare(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .current_dir("/")
        .output()
        .expect("the dis2 binary starts")
}

#[test]
fn info_runs_from_root_with_an_empty_environment() {
    let out = run_bare(&["info", "--device", "cpu"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in [
        "dis2",
        "tch",
        "libtorch",
        "CUDA available",
        "cuDNN available",
        "GDAL",
        "torch threads",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(label)),
            "no {label:?} line in:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("2.13.0"),
        "libtorch version missing:\n{stdout}"
    );
    assert!(stdout.contains("device           cpu -> Cpu"), "{stdout}");
}

#[test]
fn binary_links_libtorch_cuda_and_cpu() {
    let out = Command::new("ldd").arg(BIN).output().expect("ldd runs");
    let text = String::from_utf8_lossy(&out.stdout);
    for lib in ["libtorch_cuda.so", "libtorch_cpu.so"] {
        let line = text.lines().find(|l| l.trim_start().starts_with(lib));
        let line = line.unwrap_or_else(|| panic!("{lib} is not linked:\n{text}"));
        assert!(line.contains("=> /"), "{lib} does not resolve: {line}");
    }
    assert!(!text.contains("not found"), "unresolved libraries:\n{text}");
}

#[test]
fn cuda_request_without_gpu_is_a_clear_error() {
    let gpus = dis2::device::cuda_device_count();
    let out = run_bare(&["info", "--device", &format!("cuda:{gpus}")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.starts_with("error: --device cuda:"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn unknown_device_is_rejected_by_the_parser() {
    let out = run_bare(&["info", "--device", "gpu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("unknown device \"gpu\""), "{stderr}");
}

/// A reader that stops early (`dis2 sweep --list | head`) ends dis2 quietly, without a panic. The
/// listing of 20 seeds (about 190 kB) is larger than a pipe's buffer, so dis2 is still writing
/// when the reader goes.
#[test]
fn closed_pipe_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/experiments/synthetic.yaml");
    let mut child = Command::new(BIN)
        .args(["sweep", "--config", config, "--seeds", "20", "--list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the dis2 binary starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first.trim(), "# shard 0/1:");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(
        !out.status.success(),
        "the listing cannot have been written whole"
    );
}
