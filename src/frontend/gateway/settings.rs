//! What the gateway front ends take from the configuration.

use std::time::Duration;

/// Bodies up to this size are read before the app is called (see http).
pub(super) const INLINE_BODY_MAX: u64 = 64 * 1024;

/// How long an app may take before its connection is watched for the web
/// server giving the request up (closing, or FastCGI's abort): a quick
/// answer never joins the event loop for it.
pub(super) const WATCH_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

pub struct GatewaySettings {
    /// Largest vars block (`--buffer-size`; uwsgi's own maximum is 65535).
    pub max_vars: usize,
    pub limit_post: Option<u64>,
    /// For the head and each body read.
    pub timeout: Duration,
}
