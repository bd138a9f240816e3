//! What a connection waits on beside its protocol: the worker's stop and
//! the idle watchdog, raced with hyper's or h2's connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use super::context::ConnCtx;

/// How long a connection in clear stays idle between requests before it
/// is parked: hyper's state (two 8 KiB buffers, its parser's) is freed,
/// and the task waits on the socket alone for the next request, which
/// gets a new hyper connection. Long enough that a client's requests in
/// quick succession never pay for the parking; short enough that the
/// thousands of idle keep-alive connections a server facing browsers
/// holds cost little memory (docs/performance.md).
pub(super) const PARK_AFTER: Duration = Duration::from_secs(1);

/// What ended a connection's wait beside hyper.
pub(super) enum Quiet {
    /// The worker stops.
    Stop,
    /// The connection was idle for its whole timeout (`idle_watchdog`).
    Idle,
    /// It has been idle a while, and hyper holds nothing of it: it can be
    /// parked, for at most this much longer.
    Parkable(Duration),
}

/// Waits for the worker's stop, or for the connection to go idle (to be
/// closed, or with `park`, parked).
pub(super) async fn stop_or_idle(
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ctx: &ConnCtx,
    park: bool,
) -> Quiet {
    tokio::select! {
        biased;
        _ = shutdown.changed() => Quiet::Stop,
        quiet = idle_watchdog(ctx, park) => quiet,
    }
}

/// Returns once the connection has gone a whole `--socket-timeout` with
/// nothing to show: no request begun, none in progress, and nothing written
/// to the client. So an idle keep-alive connection, a client that trickles
/// its head, or one that stops reading a response the app has finished
/// (as uWSGI's timeout on each write) is closed after one to two timeouts.
/// A request being served, however long its app takes, and a response the
/// client is still reading keep the connection open; a response the client
/// takes nothing of for a whole `--socket-timeout` does not, even while the
/// app still makes it (a generator, a stream): its app thread is freed, as
/// uWSGI's `socket-timeout` ends a write that makes no progress.
///
/// With `--keepalive-timeout`, a connection that has served a request
/// waits that long for its next one instead: the watchdog then looks four
/// times in each keep-alive timeout, and closes it between one and one and
/// a quarter of that after it fell quiet.
///
/// With `park`, it looks every `PARK_AFTER` at least (so it closes the
/// connection at most that long after its timeout), and returns
/// `Quiet::Parkable` once the connection has been quiet a whole look and
/// is idle in hyper.
pub(super) async fn idle_watchdog(ctx: &ConnCtx, park: bool) -> Quiet {
    let head = ctx.settings.head_timeout;
    let keepalive = ctx.settings.keepalive.filter(|k| !k.is_zero());
    let mut period = keepalive.map_or(head, |k| head.min(k / 4));
    if park {
        period = period.min(PARK_AFTER);
    }
    let period = period.max(Duration::from_millis(250));
    let sleep = tokio::time::sleep(period);
    tokio::pin!(sleep);
    // The client taking bytes already written is progress too, and so is
    // the first byte of its next head (the heads settled become none).
    let settled = || ctx.settled_heads.load(Ordering::Relaxed);
    let state = || (ctx.begun.get(), ctx.progress.get(), ctx.unsent(), settled());
    let mut seen = state();
    let mut quiet = Duration::ZERO;
    loop {
        sleep.as_mut().await;
        sleep.as_mut().reset(tokio::time::Instant::now() + period);
        let now = state();
        let blocked = ctx.write_blocked.load(Ordering::Relaxed);
        let serving = ctx.finished.get() != now.0;
        if now != seen || (serving && !blocked) {
            seen = now;
            quiet = Duration::ZERO;
            continue;
        }
        quiet += period;
        let limit = match keepalive {
            _ if blocked => head,
            // The next request's head has begun: it has the head's time,
            // from its first byte, not the idle connection's (as nginx's
            // client_header_timeout, and Gunicorn's and uvicorn's
            // keep-alive timers, which data stops).
            Some(_) if now.3 == u64::MAX => head,
            Some(k) if now.0 > 0 => k,
            _ => head,
        };
        if quiet >= limit {
            if blocked {
                let peer = ctx
                    .info
                    .peer_addr()
                    .map_or_else(|| "a client".to_string(), |a| a.to_string());
                crate::say!(
                    "oxgate: {peer} took no bytes of its response for --socket-timeout ({}s); connection closed",
                    head.as_secs()
                );
            }
            return Quiet::Idle;
        }
        if park && ctx.idle_in_hyper() {
            return Quiet::Parkable(limit - quiet);
        }
    }
}

pub(super) enum Either<A, B> {
    Main(A),
    Side(B),
}

/// Runs `main` and `side` until either is done, polling `side` only when
/// its own waker fired (and once at first), not every time the task wakes
/// for `main`: a connection wakes twice per request, and its shutdown
/// watch and watchdog timer cost a lock and a timer lookup to poll.
pub(super) async fn race_rarely<A: Future + ?Sized, B: Future>(
    mut main: Pin<&mut A>,
    side: B,
) -> Either<A::Output, B::Output> {
    struct SideWaker {
        woken: std::sync::atomic::AtomicBool,
        task: atomic_waker::AtomicWaker,
    }
    impl std::task::Wake for SideWaker {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.woken.store(true, Ordering::Release);
            self.task.wake();
        }
    }
    tokio::pin!(side);
    let flag = Arc::new(SideWaker {
        woken: std::sync::atomic::AtomicBool::new(true),
        task: atomic_waker::AtomicWaker::new(),
    });
    let side_waker = std::task::Waker::from(flag.clone());
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = main.as_mut().poll(cx) {
            return Poll::Ready(Either::Main(v));
        }
        // Registered before the flag is read: a wake-up after the read
        // still reaches the task.
        flag.task.register(cx.waker());
        if flag.woken.load(Ordering::Acquire) && flag.woken.swap(false, Ordering::AcqRel) {
            let mut side_cx = Context::from_waker(&side_waker);
            if let Poll::Ready(v) = side.as_mut().poll(&mut side_cx) {
                return Poll::Ready(Either::Side(v));
            }
        }
        Poll::Pending
    })
    .await
}
