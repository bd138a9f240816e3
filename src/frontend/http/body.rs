//! The protocol-neutral response turned back into hyper's, its body
//! streamed with files going out by sendfile.

use crate::request::{BodyError, BodyStream, Response, ResponseBody, Trailers};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

use super::context::Finished;

/// The response body as hyper sees it.
pub(super) struct OxBody {
    kind: BodyKind,
    /// The connection, told when the body is done with.
    conn: Finished,
}

pub(super) enum BodyKind {
    Empty,
    Full(Option<Bytes>),
    Stream {
        first: Option<Bytes>,
        rest: BodyStream,
        /// An error held back one poll, so hyper flushes what the app
        /// produced before it cuts the connection.
        failed: Option<BodyError>,
        /// Bytes of the file region last handed to the connection's
        /// FileQueue (to go out with sendfile) still to be stood for by
        /// frames.
        file_left: u64,
        /// The body has ended: its trailers, if any, are next.
        ended: bool,
        /// What is left of the head's Content-Length. A body that ends
        /// short of it is cut, as nginx cuts it, after what it had goes
        /// out: hyper, ending it at once, would send none of it.
        owed: Option<u64>,
    },
}

impl Drop for OxBody {
    /// A body dropped before its file went out (the client left): the
    /// part of the region no frame stood for yet was never sent, and the
    /// request log must not count it.
    fn drop(&mut self) {
        if let BodyKind::Stream {
            rest, file_left, ..
        } = &mut self.kind
            && *file_left > 0
        {
            rest.unsent(*file_left);
        }
    }
}

/// The next frame once the body has ended: its trailers, if any.
fn trailers_frame(
    rest: &mut BodyStream,
    failed: &mut Option<BodyError>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    match rest.poll_trailers(cx) {
        Poll::Ready(Some(Ok(fields))) => {
            Poll::Ready(trailer_map(fields).map(|m| Ok(Frame::trailers(m))))
        }
        Poll::Ready(Some(Err(e))) => fail_after_flush(failed, e, cx),
        Poll::Ready(None) => Poll::Ready(None),
        Poll::Pending => Poll::Pending,
    }
}

/// A body's fault is reported on the next poll, not this one: hyper, given
/// an error right after a frame, drops the connection without writing that
/// frame out, and what the app produced before the fault must still reach
/// the client. A pause lets hyper flush first.
fn fail_after_flush(
    failed: &mut Option<BodyError>,
    e: BodyError,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    *failed = Some(e);
    cx.waker().wake_by_ref();
    Poll::Pending
}

/// Counts a data frame against the Content-Length still owed.
fn count_out(owed: &mut Option<u64>, len: usize) {
    if let Some(n) = owed {
        *n = n.saturating_sub(len as u64);
    }
}

/// Trailer fields as hyper takes them; `None` when none remain. Those no
/// trailer may carry (framing, routing, authentication: RFC 9110 §6.5.1)
/// and those HTTP/2 refuses anywhere are left out, as hyper leaves them
/// out over HTTP/1.1: over HTTP/2 one would reset the stream.
fn trailer_map(fields: Trailers) -> Option<http::HeaderMap> {
    let mut map = http::HeaderMap::new();
    for (name, value) in fields {
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_maybe_shared(value),
        ) else {
            continue;
        };
        let connection_specific =
            crate::request::is_hop_by_hop(n.as_str().as_bytes()) || n == "proxy-connection";
        if !connection_specific && !super::strict::forbidden_trailer(&n) {
            map.append(n, v);
        }
    }
    (!map.is_empty()).then_some(map)
}

impl Body for OxBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            BodyKind::Empty => Poll::Ready(None),
            BodyKind::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            BodyKind::Stream {
                first,
                rest,
                failed,
                file_left,
                ended,
                owed,
            } => {
                if let Some(e) = failed.take() {
                    return Poll::Ready(Some(Err(e)));
                }
                if *ended {
                    return trailers_frame(rest, failed, cx);
                }
                if let Some(b) = first.take() {
                    count_out(owed, b.len());
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                if *file_left == 0
                    && this.conn.0.sendfile
                    && let Some(region) = rest.take_file()
                {
                    // An empty region (an ASGI file clipped to a Content-
                    // Length already sent) has no frame to stand for it: were
                    // it queued, the next file on the connection would find
                    // it first.
                    if region.len > 0 {
                        *file_left = region.len;
                        this.conn.0.files.push(region);
                    }
                }
                if *file_left > 0 {
                    let frame = super::sendfile::placeholder(
                        usize::try_from(*file_left).unwrap_or(super::sendfile::FRAME_MAX),
                    );
                    *file_left -= frame.len() as u64;
                    count_out(owed, frame.len());
                    return Poll::Ready(Some(Ok(Frame::data(frame))));
                }
                match rest.poll_chunk(cx) {
                    Poll::Ready(Some(Err(e))) => fail_after_flush(failed, e, cx),
                    Poll::Ready(None) => {
                        *ended = true;
                        if let Some(short) = owed.filter(|&n| n > 0) {
                            let e = BodyError::new(
                                502,
                                format!(
                                    "the response ended {short} bytes short of its Content-Length"
                                ),
                            );
                            return fail_after_flush(failed, e, cx);
                        }
                        trailers_frame(rest, failed, cx)
                    }
                    Poll::Ready(Some(Ok(b))) => {
                        count_out(owed, b.len());
                        Poll::Ready(Some(Ok(Frame::data(b))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            BodyKind::Empty => true,
            BodyKind::Full(b) => b.is_none(),
            BodyKind::Stream { .. } => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            BodyKind::Empty => SizeHint::with_exact(0),
            BodyKind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            BodyKind::Stream { .. } => SizeHint::default(),
        }
    }
}

/// hyper's response for `resp`, its headers put in `headers` (empty).
pub(super) fn to_hyper(
    resp: Response,
    mut headers: http::HeaderMap,
    close: bool,
    http10: bool,
    conn: Finished,
) -> hyper::Response<OxBody> {
    // An HTTP/1.0 client's connection is kept only for a response whose
    // end it can see, by its length. hyper, given a 1.1 response for a
    // keep-alive 1.0 request, says `Connection: keep-alive` before it
    // finds that it must end the body by closing (or keeps the app's
    // `Connection: close` and adds keep-alive beside it); given a 1.0
    // response, it keeps the connection only when the head says so, which
    // is then never.
    let unframed = matches!(resp.body, ResponseBody::Stream { .. })
        && crate::request::declared_length(&resp.headers).is_none();
    let answer_as_10 = http10 && (close || unframed || says_close(&resp.headers));
    // An event stream (SSE) asked for in HTTP/1.0 (nginx's `proxy_pass`
    // unless told `proxy_http_version 1.1`): hyper ends its body by
    // closing, as HTTP/1.0 has no chunks, and nginx holds such a body in
    // its buffers until they fill, so the stream's events never reached
    // the browser. uvicorn answers in chunks, which nginx passes on as
    // they come; nginx is told instead not to buffer this response, as
    // sse-starlette tells it (a client that is no proxy ignores it).
    let unbuffered = http10
        && unframed
        && is_event_stream(&resp.headers)
        && !resp
            .headers
            .iter()
            .any(|(name, _)| name.eq_ignore_ascii_case(b"x-accel-buffering"));
    let kind = match resp.body {
        // The session was taken by `handle`.
        ResponseBody::Empty | ResponseBody::Upgrade(_) => BodyKind::Empty,
        ResponseBody::Full(b) => BodyKind::Full(Some(b)),
        ResponseBody::Stream { first, rest } => BodyKind::Stream {
            first,
            rest,
            failed: None,
            file_left: 0,
            ended: false,
            owed: crate::request::declared_length(&resp.headers),
        },
    };
    let mut out = hyper::Response::new(OxBody { kind, conn });
    *out.status_mut() =
        http::StatusCode::from_u16(resp.status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(reason) = resp.reason
        && out.status().canonical_reason() != Some(reason.as_str())
        // As the app's latin-1 string says it: one byte a character.
        && let Ok(reason) = hyper::ext::ReasonPhrase::try_from(crate::request::reason_bytes(&reason))
    {
        out.extensions_mut().insert(reason);
    } else if out.status().canonical_reason().is_none() {
        // A status HTTP names no reason for (`Status: 420` from a script,
        // 420 from an ASGI app), with none given: an empty one, as Apache
        // and uvicorn send, not hyper's `<none>`.
        out.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b""));
    }
    let mut list = resp.headers;
    for (name, value) in list.drain(..) {
        // Names and values were validated when the app set them. Spaces
        // around a value are no part of it (RFC 9110 §5.5): HTTP/2 clients
        // reset a stream whose value has them (RFC 9113 §8.2.1), and nginx
        // strips them.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_maybe_shared(trim_spaces(value)),
        ) {
            headers.append(n, v);
        }
    }
    crate::request::recycle_headers(list);
    // RFC 9110 §8.6: no Content-Length in a 204 (nor in a 1xx); the app's
    // goes, as Gunicorn drops it. (hyper sends no body either way.)
    if resp.status == 204 || (100..200).contains(&resp.status) {
        headers.remove(header::CONTENT_LENGTH);
    }
    if close {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if unbuffered {
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    }
    *out.headers_mut() = headers;
    if answer_as_10 {
        *out.version_mut() = http::Version::HTTP_10;
    }
    out
}

/// Whether a response is a server-sent event stream.
fn is_event_stream(headers: &[(bytes::Bytes, bytes::Bytes)]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case(b"content-type")
            && value
                .split(|b| *b == b';')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"text/event-stream"))
    })
}

/// Whether the response's own headers close the connection (an app's
/// `Connection: close`).
fn says_close(headers: &[(bytes::Bytes, bytes::Bytes)]) -> bool {
    headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case(b"connection")
            && value
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// A field value without the spaces and tabs around it.
fn trim_spaces(value: Bytes) -> Bytes {
    let space = |c: &u8| *c == b' ' || *c == b'\t';
    if !value.first().is_some_and(space) && !value.last().is_some_and(space) {
        return value;
    }
    let start = value.iter().position(|c| !space(c)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|c| !space(c))
        .map_or(start, |i| i + 1);
    value.slice(start..end)
}

#[cfg(test)]
mod tests {
    use super::trim_spaces;
    use bytes::Bytes;

    #[test]
    fn spaces_around_a_value_are_trimmed_and_inside_kept() {
        for (given, want) in [
            (&b"trail "[..], &b"trail"[..]),
            (b" lead", b"lead"),
            (b"\t both \t", b"both"),
            (b"in side", b"in side"),
            (b"   ", b""),
            (b"", b""),
        ] {
            assert_eq!(trim_spaces(Bytes::copy_from_slice(given)), want);
        }
    }
}
