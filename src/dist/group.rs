//! The process group of a data-parallel job (`c10d::ProcessGroup`, `csrc/dist.cpp`): how the
//! ranks meet and the collectives the trainer uses.

use anyhow::{Context, Result};
use std::ffi::{c_char, c_void, CString};
use tch::{Device, Tensor};

use super::ffi;
use super::launch::Launch;
use crate::native::{check, handles, take_error};

/// Rank `rank` of `size` processes joined over c10d. Every collective blocks until each rank has
/// called it, or fails after the launch's timeout (or as soon as a peer's connection closes).
pub struct ProcessGroup {
    handle: *mut c_void,
    rank: usize,
    size: usize,
}

impl ProcessGroup {
    /// Joins the job `launch` describes: rendezvous over a `c10d::TCPStore` at the master's
    /// address (served by rank 0, or by torchrun's agent), Gloo for CPU tensors and, when `device`
    /// is CUDA, NCCL for CUDA tensors (Gloo where this build has no NCCL). Fails when the other
    /// ranks do not show up within the timeout, or the backend cannot be set up.
    pub fn join(launch: &Launch, device: Device) -> Result<Self> {
        let host = CString::new(launch.master_addr.clone()).context("MASTER_ADDR")?;
        let prefix = CString::new(format!("dis2/attempt_{}/", launch.attempt))?;
        let cuda_device = match device {
            Device::Cuda(i) => i as i32,
            _ => -1,
        };
        let server = launch.rank == 0 && !launch.agent_store;
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: the strings live until the call returns; the result is an owned handle or null.
        let handle = unsafe {
            ffi::dis2_dist_init(
                host.as_ptr(),
                i32::from(launch.master_port),
                launch.rank as i32,
                launch.world_size as i32,
                server,
                prefix.as_ptr(),
                launch.timeout.as_millis() as i64,
                cuda_device,
                &mut error,
            )
        };
        if handle.is_null() {
            anyhow::bail!(
                "{launch}: cannot join the process group (within {} s): {}",
                launch.timeout.as_secs(),
                take_error(error)
            );
        }
        Ok(Self {
            handle,
            rank: launch.rank,
            size: launch.world_size,
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether CUDA tensors go through NCCL in this build (else through Gloo).
    pub(crate) fn nccl_built() -> bool {
        // SAFETY: no arguments, no state.
        unsafe { ffi::dis2_dist_nccl_built() }
    }

    pub(crate) fn handle(&self) -> *mut c_void {
        self.handle
    }

    /// Copies rank `root`'s values of `tensors` into every rank's tensors, in place.
    pub(crate) fn broadcast(&self, tensors: &[&Tensor], root: usize) -> Result<()> {
        let ts = handles(tensors);
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid group and tensor handles for the duration of the call.
        let status = unsafe {
            ffi::dis2_dist_broadcast(
                self.handle,
                ts.as_ptr(),
                ts.len() as i64,
                root as i32,
                &mut error,
            )
        };
        check(status, error, &self.failed("broadcast"))
    }

    /// Replaces `tensor` by its sum over the ranks, in place.
    pub(crate) fn all_reduce_sum(&self, tensor: &Tensor) -> Result<()> {
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid group and tensor handles for the duration of the call.
        let status = unsafe {
            ffi::dis2_dist_all_reduce_sum(self.handle, tensor.as_ptr() as *mut c_void, &mut error)
        };
        check(status, error, &self.failed("all-reduce"))
    }

    /// Returns once every rank has called it.
    pub(crate) fn barrier(&self) -> Result<()> {
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: a valid group handle.
        let status = unsafe { ffi::dis2_dist_barrier(self.handle, &mut error) };
        check(status, error, &self.failed("barrier"))
    }

    /// Fails, saying what differs, unless every rank has as many parameters as rank 0, of the
    /// same shapes and types (ranks started with different configurations).
    pub(crate) fn verify_same_parameters(&self, params: &[&Tensor]) -> Result<()> {
        let ts = handles(params);
        let mut error: *mut c_char = std::ptr::null_mut();
        // SAFETY: valid group and tensor handles for the duration of the call.
        let status = unsafe {
            ffi::dis2_dist_verify_params(self.handle, ts.as_ptr(), ts.len() as i64, &mut error)
        };
        check(
            status,
            error,
            &format!("rank {}: the ranks' models differ", self.rank),
        )
    }

    /// The message of a failed collective: which rank, and the likely cause.
    pub(crate) fn failed(&self, what: &str) -> String {
        format!(
            "rank {} of {}: {what} failed (another rank stopped or timed out; see its messages)",
            self.rank, self.size
        )
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from dis2_dist_init and is freed once.
        unsafe { ffi::dis2_dist_free(self.handle) }
    }
}
