//! The accept queue of a listener now, and its limit: TCP_INFO for TCP,
//! sock_diag for unix sockets.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType, recv, send, setsockopt, socket,
    sockopt,
};
use nix::sys::stat::fstat;
use nix::sys::time::TimeVal;

use crate::listen::{Listener, Socket};

/// (connections waiting to be accepted, the backlog); zeros if unknown.
pub(in crate::master) fn listen_queue(s: &Socket) -> (u64, u64) {
    match &s.listener {
        Listener::Tcp(t) => tcp_queue(t.as_fd()),
        Listener::Unix(u, _) => unix_queue(u.as_fd()),
    }
    .unwrap_or((0, 0))
}

// The fields `tcp_queue` reads are u32s (this fails to build otherwise).
const _: fn(&libc::tcp_info) -> [u32; 2] = |i| [i.tcpi_unacked, i.tcpi_sacked];

/// For a listening TCP socket, the kernel's tcp_info holds the accept queue
/// in `tcpi_unacked` and the backlog in `tcpi_sacked`. (Neither nix nor
/// socket2 reads TCP_INFO.)
fn tcp_queue(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    const SIZE: usize = std::mem::size_of::<libc::tcp_info>();
    // Zeros, read field by field: a kernel with a shorter tcp_info fills
    // less of it, and the rest reads 0.
    let mut buf = [0u8; SIZE];
    let mut len = SIZE as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes (SIZE, the length of
    // `buf`) into `buf`, and the length it wrote into `len`; both are live
    // locals, borrowed only for the call. `fd` is borrowed from an open
    // socket for as long as the call lasts.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return None;
    }
    let field = |at: usize| {
        u64::from(u32::from_ne_bytes(
            buf[at..at + 4].try_into().expect("4 bytes"),
        ))
    };
    Some((
        field(std::mem::offset_of!(libc::tcp_info, tcpi_unacked)),
        field(std::mem::offset_of!(libc::tcp_info, tcpi_sacked)),
    ))
}

/// A listening unix socket's queue, asked of the kernel by inode over
/// NETLINK_SOCK_DIAG (UNIX_DIAG_RQLEN: pending connections, backlog).
fn unix_queue(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_RQLEN: u32 = 0x10;
    const UNIX_DIAG_RQLEN: u16 = 4;
    let st = fstat(fd).ok()?;
    let nl = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()?;
    // nlmsghdr (16 bytes) + unix_diag_req (24 bytes)
    let mut req = [0u8; 40];
    req[0..4].copy_from_slice(&40u32.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req[6..8].copy_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req[16] = libc::AF_UNIX as u8;
    req[20..24].copy_from_slice(&(1u32 << 10).to_ne_bytes()); // TCP_LISTEN
    req[24..28].copy_from_slice(&(st.st_ino as u32).to_ne_bytes());
    req[28..32].copy_from_slice(&UDIAG_SHOW_RQLEN.to_ne_bytes());
    req[32..40].copy_from_slice(&[0xff; 8]); // no cookie
    let _ = setsockopt(&nl, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000));
    // Unbound and unconnected: a netlink send goes to the kernel.
    if send(nl.as_raw_fd(), &req, MsgFlags::empty()).ok()? != req.len() {
        return None;
    }
    let mut buf = [0u8; 1024];
    let n = recv(nl.as_raw_fd(), &mut buf, MsgFlags::empty()).ok()?;
    if n < 16 + 16 {
        return None;
    }
    let msg = &buf[..n];
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    if kind != SOCK_DIAG_BY_FAMILY {
        return None;
    }
    // Attributes follow the 16-byte unix_diag_msg.
    let mut at = 32;
    while at + 4 <= msg.len() {
        let len = u16::from_ne_bytes([msg[at], msg[at + 1]]) as usize;
        let kind = u16::from_ne_bytes([msg[at + 2], msg[at + 3]]);
        if len < 4 || at + len > msg.len() {
            break;
        }
        if kind == UNIX_DIAG_RQLEN && len >= 12 {
            let word = |i: usize| u32::from_ne_bytes(msg[i..i + 4].try_into().expect("4 bytes"));
            return Some((u64::from(word(at + 4)), u64::from(word(at + 8))));
        }
        at += len.next_multiple_of(4);
    }
    None
}
