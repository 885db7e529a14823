//! Links libtorch so that the binary runs from a plain shell and really sees CUDA.
//!
//! `torch-sys` finds libtorch through `LIBTORCH`, which `.cargo/config.toml` points at `.libtorch`,
//! the link to the venv's torch package that `make` (scripts/setup.sh) creates; so `cargo build`
//! and `cargo test` need no environment. Without that link this script stops with a message
//! saying to run `make`. (`LIBTORCH_USE_PYTORCH=1` with a Python that has torch also works, as
//! `torch-sys` documents.) Besides, it closes two gaps that `torch-sys` leaves:
//! - no run path: without one the binary only starts with `LD_LIBRARY_PATH` set, so the torch `lib`
//!   directory is embedded with `-rpath`;
//! - `--as-needed` drops `libtorch_cuda.so` (nothing references its symbols directly), and CUDA then
//!   silently reports "unavailable"; it is linked again with `--no-as-needed`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The libtorch version `tch` 0.26 is built for (as `torch-sys` checks).
const TORCH_VERSION: &str = "2.13.0";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let (lib_dir, version) = match torch_lib_dir() {
        Ok(found) => found,
        Err(Missing::Unset(msg)) => {
            println!("cargo:warning=dis2: {msg}; the binary will need LD_LIBRARY_PATH to start");
            return;
        }
        Err(Missing::NotFound(msg)) => {
            eprintln!("\n{msg}\n");
            std::process::exit(1);
        }
    };
    println!("cargo:rustc-env=DIS2_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=DIS2_LIBTORCH_LIB={}", lib_dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    compile_native_ops(&lib_dir);
    let cuda = lib_dir.join("libtorch_cuda.so");
    if cuda.exists() {
        println!(
            "cargo:rustc-link-arg=-Wl,--no-as-needed,{},--as-needed",
            cuda.display()
        );
    }
    link_tcmalloc();
    if let Some(v) = locked_version("tch") {
        println!("cargo:rustc-env=DIS2_TCH_VERSION={v}");
    }
    if let Some(v) = locked_version("gdal") {
        println!("cargo:rustc-env=DIS2_GDAL_CRATE_VERSION={v}");
    }
}

/// Why no libtorch was found: nothing says where to look (a warning: the build goes on, as
/// `torch-sys` decides), or the place named does not hold it (an error).
enum Missing {
    Unset(String),
    NotFound(String),
}

/// The torch `lib` directory and the libtorch version, the same way `torch-sys` finds them:
/// `LIBTORCH_USE_PYTORCH` first, then `LIBTORCH`.
fn torch_lib_dir() -> Result<(PathBuf, String), Missing> {
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        return python_torch_lib_dir().map_err(Missing::Unset);
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let Some(root) = std::env::var_os("LIBTORCH") else {
        return Err(Missing::Unset(
            "neither LIBTORCH nor LIBTORCH_USE_PYTORCH is set".into(),
        ));
    };
    let given = PathBuf::from(root);
    // A file that changes when torch is reinstalled (not the whole tree, which cargo would scan).
    let marker = ["version.py", "build-version"]
        .map(|f| given.join(f))
        .into_iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| given.clone());
    println!("cargo:rerun-if-changed={}", marker.display());
    // The link's target, so that the run path names the venv, not this checkout.
    let root = std::fs::canonicalize(&given)
        .ok()
        .filter(|r| r.join("lib").is_dir() && r.join("include").is_dir())
        .ok_or_else(|| Missing::NotFound(not_found_message(&given)))?;
    let version = libtorch_version(&root).unwrap_or_else(|| "unknown".into());
    if version != "unknown" && version != TORCH_VERSION {
        return Err(Missing::NotFound(format!(
            "dis2: LIBTORCH {} holds libtorch {version}; tch 0.26 needs {TORCH_VERSION}. \
             Run `make setup` to link the venv with torch {TORCH_VERSION}.",
            given.display()
        )));
    }
    Ok((root.join("lib"), version))
}

/// The libtorch version of a libtorch directory (`build-version`) or of a torch package
/// (`version.py`, `__version__ = '2.13.0+cu130'`), without the build suffix.
fn libtorch_version(root: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root.join("build-version"))
        .ok()
        .or_else(|| {
            let py = std::fs::read_to_string(root.join("version.py")).ok()?;
            let line = py.lines().find(|l| l.starts_with("__version__"))?;
            Some(line.split(['\'', '"']).nth(1)?.to_string())
        })?;
    let version = text.trim();
    Some(version.split('+').next().unwrap_or(version).to_string())
}

/// What to do when `LIBTORCH` names no libtorch: run `make`, which creates the venv (or finds
/// it) and the `.libtorch` link.
fn not_found_message(given: &Path) -> String {
    let venv = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(format!(".cache/dis2/torch-{TORCH_VERSION}")))
        .filter(|v| v.is_dir());
    let found = match venv {
        Some(v) => format!(
            "\n  The venv exists already ({}): `make setup` only links it, downloading nothing.",
            v.display()
        ),
        None => String::new(),
    };
    format!(
        "dis2: libtorch not found: LIBTORCH is {} (from .cargo/config.toml),\n  \
         which is not a libtorch directory: the set-up has not linked it yet.\n  \
         Run `make` once in this checkout: it sets up the torch venv \
         (~/.cache/dis2/torch-{TORCH_VERSION})\n  \
         and links .libtorch to it; after that plain `cargo build` and `cargo test` work in any \
         shell.{found}\n  \
         Or set LIBTORCH to a libtorch {TORCH_VERSION} directory, or LIBTORCH_USE_PYTORCH=1 with \
         a Python\n  that has torch {TORCH_VERSION} first on PATH.",
        given.display()
    )
}

/// The torch `lib` directory and version of the Python `torch-sys` runs
/// (`LIBTORCH_USE_PYTORCH=1`): `python` in an active venv, else `python3`.
fn python_torch_lib_dir() -> Result<(PathBuf, String), String> {
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    let python = if std::env::var_os("VIRTUAL_ENV").is_some() {
        "python"
    } else {
        "python3"
    };
    let script = "import os, torch; print(torch.__version__.split('+')[0]); \
                  print(os.path.join(os.path.dirname(torch.__file__), 'lib'))";
    let out = Command::new(python)
        .args(["-c", script])
        .output()
        .map_err(|e| format!("cannot run {python}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{python} cannot import torch: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let version = lines.next().unwrap_or("unknown").to_string();
    let lib = lines.next().ok_or("torch printed no lib directory")?;
    Ok((PathBuf::from(lib), version))
}

/// The C++ sources of the native ops, compiled into one static library (with the distributed
/// engine's bindings, `csrc/dist.cpp`; its two backends are compiled apart, see
/// [`compile_dist_backends`]).
const NATIVE_SOURCES: [&str; 6] = [
    "csrc/ops.cpp",
    "csrc/dropout.cpp",
    "csrc/optim.cpp",
    "csrc/prenorm.cpp",
    "csrc/seg_loss.cpp",
    "csrc/dist.cpp",
];

/// Compiles the `csrc/*.cpp` sources (native ops tch does not expose, see `src/native.rs`) against
/// the libtorch headers next to `lib_dir`; libtorch itself is linked by `torch-sys`.
///
/// With `-fopenmp`: libtorch's `at::parallel_for` is an inline template that runs on OpenMP
/// (libtorch's intra-op thread pool), and without it the kernels' parallel loops would run on one
/// thread. The OpenMP runtime linked is libtorch's own `libgomp.so.1` when it ships one, so that
/// the process has one OpenMP runtime and one thread pool. `-O3` and `-fno-trapping-math` (no
/// code looks at floating-point exception flags; the values are unchanged) let GCC vectorise the
/// kernels' inner loops, including their selects (`#pragma omp simd` marks the reductions whose
/// order may change); no `-march`: the binary must run on any
/// x86-64.
fn compile_native_ops(lib_dir: &Path) {
    println!("cargo:rerun-if-changed=csrc");
    let include = lib_dir
        .parent()
        .map(|p| p.join("include"))
        .unwrap_or_default();
    // The C++ ABI must match libtorch's, as torch-sys's own wrapper does.
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .files(NATIVE_SOURCES)
        .include(&include)
        // The C++ API's headers (`torch/types.h`), which the distributed engine's include.
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag_if_supported("-w")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .flag("-fopenmp")
        .flag("-fno-trapping-math")
        .opt_level(3)
        .compile("dis2_ops");
    compile_dist_backends(&include, &abi);
    let gomp = lib_dir.join("libgomp.so.1");
    if gomp.exists() {
        println!("cargo:rustc-link-arg={}", gomp.display());
    } else {
        println!("cargo:rustc-link-arg=-fopenmp");
    }
}

/// Compiles the two backends of the process group (`csrc/dist_gloo.cpp`, `csrc/dist_nccl.cpp`),
/// each with its real code where its headers are found and as a stub that reports the missing
/// headers elsewhere; the code itself is libtorch's (Gloo in libtorch_cpu, NCCL in
/// libtorch_cuda).
/// - Gloo: Debian's `libgloo-dev` (`scripts/setup.sh` installs it).
/// - NCCL: libtorch with CUDA and, in the venv's `nvidia/*/include` (or `CUDA_HOME`), the headers
///   of NCCL, the CUDA runtime, its C runtime (`crt/`) and CCCL (`nv/target`); the wheel ships the
///   first two, `scripts/setup.sh` installs the other two (pip `nvidia-cuda-crt`,
///   `nvidia-cuda-cccl`).
fn compile_dist_backends(torch_include: &Path, abi: &str) {
    let gloo = gloo_include();
    if gloo.is_none() {
        println!(
            "cargo:warning=dis2: Gloo headers not found (apt-get install libgloo-dev): \
             data-parallel training will report that this build cannot run it"
        );
    }
    compile_backend(
        "dist_gloo",
        torch_include,
        abi,
        gloo.map(|d| ("DIS2_GLOO", vec![d])),
    );
    let nccl = nccl_includes(torch_include);
    compile_backend(
        "dist_nccl",
        torch_include,
        abi,
        nccl.map(|d| ("DIS2_NCCL", d)),
    );
}

/// One backend source as its own static library: with `found` (the define and the include
/// directories that switch its real code on), or as its stub.
fn compile_backend(
    name: &str,
    torch_include: &Path,
    abi: &str,
    found: Option<(&str, Vec<PathBuf>)>,
) {
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file(format!("csrc/{name}.cpp"))
        .include(torch_include)
        .include(torch_include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag_if_supported("-w")
        .define("_GLIBCXX_USE_CXX11_ABI", abi)
        .opt_level(2);
    if let Some((define, dirs)) = found {
        build.define(define, None).includes(dirs);
    }
    build.compile(&format!("dis2_{name}"));
}

/// The directory holding `gloo/algorithm.h`, if any.
fn gloo_include() -> Option<PathBuf> {
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE_DIR");
    let given = std::env::var_os("GLOO_INCLUDE_DIR").map(PathBuf::from);
    given
        .into_iter()
        .chain(["/usr/include", "/usr/local/include"].map(PathBuf::from))
        .find(|d| d.join("gloo/algorithm.h").exists())
        .inspect(|d| println!("cargo:rerun-if-changed={}", d.join("gloo").display()))
}

/// The include directories that compile libtorch's NCCL header, when libtorch has CUDA and they
/// hold NCCL's, the CUDA runtime's, its C runtime's and CCCL's headers.
fn nccl_includes(torch_include: &Path) -> Option<Vec<PathBuf>> {
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let torch = torch_include.parent()?;
    if !torch.join("lib/libtorch_cuda.so").exists() {
        return None;
    }
    // The wheel's nvidia packages sit beside the torch package.
    let nvidia = torch.parent()?.join("nvidia");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&nvidia)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path().join("include"))
                .collect()
        })
        .unwrap_or_default();
    let cuda_home = std::env::var_os("CUDA_HOME").map(PathBuf::from);
    dirs.extend(cuda_home.into_iter().map(|h| h.join("include")));
    dirs.retain(|d| d.is_dir());
    dirs.sort();
    let needed = [
        "nccl.h",
        "cuda_runtime_api.h",
        "crt/host_config.h",
        "nv/target",
    ];
    let all_found = needed
        .iter()
        .all(|f| dirs.iter().any(|d| d.join(f).exists()));
    for d in &dirs {
        println!("cargo:rerun-if-changed={}", d.display());
    }
    all_found.then_some(dirs)
}

/// Where Debian (and most distributions) put gperftools' tcmalloc.
const TCMALLOC: &str = "libtcmalloc_minimal.so.4";
const LIB_DIRS: [&str; 4] = [
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
];

/// Links tcmalloc (package `libtcmalloc-minimal4`, which `scripts/setup.sh` installs) so that it
/// replaces the C library's malloc for the whole process, libtorch included. A training step
/// allocates and frees thousands of tensors; with tcmalloc a width-8 step is about 8% faster than
/// with glibc's allocator (see docs/model.md). Without the library, or with
/// `DIS2_SYSTEM_MALLOC=1`, the binary keeps glibc's malloc (tuned by `alloc::tune_allocator`).
fn link_tcmalloc() {
    println!("cargo:rerun-if-env-changed=DIS2_SYSTEM_MALLOC");
    if std::env::var_os("DIS2_SYSTEM_MALLOC").is_some() {
        return;
    }
    match LIB_DIRS
        .iter()
        .map(|d| PathBuf::from(d).join(TCMALLOC))
        .find(|p| p.exists())
    {
        Some(path) => {
            println!("cargo:rerun-if-changed={}", path.display());
            // A library of this crate, so that it comes before the C library in the link order
            // and its malloc is the one every library binds to (a link-arg would come last).
            let dir = path.parent().unwrap_or(Path::new("/"));
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=dylib:+verbatim={TCMALLOC}");
        }
        None => println!(
            "cargo:warning=dis2: {TCMALLOC} not found (apt-get install libtcmalloc-minimal4); \
             using the C library's malloc, which makes small-model training slower"
        ),
    }
}

/// A dependency's version as resolved in `Cargo.lock`, for `dis2 info`.
fn locked_version(name: &str) -> Option<String> {
    let lock = std::fs::read_to_string("Cargo.lock").ok()?;
    println!("cargo:rerun-if-changed=Cargo.lock");
    let needle = format!("name = \"{name}\"\nversion = \"");
    let start = lock.find(&needle)? + needle.len();
    let len = lock[start..].find('"')?;
    Some(lock[start..start + len].to_string())
}
