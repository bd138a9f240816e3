//! `--health-path`: the server answers a load balancer's health check
//! itself, before the app, from what the master knows: 200 while the app is
//! loaded and a worker serves, 503 while starting or draining. It works on
//! every socket and protocol, costs the app nothing, and is not in the
//! request log (probes every few seconds would flood it).

use std::sync::Arc;

use bytes::Bytes;

use super::handler::{BodyTaking, Handler, Request, Responding};
use super::response::Response;
use super::vars::{Var, var};

/// What the health endpoint says, as the master sees the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Health {
    /// Not every worker has loaded the app and started accepting yet.
    Starting = 0,
    /// The app is loaded and a worker serves.
    Serving = 1,
    /// A stop began: balancers should send no more (`--drain-delay`).
    Draining = 2,
    /// Every worker is gone (dying and being restarted).
    NoWorker = 3,
    /// A FastCGI pool's processes cannot be started: its requests fail.
    PoolFailing = 4,
}

impl Health {
    pub fn from_u32(v: u32) -> Health {
        match v {
            1 => Health::Serving,
            2 => Health::Draining,
            3 => Health::NoWorker,
            4 => Health::PoolFailing,
            _ => Health::Starting,
        }
    }

    fn response(self) -> Response {
        match self {
            Health::Serving => Response::plain(200, "OK", "ok\n"),
            Health::Starting => Response::plain(503, "Service Unavailable", "starting\n"),
            Health::Draining => Response::plain(503, "Service Unavailable", "draining\n"),
            Health::NoWorker => Response::plain(503, "Service Unavailable", "no worker\n"),
            Health::PoolFailing => Response::plain(
                503,
                "Service Unavailable",
                "a FastCGI pool cannot start its processes\n",
            ),
        }
    }
}

/// Where a worker reads the server's health (the master's scoreboard, or a
/// process of its own without a master).
pub trait HealthSource: Send + Sync + 'static {
    fn health(&self) -> Health;
}

/// Answers requests for `path` (any method, any query string) from the
/// source; passes every other request on.
pub struct HealthCheck {
    path: Bytes,
    source: Arc<dyn HealthSource>,
    inner: Arc<dyn Handler>,
}

impl HealthCheck {
    pub fn new(inner: Arc<dyn Handler>, path: &str, source: Arc<dyn HealthSource>) -> HealthCheck {
        HealthCheck {
            path: Bytes::copy_from_slice(path.as_bytes()),
            source,
            inner,
        }
    }

    fn asked(&self, req: &Request) -> bool {
        // SCRIPT_NAME + PATH_INFO is the path the client asked for, whatever
        // a front end or nginx's params split off as the script.
        let var = |v: Var| var(&req.vars, v).map_or(&b""[..], |value| &value[..]);
        let (script, info) = (var(Var::SCRIPT_NAME), var(Var::PATH_INFO));
        script.len() + info.len() == self.path.len()
            && self.path.starts_with(script)
            && self.path.ends_with(info)
    }
}

impl Handler for HealthCheck {
    fn handle(self: Arc<Self>, req: Request) -> Responding {
        if self.asked(&req) {
            let response = self.source.health().response();
            return Box::pin(async move { response });
        }
        self.inner.clone().handle(req)
    }

    fn concurrency(&self) -> usize {
        self.inner.concurrency()
    }

    fn room(&self) -> Option<Arc<tokio::sync::Semaphore>> {
        self.inner.room()
    }

    fn body_taking(&self) -> BodyTaking {
        self.inner.body_taking()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{RequestBody, ResponseBody, test_vars};

    struct Fixed(Health);
    impl HealthSource for Fixed {
        fn health(&self) -> Health {
            self.0
        }
    }

    struct App;
    impl Handler for App {
        fn handle(self: Arc<Self>, _req: Request) -> Responding {
            Box::pin(async { Response::plain(200, "OK", "app\n") })
        }
    }

    fn request(script: &str, info: &str) -> Request {
        Request {
            vars: test_vars(&[("SCRIPT_NAME", script), ("PATH_INFO", info)]),
            body: RequestBody::Empty,
            is_head: false,
            protocol: crate::listen::Protocol::Http,
            upgradable: false,
            early_hints: None,
            repeated_headers: Vec::new(),
            local_addr: None,
            proxied_by: None,
            script_name_header: None,
        }
    }

    fn answer(health: Health, script: &str, info: &str) -> (u16, Bytes) {
        let h = Arc::new(HealthCheck::new(
            Arc::new(App),
            "/healthz",
            Arc::new(Fixed(health)),
        ));
        let resp = futures_util::FutureExt::now_or_never(h.handle(request(script, info))).unwrap();
        match resp.body {
            ResponseBody::Full(b) => (resp.status, b),
            _ => panic!("not a full body"),
        }
    }

    #[test]
    fn the_path_is_answered_from_the_source() {
        assert_eq!(
            answer(Health::Serving, "", "/healthz"),
            (200, Bytes::from("ok\n"))
        );
        assert_eq!(answer(Health::Draining, "", "/healthz").0, 503);
        assert_eq!(
            answer(Health::Starting, "", "/healthz").1,
            Bytes::from("starting\n")
        );
        assert_eq!(answer(Health::NoWorker, "", "/healthz").0, 503);
        // Split by a front end into a script and the rest, it is the same path.
        assert_eq!(answer(Health::Serving, "/health", "z").0, 200);
        assert_eq!(answer(Health::Serving, "/healthz", "").0, 200);
    }

    #[test]
    fn other_paths_go_to_the_app() {
        for (script, info) in [
            ("", "/"),
            ("", "/healthz/x"),
            ("", "/health"),
            ("/x", "/healthz"),
            ("", "/healthzz"),
        ] {
            assert_eq!(
                answer(Health::Draining, script, info),
                (200, Bytes::from("app\n")),
                "{script}{info}"
            );
        }
    }

    #[test]
    fn health_survives_the_scoreboard_word() {
        for h in [
            Health::Starting,
            Health::Serving,
            Health::Draining,
            Health::NoWorker,
        ] {
            assert_eq!(Health::from_u32(h as u32), h);
        }
        assert_eq!(Health::from_u32(99), Health::Starting);
    }
}
