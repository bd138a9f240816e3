//! The variables of `--log-format` as uWSGI names them, and the request
//! variables captured for every line.

use crate::request::Var;

/// The variables of `--log-format`, as uWSGI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Field {
    Uri,
    Method,
    User,
    Addr,
    RemoteAddr,
    Host,
    Proto,
    Uagent,
    Referer,
    Status,
    Reason,
    Rsize,
    Hsize,
    Size,
    Cl,
    Micros,
    Msecs,
    Secs,
    WholeSecs,
    Tmsecs,
    Tmicros,
    Time,
    Epoch,
    Ctime,
    Ltime,
    Ftime,
    Pid,
    Wid,
    Switches,
    Vars,
    Core,
    Vsz,
    Rss,
    VszM,
    RssM,
    Pktsize,
    Modifier1,
    Modifier2,
    Headers,
    Werr,
    Rerr,
    Ioerr,
    Protocol,
    Req,
    Query,
    BasicUser,
}

pub(super) const FIELDS: &[(&str, Field)] = &[
    ("uri", Field::Uri),
    ("method", Field::Method),
    ("user", Field::User),
    ("addr", Field::Addr),
    // oxgate's own: REMOTE_ADDR as it is, empty (not "-") on a unix
    // socket, for Gunicorn's %(h)s.
    ("remote_addr", Field::RemoteAddr),
    ("host", Field::Host),
    ("proto", Field::Proto),
    ("uagent", Field::Uagent),
    ("referer", Field::Referer),
    ("status", Field::Status),
    // oxgate's own: the status's standard phrase ("OK"), for uvicorn's
    // access line.
    ("reason", Field::Reason),
    ("rsize", Field::Rsize),
    ("hsize", Field::Hsize),
    ("size", Field::Size),
    ("cl", Field::Cl),
    ("micros", Field::Micros),
    ("msecs", Field::Msecs),
    ("secs", Field::Secs),
    // oxgate's own: whole seconds, for Gunicorn's %(T)s.
    ("whole_secs", Field::WholeSecs),
    ("tmsecs", Field::Tmsecs),
    ("tmicros", Field::Tmicros),
    ("time", Field::Time),
    ("epoch", Field::Epoch),
    ("ctime", Field::Ctime),
    ("ltime", Field::Ltime),
    ("ftime", Field::Ftime),
    ("pid", Field::Pid),
    ("wid", Field::Wid),
    ("switches", Field::Switches),
    ("vars", Field::Vars),
    ("core", Field::Core),
    ("vsz", Field::Vsz),
    ("rss", Field::Rss),
    ("vszM", Field::VszM),
    ("rssM", Field::RssM),
    ("pktsize", Field::Pktsize),
    ("modifier1", Field::Modifier1),
    ("modifier2", Field::Modifier2),
    ("headers", Field::Headers),
    ("werr", Field::Werr),
    ("rerr", Field::Rerr),
    ("ioerr", Field::Ioerr),
    // oxgate's own: the protocol the request came on, and the worker's count.
    ("protocol", Field::Protocol),
    ("req", Field::Req),
    // oxgate's own, for Gunicorn's %(q)s and %(u)s: QUERY_STRING as it is
    // (empty stays empty), and the user a Basic Authorization names.
    ("query", Field::Query),
    ("basic_user", Field::BasicUser),
];

/// The names `%(...)` accepts, for `--help` and the tests.
pub fn field_names() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|(n, _)| *n)
}

/// The request variables captured for every line, by position.
pub(super) const ADDR: usize = 0;
pub(super) const USER: usize = 1;
pub(super) const METHOD: usize = 2;
pub(super) const URI: usize = 3;
pub(super) const PATH: usize = 4;
pub(super) const QUERY: usize = 5;
pub(super) const PROTO: usize = 6;
pub(super) const HOST: usize = 7;
pub(super) const UAGENT: usize = 8;
pub(super) const REFERER: usize = 9;
pub(super) const XFF: usize = 10;
pub(super) const CL: usize = 11;
pub(super) const AUTH: usize = 12;
pub(super) const SERVER_NAME: usize = 13;
pub(super) const FIXED: usize = 14;

pub(super) fn fixed_index(v: Var) -> Option<usize> {
    Some(match v {
        Var::REMOTE_ADDR => ADDR,
        Var::REMOTE_USER => USER,
        Var::REQUEST_METHOD => METHOD,
        Var::REQUEST_URI => URI,
        Var::PATH_INFO => PATH,
        Var::QUERY_STRING => QUERY,
        Var::SERVER_PROTOCOL => PROTO,
        Var::HTTP_HOST => HOST,
        Var::HTTP_USER_AGENT => UAGENT,
        Var::HTTP_REFERER => REFERER,
        Var::HTTP_X_FORWARDED_FOR => XFF,
        Var::CONTENT_LENGTH => CL,
        Var::HTTP_AUTHORIZATION => AUTH,
        Var::SERVER_NAME => SERVER_NAME,
        _ => return None,
    })
}
