#!/usr/bin/env bash
# One-time set-up for dis2, safe to run again: a Python venv with the torch wheel (libtorch for tch)
# in a cache directory outside the clone, and Debian's GDAL development files.
set -euo pipefail

TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
VENV="${DIS2_VENV:?DIS2_VENV must name the venv directory}"

log() { printf 'setup: %s\n' "$*" >&2; }

# --- libtorch, from the torch wheel -----------------------------------------------------------
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.dis2-torch-$TORCH_VERSION" ]; then
    log "torch $TORCH_VERSION already in $VENV"
else
    log "creating $VENV with torch==$TORCH_VERSION (downloads about 5 GB once)"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
    got=$("$VENV/bin/python" -W ignore -c 'import torch; print(torch.__version__.split("+")[0])')
    if [ "$got" != "$TORCH_VERSION" ]; then
        log "expected torch $TORCH_VERSION in $VENV, found $got"; exit 1
    fi
    touch "$VENV/.dis2-torch-$TORCH_VERSION"
fi

# NCCL's binding (csrc/dist_nccl.cpp, data-parallel training on CUDA) compiles against the CUDA
# runtime's headers, which the wheel ships without their C runtime (crt/) and CCCL parts: two
# header-only packages (about 20 MB) of the runtime's CUDA version. Without them the build routes
# CUDA tensors through Gloo instead.
"$VENV/bin/python" -W ignore - <<'PY' || log "no CUDA C runtime/CCCL headers: data-parallel training on CUDA will use Gloo, not NCCL"
import importlib.metadata as md, os, subprocess, sys, torch
lib = os.path.join(os.path.dirname(torch.__file__), "lib")
try:
    runtime = md.version("nvidia-cuda-runtime")
except md.PackageNotFoundError:
    sys.exit(0)  # a CPU-only torch: no NCCL to bind
have = {d.metadata["Name"] for d in md.distributions()}
if os.path.exists(os.path.join(lib, "libtorch_cuda.so")) and not {"nvidia-cuda-crt", "nvidia-cuda-cccl"} <= have:
    series = ".".join(runtime.split(".")[:2]) + ".*"
    print(f"setup: installing nvidia-cuda-crt and nvidia-cuda-cccl {series} (headers for NCCL)", file=sys.stderr)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           "--no-deps", f"nvidia-cuda-crt=={series}", f"nvidia-cuda-cccl=={series}"])
PY

# torch-sys finds libtorch through .libtorch (see .cargo/config.toml): a link to the venv's torch
# package, so that cargo works in any shell, venv active or not.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
torch_dir=$("$VENV/bin/python" -W ignore -c 'import os, torch; print(os.path.dirname(torch.__file__))')
if [ "$(readlink "$ROOT/.libtorch" 2>/dev/null)" != "$torch_dir" ]; then
    ln -sfn "$torch_dir" "$ROOT/.libtorch"
    log "linked $ROOT/.libtorch to $torch_dir"
fi

# --- GDAL, fontconfig with a font for the figures, tcmalloc, Gloo's headers -------------------------
# tcmalloc replaces malloc in the dis2 binary (build.rs links it when present): faster training.
# Gloo's headers compile the binding of libtorch's Gloo backend (data-parallel training on the CPU).
# The whole list is read before matching: with pipefail, `grep -q` closing the pipe early makes
# the writer fail. ldconfig lives in /sbin, which a user's PATH may lack.
have_tcmalloc() {
    local libs
    libs=$(PATH="$PATH:/sbin:/usr/sbin" ldconfig -p 2>/dev/null) || return 1
    [[ "$libs" == *"libtcmalloc_minimal.so.4 "* ]]
}
have_font() { [ -n "$(fc-list 2>/dev/null)" ]; }
if pkg-config --exists gdal fontconfig 2>/dev/null && have_font && have_tcmalloc \
    && [ -f /usr/include/gloo/algorithm.h ]; then
    log "GDAL $(pkg-config --modversion gdal), fontconfig development files, tcmalloc and Gloo headers present"
else
    packages="libgdal-dev gdal-bin pkg-config libfontconfig1-dev fonts-dejavu-core libtcmalloc-minimal4 libgloo-dev"
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO=sudo; else
            log "GDAL or fontconfig development files are missing and this user cannot install them."
            log "Run as root: apt-get install -y $packages"; exit 1
        fi
    else SUDO=""; fi
    if ! command -v apt-get >/dev/null; then
        log "GDAL or fontconfig development files are missing and there is no apt-get here; install GDAL >= 3.4 and fontconfig with pkg-config support, and one TrueType font"
        exit 1
    fi
    log "installing $packages"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $packages >/dev/null
fi
