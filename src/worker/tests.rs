//! The front ends driven end to end with a handler that needs no CPython:
//! real loopback sockets, the real accept loop and dispatch, the HTTP,
//! uwsgi, SCGI and FastCGI front ends, and an echo handler.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::serve::{FrontEnds, serve};
use crate::frontend::gateway::GatewaySettings;
use crate::frontend::http::HttpSettings;
use crate::listen::{Address, Protocol, Socket};
use crate::proto::{fastcgi, scgi, uwsgi};
use crate::request::{Handler, Request, RequestBody, Responding, Response, ResponseBody};

/// Answers with what it was given: "METHOD PATH_INFO?QUERY_STRING proto
/// SERVER_NAME body-length" and the body.
struct Echo;

impl Handler for Echo {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        Box::pin(async move {
            let var = |name: &str| {
                req.vars
                    .iter()
                    .find(|(k, _)| k.as_bytes() == name.as_bytes())
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default()
            };
            let line = format!(
                "{} {}?{} {} {}",
                var("REQUEST_METHOD"),
                var("PATH_INFO"),
                var("QUERY_STRING"),
                req.protocol.name(),
                var("SERVER_NAME"),
            );
            let mut body = Vec::new();
            match req.body {
                RequestBody::Empty => {}
                RequestBody::Full(b) => body.extend_from_slice(&b),
                RequestBody::Stream(mut s) => {
                    while let Some(chunk) = s.chunk().await {
                        match chunk {
                            Ok(c) => body.extend_from_slice(&c),
                            Err(e) => return Response::plain(e.status, "Bad", "bad body\n"),
                        }
                    }
                }
            }
            let text = format!("{line} {}\n", body.len());
            let mut out = text.into_bytes();
            out.extend_from_slice(&body);
            Response {
                status: 200,
                reason: None,
                headers: vec![(
                    Bytes::from_static(b"Content-Length"),
                    Bytes::from(out.len().to_string()),
                )],
                body: ResponseBody::Full(Bytes::from(out)),
            }
        })
    }
}

/// A serving loop on a thread of its own, on fresh loopback ports, one per
/// protocol. It runs until the test process ends.
fn start() -> Vec<(Protocol, u16)> {
    let mut sockets = Vec::new();
    let mut ports = Vec::new();
    for protocol in Protocol::ALL {
        let addr = Address::Tcp("127.0.0.1:0".parse().unwrap());
        let listener = crate::listen::bind(&addr, 64, 0o660, false).unwrap();
        let port = match &listener {
            crate::listen::Listener::Tcp(l) => l.local_addr().unwrap().port(),
            _ => unreachable!(),
        };
        ports.push((protocol, port));
        sockets.push(Socket {
            addr,
            listener,
            protocol,
            activated: false,
        });
    }
    std::thread::spawn(move || {
        let rt = super::serve::runtime().unwrap();
        let front = FrontEnds {
            http: Arc::new(HttpSettings {
                server_addr: false,
                limit_post: Some(1 << 20),
                max_head: 8192,
                head_timeout: Duration::from_secs(5),
                keepalive: None,
                head_limits: crate::frontend::http::strict::HeadLimits {
                    request_line: 4094,
                    field_size: 8190,
                    fields: 100,
                    head: 8192,
                },
                max_headers: 100,
                read_ahead: 1 << 20,
                min_body_rate: 1024,
                early_hints: false,
                script_name_header: false,
                proxy_protocol: None,
                tls: None,
                http2_max_streams: Some(100),
                http2_pending: Arc::new(tokio::sync::Semaphore::new(1024)),
            }),
            gateway: Arc::new(GatewaySettings {
                max_vars: 8192,
                limit_post: Some(1 << 20),
                timeout: Duration::from_secs(5),
                read_ahead: crate::frontend::gateway::INLINE_BODY_MAX,
            }),
            max_connections: 1000,
            sessions_close_at_stop: false,
        };
        // No stop signal: it serves until the test process exits.
        let _ = rt.block_on(serve(
            sockets,
            Arc::new(Echo),
            front,
            &[],
            || super::serve::StopTimes {
                mercy: Duration::ZERO,
                budget: Duration::ZERO,
            },
            || {},
            || {},
        ));
    });
    ports
}

fn exchange(port: u16, request: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = c.read_to_end(&mut out);
    out
}

fn port(ports: &[(Protocol, u16)], p: Protocol) -> u16 {
    ports.iter().find(|(q, _)| *q == p).unwrap().1
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn every_front_end_reaches_the_handler() {
    let ports = start();

    let http = exchange(
        port(&ports, Protocol::Http),
        b"POST /a%20b?x=1 HTTP/1.1\r\nHost: example.com:8080\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    );
    let http = text(&http);
    assert!(http.starts_with("HTTP/1.1 200 OK\r\n"), "{http}");
    assert!(
        http.ends_with("\r\n\r\nPOST /a b?x=1 http example.com 5\nhello"),
        "{http}"
    );

    let vars: [(&[u8], &[u8]); 5] = [
        (b"REQUEST_METHOD", b"PUT"),
        (b"REQUEST_URI", b"/u?q=2"),
        (b"QUERY_STRING", b"q=2"),
        (b"CONTENT_LENGTH", b"3"),
        (b"HTTP_HOST", b"front.example"),
    ];
    let mut packet = uwsgi::encode(0, 0, &vars);
    packet.extend_from_slice(b"abc");
    let out = text(&exchange(port(&ports, Protocol::Uwsgi), &packet));
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.ends_with("PUT /u?q=2 uwsgi front.example 3\nabc"),
        "{out}"
    );

    let mut request = scgi::encode(&[
        (b"CONTENT_LENGTH", b"2"),
        (b"SCGI", b"1"),
        (b"REQUEST_METHOD", b"GET"),
        (b"DOCUMENT_URI", b"/s"),
        (b"SERVER_NAME", b"scgi.example"),
    ]);
    request.extend_from_slice(b"hi");
    let out = text(&exchange(port(&ports, Protocol::Scgi), &request));
    assert!(out.starts_with("Status: 200 OK\r\n"), "{out}");
    assert!(out.ends_with("GET /s? scgi scgi.example 2\nhi"), "{out}");

    let mut records = Vec::new();
    fastcgi::begin_request(&mut records, 1, fastcgi::RESPONDER, 0);
    let params = fastcgi::encode_pairs(&[
        (b"REQUEST_METHOD", b"GET"),
        (b"SCRIPT_NAME", b"/f"),
        (b"REQUEST_URI", b"/f"),
        (b"SERVER_NAME", b"fcgi.example"),
    ]);
    fastcgi::write_records(&mut records, fastcgi::PARAMS, 1, &params);
    fastcgi::write_records(&mut records, fastcgi::PARAMS, 1, b"");
    fastcgi::write_records(&mut records, fastcgi::STDIN, 1, b"");
    let out = exchange(port(&ports, Protocol::Fastcgi), &records);
    let mut buf = bytes::BytesMut::from(&out[..]);
    let mut stdout = Vec::new();
    let mut ended = false;
    while let Some(r) = fastcgi::parse_record(&mut buf).unwrap() {
        match r.kind {
            fastcgi::STDOUT => stdout.extend_from_slice(&r.content),
            fastcgi::END_REQUEST => ended = true,
            _ => {}
        }
    }
    assert!(ended);
    let stdout = text(&stdout);
    assert!(stdout.starts_with("Status: 200 OK\r\n"), "{stdout}");
    // fastcgi_params' SCRIPT_NAME is the whole path: the app is at the root.
    assert!(
        stdout.ends_with("GET /f? fastcgi fcgi.example 0\n"),
        "{stdout}"
    );
}

#[test]
fn http_sent_to_a_gateway_socket_is_refused_with_400() {
    let ports = start();
    let out = text(&exchange(
        port(&ports, Protocol::Uwsgi),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    ));
    assert!(out.starts_with("HTTP/1.0 400 Bad Request"), "{out}");
    assert!(out.contains("uwsgi protocol"), "{out}");
}
