//! The protocol-neutral request and response. Every front end (HTTP, uwsgi,
//! SCGI, FastCGI) turns bytes into a [`Request`] and gives it to a
//! [`Handler`]; nothing between knows which protocol a request came on.
//! The CGI variable rules that every front end follows live in [`cgi`].

pub mod after_write;
mod answered;
mod body;
pub mod cgi;
mod conn;
mod early_hints;
mod handler;
pub mod health;
mod read_ahead;
mod response;
pub mod router;
mod upgrade;
mod vars;
pub mod wrappers;

pub use crate::proto::is_hop_by_hop;
pub use answered::{Answered, CountedBody};
pub use body::{
    AheadInMemory, BodyError, BodyStream, ChunkSource, FILE_CHUNK, FileBody, FileEnd, FileRegion,
    RequestBody, SENDFILE_MIN, SpilledAhead, Trailers, UNREAD_BODY_DRAIN, Warmer, clip, spooled,
    with_length,
};
pub use conn::{ConnInfo, ProxiedBy, TLS_SUITES, TlsInfo, tls_version_code};
pub use early_hints::{EARLY_HINTS_MAX, EarlyHints, early_hints_fault, early_hints_head};
pub use handler::{
    BodyTaking, Handler, HandlerKind, Outcome, RepeatedHeader, Request, RequestObserver,
    Responding, log_response_headers,
};
pub use read_ahead::{ReadAhead, read_ahead};
pub use response::{
    Response, ResponseBody, body_too_large, declared_length, head_size, is_token_byte,
    over_limit_post, reason_bytes, reason_phrase, redirect_to_directory, unavailable,
};
pub use upgrade::{GoingAway, Session, Upgraded, UpgradedIo};
#[cfg(test)]
pub use vars::test_vars;
pub use vars::{
    Var, VarName, headers_with_capacity, ready_arena, recycle_headers, recycle_vars, var,
    var_named, vars_with_capacity,
};
