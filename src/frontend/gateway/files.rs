//! Files on the gateway sockets (uwsgi, SCGI, FastCGI): a file the handler
//! hands out (a static file, `wsgi.file_wrapper`, ASGI pathsend) goes from
//! the page cache to the web server in front with sendfile(2), as it does
//! over HTTP, never through the process.
//!
//! The connection's tokio stream is split, and neither half can wait for
//! room on behalf of a system call it does not make. So the socket is
//! written directly; when it is full, a duplicate of its descriptor,
//! registered with the event loop for this alone (epoll takes a second
//! registration for a second descriptor number), waits for room. A file
//! that fits the socket at once, the usual case, costs no registration.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, send};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::listen::Protocol;
use crate::request::{FileRegion, Warmer};

/// The most one sendfile call is asked for: a slow web server in front
/// still sees the file arrive in steady pieces. Also the window read into
/// the page cache ahead of them.
pub(super) const CALL_MAX: u64 = 1 << 20;

/// A gateway connection's socket, for the bytes that go out by sendfile.
pub(super) struct SocketFiles {
    sock: RawFd,
    /// The duplicate that waits for room, once the socket was full.
    room: Option<AsyncFd<OwnedFd>>,
    /// Reads the file being sent into the page cache ahead of sendfile.
    warmer: Warmer,
    /// How long the socket may stay full before the send fails.
    stall: Option<std::time::Duration>,
}

impl SocketFiles {
    /// # Safety
    ///
    /// `sock` must be open, the same socket, whenever a method of this is
    /// called (it is dropped after the stream that owns `sock` at no risk:
    /// it keeps a duplicate of its own).
    pub(super) unsafe fn new(sock: RawFd) -> SocketFiles {
        SocketFiles {
            sock,
            room: None,
            warmer: Warmer::default(),
            stall: None,
        }
    }

    /// The socket's close becomes a reset: the web server is told the
    /// response failed, not that it ended (a response the app cut short).
    pub(super) fn reset_on_close(&self) {
        crate::sys::reset_on_close(self.sock);
    }

    /// Whether the socket is a unix socket, whose close no reset makes.
    pub(super) fn is_unix(&self) -> bool {
        crate::sys::is_unix_socket(self.sock)
    }

    /// Sends fail once the socket has stayed full for `timeout`.
    pub(super) fn with_stall_timeout(mut self, timeout: std::time::Duration) -> SocketFiles {
        self.stall = Some(timeout);
        self
    }

    /// [`send`](Self::send) for a region a body handed out; a failure other
    /// than the front end hanging up is said (the request log counts the
    /// region as sent once handed out).
    pub(super) async fn send_region(
        &mut self,
        head: &[u8],
        region: &FileRegion,
        protocol: Protocol,
    ) -> io::Result<()> {
        self.another_file();
        let sent = self.send(head, &region.fd, region.offset, region.len).await;
        if let Err(e) = &sent
            && !matches!(
                e.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            )
        {
            crate::say!(
                "oxgate: sending a file to the {} front end: {e}; connection closed",
                protocol.name()
            );
        }
        sent
    }

    /// Sends `head` (what goes before the file's bytes: the response head,
    /// a FastCGI record header), then `len` bytes of `file` from `offset`.
    /// The head goes with MSG_MORE (unless no file bytes follow): over TCP
    /// the kernel holds it for the file's first bytes, so a small file
    /// leaves in one segment with it.
    pub(super) async fn send(
        &mut self,
        mut head: &[u8],
        file: &OwnedFd,
        mut offset: u64,
        mut len: u64,
    ) -> io::Result<()> {
        let more = if len > 0 { libc::MSG_MORE } else { 0 };
        let flags =
            MsgFlags::from_bits_retain(more) | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        while !head.is_empty() {
            match send(self.sock, head, flags) {
                Ok(n) => head = &head[n..],
                Err(Errno::EAGAIN) => self.wait_for_room().await?,
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        while len > 0 {
            let call = len.min(CALL_MAX);
            self.warm(file, offset, call).await;
            let mut at = libc::off_t::try_from(offset).map_err(io::Error::other)?;
            match crate::sys::sendfile(self.sock, file.as_raw_fd(), &mut at, call as usize) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the file ended {len} bytes short of its length (truncated while sent?)"
                        ),
                    ));
                }
                Ok(n) => {
                    offset += n as u64;
                    len -= n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.wait_for_room().await?,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// sendfile waits for pages not in the page cache: they are read in
    /// elsewhere first (`Warmer`). A caller sending a file in small pieces
    /// (FastCGI's records) warms a larger window ahead of them.
    pub(super) async fn warm(&mut self, file: &OwnedFd, offset: u64, len: u64) {
        std::future::poll_fn(|cx| self.warmer.poll_warm(cx, file, offset, len)).await;
    }

    /// The next bytes sent come from another file (or region).
    pub(super) fn another_file(&mut self) {
        self.warmer.reset();
    }

    /// Returns once the socket (found full) has room again.
    async fn wait_for_room(&mut self) -> io::Result<()> {
        let room = match &mut self.room {
            Some(room) => room,
            None => {
                // SAFETY: `new`'s contract keeps `sock` open during this
                // call; the borrow lasts for the dup alone.
                let sock = unsafe { std::os::fd::BorrowedFd::borrow_raw(self.sock) };
                let dup = sock.try_clone_to_owned()?;
                // SAFETY: an OwnedFd's descriptor is open, and the same,
                // until it is dropped, which the AsyncFd that owns it does.
                let room = unsafe { AsyncFd::register_with_interest(dup, Interest::WRITABLE) }?;
                self.room.insert(room)
            }
        };
        // Registered after the socket was found full: epoll reports room
        // that came meanwhile. The readiness is cleared before the next
        // attempt, so an edge after that attempt's EAGAIN is not missed.
        let mut ready = match self.stall {
            Some(timeout) => tokio::time::timeout(timeout, room.writable())
                .await
                .map_err(|_| super::stall::stalled(timeout))??,
            None => room.writable().await?,
        };
        ready.clear_ready();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio::io::AsyncReadExt;

    fn file_with(data: &[u8]) -> OwnedFd {
        // Tests run in parallel: a file each.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("oxgate-socket-files-{}-{n}", std::process::id()));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(data).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f.into()
    }

    #[tokio::test]
    async fn head_and_file_arrive_in_order_through_a_full_socket() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let file = file_with(&data);
        let (ours, mut theirs) = tokio::net::UnixStream::pair().unwrap();
        // A socket far smaller than the file: sending must wait for room.
        socket2::SockRef::from(&ours)
            .set_send_buffer_size(16 << 10)
            .unwrap();
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            theirs.read_to_end(&mut got).await.unwrap();
            got
        });
        // SAFETY: `ours` is open until after `files` is dropped.
        let mut files = unsafe { SocketFiles::new(ours.as_raw_fd()) };
        files.send(b"head:", &file, 7, 2_000_000).await.unwrap();
        files.send(b"", &file, 0, 3).await.unwrap();
        assert!(files.room.is_some(), "the socket never filled up");
        drop(files);
        drop(ours);
        let got = reader.await.unwrap();
        assert_eq!(&got[..5], b"head:");
        assert_eq!(&got[5..2_000_005], &data[7..2_000_007]);
        assert_eq!(&got[2_000_005..], &data[..3]);
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_length_is_an_error() {
        let file = file_with(b"0123456789");
        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        // SAFETY: `ours` outlives `files`.
        let mut files = unsafe { SocketFiles::new(ours.as_raw_fd()) };
        let e = files.send(b"", &file, 5, 10).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("5 bytes short"), "{e}");
    }
}
