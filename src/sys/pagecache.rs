//! Whether a file's bytes are in the page cache, and bringing them in: a
//! sendfile or pread of pages that are not waits for the disk, which the
//! event loop must not do (`request::body::Warmer` reads them ahead on a
//! blocking thread first).

use std::os::fd::{AsRawFd, BorrowedFd};

/// cachestat(2) (Linux 6.5): 451 on x86-64, arm64 and every architecture
/// with the shared syscall table (the libc crate names it for few targets).
const SYS_CACHESTAT: libc::c_long = 451;

#[repr(C)]
struct CachestatRange {
    off: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct Cachestat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

/// True when some page of `len` bytes of `fd` from `offset` is not in the
/// page cache. cachestat counts every page. Where it does not answer
/// (before 6.5; or EPERM: it answers only for files the process may write
/// or owns, and static files are often another user's), three one-byte
/// reads that must not wait (RWF_NOWAIT) look at the range's first,
/// middle and last pages: a file not read lately is missing them all.
/// False when the kernel can tell neither way. A file system whose cache
/// cachestat cannot see (overlayfs) answers "none cached", which `Warmer`
/// notices.
pub fn uncached(fd: BorrowedFd<'_>, offset: u64, len: u64) -> bool {
    if len == 0 {
        return false;
    }
    match cached_pages(fd, offset, len) {
        Some(cached) => {
            let page = page_size();
            cached < (offset + len).div_ceil(page) - offset / page
        }
        // The first answer that is not "cached" decides: a read that
        // would wait, or a file system that cannot read without waiting.
        None => [offset, offset + len / 2, offset + len - 1]
            .into_iter()
            .map(|at| would_wait(fd, at))
            .find(|answer| *answer != Some(false))
            .flatten()
            .unwrap_or(false),
    }
}

/// Whether reading the byte at `at` would wait for the disk; None when the
/// kernel cannot say (no RWF_NOWAIT for this file system, an old kernel).
fn would_wait(fd: BorrowedFd<'_>, at: u64) -> Option<bool> {
    let Ok(at) = libc::off_t::try_from(at) else {
        return None;
    };
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // SAFETY: preadv2 writes at most one byte, into `byte`, through the
    // one iovec, all live for the call; `fd` is open for its duration.
    let r = unsafe { libc::preadv2(fd.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
    if r >= 0 {
        return Some(false);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => Some(true),
        _ => None,
    }
}

/// The kernel's page size, in which cachestat counts.
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .map_or(4096, |p| p as u64)
    })
}

/// How many pages of the range are in the page cache; None when the kernel
/// cannot tell.
fn cached_pages(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Option<u64> {
    let range = CachestatRange { off: offset, len };
    let mut stat = Cachestat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both live and of
    // the kernel's layout for the call; `fd` is open for its duration.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd.as_raw_fd(),
            &range as *const CachestatRange,
            &mut stat as *mut Cachestat,
            0,
        )
    };
    (r == 0).then_some(stat.nr_cache)
}

/// Reads `len` bytes of `fd` from `offset` into the page cache (and
/// nowhere else that lasts). Blocks on the disk: for a blocking thread.
pub fn read_in(fd: BorrowedFd<'_>, mut offset: u64, len: u64) {
    thread_local! {
        // One per blocking thread, reused: what is read is thrown away.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 256 * 1024]);
    }
    let end = offset.saturating_add(len);
    SCRATCH.with_borrow_mut(|scratch| {
        while offset < end {
            let want = ((end - offset) as usize).min(scratch.len());
            let Ok(at) = libc::off_t::try_from(offset) else {
                return;
            };
            match nix::sys::uio::pread(fd, &mut scratch[..want], at) {
                Ok(0) => return,
                Ok(n) => offset += n as u64,
                Err(nix::errno::Errno::EINTR) => {}
                // The read that follows, on the event loop, says what is
                // wrong.
                Err(_) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;

    #[test]
    fn a_file_just_written_is_cached_and_dropped_pages_are_not() {
        let path = std::env::temp_dir().join(format!("oxgate-pagecache-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        f.sync_all().unwrap();
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        read_in(f.as_fd(), 0, 1 << 20);
        // Where the kernel answers and sees this file's cache (not on
        // overlayfs): pages read in are cached, and dropped ones are not
        // (unless the file system cannot drop them: tmpfs).
        let pages = (1 << 20) / page_size();
        if cached_pages(f.as_fd(), 0, 1 << 20) == Some(pages) {
            assert!(!uncached(f.as_fd(), 0, 1 << 20));
            let _ = nix::fcntl::posix_fadvise(
                f.as_fd(),
                0,
                1 << 20,
                nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
            );
            if cached_pages(f.as_fd(), 0, 1 << 20) == Some(0) {
                assert!(uncached(f.as_fd(), 0, 1 << 20));
                read_in(f.as_fd(), 0, 1 << 20);
                assert!(!uncached(f.as_fd(), 0, 1 << 20));
            }
        }
        assert!(!uncached(f.as_fd(), 0, 0));
        // The probe used where cachestat does not answer: a page just read
        // does not make a read wait; a dropped one does, where the kernel
        // can drop it.
        read_in(f.as_fd(), 0, 1 << 20);
        assert_eq!(would_wait(f.as_fd(), 0), Some(false));
        assert_eq!(would_wait(f.as_fd(), (1 << 20) - 1), Some(false));
        let _ = nix::fcntl::posix_fadvise(
            f.as_fd(),
            0,
            1 << 20,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
        if cached_pages(f.as_fd(), 0, 1 << 20) == Some(0) {
            assert_eq!(would_wait(f.as_fd(), 4096 * 10), Some(true));
        }
    }
}
