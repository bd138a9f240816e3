//! A response body read ahead of its client, as nginx buffers what a
//! FastCGI server sends (`fastcgi_buffering on`): the upstream is read as
//! fast as it writes while the client takes the bytes at its own pace. A
//! FastCGI process serves one request at a time, and a client on a slow
//! link (or one that stops reading) would otherwise hold it until the
//! last byte left; read ahead, the process is free as soon as its script
//! ends.
//!
//! As nginx holds them: up to `IN_MEMORY` of a response in memory (while
//! the process's responses together hold less than `BUDGET`), the rest in
//! an unnamed temporary file (`$TMPDIR`) of up to `IN_FILE` not yet sent
//! (nginx's `fastcgi_max_temp_file_size`, 1 GiB). Past that, the upstream
//! is read only as the client takes what was read. The file is written
//! and read where the bytes come and go, as nginx does without aio: a
//! page-cache copy of at most `FILE_PIECE` at a time.

use std::collections::VecDeque;
use std::fs::File;
use std::future::poll_fn;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

use super::answered::CountedBody;
use super::body::{BodyError, ChunkSource, unnamed_temp_file};

/// The most of one response held in memory.
const IN_MEMORY: usize = 256 * 1024;
/// The most held in memory for all of a process's responses together: a
/// thousand stalled clients must not cost a gigabyte of memory.
const BUDGET: usize = 64 << 20;
/// The most of one response in its file and not yet sent.
const IN_FILE: u64 = 1 << 30;
/// The most read from the file for the client at a time.
const FILE_PIECE: usize = 64 * 1024;
/// Bytes held in memory, over every response of this process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// A part of the response, in order.
enum Piece {
    Memory(Bytes),
    /// Bytes in the file, from `offset`.
    File {
        offset: u64,
        len: u64,
    },
}

/// What the upstream's reader and the client's side share.
#[derive(Default)]
struct Held {
    pieces: VecDeque<Piece>,
    in_memory: usize,
    /// The file, once a response outgrew memory, and what of it is
    /// waiting: the pieces in it, their bytes, and where the next goes
    /// (back at the start once the client has taken them all).
    file: Option<Arc<File>>,
    file_pieces: usize,
    in_file: u64,
    file_end: u64,
    /// No file could be made or written: memory only.
    no_file: bool,
    /// How the upstream's body ended, once it has: None whole, or why
    /// not. Taken by the client's side after the last piece.
    end: Option<Option<BodyError>>,
    /// The client's side, waiting for bytes.
    client: Option<Waker>,
    /// The reader, waiting for room, or for the upstream.
    reader: Option<Waker>,
    /// The client's side is gone: the reader stops, and lets the upstream
    /// body go (its own drop decides what then becomes of its process).
    client_gone: bool,
}

impl Held {
    /// Whether a chunk read now would go to memory.
    fn memory_has_room(&self) -> bool {
        self.in_memory < IN_MEMORY && HELD.load(Ordering::Relaxed) < BUDGET
    }

    /// Whether the reader waits for the client to take some. (With nothing
    /// held at all, one chunk is always read: the budget cannot stall a
    /// response for good.)
    fn full(&self) -> bool {
        !self.memory_has_room()
            && (self.no_file || self.file_used() >= IN_FILE)
            && (self.in_memory > 0 || self.in_file > 0)
    }

    /// The size of the file that counts: none once the client has taken
    /// every piece in it (the next is written from its start), else all
    /// of it. Not only what is unsent: pieces taken before the last one
    /// still take their room, and a client that stays a little behind
    /// would otherwise have the file grow with the whole response.
    fn file_used(&self) -> u64 {
        if self.file_pieces == 0 {
            0
        } else {
            self.file_end
        }
    }

    fn push(&mut self, chunk: Bytes) {
        if !self.memory_has_room() && !self.no_file && self.file_used() < IN_FILE {
            match self.write(&chunk) {
                Ok(()) => return,
                Err(e) => {
                    static SAID: crate::log::say::Throttle = crate::log::say::Throttle::new();
                    if SAID.ready(60) {
                        crate::say!(
                            "oxgate: cannot hold a response in a temporary file in $TMPDIR ({e}); holding what it can in memory (said at most once a minute)"
                        );
                    }
                    self.no_file = true;
                }
            }
        }
        self.in_memory += chunk.len();
        HELD.fetch_add(chunk.len(), Ordering::Relaxed);
        self.pieces.push_back(Piece::Memory(chunk));
    }

    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        let file = match &self.file {
            Some(f) => f.clone(),
            None => self.file.insert(Arc::new(unnamed_temp_file()?)).clone(),
        };
        if self.file_pieces == 0 {
            self.file_end = 0;
        }
        file.write_all_at(chunk, self.file_end)?;
        let (offset, len) = (self.file_end, chunk.len() as u64);
        self.file_end += len;
        self.in_file += len;
        match self.pieces.back_mut() {
            // Straight after the last piece in the file: one piece.
            Some(Piece::File { offset: o, len: l }) if *o + *l == offset => *l += len,
            _ => {
                self.file_pieces += 1;
                self.pieces.push_back(Piece::File { offset, len });
            }
        }
        Ok(())
    }

    /// The next bytes for the client.
    fn take(&mut self) -> Option<Result<Bytes, BodyError>> {
        match self.pieces.front_mut()? {
            Piece::Memory(_) => {
                let Some(Piece::Memory(chunk)) = self.pieces.pop_front() else {
                    unreachable!("the front piece is in memory")
                };
                self.in_memory -= chunk.len();
                HELD.fetch_sub(chunk.len(), Ordering::Relaxed);
                Some(Ok(chunk))
            }
            Piece::File { offset, len } => {
                let n = (*len).min(FILE_PIECE as u64) as usize;
                let mut buf = BytesMut::zeroed(n);
                let file = self.file.as_ref().expect("a piece in the file has one");
                if let Err(e) = file.read_exact_at(&mut buf, *offset) {
                    return Some(Err(BodyError::new(
                        500,
                        format!("cannot read back a response held in a temporary file: {e}"),
                    )));
                }
                *offset += n as u64;
                *len -= n as u64;
                self.in_file -= n as u64;
                if *len == 0 {
                    self.pieces.pop_front();
                    self.file_pieces -= 1;
                }
                Some(Ok(buf.freeze()))
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        HELD.fetch_sub(self.in_memory, Ordering::Relaxed);
    }
}

fn lock(shared: &Mutex<Held>) -> MutexGuard<'_, Held> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// The client's side: a response body that gives what was read ahead.
pub struct ReadAhead {
    shared: Arc<Mutex<Held>>,
    sent: u64,
    finished: bool,
    on_end: Option<Box<dyn FnOnce(u64, bool) + Send>>,
}

/// Reads `upstream` ahead of the client. What is there at once is read
/// here; the rest, if any, by a task of the current runtime.
pub fn read_ahead<S: ChunkSource>(mut upstream: S) -> ReadAhead {
    let shared = Arc::new(Mutex::new(Held::default()));
    // Most responses are whole by now: no task for those.
    let mut cx = Context::from_waker(Waker::noop());
    if read_what_is_there(&mut upstream, &shared, &mut cx).is_pending() {
        let reader = shared.clone();
        tokio::spawn(async move {
            poll_fn(|cx| read_what_is_there(&mut upstream, &reader, cx)).await;
        });
    }
    ReadAhead {
        shared,
        sent: 0,
        finished: false,
        on_end: None,
    }
}

/// Reads the upstream into `shared` until it ends, the client leaves, or
/// there is no room.
fn read_what_is_there<S: ChunkSource>(
    upstream: &mut S,
    shared: &Mutex<Held>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    loop {
        {
            let mut held = lock(shared);
            if held.client_gone {
                return Poll::Ready(());
            }
            if held.full() {
                held.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        let next = upstream.poll_chunk(cx);
        let mut held = lock(shared);
        match next {
            Poll::Pending => {
                // The client's leaving must wake the reader, to let the
                // upstream go.
                held.reader = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(Some(Ok(chunk))) => {
                if !chunk.is_empty() {
                    held.push(chunk);
                }
            }
            Poll::Ready(end) => {
                held.end = Some(end.and_then(Result::err));
            }
        }
        if let Some(w) = held.client.take() {
            w.wake();
        }
        if held.end.is_some() {
            return Poll::Ready(());
        }
    }
}

impl ReadAhead {
    fn finish(&mut self, whole: bool) {
        self.finished = true;
        if let Some(f) = self.on_end.take() {
            f(self.sent, whole);
        }
    }
}

impl ChunkSource for ReadAhead {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let mut held = lock(&self.shared);
        match held.take() {
            Some(Ok(chunk)) => {
                if let Some(w) = held.reader.take() {
                    w.wake();
                }
                drop(held);
                self.sent += chunk.len() as u64;
                return Poll::Ready(Some(Ok(chunk)));
            }
            Some(Err(e)) => {
                held.client_gone = true;
                let reader = held.reader.take();
                drop(held);
                if let Some(w) = reader {
                    w.wake();
                }
                crate::say!("oxgate: {}", e.message);
                self.finish(false);
                return Poll::Ready(Some(Err(e)));
            }
            None => {}
        }
        match held.end.take() {
            Some(None) => {
                drop(held);
                self.finish(true);
                Poll::Ready(None)
            }
            Some(Some(e)) => {
                drop(held);
                self.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            None => {
                held.client = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl CountedBody for ReadAhead {
    fn on_end(mut self, f: Box<dyn FnOnce(u64, bool) + Send>) -> ReadAhead {
        self.on_end = Some(f);
        self
    }

    fn add_sent(&mut self, n: u64) {
        self.sent += n;
    }
}

impl Drop for ReadAhead {
    fn drop(&mut self) {
        let (reader, _let_go) = {
            let mut held = lock(&self.shared);
            held.client_gone = true;
            // What was read for the client is let go now, not when the
            // reader next runs.
            HELD.fetch_sub(held.in_memory, Ordering::Relaxed);
            held.in_memory = 0;
            held.in_file = 0;
            held.file_pieces = 0;
            (
                held.reader.take(),
                (std::mem::take(&mut held.pieces), held.file.take()),
            )
        };
        if let Some(w) = reader {
            w.wake();
        }
        if !self.finished {
            self.finish(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// An upstream that gives `ready` chunks at once, then waits for the
    /// test to give it more, and says when it is dropped.
    struct Upstream {
        chunks: Arc<Mutex<VecDeque<Option<Bytes>>>>,
        waker: Arc<Mutex<Option<Waker>>>,
        dropped: Arc<AtomicBool>,
    }

    impl ChunkSource for Upstream {
        fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
            match self.chunks.lock().unwrap().pop_front() {
                Some(Some(c)) => Poll::Ready(Some(Ok(c))),
                Some(None) => Poll::Ready(None),
                None => {
                    *self.waker.lock().unwrap() = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }

    impl Drop for Upstream {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    type Feed = Arc<Mutex<VecDeque<Option<Bytes>>>>;

    fn upstream(first: &[Option<&'static [u8]>]) -> (Upstream, Feed, Arc<AtomicBool>) {
        let chunks: Feed = Arc::new(Mutex::new(
            first.iter().map(|c| c.map(Bytes::from_static)).collect(),
        ));
        let dropped = Arc::new(AtomicBool::new(false));
        let up = Upstream {
            chunks: chunks.clone(),
            waker: Arc::new(Mutex::new(None)),
            dropped: dropped.clone(),
        };
        (up, chunks, dropped)
    }

    async fn read_all(body: &mut ReadAhead) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(c) = poll_fn(|cx| body.poll_chunk(cx)).await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_whole_response_is_read_at_once_and_its_upstream_let_go() {
        let (up, _, dropped) = upstream(&[Some(b"hello "), Some(b"world"), None]);
        let mut body = read_ahead(up);
        // Read whole before the client took a byte: the upstream (its
        // process) is free.
        assert!(dropped.load(Ordering::SeqCst));
        let ends = Arc::new(Mutex::new(None));
        let e = ends.clone();
        body = body.on_end(Box::new(move |sent, whole| {
            *e.lock().unwrap() = Some((sent, whole))
        }));
        assert_eq!(read_all(&mut body).await, b"hello world");
        assert_eq!(*ends.lock().unwrap(), Some((11, true)));
    }

    #[tokio::test]
    async fn a_response_larger_than_memory_goes_on_into_a_file_in_order() {
        let (up, feed, dropped) = upstream(&[Some(b"a")]);
        let waker = up.waker.clone();
        let mut body = read_ahead(up);
        let pieces: Vec<Bytes> = (0..4u8)
            .map(|i| Bytes::from(vec![b'0' + i; IN_MEMORY / 2 + 1000]))
            .collect();
        feed.lock()
            .unwrap()
            .extend(pieces.iter().cloned().map(Some));
        feed.lock().unwrap().push_back(None);
        waker.lock().unwrap().take().unwrap().wake();
        tokio::task::yield_now().await;
        // All of it read, though the client took nothing: the upstream is
        // free, and what memory could not hold is in the file.
        assert!(dropped.load(Ordering::SeqCst));
        {
            let held = lock(&body.shared);
            assert!(held.in_memory <= IN_MEMORY + IN_MEMORY / 2 + 1000);
            assert!(held.in_file > 0 && held.file.is_some());
        }
        let mut want = b"a".to_vec();
        pieces.iter().for_each(|p| want.extend_from_slice(p));
        assert_eq!(read_all(&mut body).await, want);
        assert_eq!(lock(&body.shared).in_file, 0);
    }

    #[tokio::test]
    async fn with_no_room_left_the_reader_waits_for_the_client() {
        let (up, feed, dropped) = upstream(&[Some(b"a")]);
        let waker = up.waker.clone();
        let mut body = read_ahead(up);
        // As when no temporary file can be made: memory only.
        lock(&body.shared).no_file = true;
        let big = Bytes::from(vec![b'x'; IN_MEMORY]);
        feed.lock()
            .unwrap()
            .extend([Some(big.clone()), Some(big.clone()), None]);
        waker.lock().unwrap().take().unwrap().wake();
        tokio::task::yield_now().await;
        // One bound's worth read; the rest waits for the client.
        assert!(!dropped.load(Ordering::SeqCst));
        assert_eq!(feed.lock().unwrap().len(), 2);
        let all = read_all(&mut body).await;
        assert_eq!(all.len(), 1 + 2 * IN_MEMORY);
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn the_file_counts_all_it_holds_while_any_piece_is_unsent() {
        // Memory full: what comes goes to the file.
        let mut held = Held::default();
        held.in_memory = IN_MEMORY;
        HELD.fetch_add(IN_MEMORY, Ordering::Relaxed);
        held.write(b"first").unwrap();
        // A piece in memory between: the file's two are apart.
        held.pieces
            .push_back(Piece::Memory(Bytes::from_static(b"-")));
        held.in_memory += 1;
        HELD.fetch_add(1, Ordering::Relaxed);
        held.write(b"second").unwrap();
        // One piece of the two is sent; the file still holds both.
        assert_eq!(held.take().unwrap().unwrap(), &b"first"[..]);
        assert_eq!((held.in_file, held.file_used()), (6, 11));
        held.file_end = IN_FILE;
        assert!(held.full());
        assert_eq!(held.take().unwrap().unwrap(), &b"-"[..]);
        assert_eq!(held.take().unwrap().unwrap(), &b"second"[..]);
        assert!(!held.full());
    }

    #[test]
    fn the_file_is_written_from_its_start_again_once_the_client_took_it_all() {
        let mut held = Held::default();
        held.write(b"first").unwrap();
        assert_eq!(held.take().unwrap().unwrap(), &b"first"[..]);
        held.write(b"second").unwrap();
        held.write(b"third").unwrap();
        assert!(matches!(
            held.pieces.front(),
            Some(Piece::File { offset: 0, len: 11 })
        ));
        assert_eq!(held.take().unwrap().unwrap(), &b"secondthird"[..]);
        assert!(held.take().is_none());
    }

    #[tokio::test]
    async fn a_client_that_leaves_lets_the_upstream_go_and_is_logged_cut() {
        let (up, _, dropped) = upstream(&[Some(b"a")]);
        let ends = Arc::new(Mutex::new(None));
        let e = ends.clone();
        let body = read_ahead(up).on_end(Box::new(move |sent, whole| {
            *e.lock().unwrap() = Some((sent, whole))
        }));
        drop(body);
        assert_eq!(*ends.lock().unwrap(), Some((0, false)));
        tokio::task::yield_now().await;
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn an_upstream_error_reaches_the_client_after_the_bytes_before_it() {
        struct Failing(u8);
        impl ChunkSource for Failing {
            fn poll_chunk(
                &mut self,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Bytes, BodyError>>> {
                self.0 += 1;
                Poll::Ready(Some(match self.0 {
                    1 => Ok(Bytes::from_static(b"part")),
                    _ => Err(BodyError::new(502, "broken")),
                }))
            }
        }
        let mut body = read_ahead(Failing(0));
        let first = poll_fn(|cx| body.poll_chunk(cx)).await;
        assert_eq!(&first.unwrap().unwrap()[..], b"part");
        let second = poll_fn(|cx| body.poll_chunk(cx)).await;
        assert_eq!(second.unwrap().unwrap_err().status, 502);
        assert!(poll_fn(|cx| body.poll_chunk(cx)).await.is_none());
    }
}
