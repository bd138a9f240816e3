//! Files the master watches: `--touch-reload`, `--touch-chain-reload`,
//! `--touch-logreopen`, and the log's size (`--log-maxsize`).

use nix::sys::signal::Signal;

use super::state::{Master, mtime, send};

impl Master<'_> {
    /// Reopens the log file here and in every worker (logrotate, SIGUSR1).
    pub(super) fn reopen_log(&self) {
        if crate::log::file::reopen_saying_why_not() {
            self.workers_reopen_logs();
        }
    }

    /// Has every worker reopen its log files (they write request lines).
    fn workers_reopen_logs(&self) {
        for w in &self.sup.workers {
            send(w.pid, Signal::SIGUSR1);
        }
    }

    /// `--log-maxsize` and `--touch-logreopen`.
    pub(super) fn keep_log(&mut self) {
        let files = &self.cfg.log_files;
        if let Some(max) = files.maxsize
            && let Some(to) = crate::log::file::rotate_if_big(max, files.backupname.as_deref())
        {
            crate::note!(
                "oxgate: log rotated to {} (--log-maxsize {max})",
                to.display()
            );
            self.workers_reopen_logs();
        }
        if let Some((max, backup)) = &files.requests_rotation
            && let Some(to) = crate::log::file::rotate_request_log_if_big(*max, backup.as_deref())
        {
            crate::note!(
                "oxgate: request log rotated to {} (maxsize={max})",
                to.display()
            );
            self.workers_reopen_logs();
        }
        let mut reopen = false;
        for (path, seen) in &mut self.touched_logreopen {
            let now = mtime(path);
            if now.is_some() && now != *seen {
                *seen = now;
                reopen = true;
            }
        }
        if reopen {
            self.reopen_log();
            crate::note!("oxgate: log reopened (--touch-logreopen)");
        }
    }

    pub(super) fn check_touched(&mut self) {
        let mut reload = None;
        for (path, seen, mode) in &mut self.touched {
            let now = mtime(path);
            if now == *seen {
                continue;
            }
            // A deploy that removes the file (rm, or a checkout that drops
            // it) reloads too, as uWSGI's does; so does its coming back.
            let what = if now.is_some() { "touched" } else { "removed" };
            *seen = now;
            crate::note!("oxgate: {} was {what}", path.display());
            reload = Some(*mode);
        }
        if let Some(mode) = reload {
            self.reexec(mode);
        }
    }
}
