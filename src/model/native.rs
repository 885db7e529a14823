//! Native ops compiled from `csrc/ops.cpp` against libtorch: PyTorch kernels that tch 0.26 only
//! exposes with fixed arguments.

use std::ffi::{c_char, c_void, CStr};
use tch::Tensor;

extern "C" {
    fn dis2_leaky_relu(input: *mut c_void, slope: f64, error: *mut *mut c_char) -> *mut c_void;
    fn dis2_free_error(error: *mut c_char);
}

/// `torch.nn.functional.leaky_relu(x, slope)`, with PyTorch's kernel and backward. tch's
/// `leaky_relu` has the fixed slope 0.01, and a PReLU with a constant weight is exact but its
/// backward also computes a full-size weight gradient, several times slower.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    let mut error: *mut c_char = std::ptr::null_mut();
    // SAFETY: `x` is a valid tensor handle for the duration of the call; the returned handle is a
    // new `at::Tensor` that `Tensor::from_ptr` takes ownership of.
    let out = unsafe { dis2_leaky_relu(x.as_ptr() as *mut c_void, slope, &mut error) };
    if out.is_null() {
        // SAFETY: on failure `error` is a NUL-terminated string allocated by the shim.
        let msg = unsafe {
            let msg = CStr::from_ptr(error).to_string_lossy().into_owned();
            dis2_free_error(error);
            msg
        };
        // Only reachable for invalid inputs (e.g. an integer tensor), which the model never builds.
        panic!("leaky_relu: {msg}");
    }
    // SAFETY: non-null `out` is an owned, heap-allocated `at::Tensor`.
    unsafe { Tensor::from_ptr(out as *mut _) }
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
}
