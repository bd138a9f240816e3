//! `oxgate top ADDR`: a live view of a running server's stats socket
//! (`--stats`): workers with their state, requests/s, average time, memory,
//! and the request each core is running. Refreshes every second; `q` quits.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Paragraph, Row, Table};
use serde_json::Value;

pub const USAGE: &str = "usage: oxgate top ADDR [--frequency SECONDS]\n\
    ADDR is the server's --stats address: host:port, a unix socket path, @abstract,\n\
    or http://host:port for --stats-http. Keys: q quits.";

/// Reads one stats document.
pub fn fetch(addr: &str) -> Result<Value, String> {
    let mut raw = Vec::new();
    let io = |e: std::io::Error| format!("cannot read the stats from {addr}: {e}");
    if let Some(rest) = addr.strip_prefix("http://") {
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut s = std::net::TcpStream::connect(host).map_err(io)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(io)?;
        // In one write, and read whatever that write met: uWSGI's stats
        // server answers as soon as it accepts, and closes, so the rest
        // of a request written in pieces met a closed socket (EPIPE).
        let request = format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let written = s.write_all(request.as_bytes());
        // A server that closes with the rest of the request unread resets
        // the connection after its answer: what came is kept.
        let read = s.read_to_end(&mut raw);
        if raw.is_empty() {
            written.map_err(io)?;
            read.map_err(io)?;
        }
        let at = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| format!("{addr} did not answer HTTP"))?;
        raw.drain(..at + 4);
    } else if addr.contains(':') && !addr.starts_with('/') {
        let mut s = std::net::TcpStream::connect(addr).map_err(io)?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(io)?;
        s.read_to_end(&mut raw).map_err(io)?;
    } else {
        let mut s = if let Some(name) = addr.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            let sa = std::os::unix::net::SocketAddr::from_abstract_name(name).map_err(io)?;
            std::os::unix::net::UnixStream::connect_addr(&sa).map_err(io)?
        } else {
            std::os::unix::net::UnixStream::connect(addr).map_err(io)?
        };
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(io)?;
        s.read_to_end(&mut raw).map_err(io)?;
    }
    serde_json::from_slice(&raw).map_err(|e| format!("{addr} sent no stats JSON: {e}"))
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut addr = None;
    let mut every = Duration::from_secs(1);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                use std::io::Write as _;
                // Not println!, which panics on a closed stdout.
                let _ = writeln!(std::io::stdout(), "{USAGE}");
                return Ok(());
            }
            "-f" | "--frequency" => {
                let v = it.next().ok_or(USAGE)?;
                let secs: f64 = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| !s.is_nan())
                    .ok_or_else(|| format!("--frequency {v:?}: expected seconds"))?;
                // A day at most (`inf`, 1e20: Duration refuses them).
                every = Duration::from_secs_f64(secs.clamp(0.1, 86_400.0));
            }
            other if addr.is_none() => addr = Some(other.to_string()),
            other => return Err(format!("unexpected argument {other:?}\n{USAGE}")),
        }
    }
    let addr = addr.ok_or(USAGE)?;
    // Fail before taking over the terminal if nothing answers at all.
    let first = fetch(&addr)?;
    // (ratatui's init panics without one: cron, a pipe, `docker exec`
    // without -t.)
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        // The plain stats socket answers JSON with no HTTP head, which
        // curl takes with --http0.9 only.
        // The address read as `fetch` reads it.
        let curl = if addr.starts_with("http://") || addr.starts_with("https://") {
            format!("curl {addr}")
        } else if addr.contains(':') && !addr.starts_with('/') {
            format!("curl --http0.9 {addr}")
        } else if let Some(name) = addr.strip_prefix('@') {
            format!("curl --http0.9 --abstract-unix-socket {name} http://localhost/")
        } else {
            format!("curl --http0.9 --unix-socket {addr} http://localhost/")
        };
        return Err(format!(
            "a terminal is needed (`docker exec -it`, `kubectl exec -it`); for one reading, read the stats server's JSON: `{curl}`"
        ));
    }
    let mut terminal = ratatui::try_init().map_err(|e| format!("cannot use the terminal: {e}"))?;
    let mut view = View::default();
    view.update(Ok(first));
    let result = (|| -> std::io::Result<()> {
        loop {
            terminal.draw(|f| view.draw(f, &addr))?;
            let next = Instant::now() + every;
            while let Some(left) = next.checked_duration_since(Instant::now()) {
                if event::poll(left)?
                    && let Event::Key(k) = event::read()?
                    && k.kind == KeyEventKind::Press
                {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        return Ok(());
                    }
                }
            }
            view.update(fetch(&addr));
        }
    })();
    ratatui::restore();
    result.map_err(|e| format!("terminal: {e}"))
}

#[derive(Default)]
struct View {
    doc: Option<Value>,
    error: Option<String>,
    /// Requests per worker pid at the previous refresh, for requests/s.
    before: Option<(Instant, Vec<(i64, u64)>)>,
    rates: Vec<(i64, f64)>,
    total_rate: f64,
}

fn num(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1e9 {
        format!("{:.1}G", b / (1u64 << 30) as f64)
    } else if b >= 1e6 {
        format!("{:.1}M", b / (1u64 << 20) as f64)
    } else if b >= 1e3 {
        format!("{:.1}K", b / 1024.0)
    } else {
        format!("{bytes}B")
    }
}

impl View {
    fn update(&mut self, doc: Result<Value, String>) {
        match doc {
            Err(e) => self.error = Some(e),
            Ok(doc) => {
                self.error = None;
                let now = Instant::now();
                let counts: Vec<(i64, u64)> = doc["workers"]
                    .as_array()
                    .map(|ws| {
                        ws.iter()
                            .map(|w| (w["pid"].as_i64().unwrap_or(0), num(w, "delta_requests")))
                            .collect()
                    })
                    .unwrap_or_default();
                if let Some((then, old)) = &self.before {
                    let secs = now.duration_since(*then).as_secs_f64().max(1e-3);
                    self.rates = counts
                        .iter()
                        .map(|(pid, n)| {
                            let prev = old.iter().find(|(p, _)| p == pid).map_or(*n, |(_, c)| *c);
                            (*pid, n.saturating_sub(prev) as f64 / secs)
                        })
                        .collect();
                    self.total_rate = self.rates.iter().map(|(_, r)| r).sum();
                }
                self.before = Some((now, counts));
                self.doc = Some(doc);
            }
        }
    }

    fn draw(&self, f: &mut ratatui::Frame<'_>, addr: &str) {
        let Some(doc) = &self.doc else {
            return;
        };
        let empty = Vec::new();
        let pools = doc["fastcgi_pools"].as_array().unwrap_or(&empty);
        let [head, workers, pools_area, running, foot] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Min(4),
            // Shown only when the server runs FastCGI pools.
            Constraint::Length(if pools.is_empty() {
                0
            } else {
                pools.len().min(4) as u16 + 3
            }),
            Constraint::Length(8),
            Constraint::Length(1),
        ])
        .areas(f.area());
        let ws = doc["workers"].as_array().unwrap_or(&empty);
        let total: u64 = ws.iter().map(|w| num(w, "requests")).sum();
        let tx: u64 = ws.iter().map(|w| num(w, "tx")).sum();
        let busy = ws.iter().filter(|w| w["status"] == "busy").count();
        let title = format!(
            "{} - master pid {} - {} workers, {busy} busy - {addr}",
            doc["version"].as_str().unwrap_or("?"),
            num(doc, "pid"),
            ws.len(),
        );
        let second = match &self.error {
            Some(e) => Line::styled(e.clone(), Style::default().fg(Color::Red)),
            None => Line::from(format!(
                "{total} req - {:.1} req/s - listen queue {} - tx {} - cwd {}",
                self.total_rate,
                num(doc, "listen_queue"),
                human(tx),
                doc["cwd"].as_str().unwrap_or(""),
            )),
        };
        f.render_widget(
            Paragraph::new(vec![
                Line::styled(title, Style::default().add_modifier(Modifier::BOLD)),
                second,
            ]),
            head,
        );

        let header = Row::new([
            "WID", "PID", "STATUS", "REQ", "REQ/S", "AVG", "RSS", "EXC", "RESP", "HAR",
        ])
        .style(Style::default().add_modifier(Modifier::REVERSED));
        let rows = ws.iter().map(|w| {
            let pid = w["pid"].as_i64().unwrap_or(0);
            let rate = self
                .rates
                .iter()
                .find(|(p, _)| *p == pid)
                .map_or(0.0, |(_, r)| *r);
            let status = w["status"].as_str().unwrap_or("?").to_string();
            let style = match status.as_str() {
                "busy" => Style::default().fg(Color::Green),
                "idle" => Style::default(),
                _ => Style::default().fg(Color::Yellow),
            };
            Row::new([
                num(w, "id").to_string(),
                pid.to_string(),
                status,
                num(w, "requests").to_string(),
                format!("{rate:.1}"),
                format!("{:.1}ms", num(w, "avg_rt") as f64 / 1000.0),
                human(num(w, "rss")),
                num(w, "exceptions").to_string(),
                num(w, "respawn_count").to_string(),
                num(w, "harakiri_count").to_string(),
            ])
            .style(style)
        });
        let widths = [
            Constraint::Length(4),
            Constraint::Length(8),
            Constraint::Length(7),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(9),
            Constraint::Length(8),
            Constraint::Length(5),
            Constraint::Length(5),
            Constraint::Length(4),
        ];
        f.render_widget(
            Table::new(rows, widths)
                .header(header)
                .block(Block::bordered().title(" workers ")),
            workers,
        );

        if !pools.is_empty() {
            let shown = pools.len().min(4);
            let rows = pools[..shown].iter().map(|p| {
                let mount = p["mount"].as_str().unwrap_or("");
                let name = p["name"].as_str().unwrap_or("");
                Row::new([
                    if mount.is_empty() {
                        name.to_string()
                    } else {
                        format!("{mount} {name}")
                    },
                    num(p, "active_processes").to_string(),
                    num(p, "idle_processes").to_string(),
                    num(p, "listen_queue").to_string(),
                    num(p, "max_listen_queue").to_string(),
                    num(p, "accepted_conn").to_string(),
                    num(p, "slow_requests").to_string(),
                    num(p, "timeouts").to_string(),
                    num(p, "max_children_reached").to_string(),
                ])
            });
            f.render_widget(
                Table::new(
                    rows,
                    [
                        Constraint::Min(12),
                        Constraint::Length(4),
                        Constraint::Length(4),
                        Constraint::Length(5),
                        Constraint::Length(5),
                        Constraint::Length(8),
                        Constraint::Length(5),
                        Constraint::Length(5),
                        Constraint::Length(5),
                    ],
                )
                .header(
                    Row::new([
                        "POOL", "BUSY", "IDLE", "QUEUE", "MAXQ", "REQ", "SLOW", "TOUT", "MAXCH",
                    ])
                    .style(Style::default().add_modifier(Modifier::REVERSED)),
                )
                .block(Block::bordered().title(if shown < pools.len() {
                    format!(" FastCGI pools ({shown} of {}) ", pools.len())
                } else {
                    " FastCGI pools ".to_string()
                })),
                pools_area,
            );
        }

        let mut current: Vec<(u64, Row<'_>)> = Vec::new();
        for w in ws {
            for c in w["cores"].as_array().unwrap_or(&empty) {
                let Some(r) = c.get("request") else { continue };
                let ms = num(r, "running_ms");
                current.push((
                    ms,
                    Row::new([
                        format!("{}:{}", num(w, "id"), num(c, "id")),
                        format!("{:.1}s", ms as f64 / 1000.0),
                        r["method"].as_str().unwrap_or("").to_string(),
                        r["uri"].as_str().unwrap_or("").to_string(),
                        r["client"].as_str().unwrap_or("").to_string(),
                    ]),
                ));
            }
        }
        current.sort_by_key(|c| std::cmp::Reverse(c.0));
        f.render_widget(
            Table::new(
                current.into_iter().map(|(_, r)| r),
                [
                    Constraint::Length(6),
                    Constraint::Length(8),
                    Constraint::Length(7),
                    Constraint::Min(20),
                    Constraint::Length(16),
                ],
            )
            .header(
                Row::new(["W:C", "RUNNING", "METHOD", "URI", "CLIENT"])
                    .style(Style::default().add_modifier(Modifier::REVERSED)),
            )
            .block(Block::bordered().title(" running requests (longest first) ")),
            running,
        );
        f.render_widget(Paragraph::new("q quit"), foot);
    }
}
