//! Writing a response as the gateway protocols want it: raw HTTP with
//! a status line (uwsgi) or CGI-style with `Status:` (SCGI).

use crate::listen::Protocol;
use crate::request::{BodyError, BodyStream, Response, ResponseBody, Var, VarName};
use bytes::Bytes;
use std::task::Poll;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::files::SocketFiles;

/// The most a response's ready chunks are gathered into before a write.
const COALESCE_MAX: usize = 64 * 1024;

/// The body's next chunk: at once when it is ready and `pending` has
/// room, to go out with what is pending in one write (a small response
/// and its end together); else once `pending` is written, so that what
/// has to be waited for does not hold it up.
pub(super) async fn next_chunk<W: AsyncWrite + Unpin>(
    rest: &mut BodyStream,
    pending: &mut Vec<u8>,
    wr: &mut W,
) -> std::io::Result<Option<Result<Bytes, BodyError>>> {
    match rest.ready_chunk() {
        Poll::Ready(next) if pending.len() < COALESCE_MAX => Ok(next),
        ready => {
            if !pending.is_empty() {
                wr.write_all(pending).await?;
                pending.clear();
            }
            Ok(match ready {
                Poll::Ready(next) => next,
                Poll::Pending => rest.chunk().await,
            })
        }
    }
}

/// The HTTP version a uwsgi status line carries: the request's, else 1.1.
/// The answer to an HTTP client that reached a gateway socket: a 400 that
/// says which protocol the socket speaks.
pub(super) fn not_http(protocol: Protocol) -> String {
    format!(
        "HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n\
         This socket speaks the {} protocol, not HTTP.\n",
        protocol.name()
    )
}

pub(super) fn status_line_version(vars: &[(VarName, Bytes)]) -> Bytes {
    vars.iter()
        .find(|(k, _)| *k == VarName::Known(Var::SERVER_PROTOCOL))
        .map(|(_, v)| v.clone())
        .filter(|v| v.starts_with(b"HTTP/1."))
        .unwrap_or_else(|| Bytes::from_static(b"HTTP/1.1"))
}

/// The status line (uwsgi) or Status: header (SCGI), and the headers.
pub(super) fn response_head(protocol: Protocol, version: &[u8], resp: &Response) -> Vec<u8> {
    // A status with no phrase known keeps none, as php-cgi's "Status: 420"
    // comes through nginx: "Unknown" reached the client.
    let reason = resp.reason.clone().unwrap_or_else(|| {
        http::StatusCode::from_u16(resp.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
            .to_string()
    });
    let reason = crate::request::reason_bytes(&reason);
    let mut head = Vec::with_capacity(256);
    if protocol == Protocol::Scgi {
        head.extend_from_slice(format!("Status: {}", resp.status).as_bytes());
        if !reason.is_empty() {
            head.push(b' ');
            head.extend_from_slice(&reason);
        }
        head.extend_from_slice(b"\r\n");
    } else {
        // (The space stays: RFC 9112's status line has it before an
        // empty phrase.)
        head.extend_from_slice(version);
        head.extend_from_slice(format!(" {} ", resp.status).as_bytes());
        head.extend_from_slice(&reason);
        head.extend_from_slice(b"\r\n");
    }
    for (name, value) in &resp.headers {
        head.extend_from_slice(name);
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// Writes the response (no chunking: the front end frames it for its
/// client) and closes the connection. uwsgi needs an HTTP/1.x status line
/// (Apache's mod_proxy_uwsgi refuses anything else); SCGI is a CGI
/// response, with `Status:`. Files the body hands out go by sendfile on
/// `files`, the socket under `wr`.
pub(super) async fn write_response<W: AsyncWrite + Unpin>(
    wr: &mut W,
    files: &mut SocketFiles,
    protocol: Protocol,
    version: &[u8],
    resp: Response,
) {
    let mut head = response_head(protocol, version, &resp);
    // The headers may hold a share of a larger buffer: not kept while a
    // long response streams.
    let Response { body, headers, .. } = resp;
    drop(headers);
    let result = async {
        match body {
            ResponseBody::Empty | ResponseBody::Upgrade(_) => wr.write_all(&head).await,
            ResponseBody::Full(b) => {
                head.extend_from_slice(&b);
                wr.write_all(&head).await
            }
            ResponseBody::Stream { first, mut rest } => {
                if let Some(b) = first {
                    head.extend_from_slice(&b);
                }
                // What is not written yet: it goes with a file that follows
                // at once, else before the next chunk is waited for (an app
                // that streams its head, then waits, must not keep the
                // front end waiting).
                let mut unsent = head;
                loop {
                    if let Some(region) = rest.take_file() {
                        // A file that shrank under it ends the response
                        // short: cut, as an app's failure is.
                        let sent = files.send_region(&unsent, &region, protocol).await;
                        if sent
                            .as_ref()
                            .is_err_and(|e| e.kind() == std::io::ErrorKind::UnexpectedEof)
                        {
                            files.reset_on_close();
                        }
                        sent?;
                        unsent.clear();
                        continue;
                    }
                    match next_chunk(&mut rest, &mut unsent, wr).await? {
                        // Not copied.
                        Some(Ok(b)) if b.len() >= COALESCE_MAX => {
                            if !unsent.is_empty() {
                                wr.write_all(&unsent).await?;
                                unsent.clear();
                            }
                            wr.write_all(&b).await?
                        }
                        Some(Ok(b)) => unsent.extend_from_slice(&b),
                        None => {
                            if !unsent.is_empty() {
                                wr.write_all(&unsent).await?;
                            }
                            break Ok(());
                        }
                        // The app failed mid-response: what it sent, then the
                        // connection is reset, so the front end sees an
                        // incomplete response. (Closed, nginx ended a
                        // chunked body as if whole.)
                        Some(Err(e)) => {
                            let _ = wr.write_all(&unsent).await;
                            let _ = wr.flush().await;
                            files.reset_on_close();
                            return Err(std::io::Error::other(e.message));
                        }
                    }
                }
            }
        }
    }
    .await;
    match result {
        Ok(()) => {
            let _ = wr.flush().await;
            let _ = wr.shutdown().await;
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            crate::say!("oxgate: {} connection cut: {e}", protocol.name());
        }
        Err(_) => {}
    }
}
