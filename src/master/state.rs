//! The master's state: its workers and daemons as it sees them, and the
//! timeouts that bound what it does with them. The behaviour is in the
//! sibling files (`run`, `workers`, `daemons`, `watch`), each an `impl
//! Master` of its own concern.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use super::scoreboard::Scoreboard;
use super::signals::{self, SignalPipe};
use super::stats;
use crate::config::Config;
use crate::lifecycle::ReloadKind;
use crate::listen::Socket;
use crate::worker::apps::Apps;

/// How often the master looks at its workers (harakiri resolution).
pub(super) const TICK: Duration = Duration::from_millis(100);
/// A worker that dies sooner than this after its start counts as failing
/// to start; repeated failures back off up to `MAX_BACKOFF` (no fork bomb).
pub(super) const QUICK_DEATH: Duration = Duration::from_secs(1);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Between the stack-dump signal and the kill, for the dump to be written.
pub(super) const HARAKIRI_DUMP_TIME: Duration = Duration::from_millis(300);
/// The exit status of a worker that could not load the app.
pub const EXIT_APP_LOAD: i32 = 22;
/// How long a smart daemon has to write its pidfile after it was started.
pub(super) const SMART_DAEMON_GRACE: Duration = Duration::from_secs(3);

pub(super) enum State {
    Running,
    Stopping { since: Instant },
}

pub(super) struct Master<'a> {
    pub(super) cfg: &'a Config,
    pub(super) listeners: Vec<Socket>,
    /// The preloaded apps (none with --lazy-apps).
    pub(super) apps: Option<Apps>,
    pub(super) sb: Arc<Scoreboard>,
    pub(super) signals: SignalPipe,
    pub(super) workers: Vec<Worker>,
    pub(super) daemons: Vec<Daemon>,
    pub(super) processes: usize,
    pub(super) state: State,
    /// The reload in progress, if any, and when it began.
    pub(super) reload: Option<(ReloadKind, Instant)>,
    pub(super) failures: u32,
    pub(super) next_spawn: Instant,
    pub(super) ever_ready: bool,
    /// The app failed to load after a reload: keep the old workers.
    pub(super) broken: bool,
    pub(super) fatal: Option<String>,
    pub(super) touched: Vec<(PathBuf, Option<SystemTime>, ReloadKind)>,
    pub(super) touched_logreopen: Vec<(PathBuf, Option<SystemTime>)>,
    pub(super) started: SystemTime,
    /// systemd has been told READY=1.
    pub(super) notified: bool,
    pub(super) stats: stats::Stats,
}

/// One worker process as the master sees it.
pub(super) struct Worker {
    pub(super) pid: libc::pid_t,
    pub(super) id: u32,
    pub(super) slot: usize,
    pub(super) started: Instant,
    pub(super) ready: bool,
    /// To be replaced (old generation, max-requests, lifetime, memory).
    pub(super) replace: bool,
    /// The pid of the worker replacing this one.
    pub(super) replaced_by: Option<libc::pid_t>,
    /// When it was asked to stop (SIGTERM).
    pub(super) stop_sent: Option<Instant>,
    pub(super) killed: bool,
    pub(super) harakiri_sent: Option<Instant>,
    /// What it was running when harakiri struck, for the exit log line.
    pub(super) harakiri_info: Option<String>,
}

/// A side process run beside the workers (`--attach-daemon`,
/// `--smart-attach-daemon`).
pub(super) struct Daemon {
    pub(super) command: String,
    /// Smart daemons daemonize themselves and write their pid here.
    pub(super) pidfile: Option<PathBuf>,
    /// The child we started (for smart daemons, only until it detaches).
    pub(super) pid: Option<libc::pid_t>,
    pub(super) started: Instant,
    pub(super) failures: u32,
    pub(super) next_start: Instant,
}

impl Daemon {
    pub(super) fn pid_from_file(&self) -> Option<libc::pid_t> {
        let pid: libc::pid_t = std::fs::read_to_string(self.pidfile.as_ref()?)
            .ok()?
            .trim()
            .parse()
            .ok()?;
        (pid > 1 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok())
            .then_some(pid)
    }
}

/// Sends `sig` to `pid`; a process already gone is no error here (it is
/// reaped on the next turn).
pub(super) fn send(pid: i32, sig: Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

pub(super) fn mtime(f: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(f).and_then(|m| m.modified()).ok()
}

pub(super) fn describe_status(status: i32) -> String {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        format!("was killed by signal {sig} ({})", signals::name(sig))
    } else if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else {
        format!("ended (status {status:#x})")
    }
}
