//! The master's signals, through a self-pipe: the handler only writes the
//! signal number; the main loop reads it between its checks.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

static WRITE_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let saved = unsafe { *libc::__errno_location() };
    let byte = sig as u8;
    unsafe {
        libc::write(
            WRITE_FD.load(Ordering::Relaxed),
            (&raw const byte).cast(),
            1,
        );
        *libc::__errno_location() = saved;
    }
}

pub struct SignalPipe {
    read: RawFd,
    write: RawFd,
}

/// The signals the master handles (see the module doc of `master`).
pub fn handled() -> Vec<libc::c_int> {
    vec![
        libc::SIGCHLD,
        libc::SIGHUP,
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGUSR1,
        libc::SIGRTMIN() + 1,
        libc::SIGRTMIN() + 2,
    ]
}

impl SignalPipe {
    pub fn install() -> Result<SignalPipe, String> {
        let mut fds = [0; 2];
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(format!(
                "cannot create a pipe: {}",
                std::io::Error::last_os_error()
            ));
        }
        WRITE_FD.store(fds[1], Ordering::Relaxed);
        for sig in handled() {
            unsafe {
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = on_signal as *const () as usize;
                sa.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut());
            }
        }
        Ok(SignalPipe {
            read: fds[0],
            write: fds[1],
        })
    }

    /// The signals that arrived, waiting up to `timeout` for the first, or
    /// for one of `extra` to be ready (their `revents` are filled in).
    pub fn wait(&self, timeout: Duration, extra: &mut Vec<libc::pollfd>) -> Vec<i32> {
        extra.insert(
            0,
            libc::pollfd {
                fd: self.read,
                events: libc::POLLIN,
                revents: 0,
            },
        );
        unsafe {
            libc::poll(
                extra.as_mut_ptr(),
                extra.len() as libc::nfds_t,
                timeout.as_millis() as libc::c_int,
            )
        };
        extra.remove(0);
        let mut out = Vec::new();
        let mut buf = [0u8; 64];
        loop {
            let n = unsafe { libc::read(self.read, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend(buf[..n as usize].iter().map(|&b| i32::from(b)));
        }
        out
    }

    pub fn fds(&self) -> [RawFd; 2] {
        [self.read, self.write]
    }
}

/// Puts every handled signal back to its default action and unblocks all:
/// a worker must not inherit the master's handlers (embedding.md, Pitfalls).
pub fn reset_in_child(fds: [RawFd; 2]) {
    for sig in handled() {
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
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
        libc::SIGTERM => "SIGTERM",
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
