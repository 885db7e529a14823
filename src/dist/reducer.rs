//! PyTorch DDP's gradient reducer (`c10d::Reducer`, `csrc/dist.cpp`) over the trained
//! parameters.
//!
//! It hooks every parameter's gradient accumulator. Once armed by
//! [`Reducer::prepare_for_backward`], the next backward pass copies each gradient, divided by the
//! world size, into its bucket as soon as autograd has produced it, and all-reduces (sums) a
//! bucket as soon as it is full, while the backward pass goes on; at its end the averaged
//! gradients are copied back into the parameters' `grad`. A backward pass it was not armed for
//! leaves the gradients local (DDP's `no_sync`, for gradient accumulation).

use anyhow::{bail, Result};
use std::ffi::{c_char, c_void, CString};
use tch::Tensor;

use super::ffi;
use super::group::ProcessGroup;
use crate::native::{check, handles, take_error};

/// How gradients are bucketed; the defaults are DDP's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketOptions {
    /// The size of a bucket (DDP's `bucket_cap_mb`, 25 MiB).
    pub bucket_bytes: i64,
    /// The size of the first bucket, which fills first and starts communicating early (1 MiB).
    pub first_bucket_bytes: i64,
    /// Look for parameters the backward pass will not reach (DDP's
    /// `find_unused_parameters`): they count as ready at once, and a parameter no rank used
    /// keeps its gradient.
    pub find_unused: bool,
}

impl Default for BucketOptions {
    fn default() -> Self {
        Self {
            bucket_bytes: 25 << 20,
            first_bucket_bytes: 1 << 20,
            find_unused: false,
        }
    }
}

/// The reducer of one set of parameters in one process group.
pub struct Reducer {
    handle: *mut c_void,
    rank: usize,
}

impl Reducer {
    /// A reducer over `params` (leaf tensors requiring gradients; the same set, in the same
    /// order, on every rank), bucketed in that order: put them in the order the backward pass
    /// produces their gradients (roughly the reverse of the forward pass) so that buckets fill
    /// one after the other. The names appear in the reducer's messages.
    pub fn new(
        group: &ProcessGroup,
        params: &[(String, Tensor)],
        opts: BucketOptions,
    ) -> Result<Self> {
        if params.is_empty() {
            bail!("rank {}: no parameters to reduce", group.rank());
        }
        let tensors: Vec<&Tensor> = params.iter().map(|(_, t)| t).collect();
        let ts = handles(&tensors);
        let names: Vec<CString> = params
            .iter()
            .map(|(n, _)| CString::new(n.as_str()).unwrap_or_default())
            .collect();
        let name_ptrs: Vec<*const c_char> = names.iter().map(|n| n.as_ptr()).collect();
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: the group, tensor handles and strings are valid for the call; the reducer keeps
        // its own references to the tensors and the group.
        let handle = unsafe {
            ffi::dis2_reducer_new(
                group.handle(),
                ts.as_ptr(),
                name_ptrs.as_ptr(),
                ts.len() as i64,
                opts.bucket_bytes,
                opts.first_bucket_bytes,
                opts.find_unused,
                &mut error,
            )
        };
        if handle.is_null() {
            bail!(
                "rank {}: cannot create the gradient reducer: {}",
                group.rank(),
                take_error(error)
            );
        }
        Ok(Self {
            handle,
            rank: group.rank(),
        })
    }

    /// Arms the reducer for the next backward pass, whose graph hangs off `roots` (the losses
    /// the backward pass starts from, and any other tensor it starts from; a find-unused reducer
    /// looks for the parameters they reach). Errors when the previous armed pass did not finish
    /// reducing (a parameter it expected got no gradient).
    pub(crate) fn prepare_for_backward(&self, roots: &[&Tensor]) -> Result<()> {
        let ts = handles(roots);
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid reducer and tensor handles for the duration of the call.
        let status = unsafe {
            ffi::dis2_reducer_prepare(self.handle, ts.as_ptr(), ts.len() as i64, &mut error)
        };
        check(
            status,
            error,
            &format!("rank {}: gradient reducer", self.rank),
        )
    }
}

impl Drop for Reducer {
    fn drop(&mut self) {
        // SAFETY: the handle came from dis2_reducer_new and is freed once.
        unsafe { ffi::dis2_reducer_free(self.handle) }
    }
}
