//! Native ops compiled from `csrc/*.cpp` against libtorch: PyTorch kernels that tch 0.26 does not
//! expose (LeakyReLU with a slope, the fused optimiser steps) and DIS2's own fused CPU kernel of
//! the segmentation losses (`csrc/seg_loss.cpp`).
//!
//! Every C function takes tch's tensor handles and reports a C++ exception through an error
//! string, which [`check`] turns into a Rust error.

use std::ffi::{c_char, c_void, CStr};

use anyhow::{bail, Result};
use tch::Tensor;

extern "C" {
    fn dis2_leaky_relu(input: *mut c_void, slope: f64, error: *mut *mut c_char) -> *mut c_void;
    fn dis2_sgd_step(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        bufs: *const *mut c_void,
        n: i64,
        lr: f64,
        momentum: f64,
        weight_decay: f64,
        nesterov: bool,
        error: *mut *mut c_char,
    ) -> i32;
    fn dis2_adamw_step(
        params: *const *mut c_void,
        grads: *const *mut c_void,
        exp_avgs: *const *mut c_void,
        exp_avg_sqs: *const *mut c_void,
        steps: *const i64,
        n: i64,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        error: *mut *mut c_char,
    ) -> i32;
    fn dis2_prenorm_leaky(
        x: *mut c_void,
        slope: f64,
        eps: f64,
        pad: bool,
        error: *mut *mut c_char,
    ) -> *mut c_void;
    fn dis2_prenorm_leaky_joined(
        skip: *mut c_void,
        own: *mut c_void,
        k: i64,
        slope: f64,
        eps: f64,
        pad: bool,
        error: *mut *mut c_char,
    ) -> *mut c_void;
    fn dis2_backward(
        roots: *const *mut c_void,
        grads: *const *mut c_void,
        n: i64,
        error: *mut *mut c_char,
    ) -> i32;
    fn dis2_seg_losses(
        preds: *const *mut c_void,
        n: i64,
        target: *mut c_void,
        weights: *mut c_void,
        error: *mut *mut c_char,
    ) -> *mut c_void;
    fn dis2_dropout_mask(
        like: *mut c_void,
        p: f64,
        draw: bool,
        seed: u64,
        error: *mut *mut c_char,
    ) -> *mut c_void;
    fn dis2_set_thread_local_threads(n: i32) -> i32;
    fn dis2_clear_grads(params: *const *mut c_void, n: i64, error: *mut *mut c_char) -> i32;
    fn dis2_autocast_enter(
        device: i32,
        enabled: bool,
        was_enabled: *mut bool,
        was_dtype: *mut i32,
        error: *mut *mut c_char,
    ) -> i32;
    fn dis2_autocast_exit(
        device: i32,
        was_enabled: bool,
        was_dtype: i32,
        error: *mut *mut c_char,
    ) -> i32;
    #[cfg(test)]
    fn dis2_autocast_enabled(device: i32) -> bool;
    fn dis2_cpu_capability(name: *const c_char) -> i32;
    fn dis2_profile_start(error: *mut *mut c_char) -> i32;
    fn dis2_profile_stop(error: *mut *mut c_char) -> *mut c_char;
    fn dis2_free_error(error: *mut c_char);
}

/// Reads and frees the message a failed native call left in `error`.
pub(crate) fn take_error(error: *mut c_char) -> String {
    if error.is_null() {
        return "unknown error in a native op".into();
    }
    // SAFETY: a non-null `error` is a NUL-terminated string allocated by the shim with strdup.
    unsafe {
        let msg = CStr::from_ptr(error).to_string_lossy().into_owned();
        dis2_free_error(error);
        msg
    }
}

/// A status-returning native call: `Ok` or the shim's message.
pub(crate) fn check(status: i32, error: *mut c_char, what: &str) -> Result<()> {
    if status == 0 {
        Ok(())
    } else {
        bail!("{what}: {}", take_error(error))
    }
}

/// A tensor-returning native call: the new tensor or the shim's message.
fn tensor_or_error(out: *mut c_void, error: *mut c_char, what: &str) -> Result<Tensor> {
    if out.is_null() {
        bail!("{what}: {}", take_error(error));
    }
    // SAFETY: non-null `out` is an owned, heap-allocated `at::Tensor` that we now own.
    Ok(unsafe { Tensor::from_ptr(out as *mut _) })
}

pub(crate) fn handles(ts: &[&Tensor]) -> Vec<*mut c_void> {
    ts.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

/// `torch.nn.functional.leaky_relu(x, slope)`, with PyTorch's kernel and backward. tch's
/// `leaky_relu` has the fixed slope 0.01, and a PReLU with a constant weight is exact but its
/// backward also computes a full-size weight gradient, several times slower.
pub(crate) fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: `x` is a valid tensor handle for the duration of the call.
    let out = unsafe { dis2_leaky_relu(x.as_ptr() as *mut c_void, slope, &mut error) };
    // Only fails for invalid inputs (e.g. an integer tensor), which the model never builds.
    tensor_or_error(out, error, "leaky_relu").unwrap_or_else(|e| panic!("{e:#}"))
}

/// `leaky(normalise(x), slope)` per image of `x` `[N, C, H, W]`, normalised over (C, H, W)
/// without affine parameters (`eps` inside the square root), reflect-padded by one pixel when
/// `pad`: the front of DIS2's pre-norm convolutions as one autograd op with a hand-written
/// backward (`csrc/prenorm.cpp`). Float32 CPU tensors, NCHW or channels-last (kept).
pub(crate) fn prenorm_leaky(x: &Tensor, slope: f64, eps: f64, pad: bool) -> Result<Tensor> {
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: `x` is a valid tensor handle for the duration of the call.
    let out = unsafe { dis2_prenorm_leaky(x.as_ptr() as *mut c_void, slope, eps, pad, &mut error) };
    tensor_or_error(out, error, "prenorm_leaky")
}

/// [`prenorm_leaky`] of `cat([skip[i / k], own[i]], 1)` for every image `i` of `own`, without
/// writing the concatenation out: `skip` `[N, Cs, H, W]` and `own` `[N·k, Co, H, W]`, float32
/// or bfloat16 CPU tensors of one kind (read channels-last, copied once when not), give
/// `[N·k, Cs + Co, H, W]` (`[N·k, Cs + Co, H + 2, W + 2]` when `pad`), channels-last. The skip's
/// sums are taken once per skip image. No backward: inference only.
///
/// # Errors
/// Other kinds, devices or ranks, sizes that do not pair `k` own images with each skip image,
/// a reflect pad of less than 2 x 2 pixels, or inputs that require gradients.
pub(crate) fn prenorm_leaky_joined(
    skip: &Tensor,
    own: &Tensor,
    k: i64,
    slope: f64,
    eps: f64,
    pad: bool,
) -> Result<Tensor> {
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: `skip` and `own` are valid tensor handles for the duration of the call.
    let out = unsafe {
        dis2_prenorm_leaky_joined(
            skip.as_ptr() as *mut c_void,
            own.as_ptr() as *mut c_void,
            k,
            slope,
            eps,
            pad,
            &mut error,
        )
    };
    tensor_or_error(out, error, "prenorm_leaky_joined")
}

/// The weighted cross-entropy + Dice losses `[N]` of N probability maps `preds` (float32 on the
/// CPU, each of `target`'s shape `[B, K, H, W]`) against the float32 one-hot `target`, with the
/// cross-entropy weights `weights` `[B, K]` (see `model::losses::seg_losses_weighted`) as one
/// autograd op: a fused C++ kernel that reads each prediction once forward and once backward and
/// writes the gradients directly (no double backward). Predictions and target may be contiguous
/// or channels-last, read in place; the gradient of each has its layout (other layouts are read
/// from a contiguous copy). Deterministic, whatever the number of threads.
pub fn seg_losses(preds: &[&Tensor], target: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let p = handles(preds);
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: `p` holds valid tensor handles, `target` and `weights` are valid; all alive for the
    // call.
    let out = unsafe {
        dis2_seg_losses(
            p.as_ptr(),
            p.len() as i64,
            target.as_ptr() as *mut c_void,
            weights.as_ptr() as *mut c_void,
            &mut error,
        )
    };
    tensor_or_error(out, error, "seg_losses")
}

/// A dropout mask of `like`'s shape (float32, CPU): each element `1/(1-p)` with probability
/// `1 - p`, else 0, from a counter-based hash seeded by one draw of PyTorch's CPU generator
/// (`csrc/dropout.cpp`; PyTorch's `bernoulli_` is several times slower on the CPU), or by
/// `seed` when given.
pub(crate) fn dropout_mask(like: &Tensor, p: f64, seed: Option<u64>) -> Result<Tensor> {
    let mut error: *mut c_char = std::ptr::null_mut();
    let (draw, seed) = (seed.is_none(), seed.unwrap_or(0));
    // SAFETY: `like` is a valid tensor handle for the duration of the call.
    let out = unsafe { dis2_dropout_mask(like.as_ptr() as *mut c_void, p, draw, seed, &mut error) };
    tensor_or_error(out, error, "dropout_mask")
}

/// One SGD step over all `params` at once (PyTorch's fused kernel): per parameter,
/// `buf = momentum·buf + g'` with `g' = grad + weight_decay·param`, then
/// `param -= lr·(g' + momentum·buf)` (Nesterov) or `param -= lr·buf`; one buffer per parameter
/// (none when `momentum` is 0). Tensors are updated in place.
pub(crate) fn sgd_step(
    params: &[&Tensor],
    grads: &[&Tensor],
    momentum_buffers: &[&Tensor],
    lr: f64,
    momentum: f64,
    weight_decay: f64,
    nesterov: bool,
) -> Result<()> {
    let n = params.len();
    let buffers = if momentum != 0.0 { n } else { 0 };
    if grads.len() != n || momentum_buffers.len() != buffers {
        bail!(
            "sgd_step: {n} parameters, {} gradients, {} buffers",
            grads.len(),
            momentum_buffers.len()
        );
    }
    let (p, g, b) = (handles(params), handles(grads), handles(momentum_buffers));
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: the handle arrays hold `n` valid tensor handles alive for the call.
    let status = unsafe {
        dis2_sgd_step(
            p.as_ptr(),
            g.as_ptr(),
            b.as_ptr(),
            n as i64,
            lr,
            momentum,
            weight_decay,
            nesterov,
            &mut error,
        )
    };
    check(status, error, "sgd_step")
}

/// The backward pass from several roots at once, root i seeded with `grads[i]` (PyTorch's
/// `torch.autograd.backward(roots, grads)`); gradients accumulate into the leaves.
pub fn backward(roots: &[&Tensor], grads: &[&Tensor]) -> Result<()> {
    if roots.len() != grads.len() {
        bail!("backward: {} roots, {} gradients", roots.len(), grads.len());
    }
    let (r, g) = (handles(roots), handles(grads));
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: both arrays hold valid tensor handles alive for the call.
    let status = unsafe { dis2_backward(r.as_ptr(), g.as_ptr(), r.len() as i64, &mut error) };
    check(status, error, "backward")
}

/// Sets the intra-op thread count of the calling thread only (libtorch's OpenMP and MKL),
/// unlike `tch::set_num_threads`, which also changes the default of threads yet to start;
/// returns the calling thread's previous count.
pub(crate) fn set_thread_local_threads(n: i32) -> i32 {
    // SAFETY: plain setters of per-thread runtime settings.
    unsafe { dis2_set_thread_local_threads(n) }
}

/// Drops the gradients of `params` (PyTorch's `zero_grad(set_to_none=True)`): the next backward
/// pass writes fresh gradients rather than adding to zeros, and a parameter that the next step
/// does not use has no gradient afterwards.
pub(crate) fn clear_grads(params: &[&Tensor]) -> Result<()> {
    let p = handles(params);
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: `p` holds valid tensor handles alive for the call.
    let status = unsafe { dis2_clear_grads(p.as_ptr(), p.len() as i64, &mut error) };
    check(status, error, "clear_grads")
}

/// The device types libtorch's autocast is switched for: the CPU (code 0) and CUDA (code 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AutocastDevice {
    Cpu = 0,
    Cuda = 1,
}

/// The autocast state of one device type in the calling thread, as [`autocast_enter`] found it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AutocastState {
    device: AutocastDevice,
    enabled: bool,
    dtype: i32,
}

/// Switches libtorch's autocast for `device` in the calling thread on (bfloat16 as the lower
/// precision) or off, and returns the state to restore with [`autocast_exit`]. Regions nest; the
/// outermost exit drops the bfloat16 copies of weights autocast cached.
pub(crate) fn autocast_enter(device: AutocastDevice, enabled: bool) -> Result<AutocastState> {
    let (mut was_enabled, mut was_dtype) = (false, 0i32);
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: the out-pointers are valid locals for the duration of the call.
    let status = unsafe {
        dis2_autocast_enter(
            device as i32,
            enabled,
            &mut was_enabled,
            &mut was_dtype,
            &mut error,
        )
    };
    check(status, error, "autocast")?;
    Ok(AutocastState {
        device,
        enabled: was_enabled,
        dtype: was_dtype,
    })
}

/// Restores the autocast state that [`autocast_enter`] returned.
pub(crate) fn autocast_exit(state: AutocastState) -> Result<()> {
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: plain values; the shim only sets thread-local autocast flags.
    let status =
        unsafe { dis2_autocast_exit(state.device as i32, state.enabled, state.dtype, &mut error) };
    check(status, error, "autocast")
}

/// Whether autocast is on for `device` in the calling thread.
#[cfg(test)]
pub(crate) fn autocast_enabled(device: AutocastDevice) -> bool {
    // SAFETY: reads a thread-local flag.
    unsafe { dis2_autocast_enabled(device as i32) }
}

/// libtorch's own reading (cpuinfo) of the boolean CPU capability `name`, such as `avx512_bf16`
/// or `amx_bf16`; `None` when libtorch does not report that name.
pub(crate) fn cpu_capability(name: &str) -> Option<bool> {
    let name = std::ffi::CString::new(name).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
    match unsafe { dis2_cpu_capability(name.as_ptr()) } {
        1 => Some(true),
        0 => Some(false),
        _ => None,
    }
}

/// One op's totals over a [`profile`]d stretch of work (libtorch's profiler, `csrc/profile.cpp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpTotals {
    /// libtorch's name, e.g. `aten::conv2d`.
    pub name: String,
    pub calls: u64,
    /// Wall time inside the op, including the ops it called (ns).
    pub total_ns: u64,
    /// Wall time inside the op minus the ops it called (ns).
    pub self_ns: u64,
    /// Floating-point operations libtorch counts for the op (convolutions, matrix products,
    /// element-wise additions and products; 0 for the rest): 2 per multiply-add.
    pub flops: u64,
}

/// Runs `f` under libtorch's profiler (the CPU ops of the calling thread, with shapes) and
/// returns its result with each op's totals, by name.
pub fn profile<T>(f: impl FnOnce() -> T) -> Result<(T, Vec<OpTotals>)> {
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: only sets the error pointer on failure.
    check(unsafe { dis2_profile_start(&mut error) }, error, "profile")?;
    let value = f();
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: returns a strdup'ed string we free with `dis2_free_error`, or null with an error.
    let text = unsafe { dis2_profile_stop(&mut error) };
    if text.is_null() {
        bail!("profile: {}", take_error(error));
    }
    // SAFETY: a non-null result is a NUL-terminated string allocated by the shim.
    let lines = unsafe {
        let s = CStr::from_ptr(text).to_string_lossy().into_owned();
        dis2_free_error(text);
        s
    };
    let ops = lines
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let [name, calls, total, own, flops] = f[..] else {
                return None;
            };
            Some(OpTotals {
                name: name.to_string(),
                calls: calls.parse().ok()?,
                total_ns: total.parse().ok()?,
                self_ns: own.parse().ok()?,
                flops: flops.parse().ok()?,
            })
        })
        .collect();
    Ok((value, ops))
}

/// The ops whose FLOPs [`matrix_flops`] counts: convolutions and matrix products, the work a
/// GEMM peak bounds.
const MATRIX_OPS: [&str; 5] = [
    "aten::conv2d",
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::baddbmm",
];

/// The floating-point operations of the convolutions and matrix products among `ops` (a
/// [`profile`]'s totals), as libtorch's profiler counts them (2 per multiply-add); the rest
/// (element-wise work, normalisations) is left out. Used by `make bench-step` and
/// `make bench-predict` to give their GFLOP/s.
pub fn matrix_flops(ops: &[OpTotals]) -> u64 {
    ops.iter()
        .filter(|o| MATRIX_OPS.contains(&o.name.as_str()))
        .map(|o| o.flops)
        .sum()
}

/// GFLOP/s of an `n x n` matrix product in `kind` on the CPU with libtorch's current threads,
/// the median of 5 after a warm-up: the GEMM peak the benchmarks give their GFLOP/s as a share
/// of (`n` = 2048).
pub fn gemm_gflops(kind: tch::Kind, n: i64) -> f64 {
    let opts = (tch::Kind::Float, tch::Device::Cpu);
    let a = Tensor::randn([n, n], opts).to_kind(kind);
    let b = Tensor::randn([n, n], opts).to_kind(kind);
    let _ = a.matmul(&b);
    let mut times: Vec<f64> = (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            let _ = a.matmul(&b);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    2.0 * (n as f64).powi(3) / times[2] / 1e9
}

/// AdamW hyper-parameters for [`adamw_step`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdamW {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
    pub eps: f64,
}

/// One AdamW step over all `params` at once (PyTorch's fused kernel, no amsgrad). `steps[i]` is
/// parameter i's update count including this step (for the bias corrections).
pub(crate) fn adamw_step(
    params: &[&Tensor],
    grads: &[&Tensor],
    exp_avgs: &[&Tensor],
    exp_avg_sqs: &[&Tensor],
    steps: &[i64],
    h: AdamW,
) -> Result<()> {
    let n = params.len();
    if [grads.len(), exp_avgs.len(), exp_avg_sqs.len(), steps.len()]
        .iter()
        .any(|&l| l != n)
    {
        bail!("adamw_step: lists of different lengths for {n} parameters");
    }
    let (p, g) = (handles(params), handles(grads));
    let (m, v) = (handles(exp_avgs), handles(exp_avg_sqs));
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: the handle arrays hold `n` valid tensor handles alive for the call, `steps` n counts.
    let status = unsafe {
        dis2_adamw_step(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            steps.as_ptr(),
            n as i64,
            h.lr,
            h.beta1,
            h.beta2,
            h.weight_decay,
            h.eps,
            &mut error,
        )
    };
    check(status, error, "adamw_step")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn leaky_relu_values_and_gradient() {
        let x = Tensor::from_slice(&[-2.0f32, -0.5, 0.0, 0.5, 3.0]).set_requires_grad(true);
        let y = leaky_relu(&x, 0.2);
        let want = Tensor::from_slice(&[-0.4f32, -0.1, 0.0, 0.5, 3.0]);
        assert!((&y - want).abs().max().double_value(&[]) < 1e-7);
        y.sum(Kind::Float).backward();
        let g = Vec::<f32>::try_from(x.grad()).unwrap();
        assert_eq!(g, [0.2, 0.2, 0.2, 1.0, 1.0]);
        // Channels-last layouts keep their strides.
        let z = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu))
            .permute([0, 2, 3, 1])
            .contiguous()
            .permute([0, 3, 1, 2]);
        assert_eq!(leaky_relu(&z, 0.2).stride(), z.stride());
    }

    #[test]
    fn thread_local_thread_count_leaves_other_threads_alone() {
        let main = tch::get_num_threads();
        let inner = std::thread::spawn(|| {
            let previous = set_thread_local_threads(1);
            let now = tch::get_num_threads();
            set_thread_local_threads(previous);
            (previous, now)
        })
        .join()
        .unwrap();
        assert_eq!(inner, (main, 1));
        assert_eq!(tch::get_num_threads(), main);
    }
}
