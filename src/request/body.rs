//! Request and response bodies: what a front end reads from a socket and
//! what a handler streams back, including files sent with sendfile(2).

use std::future::poll_fn;
use std::os::fd::{AsRawFd, OwnedFd};
use std::task::{Context, Poll};

use bytes::Bytes;

/// A failure while moving body bytes; the connection it belongs to is closed.
#[derive(Debug, Clone)]
pub struct BodyError {
    pub message: String,
    /// For a request body: the status that describes the client's fault
    /// (400 malformed, 413 too large), if the response has not started.
    pub status: u16,
    /// Whoever made it has logged it already (an app's exception, with its
    /// traceback): the front end that cuts the connection says nothing more.
    pub logged: bool,
}

impl BodyError {
    pub fn new(status: u16, message: impl Into<String>) -> BodyError {
        BodyError {
            message: message.into(),
            status,
            logged: false,
        }
    }

    /// One already in the log.
    pub fn logged(status: u16, message: impl Into<String>) -> BodyError {
        BodyError {
            logged: true,
            ..BodyError::new(status, message)
        }
    }
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for BodyError {}

/// Something that yields body chunks asynchronously, until `None`.
pub trait ChunkSource: Send + 'static {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>>;

    /// The next part of the body as a region of a file, for a front end
    /// that can hand it to the kernel (sendfile) instead of reading it.
    /// Taking it counts as sending it; `poll_chunk` then goes on after it.
    fn take_file(&mut self) -> Option<FileRegion> {
        None
    }

    /// `n` bytes of the regions taken never went out: the client left
    /// before they did. What the body counts as sent is that much less.
    fn unsent(&mut self, _n: u64) {}

    /// The trailer fields that follow the body, once `poll_chunk` has
    /// ended it; `None` when there are none, and an error when the body
    /// must end as cut short after all (the app failed before its last
    /// trailers). Front ends that cannot send trailers never ask.
    fn poll_trailers(
        &mut self,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Trailers, BodyError>>> {
        Poll::Ready(None)
    }
}

/// Cuts a chunk of a response body to what is left of its Content-Length
/// (`limit`), and counts it into `sent`: an app that sends more than it
/// declared must not run into the next response on the connection.
pub fn clip(limit: Option<u64>, sent: &mut u64, mut b: Bytes) -> Bytes {
    if let Some(limit) = limit {
        let left = limit.saturating_sub(*sent);
        if b.len() as u64 > left {
            b.truncate(left as usize);
        }
    }
    *sent += b.len() as u64;
    b
}

/// Trailer fields, as names and values.
pub type Trailers = Vec<(Bytes, Bytes)>;

/// Bytes `offset..offset + len` of an open file.
#[derive(Debug)]
pub struct FileRegion {
    pub fd: OwnedFd,
    pub offset: u64,
    pub len: u64,
}

/// A file's bytes not in the page cache are read in on a blocking thread
/// before the event loop sends or reads them, so that it never waits on the
/// disk (nginx's `aio threads`). Below this, the wait is a page or two, and
/// asking the kernel would cost more than it saves.
const WARM_MIN: u64 = 64 * 1024;

/// Brings part of a file into the page cache off the event loop. It
/// remembers the range it last looked at, so that a range sent in pieces
/// asks the kernel once; and once pages read in still look uncached (a file
/// system whose cache cachestat cannot see, such as overlayfs), it stops
/// reading ahead for this file rather than read everything twice.
#[derive(Default)]
pub struct Warmer {
    task: Option<tokio::task::JoinHandle<()>>,
    /// The range last found cached or being read in.
    seen: Option<(u64, u64)>,
    /// The kernel's answer cannot be trusted for this file.
    blind: bool,
}

impl Warmer {
    /// Ready once `len` bytes of `fd` from `offset` are in the page cache
    /// (or the kernel cannot tell, or they are too few to matter).
    pub fn poll_warm(
        &mut self,
        cx: &mut Context<'_>,
        fd: &OwnedFd,
        offset: u64,
        len: u64,
    ) -> Poll<()> {
        use crate::sys::pagecache::{read_in, uncached};
        use std::os::fd::AsFd;
        if let Some(task) = &mut self.task {
            // A failed read leaves the real one, next, to say what is wrong.
            let _ = std::task::ready!(std::pin::Pin::new(task).poll(cx));
            self.task = None;
            if let Some((start, end)) = self.seen {
                self.blind = uncached(fd.as_fd(), start, end - start);
            }
            return Poll::Ready(());
        }
        let end = offset.saturating_add(len);
        let inside = self.seen.is_some_and(|(s, e)| s <= offset && end <= e);
        if self.blind || len < WARM_MIN || inside {
            return Poll::Ready(());
        }
        self.seen = Some((offset, end));
        if !uncached(fd.as_fd(), offset, len) {
            return Poll::Ready(());
        }
        let Ok(file) = fd.try_clone() else {
            return Poll::Ready(());
        };
        self.task = Some(tokio::task::spawn_blocking(move || {
            read_in(file.as_fd(), offset, len);
        }));
        self.poll_warm(cx, fd, offset, len)
    }

    /// For another file (or region): nothing of the last one is known.
    pub fn reset(&mut self) {
        debug_assert!(self.task.is_none(), "reset while reading in");
        *self = Warmer::default();
    }
}

/// How much of the file a [`FileBody`] was read to or handed out as.
pub struct FileEnd {
    pub sent: u64,
    /// All of the region went out (or was handed out to be sent).
    pub complete: bool,
    /// Reading the file failed (it shrank, or cannot be read): the body was
    /// cut short. Not set when the body was merely dropped (client gone).
    pub failed: bool,
}

/// A response body that is a region of a file (`wsgi.file_wrapper` over a
/// regular file). Front ends that can `take_file` send it with sendfile;
/// the others read it here, a chunk at a time. `on_end` runs once, when the
/// body is done or dropped (the app host closes the app's iterable then).
pub struct FileBody {
    region: Option<FileRegion>,
    warmer: Warmer,
    sent: u64,
    on_end: Option<Box<dyn FnOnce(FileEnd) + Send>>,
}

/// What one read of a [`FileRegion`] takes from the file.
pub const FILE_CHUNK: usize = 256 * 1024;
/// Files smaller than this are read, not handed out for sendfile. Copying
/// a few bytes costs less than sendfile's page references, and a page or
/// more costs more: measured side by side, a 2 or 3 KiB file is served as
/// fast either way, a 200-byte or 1 KiB one about 6% faster read, and a
/// 4 KiB one 4% faster (12 KiB: 12%) sent with sendfile.
pub const SENDFILE_MIN: u64 = 4096;

impl FileBody {
    pub fn new(region: FileRegion, on_end: impl FnOnce(FileEnd) + Send + 'static) -> FileBody {
        FileBody {
            region: Some(region),
            warmer: Warmer::default(),
            sent: 0,
            on_end: Some(Box::new(on_end)),
        }
    }

    /// All of the file has been read or handed out.
    pub fn is_spent(&self) -> bool {
        self.region.as_ref().is_none_or(|r| r.len == 0)
    }

    fn end(&mut self, complete: bool, failed: bool) {
        self.region = None;
        if let Some(f) = self.on_end.take() {
            f(FileEnd {
                sent: self.sent,
                complete,
                failed,
            });
        }
    }
}

impl FileRegion {
    /// Reads the next chunk (up to 256 KiB) with pread and moves past it;
    /// `None` once the region is done. A file that ends before the region
    /// does is an `UnexpectedEof` error.
    pub fn read_chunk(&mut self) -> std::io::Result<Option<Bytes>> {
        if self.len == 0 {
            return Ok(None);
        }
        let want = (self.len as usize).min(FILE_CHUNK);
        // Read into fresh capacity rather than a zeroed buffer: zeroing a
        // 256 KiB chunk costs about what reading it from the page cache does.
        let mut buf = bytes::BytesMut::with_capacity(want);
        let n = loop {
            let spare = buf.spare_capacity_mut();
            // SAFETY: `spare` is at least `want` bytes of memory owned by
            // `buf` and borrowed mutably for the call; pread writes at most
            // `want` bytes into it, from a descriptor this region owns.
            let read = unsafe {
                libc::pread(
                    self.fd.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    want,
                    self.offset as libc::off_t,
                )
            };
            if read >= 0 {
                break read as usize;
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        };
        // SAFETY: pread initialized the first `n` bytes, and n <= want <=
        // the capacity.
        unsafe { buf.set_len(n) };
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file being sent ended before its length (truncated while sent?)",
            ));
        }
        buf.truncate(n);
        self.offset += n as u64;
        self.len -= n as u64;
        Ok(Some(buf.freeze()))
    }
}

impl ChunkSource for FileBody {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        let Some(region) = self.region.as_mut().filter(|r| r.len > 0) else {
            self.end(true, false);
            return Poll::Ready(None);
        };
        // A page-cache read is quick enough for the event loop; pages that
        // are not in the cache are read in on a blocking thread first.
        let next = region.len.min(FILE_CHUNK as u64);
        std::task::ready!(self.warmer.poll_warm(cx, &region.fd, region.offset, next));
        match region.read_chunk() {
            Ok(Some(b)) => {
                self.sent += b.len() as u64;
                Poll::Ready(Some(Ok(b)))
            }
            Ok(None) => unreachable!("the region is not empty"),
            Err(e) => {
                self.end(false, true);
                Poll::Ready(Some(Err(BodyError::new(
                    500,
                    format!("reading the file to send: {e}"),
                ))))
            }
        }
    }

    fn take_file(&mut self) -> Option<FileRegion> {
        // A small file goes out in one write with the head (SENDFILE_MIN).
        if self.region.as_ref().is_none_or(|r| r.len < SENDFILE_MIN) {
            return None;
        }
        let region = self.region.take()?;
        self.sent += region.len;
        Some(region)
    }

    fn unsent(&mut self, n: u64) {
        self.sent = self.sent.saturating_sub(n);
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        let complete = self.region.as_ref().is_none_or(|r| r.len == 0);
        self.end(complete, false);
    }
}

/// How much of a request body an app did not read is still read (and
/// dropped) to keep the connection; beyond it the connection is closed.
pub const UNREAD_BODY_DRAIN: usize = 8 << 20;

pub struct BodyStream(Box<dyn ChunkSource>);

impl BodyStream {
    pub fn new(source: impl ChunkSource) -> Self {
        BodyStream(Box::new(source))
    }

    pub fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.0.poll_chunk(cx)
    }

    pub async fn chunk(&mut self) -> Option<Result<Bytes, BodyError>> {
        poll_fn(|cx| self.poll_chunk(cx)).await
    }

    /// The next chunk if the source has it now, without waiting for one:
    /// a front end puts what is ready into one write. (Every source
    /// registers the waker of each poll, so a wait after this one is woken
    /// as usual.)
    pub fn ready_chunk(&mut self) -> Poll<Option<Result<Bytes, BodyError>>> {
        self.poll_chunk(&mut Context::from_waker(std::task::Waker::noop()))
    }

    pub fn take_file(&mut self) -> Option<FileRegion> {
        self.0.take_file()
    }

    pub fn unsent(&mut self, n: u64) {
        self.0.unsent(n)
    }

    /// Reads and drops what the app left unread of a request body, up to
    /// [`UNREAD_BODY_DRAIN`], as Gunicorn, uvicorn and nginx do: the
    /// connection then stays usable for the client's next request instead
    /// of being closed under it (a larger rest closes it).
    pub async fn drain_unread(&mut self) {
        let mut left = UNREAD_BODY_DRAIN;
        while left > 0 {
            match self.chunk().await {
                Some(Ok(b)) => left = left.saturating_sub(b.len()),
                _ => break,
            }
        }
    }

    pub fn poll_trailers(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Trailers, BodyError>>> {
        self.0.poll_trailers(cx)
    }
}

/// The request body as the front end has it.
pub enum RequestBody {
    /// No body at all.
    Empty,
    /// The whole body, already read.
    Full(Bytes),
    /// A body still arriving. Reading it starts the flow (a front end that
    /// has not read ahead sends `100 Continue` only then: the HTTP one for
    /// a handler that takes bodies as they come).
    Stream(BodyStream),
}

/// The most of a request body without a length (chunked) that is read to
/// give a script the CONTENT_LENGTH it needs, unless `--limit-post` says.
const MAX_UNSIZED_BODY: u64 = 64 << 20;

/// A body without a length kept in memory up to this; the rest of it goes
/// to a temporary file.
const UNSIZED_IN_MEMORY: usize = 1 << 20;

/// The request body and the CONTENT_LENGTH a CGI script or FastCGI app is
/// told: a body without one (chunked) is read whole first (in memory up to
/// 1 MiB, in a temporary file beyond, as nginx's client body buffer),
/// up to `--limit-post`, or 64 MiB without it; over that is a 413.
pub async fn with_length(
    declared: Option<u64>,
    body: RequestBody,
    limit_post: Option<u64>,
) -> Result<(RequestBody, Option<u64>), super::Response> {
    match body {
        RequestBody::Stream(mut stream) if declared.is_none() => {
            let limit = limit_post.unwrap_or(MAX_UNSIZED_BODY);
            let mut all = bytes::BytesMut::new();
            let mut spool: Option<Spool> = None;
            let mut len = 0u64;
            while let Some(chunk) = stream.chunk().await {
                let chunk = chunk.map_err(bad_body)?;
                len += chunk.len() as u64;
                if len > limit {
                    return Err(super::Response::plain(
                        413,
                        "Content Too Large",
                        "Request body too large\n",
                    ));
                }
                match &mut spool {
                    Some(spool) => spool.push(&chunk).await?,
                    None if all.len() + chunk.len() > UNSIZED_IN_MEMORY => {
                        let mut to_file = Spool::new()?;
                        to_file.push(&all).await?;
                        to_file.push(&chunk).await?;
                        all = bytes::BytesMut::new();
                        spool = Some(to_file);
                    }
                    None => all.extend_from_slice(&chunk),
                }
            }
            match spool {
                Some(spool) => Ok((spool.finish().await?, Some(len))),
                None => Ok((RequestBody::Full(all.freeze()), Some(len))),
            }
        }
        RequestBody::Full(b) if declared.is_none() => {
            let n = b.len() as u64;
            Ok((RequestBody::Full(b), Some(n)))
        }
        body => Ok((body, declared)),
    }
}

/// The client's body failed: its status (400, 408, 413).
fn bad_body(e: BodyError) -> super::Response {
    super::Response::plain(
        e.status,
        super::reason_phrase(e.status),
        "Bad request body\n",
    )
}

/// A body still arriving, read whole before an upstream is taken for it,
/// as nginx reads a request body before it passes the request on
/// (`fastcgi_request_buffering on`): a FastCGI process serves one request
/// at a time, and a client uploading at a byte a second would hold it for
/// as long. The bytes wait in an unnamed file under the temporary
/// directory (`$TMPDIR`, as nginx's `client_body_temp_path`), gone when
/// the request is. A body already whole, or none, is as it was.
pub async fn spooled(body: RequestBody) -> Result<RequestBody, super::Response> {
    let RequestBody::Stream(mut stream) = body else {
        return Ok(body);
    };
    let mut spool = Spool::new()?;
    while let Some(chunk) = stream.chunk().await {
        spool.push(&chunk.map_err(bad_body)?).await?;
    }
    spool.finish().await
}

/// A request body on its way into an unnamed temporary file.
struct Spool {
    /// None while a write is under way off the event loop.
    file: Option<std::fs::File>,
    pending: bytes::BytesMut,
    len: u64,
}

impl Spool {
    fn new() -> Result<Spool, super::Response> {
        Ok(Spool {
            file: Some(unnamed_temp_file().map_err(|e| spool_failed(e.to_string()))?),
            pending: bytes::BytesMut::new(),
            len: 0,
        })
    }

    async fn push(&mut self, bytes: &[u8]) -> Result<(), super::Response> {
        self.len += bytes.len() as u64;
        self.pending.extend_from_slice(bytes);
        if self.pending.len() >= SPOOL_WRITE {
            self.write().await?;
        }
        Ok(())
    }

    /// Written off the event loop, a few hundred KiB at a time: a disk that
    /// throttles writes must not stall the worker's other requests.
    async fn write(&mut self) -> Result<(), super::Response> {
        let bytes = self.pending.split().freeze();
        let mut file = self.file.take().expect("one write at a time");
        let (back, written) = tokio::task::spawn_blocking(move || {
            let written = std::io::Write::write_all(&mut file, &bytes);
            (file, written)
        })
        .await
        .map_err(|e| spool_failed(e.to_string()))?;
        written.map_err(|e| spool_failed(e.to_string()))?;
        self.file = Some(back);
        Ok(())
    }

    /// The whole body, read from the file.
    async fn finish(mut self) -> Result<RequestBody, super::Response> {
        if !self.pending.is_empty() {
            self.write().await?;
        }
        let region = FileRegion {
            fd: OwnedFd::from(self.file.take().expect("written")),
            offset: 0,
            len: self.len,
        };
        Ok(RequestBody::Stream(BodyStream::new(FileBody::new(
            region,
            |_| {},
        ))))
    }
}

/// Request bodies read ahead of the app that this process holds in memory,
/// from when they arrive until the app is done with them: past this, the
/// rest of each goes to a temporary file,
/// as nginx's client_body_buffer_size spills to client_body_temp_path. A
/// thousand clients that each send 1 MiB and stall must not cost a
/// gigabyte (the response side's read-ahead has its budget too).
pub const AHEAD_IN_MEMORY_BUDGET: usize = 64 << 20;
static AHEAD_IN_MEMORY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// One body's share of [`AHEAD_IN_MEMORY_BUDGET`], given back when
/// dropped (when the body is read ahead, or the client gone).
#[derive(Default)]
pub struct AheadInMemory(usize);

impl AheadInMemory {
    /// Counts `n` bytes more, if the budget has room for them.
    pub fn try_hold(&mut self, n: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let before = AHEAD_IN_MEMORY.fetch_add(n, Relaxed);
        if before + n > AHEAD_IN_MEMORY_BUDGET {
            AHEAD_IN_MEMORY.fetch_sub(n, Relaxed);
            return false;
        }
        self.0 += n;
        true
    }
}

impl AheadInMemory {
    /// The body's bytes, holding its share of the budget until the last
    /// reference to them is dropped: read ahead, a body waits for an app
    /// thread, and then is read by the app, in memory all that time (the
    /// share given back as the read ended, a thousand stalled HTTP/2
    /// uploads waiting for the app held a gigabyte).
    pub fn keep_with(self, bytes: Bytes) -> Bytes {
        if self.0 == 0 {
            return bytes;
        }
        Bytes::from_owner(BytesHeldAhead {
            bytes,
            _share: self,
        })
    }
}

/// Bytes read ahead, with their share of the budget.
struct BytesHeldAhead {
    bytes: Bytes,
    _share: AheadInMemory,
}

impl AsRef<[u8]> for BytesHeldAhead {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for AheadInMemory {
    fn drop(&mut self) {
        AHEAD_IN_MEMORY.fetch_sub(self.0, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A request body read ahead into a temporary file, once the bodies in
/// memory are at their budget.
pub struct SpilledAhead(Spool);

impl SpilledAhead {
    pub fn new() -> Result<SpilledAhead, BodyError> {
        Spool::new().map(SpilledAhead).map_err(|_| spill_failed())
    }

    /// Written through: a client that stalls must not leave a write's
    /// worth of its body in memory (the budget's point).
    pub async fn push(&mut self, bytes: &[u8]) -> Result<(), BodyError> {
        self.0.push(bytes).await.map_err(|_| spill_failed())?;
        if !self.0.pending.is_empty() {
            self.0.write().await.map_err(|_| spill_failed())?;
        }
        Ok(())
    }

    /// Bytes read into it.
    pub fn len(&self) -> u64 {
        self.0.len
    }

    pub fn is_empty(&self) -> bool {
        self.0.len == 0
    }

    /// The body: the file's bytes, then `rest` when the body goes on.
    pub async fn into_body(self, rest: Option<BodyStream>) -> Result<RequestBody, BodyError> {
        let file = match self.0.finish().await.map_err(|_| spill_failed())? {
            RequestBody::Stream(file) => file,
            _ => unreachable!("a spool finishes as a stream"),
        };
        Ok(RequestBody::Stream(match rest {
            None => file,
            Some(rest) => BodyStream::new(Chained {
                first: Some(file),
                then: rest,
            }),
        }))
    }
}

/// (`spool_failed` has said why.)
fn spill_failed() -> BodyError {
    BodyError::new(500, "cannot hold the request body in a temporary file")
}

/// One body, then another.
struct Chained {
    first: Option<BodyStream>,
    then: BodyStream,
}

impl ChunkSource for Chained {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        if let Some(first) = &mut self.first {
            match std::task::ready!(first.poll_chunk(cx)) {
                None => self.first = None,
                some => return Poll::Ready(some),
            }
        }
        self.then.poll_chunk(cx)
    }

    fn poll_trailers(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Trailers, BodyError>>> {
        self.then.poll_trailers(cx)
    }
}

fn spool_failed(why: String) -> super::Response {
    crate::say!("oxgate: cannot hold a request body in a temporary file: {why}");
    super::Response::plain(500, "Internal Server Error", "Internal Server Error\n")
}

/// How much of a spooled body is written at a time.
const SPOOL_WRITE: usize = 256 * 1024;

/// A file with no name in the temporary directory: O_TMPFILE, or where the
/// file system has none, a fresh name unlinked at once.
pub(super) fn unnamed_temp_file() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir();
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).mode(0o600);
    if let Ok(f) = options.clone().custom_flags(libc::O_TMPFILE).open(&dir) {
        return Ok(f);
    }
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".oxgate-body-{}-{n}", std::process::id()));
    let f = options.create_new(true).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn file_with(data: &[u8]) -> OwnedFd {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("oxgate-filebody-{}-{n}", std::process::id()));
        std::fs::write(&path, data).unwrap();
        let f = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        f.into()
    }

    /// What a body's `on_end` was told: bytes sent, complete, failed.
    type Ended = Arc<Mutex<Option<(u64, bool, bool)>>>;

    fn ended() -> (Ended, impl FnOnce(FileEnd) + Send + 'static) {
        let seen = Arc::new(Mutex::new(None));
        let s = seen.clone();
        (seen, move |e: FileEnd| {
            *s.lock().unwrap() = Some((e.sent, e.complete, e.failed))
        })
    }

    /// The body's bytes. In a runtime: pages not in the page cache (a
    /// file system whose cache cachestat cannot see) are read in on a
    /// blocking thread.
    async fn drain(body: &mut FileBody) -> Result<Vec<u8>, BodyError> {
        let mut out = Vec::new();
        loop {
            match std::future::poll_fn(|cx| body.poll_chunk(cx)).await {
                Some(Ok(b)) => out.extend_from_slice(&b),
                Some(Err(e)) => return Err(e),
                None => return Ok(out),
            }
        }
    }

    #[tokio::test]
    async fn file_body_reads_its_region_in_chunks() {
        let data: Vec<u8> = (0..FILE_CHUNK * 2 + 500).map(|i| (i % 251) as u8).collect();
        let (seen, on_end) = ended();
        let len = (data.len() - 10) as u64;
        let mut body = FileBody::new(
            FileRegion {
                fd: file_with(&data),
                offset: 7,
                len,
            },
            on_end,
        );
        assert_eq!(drain(&mut body).await.unwrap(), &data[7..7 + len as usize]);
        assert_eq!(*seen.lock().unwrap(), Some((len, true, false)));
    }

    #[tokio::test]
    async fn a_taken_file_counts_as_sent_and_ends_the_body() {
        let (seen, on_end) = ended();
        let len = SENDFILE_MIN + 5;
        let mut body = FileBody::new(
            FileRegion {
                fd: file_with(&vec![b'x'; len as usize + 6]),
                offset: 6,
                len,
            },
            on_end,
        );
        let region = body.take_file().unwrap();
        assert_eq!((region.offset, region.len), (6, len));
        assert!(body.take_file().is_none());
        assert_eq!(drain(&mut body).await.unwrap(), b"");
        assert_eq!(*seen.lock().unwrap(), Some((len, true, false)));
    }

    #[tokio::test]
    async fn a_small_file_is_read_not_taken() {
        let (seen, on_end) = ended();
        let mut body = FileBody::new(
            FileRegion {
                fd: file_with(b"hello world"),
                offset: 6,
                len: 5,
            },
            on_end,
        );
        assert!(body.take_file().is_none());
        assert_eq!(drain(&mut body).await.unwrap(), b"world");
        assert_eq!(*seen.lock().unwrap(), Some((5, true, false)));
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_region_is_an_error() {
        let (seen, on_end) = ended();
        let mut body = FileBody::new(
            FileRegion {
                fd: file_with(b"short"),
                offset: 0,
                len: 100,
            },
            on_end,
        );
        assert!(
            drain(&mut body)
                .await
                .unwrap_err()
                .message
                .contains("ended before")
        );
        assert_eq!(*seen.lock().unwrap(), Some((5, false, true)));
    }

    #[test]
    fn a_body_dropped_unsent_ends_incomplete() {
        let (seen, on_end) = ended();
        let body = FileBody::new(
            FileRegion {
                fd: file_with(b"abc"),
                offset: 0,
                len: 3,
            },
            on_end,
        );
        drop(body);
        assert_eq!(*seen.lock().unwrap(), Some((0, false, false)));
    }
}
