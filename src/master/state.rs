//! The master's state: its workers and daemons as it sees them, and the
//! timeouts that bound what it does with them. The behaviour is in the
//! sibling files (`run`, `workers`, `daemons`, `watch`), each an `impl
//! Master` of its own concern.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;

use super::scoreboard::Scoreboard;
use super::signals::SignalPipe;
use super::stats;
use super::supervisor::Supervisor;
use crate::config::Config;
use crate::lifecycle::ReloadKind;
use crate::listen::Socket;
use crate::worker::apps::Apps;

/// How often the master looks at its workers (harakiri resolution).
pub(super) const TICK: Duration = Duration::from_millis(100);
/// How long a smart daemon has to write its pidfile after it was started.
pub(super) const SMART_DAEMON_GRACE: Duration = Duration::from_secs(3);

pub(super) struct Master<'a> {
    pub(super) cfg: &'a Config,
    pub(super) listeners: Vec<Socket>,
    /// The preloaded apps (none with --lazy-apps).
    pub(super) apps: Option<Apps>,
    pub(super) sb: Arc<Scoreboard>,
    pub(super) signals: SignalPipe,
    /// The workers and every decision about them.
    pub(super) sup: Supervisor,
    pub(super) daemons: Vec<Daemon>,
    /// The FastCGI pools' manager process.
    pub(super) pool_manager: PoolManager,
    pub(super) touched: Vec<(PathBuf, Option<SystemTime>, ReloadKind)>,
    pub(super) touched_logreopen: Vec<(PathBuf, Option<SystemTime>)>,
    pub(super) started: SystemTime,
    /// The daemons were sent SIGTERM for the stop.
    pub(super) daemons_stopped: bool,
    pub(super) stats: stats::Stats,
    /// `--master-fifo`.
    pub(super) fifo: Option<super::fifo::MasterFifo>,
    /// Under systemd's Type=notify: the status and watchdog messages.
    pub(super) systemd_status: Option<super::systemd_status::SystemdStatus>,
    /// When the listen queues were last looked at for a full one.
    pub(super) queues_checked: Instant,
    /// A re-executed master runs Gunicorn's when_ready once the reload is
    /// done: the old workers, forked after the previous image's, held what
    /// it opened (a metrics server's port), which the hook opens again.
    pub(super) when_ready_after_reload: bool,
}

/// The manager process as the master sees it.
pub(super) struct PoolManager {
    pub(super) pid: Option<libc::pid_t>,
    pub(super) started: Instant,
    pub(super) failures: u32,
    pub(super) next_start: Instant,
    /// Sent SIGTERM for the stop, then.
    pub(super) stopped: Option<Instant>,
}

impl Default for PoolManager {
    fn default() -> PoolManager {
        PoolManager {
            pid: None,
            started: Instant::now(),
            failures: 0,
            next_start: Instant::now(),
            stopped: None,
        }
    }
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
