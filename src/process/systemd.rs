//! Running under systemd: readiness notifications (Type=notify) and socket
//! activation.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{AddressFamily, SockaddrLike, SockaddrStorage, getsockname};

use crate::listen::{Address, Listener, Protocol, Socket};

/// Tells systemd about the service's state when it runs us with
/// Type=notify (NOTIFY_SOCKET set); does nothing otherwise.
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_bytes();
    let _ = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), Path::new(&path))
    };
}

/// Sockets systemd passed us (socket activation: LISTEN_PID, LISTEN_FDS),
/// as fds 3, 4, … Each serves the protocol `configured` names for its
/// address (systemd cannot say which), `unnamed` when none does.
pub fn systemd_sockets(configured: &[(Address, Protocol)], unnamed: Protocol) -> Vec<Socket> {
    let protocol_of = |addr: &Address| {
        configured
            .iter()
            .find(|(a, _)| a == addr)
            .map_or(unnamed, |(_, p)| *p)
    };
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_some_and(|p| p == std::process::id());
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if !for_us || n <= 0 {
        return Vec::new();
    }
    // SAFETY: remove_var races only with another thread reading or writing
    // the environment at the same time, and this runs in startup::run before
    // any thread exists. (The app must not see these variables.)
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    let mut out = Vec::new();
    for fd in 3..3 + n {
        // SAFETY: by the socket activation protocol (sd_listen_fds(3)),
        // LISTEN_PID naming this process means systemd opened fds
        // 3..3+LISTEN_FDS in it and hands them over: they are open, and
        // nothing else in the process owns them (the variables that told of
        // them are gone, and nothing opened before this call can have been
        // given those numbers while they were taken), so this `OwnedFd` is
        // their only owner.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        crate::sys::set_nonblocking(&owned);
        let Ok(addr) = getsockname::<SockaddrStorage>(fd) else {
            crate::say!("oxgate: LISTEN_FDS: fd {fd} is not a socket, ignored");
            // Left open, as it was given.
            let _ = owned.into_raw_fd();
            continue;
        };
        if addr.family() == Some(AddressFamily::Unix) {
            let l = std::os::unix::net::UnixListener::from(owned);
            let a = match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(Path::to_path_buf))
            {
                Some(p) => Address::Unix(p),
                None => Address::Abstract(format!("systemd-fd-{fd}")),
            };
            out.push(Socket {
                protocol: protocol_of(&a),
                addr: a,
                listener: Listener::Unix(l, None),
                activated: true,
            });
        } else {
            let l = std::net::TcpListener::from(owned);
            let a = Address::Tcp(
                l.local_addr()
                    .map_or_else(|_| format!("fd{fd}"), |a| a.to_string()),
            );
            out.push(Socket {
                protocol: protocol_of(&a),
                addr: a,
                listener: Listener::Tcp(l),
                activated: true,
            });
        }
    }
    out
}
