//! Memory shared by the master and its workers: a header with server-wide
//! counters, then one slot per worker, with its counters and the requests
//! running on each of its cores. The master reads it for harakiri,
//! recycling, stats and metrics; workers write their own slot. It is a
//! memfd, so it survives the master's re-exec on reload (and the counters
//! with it).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicU8, AtomicU32, AtomicU64, Ordering, fence};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::{FcntlArg, SealFlag, fcntl};
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::handlers::fastcgi::PoolCounters;
use crate::request::HandlerKind;
use crate::request::health::{Health, HealthSource};
use crate::sys::clock::{now_us, unix_now};

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
/// HTTP versions counted apart (the order of `HTTP_VERSIONS`).
pub const HTTP_VERSIONS: [&str; 3] = ["1.0", "1.1", "2"];
/// `--fastcgi-app` pools whose figures are kept (the first ones given).
pub const MAX_POOLS: usize = 8;
/// Kinds of handler counted apart (the order of `HandlerKind::ALL`).
pub const HANDLER_KINDS: usize = HandlerKind::ALL.len();

/// What tells one `--fastcgi-app` pool from another across reloads: a
/// hash of its mount and command (never 0).
pub fn pool_id(mount: &str, command: &[String]) -> u64 {
    use std::hash::{Hash, Hasher};
    // Fixed keys: the same in every process of this build.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (mount, command).hash(&mut h);
    h.finish().max(1)
}

/// The HTTP version a SERVER_PROTOCOL names, as 1 + its place in
/// `HTTP_VERSIONS`; 0 for another, or none.
pub fn http_version_of(server_protocol: &[u8]) -> u32 {
    match server_protocol {
        b"HTTP/1.0" => 1,
        b"HTTP/1.1" => 2,
        b"HTTP/2" | b"HTTP/2.0" => 3,
        _ => 0,
    }
}

/// Bumped whenever a field of `Header`, `Slot`, `Counters` or `Core` moves
/// or changes meaning; the sizes below catch most changes anyway.
const LAYOUT_VERSION: u64 = 3;

/// What a scoreboard's header starts with: "oxgt", then a hash of the
/// layout. A reload hands the scoreboard to the next master image, which
/// may be another oxgate build; it adopts the scoreboard only when this
/// matches its own.
pub const LAYOUT: u64 = {
    let parts = [
        LAYOUT_VERSION,
        std::mem::size_of::<Header>() as u64,
        std::mem::size_of::<Slot>() as u64,
        std::mem::size_of::<Counters>() as u64,
        std::mem::size_of::<Core>() as u64,
        SLOTS as u64,
        CORES as u64,
        INFO as u64,
        BUCKETS as u64,
        PROTOCOLS as u64,
        HTTP_VERSIONS.len() as u64,
        HANDLER_KINDS as u64,
        std::mem::size_of::<PoolCounters>() as u64,
        MAX_POOLS as u64,
    ];
    // FNV-1a over the parts' bytes, folded to 32 bits.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < parts.len() {
        let bytes = parts[i].to_le_bytes();
        let mut j = 0;
        while j < bytes.len() {
            hash = (hash ^ bytes[j] as u64).wrapping_mul(0x0100_0000_01b3);
            j += 1;
        }
        i += 1;
    }
    (u32::from_be_bytes(*b"oxgt") as u64) << 32 | (hash ^ (hash >> 32)) & 0xffff_ffff
};

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
    /// Requests by the HTTP version the client spoke (SERVER_PROTOCOL,
    /// which nginx and the others pass on the gateway protocols too).
    pub by_http_version: [AtomicU64; HTTP_VERSIONS.len()],
    /// Requests by what answered them: the app, a static file, a CGI
    /// script or a FastCGI app.
    pub by_handler: [AtomicU64; HANDLER_KINDS],
    /// TLS handshakes that failed or timed out.
    pub tls_handshake_failures: AtomicU64,
    /// Times an accept loop stopped at `--max-connections`.
    pub max_connections_reached: AtomicU64,
    /// HTTP/2 streams answered 503 at `--http2-max-pending`.
    pub http2_streams_refused: AtomicU64,
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
            .chain(self.by_http_version.iter())
            .chain(self.by_handler.iter())
            .chain([
                &self.tls_handshake_failures,
                &self.max_connections_reached,
                &self.http2_streams_refused,
            ])
    }

    /// Adds `other` into these counters.
    pub fn absorb(&self, other: &Counters) {
        for (a, b) in self.all().zip(other.all()) {
            a.fetch_add(b.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }

    /// Counts a request by its HTTP version (`http_version_of`; 0, for
    /// another or none, is not counted).
    pub fn count_http_version(&self, version: u32) {
        if let Some(n) = (version as usize)
            .checked_sub(1)
            .and_then(|i| self.by_http_version.get(i))
        {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one finished request.
    pub fn record(&self, protocol: usize, handler: HandlerKind, status: u16, tx: u64, rt_us: u64) {
        self.by_handler[handler as usize].fetch_add(1, Ordering::Relaxed);
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
    /// `LAYOUT`, written when the scoreboard is made.
    pub layout: AtomicU64,
    /// Requests served by every worker, ever (uWSGI's "req: n/TOTAL").
    pub requests: AtomicU64,
    /// The counters of workers that have exited.
    pub retired: Counters,
    /// Workers started again, by why the previous one went.
    pub respawns: [AtomicU64; Cause::ALL.len()],
    pub harakiri: AtomicU64,
    pub ids: [IdStats; SLOTS],
    /// The FastCGI pools' counters of workers that have exited.
    pub retired_pools: [PoolCounters; MAX_POOLS],
    /// The FastCGI pools' counters of their managers (the processes).
    pub pool_managers: [PoolCounters; MAX_POOLS],
    /// Which pool each of `retired_pools` counts (`pool_id`; 0 for none).
    pub pool_ids: [AtomicU64; MAX_POOLS],
    /// What `--health-path` answers (`request::health::Health`), written
    /// by the master on every tick.
    pub health: AtomicU32,
    /// 1 once the master is stopping (not replacing workers): a worker
    /// told to stop then has --reload-mercy, the master's deadline for a
    /// stop, rather than --worker-reload-mercy.
    pub master_stopping: AtomicU32,
}

/// One request slot of a worker: the master reads it while the worker
/// writes it, so every field is an atomic.
#[repr(C)]
pub struct Core {
    /// Monotonic µs when the running request started; 0 when idle. Its
    /// Release store publishes `info_len` and `info`.
    pub started_us: AtomicU64,
    pub requests: AtomicU64,
    info_len: AtomicU32,
    /// The running request's HTTP version (`http_version_of`), counted
    /// when it ends, with its other counts.
    pub http_version: AtomicU32,
    /// Written with Relaxed stores by the slot's worker only.
    info: [AtomicU8; INFO],
}

/// A worker's slot. Shared like the rest of the scoreboard: only atomics.
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
    /// Gunicorn's worker age: how many workers the master had started,
    /// this one included, when it started it.
    pub age: AtomicU64,
    /// uWSGI's avg_rt (µs): (avg + last) / 2 at each request.
    pub avg_rt: AtomicU64,
    pub counters: Counters,
    /// This worker's share of each FastCGI pool (`--fastcgi-app`).
    pub pools: [PoolCounters; MAX_POOLS],
    pub cores: [Core; CORES],
}

impl Slot {
    /// The cores to show: the worker's threads, and past them the ones an
    /// ASGI app's requests have used (they are numbered after the
    /// threads).
    pub fn cores_used(&self, threads: usize) -> &[Core] {
        let last_used = self.cores.iter().rposition(|c| {
            c.started_us.load(Ordering::Acquire) != 0 || c.requests.load(Ordering::Relaxed) != 0
        });
        let n = last_used.map_or(0, |i| i + 1).max(threads.min(CORES));
        &self.cores[..n]
    }

    /// The cores running a request now, the ASGI app's included.
    pub fn busy_cores(&self) -> impl Iterator<Item = &Core> {
        self.cores
            .iter()
            .filter(|c| c.started_us.load(Ordering::Acquire) != 0)
    }
}

/// A worker answers `--health-path` with what the master last wrote.
impl HealthSource for Scoreboard {
    fn health(&self) -> Health {
        Health::from_u32(self.header().health.load(Ordering::Relaxed))
    }
}

/// The memfd and its mapping, shared with every worker forked while it
/// lives (and with the next master image after a reload).
pub struct Scoreboard {
    file: File,
    map: MmapRaw,
}

const SLOTS_AT: usize = std::mem::size_of::<Header>().next_multiple_of(64);
const SIZE: usize = SLOTS_AT + std::mem::size_of::<Slot>() * SLOTS;
/// The address space its mapping takes in each process.
pub const MAPPED_SIZE: usize = SIZE.next_multiple_of(4096);

// What `header` and `slot` rely on to turn the mapping into references:
// the mapping starts on a page boundary (4096 bytes at least), so the header
// at offset 0 is aligned; the slots start at an offset aligned for a `Slot`
// (and each `Slot` is a multiple of its alignment); they do not overlap the
// header; and the atomics are lock-free, so they work the same through two
// mappings of one page in two processes.
const _: () = {
    assert!(std::mem::align_of::<Header>() <= 4096);
    assert!(SLOTS_AT.is_multiple_of(std::mem::align_of::<Slot>()));
    assert!(SLOTS_AT >= std::mem::size_of::<Header>());
    assert!(SIZE <= 64 << 20, "keep the scoreboard small");
};
#[cfg(not(all(
    target_has_atomic = "8",
    target_has_atomic = "32",
    target_has_atomic = "64"
)))]
compile_error!("the scoreboard needs lock-free 8, 32 and 64-bit atomics");

impl Scoreboard {
    pub fn create() -> std::io::Result<Scoreboard> {
        let fd = memfd_create(
            c"oxgate-scoreboard",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let file = File::from(fd);
        file.set_len(SIZE as u64)?;
        // Its size is fixed for good, so no process can shrink it under a
        // mapping (a SIGBUS). Best effort: nothing in oxgate resizes it.
        let _ = fcntl(
            &file,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL,
            ),
        );
        let sb = Self::map(file)?;
        sb.header().layout.store(LAYOUT, Ordering::Release);
        Ok(sb)
    }

    /// Maps a scoreboard handed over by the previous master image. One
    /// from an oxgate build with another layout is an `InvalidData` error
    /// (and its descriptor is closed): the caller makes a new one.
    pub fn adopt(fd: RawFd) -> std::io::Result<Scoreboard> {
        // SAFETY: `fd` is the scoreboard memfd that the previous master
        // image left open across its exec and named in the handover
        // (`Handover::scoreboard`, checked >= 0 by the caller). It is open,
        // and nothing else in this process owns it: the caller hands it
        // over here, so this `File` is its only owner.
        let sb = Self::map(unsafe { File::from_raw_fd(fd) })?;
        let layout = sb.header().layout.load(Ordering::Acquire);
        if layout != LAYOUT {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the scoreboard's layout is {layout:#x}, this build's is {LAYOUT:#x}"),
            ));
        }
        Ok(sb)
    }

    /// Gives a worker of the previous master image a slot in a scoreboard
    /// made anew after a reload that could not adopt the old one: slot
    /// `want` if this layout has it, else any free one (None: all taken).
    /// That worker goes on writing the old scoreboard, so its counts and
    /// running requests are not seen here, but its slot is not given away.
    pub fn occupy(&self, want: usize, pid: i32, id: u32) -> Option<usize> {
        let i = if want < SLOTS && self.slot(want).pid.load(Ordering::Acquire) == 0 {
            want
        } else {
            (0..SLOTS).find(|&i| self.slot(i).pid.load(Ordering::Acquire) == 0)?
        };
        let s = self.slot(i);
        s.id.store(id, Ordering::Relaxed);
        s.ready.store(1, Ordering::Relaxed);
        s.born.store(unix_now(), Ordering::Relaxed);
        s.pid.store(pid, Ordering::Release);
        Some(i)
    }

    fn map(file: File) -> std::io::Result<Scoreboard> {
        // A memfd from an image with another layout would be shorter or
        // longer; a shorter one would fault (SIGBUS) past its end.
        let len = file.metadata()?.len();
        if len < SIZE as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the scoreboard is {len} bytes, this build needs {SIZE}"),
            ));
        }
        // MAP_SHARED, read and write: the workers' writes are seen here.
        let map = MmapOptions::new().len(SIZE).map_raw(&file)?;
        Ok(Scoreboard { file, map })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is SIZE bytes from a page-aligned address
        // (`map` checked the memfd is that long; it is sealed against
        // shrinking), and stays mapped while `self`, which this reference
        // borrows, lives. The header is at offset 0, aligned and in bounds
        // (the const assertions above). Every field of `Header` is an atomic
        // integer, valid for any bytes, the memfd's initial zeros included;
        // and every access to these bytes, in this process or in another
        // that maps the memfd, goes through those atomics, so a shared
        // reference to them is sound while other processes write.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    pub fn slot(&self, i: usize) -> &Slot {
        assert!(i < SLOTS);
        // SAFETY: as in `header`: slot `i < SLOTS` lies at
        // SLOTS_AT + i * size_of::<Slot>(), aligned for a `Slot` and ending
        // within SIZE, without overlapping the header or another slot; a
        // `Slot` is only atomics, valid for any bytes and only ever accessed
        // through those atomics; the mapping lives as long as `self`.
        unsafe { &*self.map.as_ptr().add(SLOTS_AT).cast::<Slot>().add(i) }
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
                for p in &s.pools {
                    p.clear();
                }
                s.born.store(unix_now(), Ordering::Relaxed);
                s.age.store(0, Ordering::Relaxed);
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
        for (into, from) in self.header().retired_pools.iter().zip(&s.pools) {
            into.absorb(from);
            from.clear();
        }
        s.pid.store(0, Ordering::Release);
    }

    /// Says which pool each place of the pools' figures counts, from the
    /// configuration this master image runs (`pool_id`s in `--fastcgi-app`
    /// order). A place whose pool changed at a reload (the list was
    /// reordered, or a pool removed) starts again from zero rather than
    /// show another pool's counts under this one's name.
    pub fn name_pools(&self, ids: &[u64]) {
        let h = self.header();
        for (i, place) in h.pool_ids.iter().enumerate() {
            let id = ids.get(i).copied().unwrap_or(0);
            if place.swap(id, Ordering::Relaxed) != id {
                h.retired_pools[i].clear();
                h.pool_managers[i].clear();
            }
        }
    }

    /// A worker id's remembered stats (ids beyond the table share the last).
    pub fn id_stats(&self, id: u32) -> &IdStats {
        &self.header().ids[(id as usize).min(SLOTS - 1)]
    }
}

/// The start time of a new request, in µs: never the same twice in this
/// process, even for two requests begun within one microsecond, so that a
/// reader who sees the same start before and after reading a core's bytes
/// knows no other request began meanwhile (a seqlock without ABA).
fn unique_start() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now_us().max(1);
    let prev = LAST
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(now.max(last + 1))
        })
        .expect("the closure always returns Some");
    now.max(prev + 1)
}

impl Core {
    /// Records a request starting on this core (worker side).
    /// Marks the core busy with a request described by `parts`, joined
    /// (cut to `INFO` bytes).
    pub fn begin(&self, parts: &[&[u8]]) {
        // Like a seqlock: the core reads idle (0) while its bytes change, and
        // the fence orders that before the byte stores, so a reader that
        // sees the same start time before and after reading the bytes has
        // read this request's bytes only (see `read`).
        self.started_us.store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        let mut n = 0;
        for part in parts {
            let take = part.len().min(INFO - n);
            for (cell, &b) in self.info[n..n + take].iter().zip(part.iter()) {
                cell.store(b, Ordering::Relaxed);
            }
            n += take;
        }
        self.info_len.store(n as u32, Ordering::Relaxed);
        self.started_us.store(unique_start(), Ordering::Release);
    }

    pub fn end(&self) {
        self.started_us.store(0, Ordering::Release);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// What the core is running, for the log (master side; best effort).
    pub fn info(&self) -> String {
        let mut bytes = Vec::with_capacity(INFO);
        // A worker that starts another request while this reads makes it
        // read again; after a few tries it takes what it got.
        for _ in 0..3 {
            if self.read(&mut bytes).is_some() {
                break;
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Reads the info bytes into `bytes`; the start time they belong to if
    /// the core was busy with one request all along (`None`: idle, or it
    /// changed meanwhile, and the bytes may mix two requests).
    fn read(&self, bytes: &mut Vec<u8>) -> Option<u64> {
        let started = self.started_us.load(Ordering::Acquire);
        let n = (self.info_len.load(Ordering::Relaxed) as usize).min(INFO);
        bytes.clear();
        bytes.extend(self.info[..n].iter().map(|b| b.load(Ordering::Relaxed)));
        fence(Ordering::Acquire);
        let again = self.started_us.load(Ordering::Relaxed);
        (started != 0 && again == started).then_some(started)
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
        use nix::sys::wait::waitpid;
        use nix::unistd::{ForkResult, fork};
        let sb = Scoreboard::create().unwrap();
        let i = sb.claim(1, 1).unwrap();
        // SAFETY: the test harness runs other threads, so the child may only
        // make async-signal-safe calls: it does one atomic store into the
        // shared mapping (no allocation, no lock) and _exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                sb.slot(i).counters.requests.store(42, Ordering::Release);
                // SAFETY: _exit takes an integer and never returns; it runs
                // none of the harness's exit handlers, which are the
                // parent's.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                waitpid(child, None).unwrap();
            }
        }
        assert_eq!(sb.slot(i).counters.requests.load(Ordering::Acquire), 42);
        sb.release(i);
        assert_eq!(sb.header().retired.requests.load(Ordering::Relaxed), 42);
    }

    #[test]
    fn info_is_never_torn() {
        let sb = std::sync::Arc::new(Scoreboard::create().unwrap());
        let i = sb.claim(1, 1).unwrap();
        let writer = {
            let sb = sb.clone();
            std::thread::spawn(move || {
                let core = &sb.slot(i).cores[0];
                // Back to back, without end(): the core is busy nearly all
                // the time, and its bytes change under the reader.
                for n in 0..20_000 {
                    let fill = [if n % 2 == 0 { b'a' } else { b'b' }; INFO];
                    core.begin(&[&fill[..INFO / 2 + n % 7]]);
                    for _ in 0..n % 500 {
                        std::hint::spin_loop();
                    }
                }
                core.end();
            })
        };
        let core = &sb.slot(i).cores[0];
        let mut bytes = Vec::new();
        while !writer.is_finished() {
            if core.read(&mut bytes).is_some() {
                assert!(bytes.iter().all(|&b| b == bytes[0]), "torn: {bytes:?}");
            }
        }
        writer.join().unwrap();
    }

    #[test]
    fn adopt_takes_its_own_layout_and_refuses_another() {
        use std::os::fd::IntoRawFd;
        let sb = Scoreboard::create().unwrap();
        assert_eq!(LAYOUT >> 32, u64::from(u32::from_be_bytes(*b"oxgt")));
        sb.header().requests.store(7, Ordering::Relaxed);
        let same = Scoreboard::adopt(sb.file.try_clone().unwrap().into_raw_fd()).unwrap();
        assert_eq!(same.header().requests.load(Ordering::Relaxed), 7);
        // Another build's scoreboard, as long as this one's: the stamp
        // tells them apart.
        sb.header().layout.store(LAYOUT ^ 1, Ordering::Release);
        let err = Scoreboard::adopt(sb.file.try_clone().unwrap().into_raw_fd())
            .err()
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("layout"), "{err}");
    }

    #[test]
    fn occupy_keeps_a_handed_workers_slot_or_finds_another() {
        let sb = Scoreboard::create().unwrap();
        assert_eq!(sb.occupy(5, 100, 1), Some(5));
        assert_eq!(sb.slot(5).pid.load(Ordering::Relaxed), 100);
        assert_eq!(sb.slot(5).ready.load(Ordering::Relaxed), 1);
        // Taken, or past this layout's slots: the first free one.
        assert_eq!(sb.occupy(5, 101, 2), Some(0));
        assert_eq!(sb.occupy(SLOTS + 3, 102, 3), Some(1));
        // And a new worker is not given those.
        assert_eq!(sb.claim(103, 4), Some(2));
    }

    #[test]
    fn counts_http_versions_handlers_and_keeps_them_past_a_worker() {
        let sb = Scoreboard::create().unwrap();
        let i = sb.claim(1, 1).unwrap();
        let c = &sb.slot(i).counters;
        for v in [
            &b"HTTP/1.0"[..],
            b"HTTP/1.1",
            b"HTTP/1.1",
            b"HTTP/2",
            b"HTTP/2.0",
            b"",
            b"HTTP/3",
        ] {
            c.count_http_version(http_version_of(v));
        }
        let versions: Vec<u64> = c
            .by_http_version
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect();
        assert_eq!(versions, [1, 2, 2]);
        c.record(0, HandlerKind::Static, 200, 10, 5);
        c.record(0, HandlerKind::App, 200, 10, 5);
        c.record(0, HandlerKind::Static, 404, 10, 5);
        c.tls_handshake_failures.fetch_add(4, Ordering::Relaxed);
        sb.release(i);
        let r = &sb.header().retired;
        assert_eq!(
            r.by_handler[HandlerKind::Static as usize].load(Ordering::Relaxed),
            2
        );
        assert_eq!(
            r.by_handler[HandlerKind::App as usize].load(Ordering::Relaxed),
            1
        );
        assert_eq!(r.by_http_version[2].load(Ordering::Relaxed), 2);
        assert_eq!(r.tls_handshake_failures.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn a_pool_whose_place_changed_starts_again_from_zero() {
        let sb = Scoreboard::create().unwrap();
        let (a, b) = (
            pool_id("/", &["php-cgi".into()]),
            pool_id("/perl", &["perl".into()]),
        );
        assert_ne!(a, b);
        assert_eq!(a, pool_id("/", &["php-cgi".into()]));
        sb.name_pools(&[a, b]);
        let h = sb.header();
        h.retired_pools[0].requests.store(5, Ordering::Relaxed);
        h.retired_pools[1].requests.store(7, Ordering::Relaxed);
        // The same pools again (a reload that changed nothing): kept.
        sb.name_pools(&[a, b]);
        assert_eq!(h.retired_pools[0].requests.load(Ordering::Relaxed), 5);
        // Swapped, then one removed: cleared.
        sb.name_pools(&[b, a]);
        assert_eq!(h.retired_pools[0].requests.load(Ordering::Relaxed), 0);
        assert_eq!(h.retired_pools[1].requests.load(Ordering::Relaxed), 0);
        h.retired_pools[0].requests.store(3, Ordering::Relaxed);
        sb.name_pools(&[]);
        assert_eq!(h.retired_pools[0].requests.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn adopt_refuses_a_short_memfd() {
        use std::os::fd::IntoRawFd;
        let fd = memfd_create(c"short", MFdFlags::MFD_CLOEXEC).unwrap();
        File::from(fd.try_clone().unwrap()).set_len(4096).unwrap();
        let err = Scoreboard::adopt(fd.into_raw_fd()).err().unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
