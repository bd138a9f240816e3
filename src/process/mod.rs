//! Process plumbing: daemonizing, log files, pidfiles, privileges, and
//! signalling a running master through its pidfile.

mod control;
mod daemon;
mod pidfile;
mod privileges;
mod role;
mod systemd;

/// Set in the environment of the `--check-config` a reload runs first: it
/// checks the configuration, and leaves the app to the new image.
pub const RELOAD_CHECK_ENV: &str = "OXGATE_RELOAD_CHECK";

pub use self::control::send_control;
pub use self::daemon::{
    daemonize, detached, redirect_output, remember_log_path, stderr_is, udp_log_address,
};
pub use self::pidfile::{names_this_process, refuse_live_pidfile, write_pidfile, write_pidfiles};
pub use self::privileges::{
    check_names, chown_logs, chown_path, chown_socket_to_ids, drop_privileges,
    root_without_uid_notice,
};
pub use self::role::{is_worker, mark_worker, remember_start_dir, sched_batch_or_say, start_dir};
pub use self::systemd::{sd_notify, systemd_sockets};
/// (virtual size, resident size) of a process in bytes, from
/// /proc/PID/statm (`None`: this process); zeros if it is gone.
pub use crate::sys::procfs::memory;
