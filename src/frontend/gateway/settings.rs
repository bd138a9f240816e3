//! What the gateway front ends take from the configuration.

use std::time::Duration;

/// Bodies up to this size are read before the app is called (see http),
/// unless the app takes them as they come (`GatewaySettings::read_ahead`).
pub const INLINE_BODY_MAX: u64 = 64 * 1024;

/// How long an app may take before its connection is watched for the web
/// server giving the request up (closing, or FastCGI's abort): a quick
/// answer never joins the event loop for it.
pub(super) const WATCH_AFTER: std::time::Duration = std::time::Duration::from_millis(200);

#[derive(Clone)]
pub struct GatewaySettings {
    /// Largest vars block (`--buffer-size`; uwsgi's own maximum is 65535).
    pub max_vars: usize,
    pub limit_post: Option<u64>,
    /// For the head and each body read.
    pub timeout: Duration,
    /// Bodies up to this size are read whole before the app is called
    /// (`INLINE_BODY_MAX`); 0 for an app that takes them as they come
    /// (ASGI), which is called with the first bytes that came.
    pub read_ahead: u64,
}
