//! What `systemctl status` shows of a running server, and systemd's
//! watchdog: the master sends `STATUS=` with its workers' figures every
//! few seconds, as php-fpm does under Type=notify, and `WATCHDOG=1` with
//! it when the unit sets `WatchdogSec=` (a master stuck for that long is
//! then restarted by systemd).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::scoreboard::Scoreboard;

/// How often the status is sent when no watchdog asks for more often
/// (php-fpm's `systemd_interval`).
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// The figures sent to systemd, and when next.
pub(super) struct SystemdStatus {
    every: Duration,
    next: Instant,
    /// `WatchdogSec=` is set: each status carries `WATCHDOG=1`.
    watchdog: bool,
    /// The request count and time of the last status, for the rate.
    last: Option<(u64, Instant)>,
    /// This image came from a reload whose app failed to load: the old
    /// workers serve the old code, which `systemctl status` should say
    /// until a reload succeeds (the log alone scrolls it away).
    reload_failed: bool,
}

impl SystemdStatus {
    /// None unless systemd runs us with Type=notify (NOTIFY_SOCKET set).
    pub(super) fn from_env(now: Instant, reload_failed: bool) -> Option<SystemdStatus> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let watchdog = watchdog_every();
        let every = watchdog.map_or(STATUS_EVERY, |w| w.min(STATUS_EVERY));
        Some(SystemdStatus {
            every,
            // At once: after a reload, the watchdog was last fed by the
            // previous image, before the app loaded.
            next: now,
            watchdog: watchdog.is_some(),
            last: None,
            reload_failed,
        })
    }

    /// The message to send now, if one is due.
    pub(super) fn due(&mut self, sb: &Scoreboard, now: Instant) -> Option<String> {
        if now < self.next {
            return None;
        }
        self.next = now + self.every;
        let (mut workers, mut busy) = (0, 0);
        for slot in sb.live() {
            workers += 1;
            busy += usize::from(slot.busy_cores().next().is_some());
        }
        let requests = sb.header().requests.load(Ordering::Relaxed);
        let rate = match self.last.replace((requests, now)) {
            Some((before, at)) if now > at => {
                requests.saturating_sub(before) as f64 / (now - at).as_secs_f64()
            }
            _ => 0.0,
        };
        let mut message = status_line(workers, busy, requests, rate);
        if self.reload_failed {
            message.push_str(
                "; the last reload failed, the old workers serve the old app (see the log)",
            );
        }
        if self.watchdog {
            message.push_str("\nWATCHDOG=1");
        }
        Some(message)
    }
}

/// How often systemd's watchdog (`WatchdogSec=`, given as WATCHDOG_USEC) is
/// fed: half its time, as sd_watchdog_enabled(3) advises.
pub(crate) fn watchdog_every() -> Option<Duration> {
    std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|u| u.parse::<u64>().ok())
        .filter(|&u| u > 0)
        .map(|u| Duration::from_micros(u) / 2)
}

/// Feeds systemd's watchdog while a re-executed master loads the app:
/// nothing else runs then to feed it, and systemd keeps the watchdog armed
/// through a reload (only WATCHDOG=1 resets it, not READY=1), so an import
/// slower than `WatchdogSec=` had the service killed mid-reload while its
/// old workers served. A thread of its own, stopped before the first fork.
pub(super) struct LoadingFeeder {
    stopped: Arc<(Mutex<bool>, Condvar)>,
    thread: std::thread::JoinHandle<()>,
}

impl LoadingFeeder {
    /// None without a watchdog.
    pub(super) fn start() -> Option<LoadingFeeder> {
        std::env::var_os("NOTIFY_SOCKET")?;
        let every = watchdog_every()?;
        let stopped = Arc::new((Mutex::new(false), Condvar::new()));
        let flag = stopped.clone();
        let thread = std::thread::Builder::new()
            .name("oxgate-watchdog".into())
            .spawn(move || {
                let (lock, wake) = &*flag;
                let mut done = lock.lock().expect("not poisoned");
                while !*done {
                    crate::process::sd_notify("WATCHDOG=1");
                    done = wake
                        .wait_timeout_while(done, every, |d| !*d)
                        .expect("not poisoned")
                        .0;
                }
            })
            .ok()?;
        Some(LoadingFeeder { stopped, thread })
    }

    /// Stops the thread and waits for it to end.
    pub(super) fn stop(self) {
        let (lock, wake) = &*self.stopped;
        *lock.lock().expect("not poisoned") = true;
        wake.notify_all();
        let _ = self.thread.join();
    }
}

/// `STATUS=Workers: 4 (busy 1, idle 3); requests: 1234; traffic: 5.2 req/s`.
fn status_line(workers: usize, busy: usize, requests: u64, rate: f64) -> String {
    format!(
        "STATUS=Workers: {workers} (busy {busy}, idle {}); requests: {requests}; traffic: {rate:.1} req/s",
        workers.saturating_sub(busy)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_workers_requests_and_rate() {
        assert_eq!(
            status_line(4, 1, 1234, 5.25),
            "STATUS=Workers: 4 (busy 1, idle 3); requests: 1234; traffic: 5.2 req/s"
        );
    }

    #[test]
    fn due_every_interval_with_the_rate_between_two() {
        let sb = Scoreboard::create().unwrap();
        let t0 = Instant::now();
        let mut s = SystemdStatus {
            every: Duration::from_secs(2),
            next: t0,
            watchdog: true,
            last: None,
            reload_failed: false,
        };
        let first = s.due(&sb, t0).unwrap();
        assert!(first.starts_with("STATUS=Workers: 0 (busy 0, idle 0); requests: 0;"));
        assert!(first.ends_with("\nWATCHDOG=1"));
        assert_eq!(s.due(&sb, t0 + Duration::from_secs(1)), None);
        sb.header().requests.store(10, Ordering::Relaxed);
        let second = s.due(&sb, t0 + Duration::from_secs(2)).unwrap();
        assert!(
            second.contains("requests: 10; traffic: 5.0 req/s"),
            "{second}"
        );
    }
}
