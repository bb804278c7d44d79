//! Settings for the process allocator. candle allocates a fresh buffer for every tensor op and frees it
//! soon after; with glibc's malloc the large ones go back to the kernel on free and come back as page
//! faults on the next op (≈ 20 % of a CoOp training step). mimalloc with purging off keeps freed memory
//! for reuse. A library does not choose its users' allocator: the `promptscope` binary and the benches
//! declare `#[global_allocator] static ALLOC: mimalloc::MiMalloc` and call [`keep_freed_memory`].

/// `mi_option_purge_delay` in mimalloc.h (v2); not exported by libmimalloc-sys.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps freed memory in the process instead of returning it to the OS. Call once at start-up; the
/// footprint then stays at the peak a job reached, which is what a training loop needs again next step.
pub fn keep_freed_memory() {
    // SAFETY: setting a documented option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}
