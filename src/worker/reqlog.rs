//! The request log: one line per request, whatever protocol it came on, in
//! uWSGI's default format, a `--log-format` of uWSGI's `%(var)` variables,
//! or JSON (`--log-encoder json`).
//!
//! Each line is formatted in full and written with one `write()` to stderr,
//! so lines from many threads and workers never interleave (see `logfile`).

use std::fmt::Write as _;
use std::sync::Mutex;

use bytes::Bytes;

use crate::config::{Encoder, LogSettings};
use crate::listen::Protocol;
use crate::log::say::write_stderr;
use crate::sys::clock::wall_us;
use crate::sys::time::{ctime, strftime};
use crate::request::{Outcome, Var, VarName};

/// The variables of `--log-format`, as uWSGI names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Uri,
    Method,
    User,
    Addr,
    Host,
    Proto,
    Uagent,
    Referer,
    Status,
    Rsize,
    Hsize,
    Size,
    Cl,
    Micros,
    Msecs,
    Secs,
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
}

const FIELDS: &[(&str, Field)] = &[
    ("uri", Field::Uri),
    ("method", Field::Method),
    ("user", Field::User),
    ("addr", Field::Addr),
    ("host", Field::Host),
    ("proto", Field::Proto),
    ("uagent", Field::Uagent),
    ("referer", Field::Referer),
    ("status", Field::Status),
    ("rsize", Field::Rsize),
    ("hsize", Field::Hsize),
    ("size", Field::Size),
    ("cl", Field::Cl),
    ("micros", Field::Micros),
    ("msecs", Field::Msecs),
    ("secs", Field::Secs),
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
];

/// The names `%(...)` accepts, for `--help` and the tests.
pub fn field_names() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|(n, _)| *n)
}

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Field(Field),
    /// `%(var.NAME)`: index into the captured extra variables.
    Var(usize),
    /// A name uWSGI would look up among app-set log vars: renders "-".
    Unknown,
}

/// The request variables captured for every line, by position.
const ADDR: usize = 0;
const USER: usize = 1;
const METHOD: usize = 2;
const URI: usize = 3;
const PATH: usize = 4;
const QUERY: usize = 5;
const PROTO: usize = 6;
const HOST: usize = 7;
const UAGENT: usize = 8;
const REFERER: usize = 9;
const XFF: usize = 10;
const CL: usize = 11;
const FIXED: usize = 12;

fn fixed_index(v: Var) -> Option<usize> {
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
        _ => return None,
    })
}

/// What is known of a request from its start.
#[derive(Default)]
struct Pending {
    start_us: u64,
    start_wall_us: u64,
    protocol: Option<Protocol>,
    values: Vec<Option<Bytes>>,
    var_count: usize,
    pktsize: usize,
}

/// Counters the caller knows (the scoreboard, or the process itself).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counts {
    /// Requests this worker served, this one included.
    pub worker: u64,
    /// Requests every worker served, this one included.
    pub total: u64,
}

pub struct RequestLog {
    settings: LogSettings,
    pieces: Option<Vec<Piece>>,
    /// `%(var.NAME)` names, captured after the fixed ones.
    extra: Vec<Vec<u8>>,
    pending: Vec<Mutex<Pending>>,
    pid: u32,
    wid: u32,
}

impl RequestLog {
    pub fn new(settings: LogSettings, cores: usize, wid: u32) -> RequestLog {
        let mut extra = Vec::new();
        let pieces = settings
            .format
            .as_deref()
            .map(|f| parse_format(f, &mut extra));
        RequestLog {
            pieces,
            extra,
            pending: (0..cores.max(1))
                .map(|_| Mutex::new(Pending::default()))
                .collect(),
            pid: std::process::id(),
            wid,
            settings,
        }
    }

    pub fn started(&self, core: usize, vars: &[(VarName, Bytes)], protocol: Protocol) {
        let Some(slot) = self.pending.get(core) else {
            return;
        };
        let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
        p.start_us = crate::sys::clock::now_us();
        p.start_wall_us = wall_us();
        p.protocol = Some(protocol);
        p.values.clear();
        p.values.resize(FIXED + self.extra.len(), None);
        p.var_count = vars.len();
        let mut pktsize = 0;
        for (name, value) in vars {
            pktsize += 4 + name.as_bytes().len() + value.len();
            if let VarName::Known(v) = name
                && let Some(i) = fixed_index(*v)
            {
                p.values[i] = Some(value.clone());
            }
            for (i, want) in self.extra.iter().enumerate() {
                if want[..] == *name.as_bytes() {
                    p.values[FIXED + i] = Some(value.clone());
                }
            }
        }
        p.pktsize = pktsize;
    }

    pub fn finished(&self, core: usize, o: &Outcome, counts: Counts) {
        let Some(slot) = self.pending.get(core) else {
            return;
        };
        let mut p = slot.lock().unwrap_or_else(|e| e.into_inner());
        let us = crate::sys::clock::now_us().saturating_sub(p.start_us);
        let s = &self.settings;
        let wanted = s.enabled
            || (s.zero && o.body_bytes == 0)
            || s.slow_ms.is_some_and(|ms| us / 1000 >= ms)
            || (s.log_4xx && (400..500).contains(&o.status))
            || (s.log_5xx && (500..600).contains(&o.status))
            || s.big.is_some_and(|b| o.body_bytes >= b);
        if !wanted {
            // The values point into the front end's buffers: let them go,
            // so the connection can take its buffer back.
            p.values.clear();
            return;
        }
        let line = Line {
            log: self,
            p: &p,
            o,
            us,
            core,
            counts,
        };
        let mut out = String::with_capacity(256);
        match &s.encoder {
            Encoder::JsonFields => line.json(&mut out),
            Encoder::JsonTemplate(t) => {
                let mut msg = String::with_capacity(256);
                line.text(&mut msg);
                fill_template(&mut out, t, &msg);
            }
            Encoder::Plain => line.text(&mut out),
        }
        out.push('\n');
        p.values.clear();
        drop(p);
        write_stderr(out.as_bytes());
    }
}

fn parse_format(f: &str, extra: &mut Vec<Vec<u8>>) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = f;
    while let Some(at) = rest.find("%(") {
        let Some(end) = rest[at..].find(')') else {
            break;
        };
        text.push_str(&rest[..at]);
        let name = &rest[at + 2..at + end];
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(if let Some(var) = name.strip_prefix("var.") {
            extra.push(var.as_bytes().to_vec());
            Piece::Var(extra.len() - 1)
        } else if let Some((_, field)) = FIELDS.iter().find(|(n, _)| *n == name) {
            Piece::Field(*field)
        } else {
            Piece::Unknown
        });
        rest = &rest[at + end + 1..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// Everything one log line is made of.
struct Line<'a> {
    log: &'a RequestLog,
    p: &'a Pending,
    o: &'a Outcome,
    us: u64,
    core: usize,
    counts: Counts,
}

enum Value<'a> {
    Bytes(&'a [u8]),
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
        if self.log.settings.x_forwarded_for && !xff.is_empty() {
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
            Field::Host => Value::Bytes(self.var(HOST)),
            Field::Proto => Value::Bytes(self.var(PROTO)),
            Field::Uagent => Value::Bytes(self.var(UAGENT)),
            Field::Referer => Value::Bytes(self.var(REFERER)),
            Field::Cl => Value::Bytes(self.var(CL)),
            Field::Status => Value::Num(u64::from(o.status)),
            Field::Rsize => Value::Num(o.body_bytes),
            Field::Hsize => Value::Num(o.header_bytes),
            Field::Size => Value::Num(o.body_bytes + o.header_bytes),
            Field::Micros => Value::Num(self.us),
            Field::Msecs => Value::Num(self.us / 1000),
            Field::Secs => Value::Owned(format!("{:.6}", self.us as f64 / 1e6)),
            Field::Tmsecs => Value::Num(self.p.start_wall_us / 1000),
            Field::Tmicros => Value::Num(self.p.start_wall_us),
            Field::Time => Value::Num(start_s),
            Field::Epoch => Value::Num(wall_us() / 1_000_000),
            Field::Ctime => Value::Owned(ctime(start_s)),
            Field::Ltime => Value::Owned(strftime("%d/%b/%Y:%H:%M:%S %z", start_s)),
            Field::Ftime => Value::Owned(strftime(
                self.log
                    .settings
                    .ftime
                    .as_deref()
                    .unwrap_or("%d/%b/%Y:%H:%M:%S %z"),
                start_s,
            )),
            Field::Pid => Value::Num(u64::from(self.log.pid)),
            Field::Wid => Value::Num(u64::from(self.log.wid)),
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
        }
    }

    /// A value as text; empty strings become "-" as in uWSGI.
    fn push(out: &mut String, v: Value<'_>) {
        match v {
            Value::Bytes(b"") => out.push('-'),
            Value::Bytes(b) => out.push_str(&String::from_utf8_lossy(b)),
            Value::Owned(s) if s.is_empty() => out.push('-'),
            Value::Owned(s) => out.push_str(&s),
            Value::Num(n) => {
                let _ = write!(out, "{n}");
            }
        }
    }

    fn text(&self, out: &mut String) {
        let Some(pieces) = &self.log.pieces else {
            return self.default_line(out);
        };
        for piece in pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => Self::push(out, self.value(*f)),
                Piece::Var(i) => Self::push(out, Value::Bytes(self.var(FIXED + i))),
                Piece::Unknown => out.push('-'),
            }
        }
    }

    /// uWSGI's default line (core/logging.c, `uwsgi_logit_simple`).
    fn default_line(&self, out: &mut String) {
        let o = self.o;
        let s = &self.log.settings;
        fn text(b: &[u8]) -> std::borrow::Cow<'_, str> {
            String::from_utf8_lossy(b)
        }
        let uri = match self.uri() {
            Value::Bytes(b) => text(b),
            Value::Owned(s) => s.into(),
            Value::Num(n) => n.to_string().into(),
        };
        let (took, unit) = if s.micros {
            (self.us, "micros")
        } else {
            (self.us / 1000, "msecs")
        };
        let _ = write!(
            out,
            "[pid: {}|app: 0|req: {}/{}] {} ({}) {{{} vars in {} bytes}} [{}] {} {} => generated {} bytes in {took} {unit} ({} {}) {} headers in {} bytes ({} switches on core {})",
            self.log.pid,
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
            text(self.var(PROTO)),
            o.status,
            o.headers,
            o.header_bytes,
            o.switches,
            self.core,
        );
    }

    /// Every variable, as one JSON object.
    fn json(&self, out: &mut String) {
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
                Value::Bytes(b) => json_str(out, &String::from_utf8_lossy(b)),
                Value::Owned(s) => json_str(out, &s),
            }
        }
        for (i, name) in self.log.extra.iter().enumerate() {
            out.push(',');
            json_str(out, &format!("var.{}", String::from_utf8_lossy(name)));
            out.push(':');
            json_str(out, &String::from_utf8_lossy(self.var(FIXED + i)));
        }
        out.push('}');
    }
}

/// uWSGI's `json` encoder: `${msg}`, `${msgnl}`, `${unix}`, `${micros}`,
/// `${millis}`, `${strftime:FMT}`; text values JSON-escaped.
fn fill_template(out: &mut String, template: &str, msg: &str) {
    let mut rest = template;
    while let Some(at) = rest.find("${") {
        let Some(end) = rest[at..].find('}') else {
            break;
        };
        out.push_str(&rest[..at]);
        let name = &rest[at + 2..at + end];
        let now = wall_us();
        match name {
            "msg" => json_escape(out, msg),
            "msgnl" => {
                json_escape(out, msg);
                json_escape(out, "\n");
            }
            "unix" => {
                let _ = write!(out, "{}", now / 1_000_000);
            }
            "micros" => {
                let _ = write!(out, "{now}");
            }
            "millis" => {
                let _ = write!(out, "{}", now / 1000);
            }
            other => match other.strip_prefix("strftime:") {
                Some(fmt) => json_escape(out, &strftime(fmt, now / 1_000_000)),
                None => out.push_str(&rest[at..at + end + 1]),
            },
        }
        rest = &rest[at + end + 1..];
    }
    out.push_str(rest);
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    json_escape(out, s);
    out.push('"');
}

fn json_escape(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(VarName, Bytes)> {
        list.iter()
            .map(|(k, v)| {
                (
                    VarName::from_bytes(Bytes::from(k.to_string())),
                    Bytes::from(v.to_string()),
                )
            })
            .collect()
    }

    fn outcome() -> Outcome {
        Outcome {
            status: 200,
            headers: 2,
            header_bytes: 88,
            body_bytes: 65,
            switches: 1,
            failed: false,
            protocol: Protocol::Uwsgi,
        }
    }

    #[test]
    fn format_pieces_and_unknown_names() {
        let mut extra = Vec::new();
        let p = parse_format("%(method) %(var.HTTP_X_A) %(nope) 100%", &mut extra);
        assert!(matches!(p[0], Piece::Field(Field::Method)));
        assert!(matches!(p[2], Piece::Var(0)));
        assert!(matches!(p[4], Piece::Unknown));
        assert!(matches!(&p[5], Piece::Text(t) if t == " 100%"));
        assert_eq!(extra, vec![b"HTTP_X_A".to_vec()]);
    }

    #[test]
    fn template_escapes_the_message() {
        let mut out = String::new();
        fill_template(&mut out, r#"{"msg":"${msg}","x":${nope}}"#, "a \"b\"\n");
        assert_eq!(out, r#"{"msg":"a \"b\"\n","x":${nope}}"#);
    }

    #[test]
    fn every_field_renders_in_json() {
        let log = RequestLog::new(
            LogSettings {
                enabled: true,
                encoder: Encoder::JsonFields,
                ..Default::default()
            },
            1,
            3,
        );
        log.started(
            0,
            &vars(&[
                ("REQUEST_METHOD", "POST"),
                ("REQUEST_URI", "/post?a=1"),
                ("REMOTE_ADDR", "10.0.0.1"),
                ("SERVER_PROTOCOL", "HTTP/1.1"),
            ]),
            Protocol::Uwsgi,
        );
        let p = log.pending[0].lock().unwrap();
        let line = Line {
            log: &log,
            p: &p,
            o: &outcome(),
            us: 6_500,
            core: 0,
            counts: Counts {
                worker: 106,
                total: 367,
            },
        };
        let mut out = String::new();
        line.json(&mut out);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        for name in field_names() {
            assert!(v.get(name).is_some(), "{name} missing from {out}");
        }
        assert_eq!(v["size"], 153);
        assert_eq!(v["msecs"], 6);
        assert_eq!(v["protocol"], "uwsgi");
        assert_eq!(v["user"], "");
        let mut text = String::new();
        line.default_line(&mut text);
        assert!(
            text.starts_with(&format!(
                "[pid: {}|app: 0|req: 106/367] 10.0.0.1 () {{8 vars in ",
                std::process::id()
            )),
            "{text}"
        );
        assert!(
            text.ends_with(
                "POST /post?a=1 => generated 65 bytes in 6 msecs (HTTP/1.1 200) 2 headers in 88 bytes (1 switches on core 0)"
            ),
            "{text}"
        );
    }
}
