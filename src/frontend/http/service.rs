//! One request on an HTTP connection, from its head to hyper's response:
//! the service of HTTP/1.1 (hyper) and HTTP/2 (h2) connections alike.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::request::{EarlyHints, Response, ResponseBody};

use super::body::{OxBody, to_hyper};
use super::context::{ConnCtx, Finished};
use super::convert::{Headed, convert_head, to_request};
use super::request_body::WireBody;
use super::strict::Refusal;

/// One request, from its head to hyper's response: the service of
/// HTTP/1.1 and HTTP/2 connections alike. `hints` sends its 103s, where
/// the connection can. The caller has counted the request begun
/// (`ConnCtx::begun`), as soon as the connection had it.
pub(super) fn on_request(
    ctx: Arc<ConnCtx>,
    mut parts: http::request::Parts,
    body: WireBody,
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    hints: Option<Arc<dyn EarlyHints>>,
) -> impl Future<Output = Result<hyper::Response<OxBody>, Infallible>> + Send + 'static {
    // Only requests that ask to upgrade have one.
    let on_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    // A head hyper would serve but oxgate refuses (framing_watch.rs).
    let mut head = if let Some(flawed) = ctx.flawed_head.get()
        && flawed.ordinal == ctx.begun.get()
    {
        Err(super::convert::refuse(
            Refusal::Bad(flawed.flaw.reason()),
            &ctx.info,
        ))
    } else {
        convert_head(&parts, body, &ctx.info, &ctx.settings)
    };
    // A body more than hyper drains by itself, which the handler may leave
    // unread (a GET with a body to a static file): if the connection ends
    // after it, its close lingers, so that the client still sending reads
    // the answer rather than a reset. (Reset for the next request, which
    // comes only once this body was read.)
    ctx.linger
        .store(declares_a_large_body(&parts.headers), Ordering::Relaxed);
    match &mut head {
        Ok(h) => {
            h.upgradable = on_upgrade.is_some();
            h.early_hints = hints;
        }
        // Refused for its body's size, which the client may be sending.
        Err(resp) if resp.status == 413 => ctx.linger.store(true, Ordering::Relaxed),
        Err(_) => {}
    }
    // The request's header map, emptied, carries the response's
    // headers; hyper keeps that map to parse the next request into,
    // so a keep-alive connection allocates no header maps.
    let mut headers = parts.headers;
    headers.clear();
    let done = Finished(ctx, permit);
    async move { Ok::<_, Infallible>(handle(head, headers, on_upgrade, done).await) }
}

/// Whether a head announces a body over what hyper drains by itself when
/// the handler leaves it unread (its read buffer's worth), or one of no
/// length (chunked).
fn declares_a_large_body(headers: &http::HeaderMap) -> bool {
    const DRAINED_BY_HYPER: u64 = 64 * 1024;
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > DRAINED_BY_HYPER)
}

/// Where this worker counts the streams `--http2-max-pending` turned away,
/// for the stats and metrics (its scoreboard slot).
pub static REFUSED_STREAMS: std::sync::OnceLock<&'static std::sync::atomic::AtomicU64> =
    std::sync::OnceLock::new();

/// An HTTP/2 request past `--http2-max-pending`: 503 at once, with
/// Retry-After, and never read further.
pub(super) async fn refuse_stream(
    ctx: Arc<ConnCtx>,
    mut parts: http::request::Parts,
) -> hyper::Response<OxBody> {
    if let Some(counter) = REFUSED_STREAMS.get() {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    log_pending_full();
    let mut resp = Response::plain(
        503,
        "Service Unavailable",
        "Service Unavailable: too many HTTP/2 requests are pending in this worker\n",
    );
    resp.headers.push((
        bytes::Bytes::from_static(b"retry-after"),
        bytes::Bytes::from_static(b"1"),
    ));
    parts.headers.clear();
    handle(Err(resp), parts.headers, None, Finished(ctx, None)).await
}

/// Says that `--http2-max-pending` turned streams away, at most once a
/// minute (a flood must not flood the log too).
fn log_pending_full() {
    static LOGGED: crate::log::say::Throttle = crate::log::say::Throttle::new();
    if LOGGED.ready(60) {
        crate::say!(
            "oxgate: worker {}: --http2-max-pending reached: new HTTP/2 streams are answered 503 (said at most once a minute)",
            std::process::id()
        );
    }
}

/// `done` counts the request finished when it is dropped: with the
/// response body, or before there is one, when hyper drops this future
/// (an HTTP/2 stream the client reset; a connection gone).
pub(super) async fn handle(
    head: Result<Headed, Response>,
    headers: http::HeaderMap,
    on_upgrade: Option<hyper::upgrade::OnUpgrade>,
    done: Finished,
) -> hyper::Response<OxBody> {
    let ctx = &done.0;
    let http10 = head.as_ref().is_ok_and(|h| h.http10);
    let request = match async { to_request(head?, &ctx.settings).await }.await {
        Ok(r) => r,
        Err(resp) => return to_hyper(resp, headers, true, http10, done),
    };
    let mut resp = ctx.handler.clone().handle(request).await;
    if matches!(resp.body, ResponseBody::Upgrade(_)) {
        let body = std::mem::replace(&mut resp.body, ResponseBody::Empty);
        match (body, on_upgrade, resp.status) {
            (ResponseBody::Upgrade(session), Some(on), 101) => {
                *ctx.upgrade.lock().unwrap_or_else(|e| e.into_inner()) = Some((on, session));
                ctx.switched.store(true, Ordering::Relaxed);
            }
            _ => {
                crate::say!("oxgate: a handler answered a request that cannot upgrade with a 101");
                resp = Response::plain(500, "Internal Server Error", "Internal Server Error\n");
            }
        }
    }
    // (Not a 101: the connection is the session's from then on.)
    let closing = ctx.closing.load(Ordering::Relaxed) && resp.status != 101;
    to_hyper(resp, headers, closing, http10, done)
}
