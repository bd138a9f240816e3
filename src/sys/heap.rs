//! Giving the kernel back heap memory the process freed: glibc's heap
//! (CPython's allocations) and mimalloc's (Rust's, `lib.rs`).

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

/// Returns the pages mimalloc holds free to the kernel now. mimalloc gives
/// back a freed page only a moment later, and only when the allocator is
/// next called on that thread: a worker gone idle would keep them. Call it
/// on the thread that freed the memory.
pub fn release_allocator_memory() {
    // SAFETY: mi_collect takes a flag and works on the calling thread's
    // own heap and mimalloc's shared arenas, under mimalloc's own locks.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// mimalloc's `mi_option_arena_reserve` (its place in `mi_option_e`, in
/// mimalloc 3's `mimalloc.h`; libmimalloc-sys names only mimalloc 2's).
const ARENA_RESERVE: libmimalloc_sys::mi_option_t = 23;

/// The address space mimalloc reserves at a time, in KiB: 64 MiB (asked
/// for less, it measured the same), where its default is 1 GiB.
/// `--limit-as` (uWSGI's RLIMIT_AS) counts reserved address space, and a
/// worker inherits the master's: with 1 GiB reserved, `--limit-as 512`
/// left CPython no room to load an app.
const ARENA_RESERVE_KIB: std::ffi::c_long = 64 * 1024;

/// Sets mimalloc's options before its first allocation (`lib.rs` has the
/// loader call it). A user's `MIMALLOC_ARENA_RESERVE` (in capitals) stands.
pub extern "C" fn allocator_settings() {
    // SAFETY: getenv reads the environment the loader set up; the name is
    // a NUL-terminated literal. Nothing here may allocate: getenv, not
    // std::env, which would make mimalloc reserve its arena first.
    let given = unsafe { libc::getenv(c"MIMALLOC_ARENA_RESERVE".as_ptr()) };
    if given.is_null() {
        // SAFETY: mi_option_set stores a number in mimalloc's option table;
        // it may be called before mimalloc is initialised.
        unsafe { libmimalloc_sys::mi_option_set(ARENA_RESERVE, ARENA_RESERVE_KIB) }
    }
}

/// The address space mimalloc reserves for an arena, in bytes: reserved
/// once, before the first worker forks, whatever the app later uses.
pub fn arena_reserve_bytes() -> u64 {
    // SAFETY: mi_option_get reads mimalloc's option table.
    let kib = unsafe { libmimalloc_sys::mi_option_get(ARENA_RESERVE) };
    u64::try_from(kib).unwrap_or(0) * 1024
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_loader_set_the_arena_reserve() {
        // SAFETY: mi_option_get reads mimalloc's option table.
        let kib = unsafe { libmimalloc_sys::mi_option_get(super::ARENA_RESERVE) };
        if std::env::var_os("MIMALLOC_ARENA_RESERVE").is_none() {
            assert_eq!(kib, super::ARENA_RESERVE_KIB);
        }
    }
}
