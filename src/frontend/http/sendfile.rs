//! sendfile(2) under hyper. hyper writes body frames it is given; it cannot
//! be handed a file. So a file region becomes frames that point into
//! `PLACEHOLDER`, a reserved range of address space, and the I/O layer
//! below hyper ([`super::batch::BatchedIo`]), seeing a write from that
//! range, sends the same number of bytes from the file with sendfile
//! instead. The regions wait in the connection's [`FileQueue`] in the
//! order their frames were produced, which is the order hyper writes them.
//!
//! hyper must pass body frames through unread: with a Content-Length or
//! chunked (an ASGI app's files may come without a length), and the queue
//! write strategy (`writev(true)`, and `pipeline_flush` off: it would
//! switch hyper back to copying), it does. A region must never be longer
//! than what is left of the Content-Length: hyper would cut the frame, and
//! the rest of the region would go out in the next response on the
//! connection. The app hosts clip regions to it. The placeholder is
//! read-only zero pages (no memory used); were hyper ever to copy a frame,
//! the tests that compare served files byte for byte would see zeros.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::Interest;

use crate::request::{FileRegion, Warmer};

/// The most one frame (and so one sendfile call) covers.
pub const FRAME_MAX: usize = 1 << 20;

static RANGE: OnceLock<memmap2::Mmap> = OnceLock::new();

/// Address space only: nothing ever writes or reads its pages (zeros),
/// only the pointer and the length of its slices matter.
fn map_placeholder() -> io::Result<memmap2::Mmap> {
    memmap2::MmapOptions::new()
        .len(FRAME_MAX)
        .map_anon()
        .and_then(memmap2::MmapMut::make_read_only)
}

/// Reserves the placeholder range, if it is not yet: a worker does so
/// before `--limit-as` applies (the range is counted apart from the limit,
/// and made later it could fail under it).
pub fn reserve_placeholder() -> io::Result<()> {
    if RANGE.get().is_none() {
        let _ = RANGE.set(map_placeholder()?);
    }
    Ok(())
}

/// The range, made at first use where no limit reserved it before. (On
/// every write: `get_or_init`'s fast path is one load.)
#[inline]
fn placeholder_range() -> &'static [u8] {
    RANGE.get_or_init(|| map_placeholder().expect("reserving address space failed"))
}

/// A body frame standing for the next `len` bytes of the queued files.
pub(super) fn placeholder(len: usize) -> Bytes {
    Bytes::from_static(&placeholder_range()[..len.min(FRAME_MAX)])
}

pub(super) fn is_placeholder(data: &[u8]) -> bool {
    let range = placeholder_range().as_ptr_range();
    !data.is_empty() && range.contains(&data.as_ptr())
}

/// The file regions a connection's body frames stand for, oldest first,
/// and the read-in of the next one's pages not in the page cache.
#[derive(Default)]
pub struct FileQueue(Mutex<(VecDeque<FileRegion>, Warmer)>);

impl FileQueue {
    pub fn push(&self, region: FileRegion) {
        self.0.lock().expect("not poisoned").0.push_back(region);
    }

    /// No region is waiting to be sent.
    pub fn is_empty(&self) -> bool {
        self.0.lock().expect("not poisoned").0.is_empty()
    }

    /// Sends up to `len` bytes of the oldest region to `sock`.
    pub fn poll_send<S: SendFile>(
        &self,
        cx: &mut Context<'_>,
        sock: &S,
        len: usize,
    ) -> Poll<io::Result<usize>> {
        let mut guard = self.0.lock().expect("not poisoned");
        let (queue, warmer) = &mut *guard;
        let Some(region) = queue.front_mut() else {
            crate::say!("oxgate: a file frame without its file (a bug): connection closed");
            return Poll::Ready(Err(io::Error::other("a file frame without its file")));
        };
        let want = len.min(usize::try_from(region.len).unwrap_or(usize::MAX));
        // sendfile waits for pages not in the cache: read in elsewhere first.
        std::task::ready!(warmer.poll_warm(cx, &region.fd, region.offset, want as u64));
        let fd = region.fd.as_raw_fd();
        let mut offset = region.offset as libc::off_t;
        let n = match std::task::ready!(sock.poll_sendfile(cx, fd, &mut offset, want)) {
            Ok(0) => {
                crate::say!(
                    "oxgate: the file being sent ended {} bytes short of its length \
                     (truncated while sent?); connection closed",
                    region.len
                );
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            Ok(n) => n,
            Err(e) => {
                // A client gone is routine; a file that cannot be sent is not.
                if !matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) {
                    crate::say!("oxgate: sending a file: {e}; connection closed");
                }
                return Poll::Ready(Err(e));
            }
        };
        region.offset += n as u64;
        region.len -= n as u64;
        if region.len == 0 {
            queue.pop_front();
            warmer.reset();
        }
        Poll::Ready(Ok(n))
    }
}

/// A socket that sendfile can write to.
pub trait SendFile {
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: RawFd,
        offset: &mut libc::off_t,
        len: usize,
    ) -> Poll<io::Result<usize>>;
}

macro_rules! sendfile_for {
    ($t:ty) => {
        impl SendFile for $t {
            fn poll_sendfile(
                &self,
                cx: &mut Context<'_>,
                file: RawFd,
                offset: &mut libc::off_t,
                len: usize,
            ) -> Poll<io::Result<usize>> {
                loop {
                    std::task::ready!(self.poll_write_ready(cx))?;
                    match self.try_io(Interest::WRITABLE, || {
                        crate::sys::sendfile(self.as_raw_fd(), file, offset, len)
                    }) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        other => return Poll::Ready(other),
                    }
                }
            }
        }
    };
}

sendfile_for!(tokio::net::TcpStream);
sendfile_for!(tokio::net::UnixStream);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_recognised_and_nothing_else_is() {
        let p = placeholder(100);
        assert_eq!(p.len(), 100);
        assert!(is_placeholder(&p));
        assert!(is_placeholder(&p[50..]));
        assert!(is_placeholder(&placeholder(FRAME_MAX * 2)));
        assert!(!is_placeholder(b"hello"));
        assert!(!is_placeholder(&vec![0u8; 4096]));
        assert!(!is_placeholder(&placeholder(0)));
    }
}
