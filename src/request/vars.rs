//! CGI variable names, and the per-thread spare lists and buffers that let
//! a keep-alive connection build each request's variables without
//! allocating.

use std::cell::Cell;
use std::thread::LocalKey;

use bytes::{Bytes, BytesMut};

macro_rules! known_vars {
    ($($id:ident),* $(,)?) => {
        /// CGI variables common enough to deserve a name: front ends produce
        /// them without allocating, the app host keeps a ready-made key each.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub enum Var { $($id,)* }

        impl Var {
            pub const ALL: &'static [Var] = &[$(Var::$id,)*];

            pub fn name(self) -> &'static str {
                match self { $(Var::$id => stringify!($id),)* }
            }

            pub fn from_name(name: &[u8]) -> Option<Var> {
                match std::str::from_utf8(name).ok()? {
                    $(stringify!($id) => Some(Var::$id),)*
                    _ => None,
                }
            }
        }
    };
}

known_vars! {
    REQUEST_METHOD, SCRIPT_NAME, PATH_INFO, QUERY_STRING, CONTENT_TYPE, CONTENT_LENGTH,
    SERVER_NAME, SERVER_PORT, SERVER_PROTOCOL, REMOTE_ADDR, REMOTE_PORT, REQUEST_URI,
    REQUEST_SCHEME, HTTPS, DOCUMENT_ROOT, REMOTE_USER, SERVER_ADDR,
    HTTP_HOST, HTTP_USER_AGENT, HTTP_ACCEPT, HTTP_ACCEPT_LANGUAGE, HTTP_ACCEPT_ENCODING,
    HTTP_COOKIE, HTTP_CONNECTION, HTTP_REFERER, HTTP_CACHE_CONTROL, HTTP_ORIGIN,
    HTTP_AUTHORIZATION, HTTP_X_FORWARDED_FOR, HTTP_X_FORWARDED_PROTO, HTTP_X_REAL_IP,
    HTTP_IF_NONE_MATCH, HTTP_IF_MODIFIED_SINCE, HTTP_PRAGMA, HTTP_UPGRADE_INSECURE_REQUESTS,
    HTTP_TRANSFER_ENCODING, HTTP_EXPECT, HTTP_RANGE, HTTP_DNT, HTTP_SEC_FETCH_SITE,
    HTTP_SEC_FETCH_MODE, HTTP_SEC_FETCH_DEST,
}

/// The name of a CGI variable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VarName {
    Known(Var),
    Other(Bytes),
}

impl VarName {
    pub fn from_bytes(name: Bytes) -> VarName {
        match Var::from_name(&name) {
            Some(v) => VarName::Known(v),
            None => VarName::Other(name),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            VarName::Known(v) => v.name().as_bytes(),
            VarName::Other(b) => b,
        }
    }
}

thread_local! {
    /// An emptied variable list and header list, kept for the thread's
    /// next request.
    static SPARE_VARS: Cell<Vec<(VarName, Bytes)>> = const { Cell::new(Vec::new()) };
    static SPARE_HEADERS: Cell<Vec<(Bytes, Bytes)>> = const { Cell::new(Vec::new()) };
}

/// Lists longer than this are not kept.
const SPARE_MAX: usize = 64;

/// An empty list with room for `n`: the one last given back to `spare` on
/// this thread if there is one, so a worker that serves its requests on one
/// thread does not allocate a list for each.
fn take_spare<T>(spare: &'static LocalKey<Cell<Vec<T>>>, n: usize) -> Vec<T> {
    let mut list = spare.take();
    list.reserve(n);
    list
}

/// Keeps `list`, emptied, for the next `take_spare`.
fn give_spare<T>(spare: &'static LocalKey<Cell<Vec<T>>>, mut list: Vec<T>) {
    if list.capacity() <= SPARE_MAX {
        list.clear();
        spare.set(list);
    }
}

/// The value of the first variable `v`.
pub fn var(vars: &[(VarName, Bytes)], v: Var) -> Option<&Bytes> {
    vars.iter()
        .find(|(k, _)| *k == VarName::Known(v))
        .map(|(_, value)| value)
}

/// The value of the first variable named `name`, known or not
/// (`HTTP_SEC_WEBSOCKET_KEY`, `HTTP_IF_MATCH`).
pub fn var_named<'a>(vars: &'a [(VarName, Bytes)], name: &[u8]) -> Option<&'a Bytes> {
    vars.iter()
        .find(|(k, _)| k.as_bytes() == name)
        .map(|(_, value)| value)
}

/// An empty variable list with room for `n` (see `take_spare`).
pub fn vars_with_capacity(n: usize) -> Vec<(VarName, Bytes)> {
    take_spare(&SPARE_VARS, n)
}

/// Gives back a variable list whose values are no longer needed.
pub fn recycle_vars(vars: Vec<(VarName, Bytes)>) {
    give_spare(&SPARE_VARS, vars);
}

/// An empty header list with room for `n` (see `take_spare`).
pub fn headers_with_capacity(n: usize) -> Vec<(Bytes, Bytes)> {
    take_spare(&SPARE_HEADERS, n)
}

/// Gives back a header list whose values are no longer needed.
pub fn recycle_headers(headers: Vec<(Bytes, Bytes)>) {
    give_spare(&SPARE_HEADERS, headers);
}

/// Makes `buf` ready for values to be copied in and split off as `Bytes`:
/// when it has less than `min` room left, it takes back its whole buffer if
/// everything split off before has been dropped, else moves on to a new
/// one of `size`. One grown past 8 × `size` (by a huge request) is not
/// kept.
pub fn ready_arena(buf: &mut BytesMut, min: usize, size: usize) {
    if buf.capacity() < min {
        buf.reserve(size);
        if buf.capacity() > 8 * size {
            *buf = BytesMut::with_capacity(size);
        }
    }
}

/// Variables from names and values, for tests.
#[cfg(test)]
pub fn test_vars(list: &[(&str, &str)]) -> Vec<(VarName, Bytes)> {
    list.iter()
        .map(|(k, v)| {
            (
                VarName::from_bytes(Bytes::from(k.to_string())),
                Bytes::from(v.to_string()),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vars_round_trip() {
        for v in Var::ALL {
            assert_eq!(Var::from_name(v.name().as_bytes()), Some(*v));
        }
        assert_eq!(Var::from_name(b"HTTP_X_CUSTOM"), None);
        assert_eq!(
            VarName::from_bytes(Bytes::from_static(b"PATH_INFO")),
            VarName::Known(Var::PATH_INFO)
        );
    }
}
