//! One request-log line: what is known of a request from its start, and
//! the line made of it as uWSGI's default text, a `--log-format` or JSON.

use std::fmt::Write as _;

use bytes::Bytes;

use super::fields::{
    ADDR, AUTH, CL, FIELDS, FIXED, Field, HOST, METHOD, PATH, PROTO, QUERY, REFERER, SERVER_NAME,
    UAGENT, URI, USER, XFF,
};
use super::format::{Piece, json_str};
use crate::config::LogSettings;
use crate::listen::Protocol;
use crate::request::Outcome;
use crate::sys::clock::wall_us;
use crate::sys::time::{ctime, strftime};

/// What is known of a request from its start.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) start_us: u64,
    pub(super) start_wall_us: u64,
    pub(super) protocol: Option<Protocol>,
    pub(super) values: Vec<Option<Bytes>>,
    pub(super) var_count: usize,
    pub(super) pktsize: usize,
}

/// Counters the caller knows (the scoreboard, or the process itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Requests this worker served, this one included.
    pub worker: u64,
    /// Requests every worker served, this one included.
    pub total: u64,
}

/// Everything one log line is made of.
pub(super) struct Line<'a> {
    /// The request log's settings.
    pub(super) settings: &'a LogSettings,
    /// The parsed `--log-format`; `None` is uWSGI's default line.
    pub(super) pieces: Option<&'a [Piece]>,
    /// `%(var.NAME)` names, captured after the fixed ones.
    pub(super) extra: &'a [Vec<u8>],
    /// `%(resp.NAME)` names: the outcome's `logged_headers`, in order.
    pub(super) resp: &'a [Vec<u8>],
    pub(super) pid: u32,
    pub(super) wid: u32,
    pub(super) p: &'a Pending,
    pub(super) o: &'a Outcome,
    pub(super) us: u64,
    pub(super) core: usize,
    pub(super) counts: Counts,
}

/// A request's bytes as log text: a control character (a decoded `%0A` in
/// a path, anything a gateway client sent, C1 controls too) is written
/// `\xNN`, as nginx writes it, so that no request can forge or split a
/// log line. (A backslash stays as it is: a JSON encoder escapes it, and
/// uWSGI's lines keep user agents as sent.)
fn log_text(b: &[u8]) -> std::borrow::Cow<'_, str> {
    log_text_quoting(b, false)
}

/// `log_text`, with a `"` written `\"` when `quotes` (`--log-escape-quotes`,
/// Gunicorn's SafeAtoms).
fn log_text_quoting(b: &[u8], quotes: bool) -> std::borrow::Cow<'_, str> {
    let text = String::from_utf8_lossy(b);
    let escaped = |c: char| c.is_control() || (quotes && c == '"');
    if !text.chars().any(escaped) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '"' && quotes {
            out.push_str("\\\"");
        } else if escaped(c) {
            let _ = write!(out, "\\x{:02X}", c as u32);
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// The user a `Basic` Authorization header names, as Gunicorn's `%(u)s`
/// reads it: none for another scheme, or one that does not decode.
fn basic_user(authorization: &[u8]) -> Option<String> {
    use base64::Engine;
    let (scheme, credentials) = authorization.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"basic ") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim_ascii())
        .ok()?;
    let user = decoded.split(|&b| b == b':').next()?;
    String::from_utf8(user.to_vec()).ok()
}

enum Value<'a> {
    Bytes(&'a [u8]),
    /// Written as it is: empty stays empty, where `Bytes` writes "-".
    Verbatim(&'a [u8]),
    Owned(String),
    Num(u64),
}

impl Line<'_> {
    fn var(&self, i: usize) -> &[u8] {
        self.p
            .values
            .get(i)
            .and_then(|v| v.as_deref())
            .unwrap_or(b"")
    }

    /// A response header the log names, by its index.
    fn resp(&self, i: usize) -> &[u8] {
        self.o
            .logged_headers
            .as_ref()
            .and_then(|h| h.get(i)?.as_deref())
            .unwrap_or(b"")
    }

    /// The protocol as access logs write it: HTTP/2 (the CGI spelling,
    /// and the ASGI one) is `HTTP/2.0` there, as nginx logs it.
    fn proto(&self) -> &[u8] {
        match self.var(PROTO) {
            b"HTTP/2" => b"HTTP/2.0",
            other => other,
        }
    }

    fn uri(&self) -> Value<'_> {
        let uri = self.var(URI);
        if !uri.is_empty() {
            return Value::Bytes(uri);
        }
        let (path, query) = (self.var(PATH), self.var(QUERY));
        let mut s = String::from_utf8_lossy(path).into_owned();
        if !query.is_empty() {
            s.push('?');
            s.push_str(&String::from_utf8_lossy(query));
        }
        Value::Owned(s)
    }

    fn addr(&self) -> &[u8] {
        let xff = self.var(XFF);
        if self.settings.x_forwarded_for && !xff.is_empty() {
            xff
        } else {
            self.var(ADDR)
        }
    }

    fn value(&self, f: Field) -> Value<'_> {
        let o = self.o;
        let start_s = self.p.start_wall_us / 1_000_000;
        match f {
            Field::Uri => self.uri(),
            Field::Method => Value::Bytes(self.var(METHOD)),
            Field::User => Value::Bytes(self.var(USER)),
            Field::Addr => Value::Bytes(self.addr()),
            Field::RemoteAddr => Value::Verbatim(self.var(ADDR)),
            // As uWSGI: the Host header, else the server's name.
            Field::Host => Value::Bytes(match self.var(HOST) {
                b"" => self.var(SERVER_NAME),
                host => host,
            }),
            Field::Proto => Value::Bytes(self.proto()),
            Field::Uagent => Value::Bytes(self.var(UAGENT)),
            Field::Referer => Value::Bytes(self.var(REFERER)),
            // uWSGI's is the body's length as a number: 0 without one.
            Field::Cl => Value::Num(crate::request::cgi::content_length(self.var(CL)).unwrap_or(0)),
            Field::Status => Value::Num(u64::from(o.status)),
            Field::Reason => Value::Verbatim(crate::request::reason_phrase(o.status).as_bytes()),
            Field::Rsize => Value::Num(o.body_bytes),
            Field::Hsize => Value::Num(o.header_bytes),
            Field::Size => Value::Num(o.body_bytes + o.header_bytes),
            Field::Micros => Value::Num(self.us),
            Field::Msecs => Value::Num(self.us / 1000),
            Field::Secs => Value::Owned(format!("{:.6}", self.us as f64 / 1e6)),
            Field::WholeSecs => Value::Num(self.us / 1_000_000),
            Field::Tmsecs => Value::Num(self.p.start_wall_us / 1000),
            Field::Tmicros => Value::Num(self.p.start_wall_us),
            Field::Time => Value::Num(start_s),
            Field::Epoch => Value::Num(wall_us() / 1_000_000),
            Field::Ctime => Value::Owned(ctime(start_s)),
            Field::Ltime => Value::Owned(strftime("%d/%b/%Y:%H:%M:%S %z", start_s)),
            Field::Ftime => Value::Owned(strftime(
                self.settings
                    .ftime
                    .as_deref()
                    .unwrap_or("%d/%b/%Y:%H:%M:%S %z"),
                start_s,
            )),
            Field::Pid => Value::Num(u64::from(self.pid)),
            Field::Wid => Value::Num(u64::from(self.wid)),
            Field::Switches => Value::Num(u64::from(o.switches)),
            // uWSGI counts keys and values apart.
            Field::Vars => Value::Num(self.p.var_count as u64 * 2),
            Field::Core => Value::Num(self.core as u64),
            Field::Vsz => Value::Num(crate::sys::procfs::memory(None).0),
            Field::Rss => Value::Num(crate::sys::procfs::memory(None).1),
            Field::VszM => Value::Num(crate::sys::procfs::memory(None).0 >> 20),
            Field::RssM => Value::Num(crate::sys::procfs::memory(None).1 >> 20),
            Field::Pktsize => Value::Num(self.p.pktsize as u64),
            Field::Modifier1 | Field::Modifier2 | Field::Werr | Field::Rerr | Field::Ioerr => {
                Value::Num(0)
            }
            Field::Headers => Value::Num(u64::from(o.headers)),
            Field::Protocol => Value::Bytes(self.p.protocol.map_or("", |p| p.name()).as_bytes()),
            Field::Req => Value::Num(self.counts.worker),
            Field::Query => Value::Verbatim(self.var(QUERY)),
            Field::BasicUser => basic_user(self.var(AUTH)).map_or(Value::Bytes(b""), Value::Owned),
        }
    }

    /// A value as text; empty strings become "-" as in uWSGI.
    fn push(out: &mut String, v: Value<'_>, quotes: bool) {
        match v {
            Value::Bytes(b"") => out.push('-'),
            Value::Bytes(b) | Value::Verbatim(b) => out.push_str(&log_text_quoting(b, quotes)),
            Value::Owned(s) if s.is_empty() => out.push('-'),
            Value::Owned(s) => out.push_str(&log_text_quoting(s.as_bytes(), quotes)),
            Value::Num(n) => {
                let _ = write!(out, "{n}");
            }
        }
    }

    pub(super) fn text(&self, out: &mut String) {
        let Some(pieces) = self.pieces else {
            return self.default_line(out);
        };
        let quotes = self.settings.escape_quotes;
        for piece in pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => Self::push(out, self.value(*f), quotes),
                Piece::Var(i) => Self::push(out, Value::Bytes(self.var(FIXED + i)), quotes),
                Piece::Resp(i) => Self::push(out, Value::Bytes(self.resp(*i)), quotes),
                Piece::Unknown => out.push('-'),
            }
        }
    }

    /// uWSGI's default line (core/logging.c, `uwsgi_logit_simple`).
    pub(super) fn default_line(&self, out: &mut String) {
        let o = self.o;
        let s = self.settings;
        let text = log_text;
        let uri = match self.uri() {
            Value::Bytes(b) | Value::Verbatim(b) => text(b),
            Value::Owned(s) => log_text(s.as_bytes()).into_owned().into(),
            Value::Num(n) => n.to_string().into(),
        };
        if s.memory_report {
            let (vsz, rss) = crate::sys::procfs::memory(None);
            let _ = write!(
                out,
                "{{address space usage: {vsz} bytes/{}MB}} {{rss usage: {rss} bytes/{}MB}} ",
                vsz >> 20,
                rss >> 20
            );
        }
        let (took, unit) = if s.micros {
            (self.us, "micros")
        } else {
            (self.us / 1000, "msecs")
        };
        let _ = write!(
            out,
            "[pid: {}|app: 0|req: {}/{}] {} ({}) {{{} vars in {} bytes}} [{}] {} {} => generated {} bytes in {took} {unit} ({} {}) {} headers in {} bytes ({} switches on core {})",
            self.pid,
            self.counts.worker,
            self.counts.total,
            text(self.addr()),
            text(self.var(USER)),
            self.p.var_count * 2,
            self.p.pktsize,
            ctime(self.p.start_wall_us / 1_000_000),
            text(self.var(METHOD)),
            uri,
            o.body_bytes,
            text(self.proto()),
            o.status,
            o.headers,
            o.header_bytes,
            o.switches,
            self.core,
        );
    }

    /// Every variable, as one JSON object.
    pub(super) fn json(&self, out: &mut String) {
        out.push('{');
        for (i, (name, field)) in FIELDS.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json_str(out, name);
            out.push(':');
            match self.value(*field) {
                Value::Num(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::Bytes(b) | Value::Verbatim(b) => json_str(out, &String::from_utf8_lossy(b)),
                Value::Owned(s) => json_str(out, &s),
            }
        }
        for (i, name) in self.extra.iter().enumerate() {
            out.push(',');
            json_str(out, &format!("var.{}", String::from_utf8_lossy(name)));
            out.push(':');
            json_str(out, &String::from_utf8_lossy(self.var(FIXED + i)));
        }
        for (i, name) in self.resp.iter().enumerate() {
            out.push(',');
            json_str(out, &format!("resp.{}", String::from_utf8_lossy(name)));
            out.push(':');
            json_str(out, &String::from_utf8_lossy(self.resp(i)));
        }
        out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::{log_text, log_text_quoting};

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(log_text(b"/plain/\xc3\xa9"), "/plain/\u{e9}");
        assert_eq!(
            log_text(b"/a\nGET /forged HTTP/1.1\r\x1b[31m\x7f"),
            "/a\\x0AGET /forged HTTP/1.1\\x0D\\x1B[31m\\x7F"
        );
        assert_eq!(log_text(b"/a\xc2\x85"), "/a\\x85");
        assert_eq!(log_text(br#"ua "x""#), r#"ua "x""#);
        assert_eq!(log_text_quoting(b"ua \"x\"\n", true), r#"ua \"x\"\x0A"#);
    }
}
