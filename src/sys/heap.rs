//! Giving the kernel back heap memory the process freed.

/// Returns the free pages inside the heap to the kernel (glibc's
/// `malloc_trim`). glibc gives back only the free memory at the top of a
/// heap by itself; memory freed between blocks still in use stays in the
/// process's resident set until reused. Costs about a microsecond per
/// free block, with the heap locked: call it after much was freed at
/// once, not often.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes an integer and works on glibc's own heap
    // under its own locks; it is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
