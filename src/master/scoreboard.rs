//! Memory shared by the master and its workers: a header with server-wide
//! counters, then one slot per worker, with its counters and the requests
//! running on each of its cores. The master reads it for harakiri,
//! recycling, stats and metrics; workers write their own slot. It is a
//! memfd, so it survives the master's re-exec on reload (and the counters
//! with it).

use crate::sys::clock::{now_us, unix_now};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};

/// Workers of all generations alive at once (a reload runs two).
pub const SLOTS: usize = 2 * crate::config::MAX_WORKERS;
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

/// Latency histogram bounds, in µs (Prometheus buckets; +Inf is implied).
pub const LATENCY_BOUNDS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];
pub const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;
/// Protocols counted apart (the order of `listen::Protocol::ALL`).
pub const PROTOCOLS: usize = 4;

/// Why a worker was replaced or died, for the respawn counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Crash = 0,
    MaxRequests = 1,
    Lifetime = 2,
    Rss = 3,
    Harakiri = 4,
    Reload = 5,
}

impl Cause {
    pub const ALL: [Cause; 6] = [
        Cause::Crash,
        Cause::MaxRequests,
        Cause::Lifetime,
        Cause::Rss,
        Cause::Harakiri,
        Cause::Reload,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Cause::Crash => "crash",
            Cause::MaxRequests => "max-requests",
            Cause::Lifetime => "lifetime",
            Cause::Rss => "rss",
            Cause::Harakiri => "harakiri",
            Cause::Reload => "reload",
        }
    }
}

/// Request counters, kept per worker; the header sums up the workers gone.
#[repr(C)]
pub struct Counters {
    pub requests: AtomicU64,
    pub exceptions: AtomicU64,
    /// Response bytes (headers and body).
    pub tx: AtomicU64,
    /// Sum of response times, µs.
    pub rt_us: AtomicU64,
    /// Requests by protocol and status class (1xx..5xx).
    pub by_status: [[AtomicU64; 5]; PROTOCOLS],
    /// Requests by latency bucket (not cumulative).
    pub latency: [AtomicU64; BUCKETS],
}

impl Counters {
    fn clear(&self) {
        for c in self.all() {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn all(&self) -> impl Iterator<Item = &AtomicU64> {
        [&self.requests, &self.exceptions, &self.tx, &self.rt_us]
            .into_iter()
            .chain(self.by_status.iter().flatten())
            .chain(self.latency.iter())
    }

    /// Adds `other` into these counters.
    pub fn absorb(&self, other: &Counters) {
        for (a, b) in self.all().zip(other.all()) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Counts one finished request.
    pub fn record(&self, protocol: usize, status: u16, tx: u64, rt_us: u64) {
        self.tx.fetch_add(tx, Ordering::Relaxed);
        self.rt_us.fetch_add(rt_us, Ordering::Relaxed);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_status[protocol.min(PROTOCOLS - 1)][class].fetch_add(1, Ordering::Relaxed);
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| rt_us <= b)
            .unwrap_or(BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
    }
}

/// What the master remembers of each worker id (1-based; index 0 unused).
#[repr(C)]
pub struct IdStats {
    /// Workers started with this id, the first one included (uWSGI's
    /// respawn_count).
    pub respawns: AtomicU64,
    pub harakiri: AtomicU64,
    /// What the previous workers with this id served.
    pub requests: AtomicU64,
    pub exceptions: AtomicU64,
    pub tx: AtomicU64,
    pub rt_us: AtomicU64,
}

#[repr(C)]
pub struct Header {
    /// Requests served by every worker, ever (uWSGI's "req: n/TOTAL").
    pub requests: AtomicU64,
    /// The counters of workers that have exited.
    pub retired: Counters,
    /// Workers started again, by why the previous one went.
    pub respawns: [AtomicU64; Cause::ALL.len()],
    pub harakiri: AtomicU64,
    pub ids: [IdStats; SLOTS],
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
    /// Unix time (s) the worker was started.
    pub born: AtomicU64,
    /// uWSGI's avg_rt (µs): (avg + last) / 2 at each request.
    pub avg_rt: AtomicU64,
    pub counters: Counters,
    pub cores: [Core; CORES],
}

pub struct Scoreboard {
    fd: OwnedFd,
    base: *mut u8,
}

// The mapping is shared memory of atomics; the raw info bytes are written
// only by the slot's own worker, and read as a best-effort log line.
unsafe impl Send for Scoreboard {}
unsafe impl Sync for Scoreboard {}

const SLOTS_AT: usize = std::mem::size_of::<Header>().next_multiple_of(64);
const SIZE: usize = SLOTS_AT + std::mem::size_of::<Slot>() * SLOTS;

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

    pub fn header(&self) -> &Header {
        unsafe { &*self.base.cast::<Header>() }
    }

    pub fn slot(&self, i: usize) -> &Slot {
        assert!(i < SLOTS);
        unsafe { &*self.base.add(SLOTS_AT).cast::<Slot>().add(i) }
    }

    /// The slots in use by a worker (pid > 0).
    pub fn live(&self) -> impl Iterator<Item = &Slot> {
        (0..SLOTS)
            .map(|i| self.slot(i))
            .filter(|s| s.pid.load(Ordering::Acquire) > 0)
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
                s.counters.clear();
                s.born.store(unix_now(), Ordering::Relaxed);
                s.avg_rt.store(0, Ordering::Relaxed);
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

    /// Frees a dead worker's slot; its counters go to the header's totals.
    pub fn release(&self, i: usize) {
        let s = self.slot(i);
        self.header().retired.absorb(&s.counters);
        let id = self.id_stats(s.id.load(Ordering::Relaxed));
        let c = &s.counters;
        for (into, from) in [
            (&id.requests, &c.requests),
            (&id.exceptions, &c.exceptions),
            (&id.tx, &c.tx),
            (&id.rt_us, &c.rt_us),
        ] {
            into.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        s.counters.clear();
        s.pid.store(0, Ordering::Release);
    }

    /// A worker id's remembered stats (ids beyond the table share the last).
    pub fn id_stats(&self, id: u32) -> &IdStats {
        &self.header().ids[(id as usize).min(SLOTS - 1)]
    }
}

impl Core {
    /// Records a request starting on this core (worker side).
    /// Marks the core busy with a request described by `parts`, joined
    /// (cut to `INFO` bytes).
    pub fn begin(&self, parts: &[&[u8]]) {
        // UnsafeCell<u8> has the layout of u8; only this core's worker writes.
        let base = self.info.as_ptr() as *mut u8;
        let mut n = 0;
        for part in parts {
            let take = part.len().min(INFO - n);
            unsafe { std::ptr::copy_nonoverlapping(part.as_ptr(), base.add(n), take) };
            n += take;
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
        core.begin(&[b"GET /slow", b" from 127.0.0.1"]);
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
            sb.slot(i).counters.requests.store(42, Ordering::Release);
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(sb.slot(i).counters.requests.load(Ordering::Acquire), 42);
        sb.release(i);
        assert_eq!(sb.header().retired.requests.load(Ordering::Relaxed), 42);
    }
}
