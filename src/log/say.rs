//! oxgate's own messages (not request lines): whole lines on stderr.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};

static DATE_FORMAT: OnceLock<String> = OnceLock::new();

/// `--log-prefix`: oxgate's own messages start with it and " - ".
static PREFIX: OnceLock<String> = OnceLock::new();

pub fn set_prefix(prefix: &str) {
    let _ = PREFIX.set(format!("{prefix} - "));
}

/// `--logdate`: oxgate's own messages start with the date in this format.
pub fn set_date_format(format: &str) {
    let _ = DATE_FORMAT.set(format.to_string());
}

/// `--log-encoder`: what oxgate's own messages become.
static ENCODERS: OnceLock<Vec<super::encode::EncodeStep>> = OnceLock::new();

pub fn set_encoders(steps: &[super::encode::EncodeStep]) {
    if !steps.is_empty() {
        let _ = ENCODERS.set(steps.to_vec());
    }
}

/// `--log-level` above info: the routine lines (`note!`) are not written.
static QUIET_ROUTINE: AtomicBool = AtomicBool::new(false);
/// `--log-level` error or critical: the lines marked "warning:" are not
/// written either.
static QUIET_WARNINGS: AtomicBool = AtomicBool::new(false);

/// Which of oxgate's own lines `--log-level` leaves out: the routine ones
/// (a start, a stop, a worker replaced as planned), and the warnings. The
/// rest (errors, a worker that died, harakiri) is always written; a level
/// cannot hide why a server failed.
pub fn set_quiet(routine: bool, warnings: bool) {
    QUIET_ROUTINE.store(routine, Ordering::Relaxed);
    QUIET_WARNINGS.store(warnings, Ordering::Relaxed);
}

/// A routine line, at Gunicorn's and uvicorn's info level (the server
/// started, a signal taken, a worker replaced after --max-requests):
/// written unless `--log-level` is above info.
pub fn note(args: std::fmt::Arguments<'_>) {
    if !QUIET_ROUTINE.load(Ordering::Relaxed) {
        say(args);
    }
}

/// Writes one of oxgate's own messages (not a request line) to stderr as a
/// single line with one `write()`, dated if `--logdate` asked for it.
pub fn say(args: std::fmt::Arguments<'_>) {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(128);
    if let Some(prefix) = PREFIX.get() {
        line.push_str(prefix);
    }
    if let Some(fmt) = DATE_FORMAT.get() {
        line.push_str(&crate::sys::time::strftime(
            fmt,
            crate::sys::clock::unix_now(),
        ));
        line.push_str(" - ");
    }
    let start = line.len();
    let _ = line.write_fmt(args);
    if QUIET_WARNINGS.load(Ordering::Relaxed) && is_warning(&line[start..]) {
        return;
    }
    if let Some(steps) = ENCODERS.get() {
        line = super::encode::encode(steps, line);
    }
    line.push('\n');
    write_stderr(line.as_bytes());
}

/// Lines this process could not write (a full disk, a closed or full
/// pipe), and the last error: said once, in one line, when writing works
/// again. Serving never waits on the log.
static LOST_LINES: AtomicU64 = AtomicU64::new(0);
static LOST_ERRNO: AtomicI32 = AtomicI32::new(0);
/// The process the count is of: a worker forked from a master that lost
/// lines does not report them again as its own.
static LOST_PID: AtomicU32 = AtomicU32::new(0);

/// One `write()` per line (looping only on a short write or EINTR), so
/// lines from many processes and threads never interleave.
pub fn write_stderr(buf: &[u8]) {
    // With loggers (`--logger`, syslog), they take the line.
    if super::route::main_line(buf) {
        return;
    }
    if LOST_LINES.load(Ordering::Relaxed) > 0 {
        // Taken whole, so that two threads never report the same lines.
        let lost = LOST_LINES.swap(0, Ordering::Relaxed);
        if lost > 0 && LOST_PID.load(Ordering::Relaxed) == std::process::id() {
            let errno = nix::errno::Errno::from_raw(LOST_ERRNO.load(Ordering::Relaxed));
            let notice = format!(
                "oxgate: {lost} log line(s) of pid {} could not be written: {}\n",
                std::process::id(),
                std::io::Error::from(errno)
            );
            if write_all(notice.as_bytes()).is_err() {
                LOST_LINES.fetch_add(lost, Ordering::Relaxed);
            }
        }
    }
    if let Err(e) = write_all(buf) {
        LOST_PID.store(std::process::id(), Ordering::Relaxed);
        LOST_ERRNO.store(e as i32, Ordering::Relaxed);
        LOST_LINES.fetch_add(1, Ordering::Relaxed);
    }
}

fn write_all(buf: &[u8]) -> Result<(), nix::errno::Errno> {
    let stderr = std::io::stderr();
    // Unlocked on purpose: std's stderr is unbuffered, and its lock would
    // only order this process's threads, which one write() already does.
    use std::os::fd::AsFd;
    crate::sys::write_all_to(stderr.as_fd(), buf)
}

/// `eprintln!` for oxgate's own log messages: whole lines, `--logdate` aware.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::log::say::say(format_args!($($arg)*))
    };
}

/// `say!` for a routine line, which `--log-level warning` leaves out.
#[macro_export]
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::log::say::note(format_args!($($arg)*))
    };
}

/// A line oxgate marks as a warning ("oxgate: warning: ...").
fn is_warning(line: &str) -> bool {
    line.strip_prefix("oxgate: ")
        .is_some_and(|rest| rest.starts_with("warning:"))
}

/// Lets a log line through at most once per period: for lines a flood of
/// the same event would repeat (a limit reached again and again).
pub struct Throttle {
    /// When a line last went through, in seconds since the epoch plus one
    /// (0: never).
    last: AtomicU64,
    /// Lines held back since (by `pass`).
    held: AtomicU64,
}

impl Throttle {
    pub const fn new() -> Throttle {
        Throttle {
            last: AtomicU64::new(0),
            held: AtomicU64::new(0),
        }
    }

    /// `ready`, counting the lines held back: how many were since the last
    /// that went through, when this one may go.
    pub fn pass(&self, secs: u64) -> Option<u64> {
        if self.ready(secs) {
            Some(self.held.swap(0, Ordering::Relaxed))
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
            None
        }
    }

    /// Whether a line may go now, at most once per `secs` seconds; one
    /// caller wins when several ask at once.
    pub fn ready(&self, secs: u64) -> bool {
        let now = crate::sys::clock::unix_now() + 1;
        let last = self.last.load(Ordering::Relaxed);
        (last == 0 || now >= last + secs)
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::Throttle;

    #[test]
    fn a_throttle_counts_the_lines_it_holds_back() {
        let t = Throttle::new();
        assert_eq!(t.pass(60), Some(0));
        assert_eq!((t.pass(60), t.pass(60)), (None, None));
        assert_eq!(t.held.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
