//! The master's signals. signal-hook's handlers only set a flag and write a
//! byte to a self-pipe; the main loop polls the pipe with its other file
//! descriptors and reads the flags between its checks.
//!
//! Start-up blocks these signals (`block_early`) before the pidfile or the
//! sockets are visible, so a reload or stop sent the moment the pidfile
//! appears waits for the handlers instead of killing the master. Each fork
//! blocks them too, so that a signal meant for a new worker cannot run the
//! master's handler in the child and be lost there.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

use crate::lifecycle::MasterCommand;

/// The signals the master handles, as a set.
fn handled_set() -> SigSet {
    // SAFETY: `set` is a local sigset_t, made valid by sigemptyset before
    // any other use; sigaddset only writes into it, and every number in
    // the table is a signal the C library accepts (SIGRTMIN+n included,
    // which nix's `Signal` cannot name).
    unsafe {
        let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        libc::sigemptyset(set.as_mut_ptr());
        for (sig, _) in MasterCommand::table() {
            libc::sigaddset(set.as_mut_ptr(), sig);
        }
        SigSet::from_sigset_t_unchecked(set.assume_init())
    }
}

/// Blocks the master's signals in this thread: they stay pending until
/// `SignalPipe::install` (or a worker's event loop) is ready for them.
pub fn block_early() {
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), None);
}

/// Blocks the master's signals for as long as it lives; the mask before is
/// restored when it is dropped. Held across a fork.
pub struct Blocked(SigSet);

impl Blocked {
    pub fn new() -> Blocked {
        let mut old = SigSet::empty();
        let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&handled_set()), Some(&mut old));
        Blocked(old)
    }
}

impl Blocked {
    /// Sends `sig` to this thread, where it waits, blocked: for the
    /// handlers once unblocked, or for the next image's across an exec
    /// (the pending set survives execve(2), signal(7)).
    pub fn keep_pending(&self, sig: i32) {
        // SAFETY: raise(3) only sends a signal; `sig` came from the table
        // of handled signals, all valid numbers.
        unsafe {
            libc::raise(sig);
        }
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// The master's actions on its signals, as they were before the app was
/// imported, to put back after it: an app that sets a handler of its own
/// at import (`signal.signal(SIGTERM, ...)`, `faulthandler.register`)
/// replaces the master's, and its SIGTERM would stop nothing, its SIGHUP
/// reload nothing; the workers, forked with it, would wait out every
/// reload's mercy. Gunicorn's arbiter sets its handlers after a preload.
pub struct Actions(Vec<(i32, libc::sigaction)>);

impl Actions {
    /// The actions now in force on the handled signals (and SIGTSTP).
    pub fn current() -> Actions {
        let signals = MasterCommand::table().map(|(sig, _)| sig);
        Actions(
            signals
                .into_iter()
                .chain([libc::SIGTSTP])
                .filter_map(|sig| action_of(sig).map(|a| (sig, a)))
                .collect(),
        )
    }

    /// Puts back each action the app changed: the signals it took.
    pub fn restore_changed(&self) -> Vec<i32> {
        let mut taken = Vec::new();
        for (sig, saved) in &self.0 {
            let Some(now) = action_of(*sig) else { continue };
            if now.sa_sigaction == saved.sa_sigaction && now.sa_flags == saved.sa_flags {
                continue;
            }
            // SAFETY: `saved` is an action sigaction(2) itself returned for
            // this signal, its handler (signal-hook's, or SIG_IGN) still in
            // this process; the old action is not asked for.
            unsafe { libc::sigaction(*sig, saved, std::ptr::null_mut()) };
            taken.push(*sig);
        }
        taken
    }
}

/// The action in force on `sig`, if the C library says.
fn action_of(sig: i32) -> Option<libc::sigaction> {
    let mut action = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `action`,
    // a local the kernel fills in whole when the call succeeds.
    let done = unsafe { libc::sigaction(sig, std::ptr::null(), action.as_mut_ptr()) };
    // SAFETY: filled in by the successful call (and zeroed before).
    (done == 0).then(|| unsafe { action.assume_init() })
}

/// Set while the master imports the app: a stop signal then ends the
/// process at once (see `master::run`).
pub static LOADING: AtomicBool = AtomicBool::new(false);

/// `--vacuum`'s files (unix sockets, pidfiles), removed by the handler
/// that ends the process when a stop signal comes while the app loads:
/// the stop skips the vacuum at the end of `startup::serve`.
static VACUUM_IF_STOPPED_LOADING: std::sync::OnceLock<Vec<std::ffi::CString>> =
    std::sync::OnceLock::new();

/// Names `--vacuum`'s files for a stop while the app loads (once).
pub fn vacuum_if_stopped_loading(files: Vec<std::ffi::CString>) {
    let _ = VACUUM_IF_STOPPED_LOADING.set(files);
}

pub struct SignalPipe {
    read: UnixStream,
    write: UnixStream,
    /// One flag per handled signal, set by its handler.
    flags: Vec<(i32, Arc<AtomicBool>)>,
    ids: Vec<signal_hook::SigId>,
}

impl SignalPipe {
    /// Installs the handlers, then unblocks the signals: one that arrived
    /// since `block_early` is handled now.
    pub fn install() -> Result<SignalPipe, String> {
        let (read, write) = UnixStream::pair().map_err(|e| format!("cannot create a pipe: {e}"))?;
        for end in [&read, &write] {
            end.set_nonblocking(true)
                .map_err(|e| format!("cannot set up the signal pipe: {e}"))?;
        }
        let mut flags = Vec::new();
        let mut ids = Vec::new();
        for (sig, _) in MasterCommand::table() {
            let flag = Arc::new(AtomicBool::new(false));
            let registered = signal_hook::flag::register(sig, flag.clone()).and_then(|id| {
                ids.push(id);
                signal_hook::low_level::pipe::register(sig, write.try_clone()?)
            });
            let id = registered.map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
            ids.push(id);
            flags.push((sig, flag));
        }
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGQUIT] {
            // The process dies of the signal, as Gunicorn --preload does:
            // systemd counts a death by SIGTERM or SIGINT as a clean stop
            // (`systemctl stop` during a slow import), where an exit of 1
            // failed the unit. SIGQUIT's own death would dump a core.
            let die_of = if sig == libc::SIGQUIT {
                libc::SIGTERM
            } else {
                sig
            };
            // SAFETY: the action is async-signal-safe: atomic loads,
            // write(2) of a static message, unlink(2) of paths made before
            // the load began (never freed: a static), then signal(2),
            // sigprocmask(2) and raise(3) (POSIX lists them safe) and
            // _exit(2); it allocates and locks nothing. The sigset is a
            // local.
            let id = unsafe {
                signal_hook::low_level::register(sig, move || {
                    if LOADING.load(Ordering::Acquire) {
                        const SAID: &[u8] =
                            b"oxgate: a stop signal came while the app was still loading: stopped\n";
                        libc::write(2, SAID.as_ptr().cast(), SAID.len());
                        // unlink(2) is async-signal-safe; `get` is an
                        // atomic load.
                        for path in VACUUM_IF_STOPPED_LOADING.get().into_iter().flatten() {
                            libc::unlink(path.as_ptr());
                        }
                        libc::signal(die_of, libc::SIG_DFL);
                        // Blocked while its own handler runs: let through.
                        let mut set: libc::sigset_t = std::mem::zeroed();
                        libc::sigemptyset(&mut set);
                        libc::sigaddset(&mut set, die_of);
                        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                        libc::raise(die_of);
                        libc::_exit(1);
                    }
                })
            };
            ids.push(id.map_err(|e| format!("cannot handle signal {sig}: {e}"))?);
        }
        // SIGTSTP (^Z, or a stray `kill -TSTP`) would freeze the master,
        // its stop signals then pending for ever while the workers serve
        // unsupervised. uWSGI takes it; here it is ignored.
        // SAFETY: setting a disposition to SIG_IGN runs no code of ours.
        unsafe { libc::signal(libc::SIGTSTP, libc::SIG_IGN) };
        let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&handled_set()), None);
        Ok(SignalPipe {
            read,
            write,
            flags,
            ids,
        })
    }

    /// The signals that arrived, waiting up to `timeout` for the first, or
    /// for one of `extra` to be ready (their `revents` are filled in).
    pub fn wait(&self, timeout: Duration, extra: &mut [libc::pollfd]) -> Vec<i32> {
        let mut fds = Vec::with_capacity(1 + extra.len());
        fds.push(PollFd::new(self.read.as_fd(), PollFlags::POLLIN));
        // The stats server's sockets stay raw descriptors there.
        // SAFETY: each descriptor in `extra` is open for the whole call (the
        // stats server owns them and is not touched while we poll).
        let borrowed: Vec<_> = extra
            .iter()
            .map(|p| unsafe { std::os::fd::BorrowedFd::borrow_raw(p.fd) })
            .collect();
        for (p, fd) in extra.iter().zip(&borrowed) {
            fds.push(PollFd::new(*fd, PollFlags::from_bits_truncate(p.events)));
        }
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let _ = poll(&mut fds, PollTimeout::from(ms));
        for (p, fd) in extra.iter_mut().zip(&fds[1..]) {
            p.revents = fd.revents().map_or(0, |r| r.bits());
        }
        let mut buf = [0u8; 64];
        while matches!(std::io::Read::read(&mut &self.read, &mut buf), Ok(n) if n > 0) {}
        self.take_arrived()
    }

    /// The signals that arrived since the last `wait`, without waiting:
    /// those a reload's checks took in, which the exec would otherwise lose.
    pub fn take_arrived(&self) -> Vec<i32> {
        self.flags
            .iter()
            .filter(|(_, flag)| flag.swap(false, Ordering::AcqRel))
            .map(|(sig, _)| *sig)
            .collect()
    }

    /// Whether a stop signal arrived since the last `wait`, left for it.
    pub fn stop_arrived(&self) -> bool {
        self.flags
            .iter()
            .any(|(sig, flag)| is_stop(*sig) && flag.load(Ordering::Acquire))
    }

    /// The pipe's two ends, for a forked worker to close.
    pub fn fds(&self) -> [RawFd; 2] {
        [self.read.as_raw_fd(), self.write.as_raw_fd()]
    }
}

impl Drop for SignalPipe {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

impl SignalPipe {
    /// In a new worker, with the master's signals still blocked: takes the
    /// master's actions off its signals and closes its pipe. signal-hook's
    /// handler stays installed, so the worker's own handlers (tokio's, which
    /// use the same registry) are added to it; signals without one do
    /// nothing. The worker unblocks the signals once its handlers are in
    /// place (`unblock_all`), so a stop sent meanwhile is neither lost nor
    /// fatal.
    pub fn release_in_child(&self) {
        for id in &self.ids {
            signal_hook::low_level::unregister(*id);
        }
        for fd in self.fds() {
            // The copies in this process's memory are not dropped (a
            // worker ends with _exit), so the descriptors are let go of here.
            crate::sys::void_fd(fd);
        }
    }
}

/// Whether `sig` asks the master to stop.
pub fn is_stop(sig: i32) -> bool {
    matches!(
        MasterCommand::from_signal(sig),
        Some(MasterCommand::Stop { .. })
    )
}

pub fn name(sig: i32) -> String {
    let known = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGCHLD => "SIGCHLD",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTTIN => "SIGTTIN",
        libc::SIGTTOU => "SIGTTOU",
        _ => "",
    };
    if !known.is_empty() {
        known.to_string()
    } else if sig >= libc::SIGRTMIN() {
        format!("SIGRTMIN+{}", sig - libc::SIGRTMIN())
    } else {
        format!("signal {sig}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals_a_worker_may_die_of_are_named() {
        // An app's own alarm(2) kills with SIGALRM: "signal 14 (signal 14)"
        // told nothing.
        assert_eq!(super::name(libc::SIGALRM), "SIGALRM");
        assert_eq!(super::name(libc::SIGXCPU), "SIGXCPU");
        assert_eq!(super::name(libc::SIGRTMIN() + 2), "SIGRTMIN+2");
        assert_eq!(super::name(libc::SIGSTKFLT), "signal 16");
    }
}
