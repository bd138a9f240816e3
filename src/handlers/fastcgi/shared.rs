//! What a `--fastcgi-app` pool's manager and every worker share: each
//! process's listening socket, a table in shared memory, and a pipe of
//! tokens, one for each idle process.
//!
//! The pool is the master's, not any worker's: its manager (a process the
//! master forks, see `manager`) starts and replaces the processes, and
//! every worker takes whichever is idle, so `--fastcgi-app-processes` is
//! the total, as php-fpm's `pm.max_children` is. A worker takes a process
//! by reading its token from the pipe (the kernel hands each token to one
//! reader, and wakes every worker waiting for one), and gives it back by
//! writing the token again. So the pipe is the queue of idle processes, and
//! the requests waiting for one wait in the workers, not in a backlog.
//!
//! A token names its row and the row's generation. A worker that must
//! have a process replaced (a timeout, `--fastcgi-app-max-requests`, a
//! broken exchange) keeps its token out of the pipe, marks the row as
//! having none, and kills the process; the manager starts the next on a
//! new socket at the same path (see `Shared::renew_listener`) and puts a
//! new token in. A process that ends by itself keeps its token (held or in
//! the pipe) and its socket, which the manager keeps open, so whoever
//! holds the token connects, and waits in the backlog for the process that
//! replaces it. (`ss` shows a renewed socket under the name it was bound
//! to, `N.sock.new`, before its rename to `N.sock`.)

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use memmap2::{MmapOptions, MmapRaw};
use nix::fcntl::OFlag;
use nix::sys::memfd::{MFdFlags, memfd_create};

use crate::listen::Address;

/// The processes that may use a pool at once: every worker of a master,
/// and as many again while a reload replaces them, and the manager.
const USERS: usize = 2 * crate::config::MAX_WORKERS + 2;

/// Whether a worker had a row's process killed (a timeout, a broken
/// exchange, recycling): the manager counts its end as asked, not as an
/// exit of its own, and replaces it.
pub const CAUSE_NONE: u32 = 0;
pub const CAUSE_ASKED: u32 = 1;

#[repr(C)]
pub struct Header {
    /// Set when the master that made the pool no longer serves from it (it
    /// re-executed for a reload, or is stopping): the manager ends once no
    /// worker uses it.
    pub released: AtomicU32,
    /// 1 while the manager's latest attempt to start a process failed (a
    /// command that cannot run): requests waiting with no process running
    /// are answered 502 instead of waiting for one that will not come.
    pub start_failing: AtomicU32,
    /// How many workers use the pool (those killed are counted until the
    /// manager finds them gone).
    pub user_count: AtomicU32,
    pub _pad: AtomicU32,
    /// The pids of the workers using the pool (0: a free entry).
    pub users: [AtomicI32; USERS],
    /// Each user's requests waiting for an idle process: what the manager
    /// starts processes for (dynamic, ondemand). A killed worker's are
    /// dropped with it.
    pub waiting: [AtomicU32; USERS],
}

/// One process's place in the pool.
#[repr(C)]
pub struct Row {
    /// The process running (0: none), written by the manager.
    pub pid: AtomicI32,
    /// The generation of the row's token: a token of another is stale.
    pub generation: AtomicU32,
    /// 1 while a token of this row is in the pipe or held by a worker.
    pub token_out: AtomicU32,
    /// The worker holding the token (0: in the pipe, or none).
    pub holder: AtomicI32,
    /// Whether a worker had the process killed (`CAUSE_*`).
    pub cause: AtomicU32,
    /// Requests the process has served (for `--fastcgi-app-max-requests`).
    pub requests: AtomicU64,
    /// Requests php-cgi's forked child has served (see `PhpCgi::cap`).
    pub served: AtomicU64,
    /// Monotonic ms when its last request ended (or it started).
    pub last_used_ms: AtomicU64,
}

/// A token: the row and its generation, as written in the pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub row: usize,
    generation: u32,
}

/// A token's size in the pipe.
const TOKEN: usize = 8;

impl Token {
    fn to_bytes(self) -> [u8; TOKEN] {
        ((u64::from(self.generation) << 32) | self.row as u64).to_ne_bytes()
    }

    fn from_bytes(b: [u8; TOKEN]) -> Token {
        let v = u64::from_ne_bytes(b);
        Token {
            row: (v & 0xffff_ffff) as usize,
            generation: (v >> 32) as u32,
        }
    }
}

// Rows follow the header, each 8-aligned.
const _: () = assert!(std::mem::size_of::<Header>().is_multiple_of(8));
const _: () = assert!(std::mem::size_of::<Row>().is_multiple_of(8));

/// The most processes a pool may have: their tokens fit in the pipe (512
/// tokens in a page, the least a pipe has; a pipe is given room for more).
pub const MAX_ROWS: usize = 4096;

pub struct Shared {
    _file: File,
    map: MmapRaw,
    rows: usize,
    tokens_read: OwnedFd,
    tokens_write: OwnedFd,
    demand_read: OwnedFd,
    demand_write: OwnedFd,
    /// The directory of the sockets, mode 0700.
    pub dir: PathBuf,
    /// Each row's listening socket, as its process gets it: the manager's
    /// to use (see `renew_listener`).
    listeners: Vec<Mutex<UnixListener>>,
    pub addrs: Vec<Address>,
}

/// Every pool's shared parts, by `--fastcgi-app` order: made by the
/// master (or the single process) before anything forks.
static SHARED: OnceLock<Vec<Arc<Shared>>> = OnceLock::new();

/// Makes the pools' shared parts, once per master image.
pub fn prepare(processes: &[usize]) -> Result<(), String> {
    if SHARED.get().is_some() || processes.is_empty() {
        return Ok(());
    }
    remove_stale_dirs();
    let made = processes
        .iter()
        .enumerate()
        .map(|(i, &n)| Shared::create(i, n).map(Arc::new))
        .collect::<Result<Vec<_>, String>>()?;
    let _ = SHARED.set(made);
    Ok(())
}

pub fn get(index: usize) -> Option<&'static Arc<Shared>> {
    SHARED.get()?.get(index)
}

pub fn all() -> &'static [Arc<Shared>] {
    SHARED.get().map_or(&[], |v| &v[..])
}

/// Marks every pool as no longer this master's (see `Header::released`).
pub fn release_all() {
    for s in all() {
        s.header().released.store(1, Ordering::Release);
    }
}

/// Takes `release_all` back (the re-execution failed).
pub fn keep_all() {
    for s in all() {
        s.header().released.store(0, Ordering::Release);
    }
}

impl Shared {
    fn create(index: usize, rows: usize) -> Result<Shared, String> {
        let rows = rows.clamp(1, MAX_ROWS);
        let size = std::mem::size_of::<Header>() + rows * std::mem::size_of::<Row>();
        let table = |e: std::io::Error| format!("cannot make a FastCGI pool's shared table: {e}");
        let file = File::from(
            memfd_create(c"oxgate-fastcgi-pool", MFdFlags::MFD_CLOEXEC)
                .map_err(|e| table(e.into()))?,
        );
        file.set_len(size as u64).map_err(table)?;
        // MAP_SHARED: what the workers and the manager write, each sees.
        let map = MmapOptions::new().len(size).map_raw(&file).map_err(table)?;
        let pipe = || {
            nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
                .map_err(|e| format!("cannot make a FastCGI pool's pipe: {e}"))
        };
        let (tokens_read, tokens_write) = pipe()?;
        // Room for every token (16 pages by default, fewer for a user over
        // pipe-user-pages-soft): best effort, a write that finds it full
        // is logged.
        if rows * TOKEN > 4096 {
            let _ = nix::fcntl::fcntl(
                &tokens_write,
                nix::fcntl::FcntlArg::F_SETPIPE_SZ((rows * TOKEN) as libc::c_int),
            );
        }
        let (demand_read, demand_write) = pipe()?;
        // In a directory of the pool's own, mode 0700: a pool's sockets take
        // requests that name any script, so no other user may connect (an
        // abstract socket cannot be kept from them). Named for this master
        // and this moment: a re-executed master (same pid) makes new ones
        // while its old workers still use the old.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "oxgate-fcgi-{}-{nanos}-{index}",
            std::process::id()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot make the pool's directory {}: {e}", dir.display()))?;
        let mut listeners = Vec::with_capacity(rows);
        let mut addrs = Vec::with_capacity(rows);
        for i in 0..rows {
            let path = dir.join(format!("{i}.sock"));
            let listener = UnixListener::bind(&path)
                .map_err(|e| format!("cannot make the pool's socket {}: {e}", path.display()))?;
            listeners.push(Mutex::new(listener));
            addrs.push(Address::Unix(path));
        }
        Ok(Shared {
            _file: file,
            map,
            rows,
            tokens_read,
            tokens_write,
            demand_read,
            demand_write,
            dir,
            listeners,
            addrs,
        })
    }

    fn locked_listener(
        &self,
        i: usize,
    ) -> std::io::Result<std::sync::MutexGuard<'_, UnixListener>> {
        self.listeners[i]
            .lock()
            .map_err(|_| std::io::Error::other("a pool's socket table is poisoned"))
    }

    /// Row `i`'s listening socket, for its next process.
    pub fn listener(&self, i: usize) -> std::io::Result<UnixListener> {
        self.locked_listener(i)?.try_clone()
    }

    /// Drops the connections waiting in row `i`'s backlog.
    pub fn discard_backlog(&self, i: usize) {
        if let Ok(listener) = self.locked_listener(i)
            && listener.set_nonblocking(true).is_ok()
        {
            while listener.accept().is_ok() {}
            let _ = listener.set_nonblocking(false);
        }
    }

    /// Gives row `i` a new listening socket at the same path, for a process
    /// that replaces one that was killed. The one killed (php-cgi's forked
    /// child, which dies a moment after its parent) may still be in
    /// accept(2) on the old socket when its successor starts: it would
    /// take a request meant for the successor and die with it unread (a
    /// 502, "connection reset"). The new socket is bound beside the old
    /// one and renamed over its path, so that a connection goes to one or
    /// the other, never to no socket. What waits in the old one's backlog
    /// belongs to requests already answered (a timeout, a client gone).
    pub fn renew_listener(&self, i: usize) -> std::io::Result<()> {
        let Address::Unix(path) = &self.addrs[i] else {
            return Ok(());
        };
        let fresh_path = self.dir.join(format!("{i}.sock.new"));
        let _ = std::fs::remove_file(&fresh_path);
        let fresh = UnixListener::bind(&fresh_path)?;
        if let Err(e) = std::fs::rename(&fresh_path, path) {
            let _ = std::fs::remove_file(&fresh_path);
            return Err(e);
        }
        *self.locked_listener(i)? = fresh;
        Ok(())
    }

    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is at least `size_of::<Header>()` bytes from a
        // page-aligned address and lives as long as `self`. Every field of
        // `Header` is an atomic integer, valid for any bytes (the memfd's
        // zeros included), and every access, here or in the other processes
        // that share the mapping, goes through those atomics.
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn row(&self, i: usize) -> &Row {
        assert!(i < self.rows);
        // SAFETY: as in `header`: row `i < rows` lies within the mapping
        // (its size is the header's plus `rows` rows), at an offset that is
        // a multiple of 8 (both sizes are, with only 4 and 8-byte atomics),
        // so aligned; and it holds only atomics.
        unsafe {
            &*self
                .map
                .as_ptr()
                .add(std::mem::size_of::<Header>())
                .cast::<Row>()
                .add(i)
        }
    }

    /// The token pipe's read end, to wait on: a copy of it, which the
    /// caller owns.
    pub fn tokens_fd(&self) -> std::io::Result<OwnedFd> {
        self.tokens_read.try_clone()
    }

    /// The demand pipe's read end (a copy), for the manager.
    pub fn demand_fd(&self) -> std::io::Result<OwnedFd> {
        self.demand_read.try_clone()
    }

    /// Takes an idle process's token, if there is one.
    pub fn take(&self) -> Option<Token> {
        let mut b = [0u8; TOKEN];
        // Every write is of a whole token (atomic, under PIPE_BUF) and every
        // read asks for one, so a read gets a whole token or none.
        match nix::unistd::read(&self.tokens_read, &mut b) {
            Ok(TOKEN) => Some(Token::from_bytes(b)),
            _ => None,
        }
    }

    /// Whether the token is the row's current one, with the row's token
    /// out: a stale one (its row was reset) is dropped, not used.
    pub fn current(&self, t: Token) -> bool {
        t.row < self.rows && {
            // token_out first: one seen set was set after its generation
            // (`issue`), so a token of an earlier one cannot pass.
            let row = self.row(t.row);
            row.token_out.load(Ordering::Acquire) == 1
                && row.generation.load(Ordering::Acquire) == t.generation
        }
    }

    /// Puts a token back in the pipe: its process is idle, held by none.
    pub fn give(&self, t: Token) {
        if self.current(t) {
            self.row(t.row).holder.store(0, Ordering::Release);
            self.put(t);
        }
    }

    fn put(&self, t: Token) {
        if let Err(e) = nix::unistd::write(&self.tokens_write, &t.to_bytes()) {
            crate::say!(
                "oxgate: FastCGI pool: process {} is lost to the pool: its token could not go back ({e})",
                t.row
            );
        }
    }

    /// A new token for a row that has none (the manager's): the row's next
    /// generation.
    pub fn issue(&self, row: usize) {
        let r = self.row(row);
        let generation = r.generation.fetch_add(1, Ordering::AcqRel).wrapping_add(1);
        r.holder.store(0, Ordering::Relaxed);
        r.token_out.store(1, Ordering::Release);
        self.put(Token { row, generation });
    }

    /// The tokens in the pipe: the idle processes.
    pub fn idle(&self) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which points
        // at `n`, alive for the call; the fd is this pool's pipe.
        let r = unsafe { libc::ioctl(self.tokens_read.as_raw_fd(), libc::FIONREAD, &mut n) };
        if r < 0 { 0 } else { n as usize / TOKEN }
    }

    /// Whether every row has its process.
    /// No process runs, and the last one could not be started.
    pub fn cannot_start(&self) -> bool {
        self.header().start_failing.load(Ordering::Acquire) != 0
            && (0..self.rows).all(|i| self.row(i).pid.load(Ordering::Acquire) == 0)
    }

    pub fn all_running(&self) -> bool {
        (0..self.rows).all(|i| self.row(i).pid.load(Ordering::Acquire) != 0)
    }

    /// Asks the manager for a process (every one is busy, or none runs).
    pub fn ask(&self) {
        let _ = nix::unistd::write(&self.demand_write, &[1]);
    }

    /// Registers a worker as a user: its place in the table, or `None`
    /// when the table is full.
    pub fn register(&self, pid: i32) -> Option<usize> {
        let h = self.header();
        let place = h.users.iter().position(|u| {
            u.compare_exchange(0, pid, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })?;
        h.user_count.fetch_add(1, Ordering::AcqRel);
        Some(place)
    }

    /// The requests waiting for an idle process, in the live users.
    pub fn waiting(&self) -> usize {
        let h = self.header();
        h.users
            .iter()
            .zip(&h.waiting)
            .filter(|(u, _)| u.load(Ordering::Acquire) != 0)
            .map(|(_, w)| w.load(Ordering::Acquire) as usize)
            .sum()
    }

    pub fn unregister(&self, pid: i32) {
        for (place, u) in self.header().users.iter().enumerate() {
            if u.load(Ordering::Acquire) == pid {
                self.free(place, pid);
            }
        }
    }

    /// Frees a user's place: its waiting count first, as the place may be
    /// taken as soon as it is free.
    fn free(&self, place: usize, pid: i32) {
        let h = self.header();
        h.waiting[place].store(0, Ordering::Release);
        if h.users[place]
            .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            let _ = h
                .user_count
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
        }
    }

    /// Whether the pool has one user at most.
    pub fn alone(&self) -> bool {
        self.header().user_count.load(Ordering::Acquire) <= 1
    }

    /// Whether a worker still uses the pool. Users found gone (killed,
    /// without unregistering) are cleared.
    pub fn used(&self) -> bool {
        let mut used = false;
        for (place, u) in self.header().users.iter().enumerate() {
            match u.load(Ordering::Acquire) {
                0 => {}
                pid if alive(pid) => used = true,
                pid => self.free(place, pid),
            }
        }
        used
    }
}

/// Whether a process lives (a zombie counts until reaped).
pub fn alive(pid: i32) -> bool {
    pid > 0
        && !matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
}

/// Monotonic milliseconds, the same in every process.
pub fn now_ms() -> u64 {
    crate::sys::clock::now_us() / 1000
}

/// Removes the socket directories of masters that are gone without
/// removing theirs (killed): `oxgate-fcgi-PID-…` with no process PID.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("oxgate-fcgi-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid > 0 && !alive(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_taken_once_and_only_while_current() {
        let s = Shared::create(0, 3).unwrap();
        assert_eq!(s.take(), None);
        s.issue(1);
        s.issue(2);
        assert_eq!(s.idle(), 2);
        let a = s.take().unwrap();
        let b = s.take().unwrap();
        assert_eq!((a.row, b.row), (1, 2));
        assert_eq!(s.take(), None);
        // Row 1 retired and issued again: its old token is stale.
        s.row(1).token_out.store(0, Ordering::Release);
        s.issue(1);
        assert!(!s.current(a));
        s.give(a);
        s.give(b);
        let mut rows: Vec<usize> = std::iter::from_fn(|| s.take()).map(|t| t.row).collect();
        rows.sort();
        assert_eq!(rows, vec![1, 2]);
        let _ = std::fs::remove_dir_all(&s.dir);
    }

    #[test]
    fn users_that_are_gone_are_not_counted() {
        let s = Shared::create(0, 1).unwrap();
        assert!(!s.used());
        assert!(s.register(std::process::id() as i32).is_some());
        assert!(s.used());
        s.unregister(std::process::id() as i32);
        assert!(!s.used());
        // A pid no process has.
        let gone = s.register(i32::MAX - 7).unwrap();
        s.header().waiting[gone].store(3, Ordering::Relaxed);
        assert_eq!(s.waiting(), 3);
        assert!(!s.used());
        assert_eq!(
            s.waiting(),
            0,
            "a user found gone takes its waiting requests with it"
        );
        let _ = std::fs::remove_dir_all(&s.dir);
    }
}
