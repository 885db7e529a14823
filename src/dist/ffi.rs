//! The C functions of `csrc/dist.cpp` (see there for what each does). Handles are opaque
//! pointers owned by the Rust wrappers in [`super::group`] and [`super::reducer`]; errors come
//! back as strings read by `native::check`.

use std::ffi::{c_char, c_void};

extern "C" {
    pub(super) fn dis2_dist_init(
        host: *const c_char,
        port: i32,
        rank: i32,
        size: i32,
        server: bool,
        prefix: *const c_char,
        timeout_ms: i64,
        cuda_device: i32,
        error: *mut *mut c_char,
    ) -> *mut c_void;
    pub(super) fn dis2_dist_free(group: *mut c_void);
    pub(super) fn dis2_dist_nccl_built() -> bool;
    pub(super) fn dis2_dist_broadcast(
        group: *mut c_void,
        tensors: *const *mut c_void,
        n: i64,
        root: i32,
        error: *mut *mut c_char,
    ) -> i32;
    pub(super) fn dis2_dist_all_reduce_sum(
        group: *mut c_void,
        tensor: *mut c_void,
        error: *mut *mut c_char,
    ) -> i32;
    pub(super) fn dis2_dist_barrier(group: *mut c_void, error: *mut *mut c_char) -> i32;
    pub(super) fn dis2_dist_verify_params(
        group: *mut c_void,
        params: *const *mut c_void,
        n: i64,
        error: *mut *mut c_char,
    ) -> i32;
    pub(super) fn dis2_reducer_new(
        group: *mut c_void,
        params: *const *mut c_void,
        names: *const *const c_char,
        n: i64,
        bucket_bytes: i64,
        first_bucket_bytes: i64,
        find_unused: bool,
        error: *mut *mut c_char,
    ) -> *mut c_void;
    pub(super) fn dis2_reducer_prepare(
        reducer: *mut c_void,
        outputs: *const *mut c_void,
        n: i64,
        error: *mut *mut c_char,
    ) -> i32;
    pub(super) fn dis2_reducer_free(reducer: *mut c_void);
}
