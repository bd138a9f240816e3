//! The answer for an open file: validators, conditional requests (RFC 9110
//! §13, through the `headers` crate's precondition checks), byte ranges
//! (one: 206; several: multipart/byteranges; none satisfiable: 416), and a
//! body the front end sends with sendfile(2).

use std::collections::VecDeque;
use std::fs::{File, Metadata};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use headers::{ETag, Header, IfMatch, IfModifiedSince, IfNoneMatch, IfUnmodifiedSince};

use crate::proto::byte_ranges::{self, Ranges};
use crate::request::{
    BodyError, BodyStream, ChunkSource, FILE_CHUNK, FileBody, FileRegion, Request, Response,
    ResponseBody, SENDFILE_MIN, Warmer, var_named,
};

/// The request's `name` variable (`HTTP_RANGE`, say) as a typed header;
/// `None` when absent or malformed (a malformed validator is ignored, as
/// RFC 9110 has it).
fn header<H: Header>(req: &Request, name: &[u8]) -> Option<H> {
    let values: Vec<http::HeaderValue> = req
        .vars
        .iter()
        .filter(|(k, _)| k.as_bytes() == name)
        .filter_map(|(_, v)| http::HeaderValue::from_bytes(v).ok())
        .collect();
    if values.is_empty() {
        return None;
    }
    H::decode(&mut values.iter()).ok()
}

/// The client's Range. Sent twice, its variable joins the two, which is
/// no range at all: the first is taken, as nginx takes it (it was a 416).
fn range_header(req: &Request) -> Option<&Bytes> {
    let range = var_named(&req.vars, b"HTTP_RANGE")?;
    let repeated = req
        .repeated_headers
        .iter()
        .find(|h| h.name.as_bytes() == b"HTTP_RANGE" && h.joined == range);
    match repeated {
        Some(h) => h.values.first(),
        None => Some(range),
    }
}

/// 9999-12-31 23:59:59 UTC, the last time an HTTP date can say.
pub(super) const LAST_HTTP_DATE: i64 = 253_402_300_799;

/// A file's mtime as Last-Modified can say it. An HTTP date ends with the
/// year 9999: a file dated later (clock skew, a bad archive, a filesystem
/// with 64-bit times) is said modified then, rather than making the date's
/// formatting panic.
pub(super) fn modified_secs(mtime: i64) -> u64 {
    mtime.clamp(0, LAST_HTTP_DATE) as u64
}

/// What the response says of the file, whatever its status.
pub struct Representation {
    pub content_type: Bytes,
    pub len: u64,
    pub modified: SystemTime,
    pub etag: String,
    /// Cache-Control, Expires and Vary, from the options (sent with a 304
    /// too).
    pub extra: Vec<(Bytes, Bytes)>,
    /// The file is FILE.gz or FILE.br in FILE's place.
    pub encoding: Option<&'static str>,
}

impl Representation {
    pub fn new(meta: &Metadata, content_type: Bytes) -> Representation {
        // Whole seconds: what Last-Modified can say, so that a date the
        // client echoes compares equal.
        let secs = modified_secs(meta.mtime());
        let modified = UNIX_EPOCH + Duration::from_secs(secs);
        Representation {
            content_type,
            len: meta.len(),
            modified,
            // Strong: a change of size or time (to the nanosecond) changes
            // it. Not the inode, as nginx and Apache leave it out: a copy
            // with its time kept (`cp -p`, rsync, an image of a release)
            // on another host behind the same balancer, or swapped in by a
            // rename, is the same file to the client's cache. The time as
            // it is, not clamped as the date is: two versions dated before
            // 1970 (an archive's, `touch -d`) must not share a tag.
            etag: entity_tag(&[
                meta.mtime() as u64,
                meta.mtime_nsec().max(0) as u64,
                meta.len(),
            ]),
            extra: Vec::new(),
            encoding: None,
        }
    }

    fn validators(&self, headers: &mut Vec<(Bytes, Bytes)>) {
        headers.push((
            Bytes::from_static(b"Last-Modified"),
            http_date(self.modified),
        ));
        headers.push((Bytes::from_static(b"ETag"), Bytes::from(self.etag.clone())));
        headers.extend(self.extra.iter().cloned());
    }
}

/// A time as an HTTP date. The last one made is kept, per thread: a busy
/// file, or a site deployed at once, asks for the same date again and again.
fn http_date(time: SystemTime) -> Bytes {
    thread_local! {
        static LAST: std::cell::RefCell<Option<(SystemTime, Bytes)>> =
            const { std::cell::RefCell::new(None) };
    }
    LAST.with_borrow_mut(|last| match last {
        Some((at, date)) if *at == time => date.clone(),
        _ => {
            let date = Bytes::from(httpdate::fmt_http_date(time));
            *last = Some((time, date.clone()));
            date
        }
    })
}

/// `"1a-2b-3c-4d"`: the numbers in hex, written without the formatting
/// machinery (this runs for every static request).
fn entity_tag(numbers: &[u64]) -> String {
    let mut tag = String::with_capacity(2 + numbers.len() * 17);
    tag.push('"');
    for (i, &n) in numbers.iter().enumerate() {
        if i > 0 {
            tag.push('-');
        }
        let mut digits = [0u8; 16];
        let mut at = digits.len();
        let mut rest = n;
        loop {
            at -= 1;
            digits[at] = b"0123456789abcdef"[(rest & 15) as usize];
            rest >>= 4;
            if rest == 0 {
                break;
            }
        }
        tag.extend(digits[at..].iter().map(|&d| char::from(d)));
    }
    tag.push('"');
    tag
}

fn head(status: u16, rep: &Representation) -> Response {
    let mut headers = Vec::with_capacity(8);
    headers.push((
        Bytes::from_static(b"Content-Type"),
        rep.content_type.clone(),
    ));
    if let Some(coding) = rep.encoding {
        headers.push((
            Bytes::from_static(b"Content-Encoding"),
            Bytes::from_static(coding.as_bytes()),
        ));
    }
    rep.validators(&mut headers);
    headers.push((
        Bytes::from_static(b"Accept-Ranges"),
        Bytes::from_static(b"bytes"),
    ));
    Response {
        status,
        reason: None,
        headers,
        body: ResponseBody::Empty,
    }
}

fn length(resp: &mut Response, len: u64) {
    resp.headers.push((
        Bytes::from_static(b"Content-Length"),
        Bytes::copy_from_slice(itoa::Buffer::new().format(len).as_bytes()),
    ));
}

fn region(file: File, offset: u64, len: u64) -> FileRegion {
    FileRegion {
        fd: OwnedFd::from(file),
        offset,
        len,
    }
}

fn file_body(region: FileRegion) -> ResponseBody {
    ResponseBody::Stream {
        first: None,
        rest: BodyStream::new(FileBody::new(region, |_| {})),
    }
}

/// The answer to GET or HEAD for `file`.
pub fn respond(req: &Request, file: File, rep: &Representation) -> Response {
    // Most requests carry no validator and no range: one pass over the
    // variables tells, and spares the header parses below.
    let conditional = req.vars.iter().any(|(k, _)| {
        let k = k.as_bytes();
        k.starts_with(b"HTTP_IF_") || k == b"HTTP_RANGE"
    });
    if !conditional {
        return whole(req, file, rep);
    }
    let etag: ETag = match rep.etag.parse() {
        Ok(e) => e,
        Err(_) => unreachable!("a quoted hex string is an entity tag"),
    };
    // §13.2.2: If-Match, else If-Unmodified-Since; then If-None-Match, else
    // If-Modified-Since; then Range, qualified by If-Range.
    let failed = match header::<IfMatch>(req, b"HTTP_IF_MATCH") {
        Some(m) => !m.precondition_passes(&etag),
        None => header::<IfUnmodifiedSince>(req, b"HTTP_IF_UNMODIFIED_SINCE")
            .is_some_and(|s| !s.precondition_passes(rep.modified)),
    };
    if failed {
        return Response::plain(412, "Precondition Failed", "Precondition Failed\n");
    }
    let not_modified = match header::<IfNoneMatch>(req, b"HTTP_IF_NONE_MATCH") {
        Some(m) => !m.precondition_passes(&etag),
        None => header::<IfModifiedSince>(req, b"HTTP_IF_MODIFIED_SINCE")
            .is_some_and(|s| !s.is_modified(rep.modified)),
    };
    if not_modified {
        let mut resp = head(304, rep);
        resp.headers.retain(|(k, _)| {
            !matches!(
                &k[..],
                b"Content-Type" | b"Accept-Ranges" | b"Content-Encoding"
            )
        });
        return resp;
    }
    // A HEAD's too, as nginx answers it: 206 with the part's length, which
    // download managers probe with.
    let range = range_header(req)
        .filter(|_| var_named(&req.vars, b"HTTP_IF_RANGE").is_none_or(|v| if_range_holds(v, rep)));
    let Some(range) = range else {
        return whole(req, file, rep);
    };
    match byte_ranges::select(range, rep.len) {
        Ranges::Whole => whole(req, file, rep),
        Ranges::Unsatisfiable => {
            let mut resp = Response::plain(416, "Range Not Satisfiable", "Range Not Satisfiable\n");
            resp.headers.push((
                Bytes::from_static(b"Content-Range"),
                Bytes::from(format!("bytes */{}", rep.len)),
            ));
            resp
        }
        Ranges::Parts(parts) => match parts.as_slice() {
            [(first, last)] => {
                let mut resp = head(206, rep);
                resp.headers.push((
                    Bytes::from_static(b"Content-Range"),
                    Bytes::from(format!("bytes {first}-{last}/{}", rep.len)),
                ));
                length(&mut resp, last - first + 1);
                if !req.is_head {
                    resp.body = file_body(region(file, *first, last - first + 1));
                }
                resp
            }
            // A multipart body cannot be said to be coded as a whole, nor
            // each part be a slice of a coded file: the whole .gz or .br
            // then, as nginx's gzip_static sends it.
            _ if rep.encoding.is_some() => whole(req, file, rep),
            several => multipart(file, rep, several, req.is_head),
        },
    }
}

/// Whether an `If-Range` lets the range through (RFC 9110 §13.1.5): its
/// entity tag is the file's, strongly, or its date is exactly the file's
/// Last-Modified. A later date is no match: a file put back to an older
/// version (`rsync -t`, `cp -p`) is not the one the client has part of.
fn if_range_holds(value: &[u8], rep: &Representation) -> bool {
    let value = value.trim_ascii();
    if value.starts_with(b"\"") {
        return value == rep.etag.as_bytes();
    }
    if value.starts_with(b"W/") {
        return false;
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|date| date == rep.modified)
}

/// 200 with the whole file (no body for HEAD). A file under
/// SENDFILE_MIN is read now: every front end then sends it with its head in
/// one write.
fn whole(req: &Request, file: File, rep: &Representation) -> Response {
    let mut resp = head(200, rep);
    length(&mut resp, rep.len);
    if req.is_head || rep.len == 0 {
        return resp;
    }
    if rep.len < SENDFILE_MIN {
        let mut bytes = vec![0; rep.len as usize];
        if let Err(e) = std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0) {
            // Shrunk since its length was read, or unreadable.
            crate::say!("oxgate: reading a static file: {e}");
            return Response::plain(500, "Internal Server Error", "Internal Server Error\n");
        }
        resp.body = ResponseBody::Full(Bytes::from(bytes));
    } else {
        resp.body = file_body(region(file, 0, rep.len));
    }
    resp
}

/// 206 multipart/byteranges: each part's head, then its bytes from the file
/// (for HEAD, the head alone).
fn multipart(file: File, rep: &Representation, ranges: &[(u64, u64)], is_head: bool) -> Response {
    let boundary = format!("{:016x}", rand_boundary());
    let mut parts = VecDeque::new();
    let mut len = 0u64;
    for (i, (first, last)) in ranges.iter().enumerate() {
        let part_head = format!(
            "{}--{boundary}\r\nContent-Type: {}\r\nContent-Range: bytes {first}-{last}/{}\r\n\r\n",
            if i == 0 { "" } else { "\r\n" },
            String::from_utf8_lossy(&rep.content_type),
            rep.len
        );
        len += part_head.len() as u64 + (last - first + 1);
        parts.push_back(Part::Bytes(Bytes::from(part_head)));
        parts.push_back(Part::Range(*first, last - first + 1));
    }
    let tail = format!("\r\n--{boundary}--\r\n");
    len += tail.len() as u64;
    parts.push_back(Part::Bytes(Bytes::from(tail)));
    let mut resp = head(206, rep);
    for (k, v) in resp.headers.iter_mut() {
        if &k[..] == b"Content-Type" {
            *v = Bytes::from(format!("multipart/byteranges; boundary={boundary}"));
        }
    }
    length(&mut resp, len);
    if is_head {
        return resp;
    }
    resp.body = ResponseBody::Stream {
        first: None,
        rest: BodyStream::new(Parts {
            parts,
            file,
            warmer: Warmer::default(),
        }),
    };
    resp
}

/// A boundary no file's bytes are likely to contain: 64 random bits (the
/// standard library's randomly keyed hasher, finished with nothing in it).
fn rand_boundary() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

enum Part {
    Bytes(Bytes),
    /// Offset and length of a range not yet begun: it gets a descriptor of
    /// its own (a `FileRegion` owns one) only when it is next, so a
    /// response of many parts holds one or two, not one a part.
    Range(u64, u64),
    File(FileRegion),
}

/// The parts of a multipart body, in order; file parts go out with
/// sendfile when they are large enough, else are read (their pages read
/// into the page cache off the event loop first, as `FileBody`'s are).
struct Parts {
    parts: VecDeque<Part>,
    file: File,
    warmer: Warmer,
}

impl Parts {
    /// Gives the next part, if a range, its descriptor.
    fn begin_range(&mut self) -> std::io::Result<()> {
        if let Some(&Part::Range(offset, len)) = self.parts.front() {
            self.parts[0] = Part::File(region(self.file.try_clone()?, offset, len));
        }
        Ok(())
    }
}

impl ChunkSource for Parts {
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BodyError>>> {
        loop {
            if let Err(e) = self.begin_range() {
                self.parts.clear();
                return Poll::Ready(Some(Err(BodyError::new(
                    500,
                    format!("opening the file again for a range: {e}"),
                ))));
            }
            let Some(part) = self.parts.front_mut() else {
                return Poll::Ready(None);
            };
            match part {
                Part::Bytes(b) => {
                    let b = std::mem::take(b);
                    self.parts.pop_front();
                    return Poll::Ready(Some(Ok(b)));
                }
                Part::Range(..) => unreachable!("begun above"),
                Part::File(region) => {
                    let next = region.len.min(FILE_CHUNK as u64);
                    std::task::ready!(self.warmer.poll_warm(cx, &region.fd, region.offset, next));
                    match region.read_chunk() {
                        Ok(Some(b)) => return Poll::Ready(Some(Ok(b))),
                        Ok(None) => {
                            self.parts.pop_front();
                            self.warmer.reset();
                        }
                        Err(e) => {
                            self.parts.clear();
                            return Poll::Ready(Some(Err(BodyError::new(
                                500,
                                format!("reading the file to send: {e}"),
                            ))));
                        }
                    }
                }
            }
        }
    }

    fn take_file(&mut self) -> Option<FileRegion> {
        // A range that cannot have its descriptor is left to poll_chunk,
        // which says why.
        self.begin_range().ok()?;
        match self.parts.front() {
            Some(Part::File(r)) if r.len >= SENDFILE_MIN => match self.parts.pop_front() {
                Some(Part::File(r)) => Some(r),
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_dated_past_the_year_9999_is_said_modified_then() {
        // ext4 cannot store such a date, so the mtime is given directly.
        for mtime in [LAST_HTTP_DATE + 1, i64::MAX] {
            let secs = modified_secs(mtime);
            assert_eq!(
                http_date(UNIX_EPOCH + Duration::from_secs(secs)),
                "Fri, 31 Dec 9999 23:59:59 GMT"
            );
        }
        assert_eq!(modified_secs(-5), 0);
        assert_eq!(modified_secs(784_111_777), 784_111_777);
    }

    #[test]
    fn http_dates_are_made_anew_for_each_new_time() {
        let a = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let b = a + Duration::from_secs(1);
        assert_eq!(http_date(a), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(a), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(b), "Sun, 06 Nov 1994 08:49:38 GMT");
        assert_eq!(http_date(a), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn entity_tags_are_the_numbers_in_hex() {
        assert_eq!(
            entity_tag(&[0, 15, 16, u64::MAX]),
            "\"0-f-10-ffffffffffffffff\""
        );
        proptest::proptest!(|(numbers in proptest::collection::vec(proptest::num::u64::ANY, 1..5))| {
            let hex: Vec<String> = numbers.iter().map(|n| format!("{n:x}")).collect();
            proptest::prop_assert_eq!(entity_tag(&numbers), format!("\"{}\"", hex.join("-")));
        });
    }
}
