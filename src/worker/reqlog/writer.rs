//! The `RequestLog`: what each core's request said at its start, and at
//! its end the line, written with one `write()` when it is wanted.

use std::sync::Mutex;

use bytes::Bytes;

use super::fields::{FIXED, fixed_index};
use super::format::{Piece, parse_format};
use super::line::{Counts, Line, Pending};
use crate::config::{Encoder, LogSettings};
use crate::listen::Protocol;
use crate::log::file::write_request_line;
use crate::request::{Outcome, VarName};
use crate::sys::clock::wall_us;

pub struct RequestLog {
    settings: LogSettings,
    pieces: Option<Vec<Piece>>,
    /// `%(var.NAME)` names, captured after the fixed ones.
    extra: Vec<Vec<u8>>,
    /// `%(resp.NAME)` names, lower-case: the outcome carries their values.
    resp: Vec<Vec<u8>>,
    pending: Vec<Mutex<Pending>>,
    pid: u32,
    wid: u32,
}

impl RequestLog {
    pub fn new(settings: LogSettings, cores: usize, wid: u32) -> RequestLog {
        let (mut extra, mut resp) = (Vec::new(), Vec::new());
        let pieces = settings
            .format
            .as_deref()
            .map(|f| parse_format(f, &mut extra, &mut resp));
        crate::request::log_response_headers(resp.clone());
        RequestLog {
            pieces,
            extra,
            resp,
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
        self.fill(&mut p, vars, protocol);
    }

    /// A request the server answered itself (a static file), started
    /// `us` ago and finished now: its line, if one is wanted, at once.
    pub fn answered(&self, vars: &[(VarName, Bytes)], o: &Outcome, us: u64, counts: Counts) {
        let mut p = Pending::default();
        self.fill(&mut p, vars, o.protocol);
        p.start_us = p.start_us.saturating_sub(us);
        p.start_wall_us = p.start_wall_us.saturating_sub(us);
        self.write(&mut p, 0, o, counts);
    }

    /// What the line needs of the request, from its variables.
    fn fill(&self, p: &mut Pending, vars: &[(VarName, Bytes)], protocol: Protocol) {
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
        self.write(&mut p, core, o, counts);
    }

    /// Writes the request's line when the settings want it (with one
    /// `write()`), and lets its values go.
    fn write(&self, p: &mut Pending, core: usize, o: &Outcome, counts: Counts) {
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
            settings: &self.settings,
            pieces: self.pieces.as_deref(),
            extra: &self.extra,
            resp: &self.resp,
            pid: self.pid,
            wid: self.wid,
            p,
            o,
            us,
            core,
            counts,
        };
        let mut out = String::with_capacity(256);
        match &s.encoder {
            Encoder::JsonFields => line.json(&mut out),
            Encoder::Chain(steps) => {
                line.text(&mut out);
                out = crate::log::encode::encode(steps, out);
            }
            Encoder::Plain => line.text(&mut out),
        }
        out.push('\n');
        p.values.clear();
        write_request_line(out.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::super::fields::field_names;
    use super::*;
    use crate::request::test_vars as vars;

    fn outcome() -> Outcome {
        Outcome {
            status: 200,
            headers: 2,
            header_bytes: 88,
            body_bytes: 65,
            switches: 1,
            failed: false,
            protocol: Protocol::Uwsgi,
            handler: crate::request::HandlerKind::App,
            logged_headers: None,
        }
    }

    #[test]
    fn response_headers_by_name() {
        let log = RequestLog::new(
            LogSettings {
                enabled: true,
                format: Some("%(status) %(resp.Content-Type) %(resp.x-missing)".into()),
                ..Default::default()
            },
            1,
            1,
        );
        assert_eq!(
            log.resp,
            vec![b"content-type".to_vec(), b"x-missing".to_vec()]
        );
        let mut o = outcome();
        o.logged_headers = Some(vec![Some(Bytes::from_static(b"text/plain")), None].into());
        let p = Pending::default();
        let line = Line {
            settings: &log.settings,
            pieces: log.pieces.as_deref(),
            extra: &log.extra,
            resp: &log.resp,
            pid: log.pid,
            wid: log.wid,
            p: &p,
            o: &o,
            us: 0,
            core: 0,
            counts: Counts::default(),
        };
        let mut out = String::new();
        line.text(&mut out);
        assert_eq!(out, "200 text/plain -");
        let mut json = String::new();
        line.json(&mut json);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["resp.content-type"], "text/plain");
        assert_eq!(v["resp.x-missing"], "");
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
            settings: &log.settings,
            pieces: log.pieces.as_deref(),
            extra: &log.extra,
            resp: &log.resp,
            pid: log.pid,
            wid: log.wid,
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
