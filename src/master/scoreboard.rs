//! Memory shared by the master and its workers: one slot per worker, with
//! counters and the requests running on each of its cores. The master reads
//! it for harakiri, recycling and (later) stats; workers write their own
//! slot. It is a memfd, so it survives the master's re-exec on reload.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// Workers of all generations alive at once (a reload runs two).
pub const SLOTS: usize = 256;
/// Requests tracked per worker: one per Python thread.
pub const CORES: usize = 64;
/// Bytes of "METHOD URI from CLIENT" kept for each running request.
pub const INFO: usize = 200;

/// Why a worker asked to be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Retire {
    None = 0,
    MaxRequests = 1,
}

#[repr(C)]
pub struct Core {
    /// Monotonic µs when the running request started; 0 when idle.
    pub started_us: AtomicU64,
    pub requests: AtomicU64,
    info_len: AtomicU32,
    info: [std::cell::UnsafeCell<u8>; INFO],
}

#[repr(C)]
pub struct Slot {
    pub pid: AtomicI32,
    /// uWSGI's worker id, 1..=processes.
    pub id: AtomicU32,
    /// Set once the worker has its app and is accepting.
    pub ready: AtomicU32,
    /// A worker that wants to be replaced (max-requests) says why here.
    pub retire: AtomicU32,
    pub requests: AtomicU64,
    pub exceptions: AtomicU64,
    pub cores: [Core; CORES],
}

pub struct Scoreboard {
    fd: OwnedFd,
    base: *mut Slot,
}

// The mapping is shared memory of atomics; the raw info bytes are written
// only by the slot's own worker, and read as a best-effort log line.
unsafe impl Send for Scoreboard {}
unsafe impl Sync for Scoreboard {}

const SIZE: usize = std::mem::size_of::<Slot>() * SLOTS;

impl Scoreboard {
    pub fn create() -> std::io::Result<Scoreboard> {
        let fd = unsafe { libc::memfd_create(c"oxgate-scoreboard".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if unsafe { libc::ftruncate(fd.as_raw_fd(), SIZE as libc::off_t) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Self::map(fd)
    }

    /// Maps a scoreboard handed over by the previous master image.
    pub fn adopt(fd: RawFd) -> std::io::Result<Scoreboard> {
        Self::map(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    fn map(fd: OwnedFd) -> std::io::Result<Scoreboard> {
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Scoreboard {
            fd,
            base: ptr.cast(),
        })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    pub fn slot(&self, i: usize) -> &Slot {
        assert!(i < SLOTS);
        unsafe { &*self.base.add(i) }
    }

    /// A slot no worker uses, cleared for a new one.
    pub fn claim(&self, pid: i32, id: u32) -> Option<usize> {
        (0..SLOTS).find(|&i| {
            let s = self.slot(i);
            if s.pid
                .compare_exchange(0, -1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                s.id.store(id, Ordering::Relaxed);
                s.ready.store(0, Ordering::Relaxed);
                s.retire.store(Retire::None as u32, Ordering::Relaxed);
                s.requests.store(0, Ordering::Relaxed);
                s.exceptions.store(0, Ordering::Relaxed);
                for c in &s.cores {
                    c.started_us.store(0, Ordering::Relaxed);
                    c.requests.store(0, Ordering::Relaxed);
                }
                s.pid.store(pid, Ordering::Release);
                true
            } else {
                false
            }
        })
    }

    pub fn release(&self, i: usize) {
        self.slot(i).pid.store(0, Ordering::Release);
    }
}

impl Core {
    /// Records a request starting on this core (worker side).
    pub fn begin(&self, info: &[u8]) {
        let n = info.len().min(INFO);
        for (dst, src) in self.info.iter().zip(&info[..n]) {
            unsafe { *dst.get() = *src };
        }
        self.info_len.store(n as u32, Ordering::Relaxed);
        self.started_us.store(now_us().max(1), Ordering::Release);
    }

    pub fn end(&self) {
        self.started_us.store(0, Ordering::Release);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// What the core is running, for the log (master side; best effort).
    pub fn info(&self) -> String {
        let n = (self.info_len.load(Ordering::Relaxed) as usize).min(INFO);
        let bytes: Vec<u8> = self.info[..n].iter().map(|c| unsafe { *c.get() }).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for Scoreboard {
    fn drop(&mut self) {
        unsafe { libc::munmap(self.base.cast(), SIZE) };
    }
}

/// CLOCK_MONOTONIC in µs: the same clock in every process.
pub fn now_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_track_release() {
        let sb = Scoreboard::create().unwrap();
        let a = sb.claim(100, 1).unwrap();
        let b = sb.claim(101, 2).unwrap();
        assert_ne!(a, b);
        let core = &sb.slot(a).cores[0];
        core.begin(b"GET /slow from 127.0.0.1");
        assert!(core.started_us.load(Ordering::Acquire) > 0);
        assert_eq!(core.info(), "GET /slow from 127.0.0.1");
        core.end();
        assert_eq!(core.started_us.load(Ordering::Acquire), 0);
        assert_eq!(core.requests.load(Ordering::Relaxed), 1);
        sb.release(a);
        assert_eq!(sb.claim(102, 3), Some(a));
    }

    #[test]
    fn shared_across_fork() {
        let sb = Scoreboard::create().unwrap();
        let i = sb.claim(1, 1).unwrap();
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            sb.slot(i).requests.store(42, Ordering::Release);
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(sb.slot(i).requests.load(Ordering::Acquire), 42);
    }
}
