//! Memory allocator settings for tensor work.
//!
//! libtorch allocates CPU tensors with the C allocator. With glibc's defaults, the large buffers
//! of a training step are returned to the operating system when freed and faulted in again, page
//! by page, in the next step; on a 2-core machine that costs more than the arithmetic (figures
//! in docs/model.md, "What makes it fast"). [`tune_allocator`] keeps them in the process
//! instead.
//!
//! Where gperftools' tcmalloc is installed, `build.rs` links it and it replaces malloc for the
//! whole process (faster still for the thousands of small tensors of a step);
//! [`allocator_name`] tells which allocator this process runs on (`dis2 info`).

/// `"tcmalloc"` when tcmalloc is loaded into this process (it then serves every malloc),
/// `"glibc"` otherwise.
pub(crate) fn allocator_name() -> &'static str {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if maps.contains("libtcmalloc") {
        "tcmalloc"
    } else {
        "glibc"
    }
}

/// Raises glibc's mmap and trim thresholds so freed tensor buffers are reused rather than
/// unmapped. Call once at start-up, before threads allocate; a no-op on other C libraries and
/// under tcmalloc (whose `mallopt` ignores these settings).
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; invalid values are rejected with 0.
    unsafe {
        // Buffers up to 32 MiB (glibc's maximum) come from the heap, not from fresh mappings.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        // Never shrink the heap on free; grow it in 64 MiB steps.
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}
