//! Routing between handlers: uWSGI's mountpoints (`--mount`,
//! `--manage-script-name`). A mount may be any kind of handler.

use std::sync::Arc;

use bytes::Bytes;

use super::handler::{Handler, Request, Responding};
use super::response::Response;
use super::vars::{Var, VarName};

/// Picks the handler for each request, as uWSGI does: with
/// `--manage-script-name`, the longest mountpoint that prefixes PATH_INFO
/// (moved to SCRIPT_NAME); otherwise the mountpoint equal to SCRIPT_NAME;
/// else the default handler; else 404.
pub struct Router {
    default: Option<Arc<dyn Handler>>,
    /// Longest mountpoint first, without a trailing slash.
    mounts: Vec<(Bytes, Arc<dyn Handler>)>,
    manage_script_name: bool,
}

impl Router {
    pub fn new(
        default: Option<Arc<dyn Handler>>,
        mut mounts: Vec<(Bytes, Arc<dyn Handler>)>,
        manage_script_name: bool,
    ) -> Router {
        mounts.sort_by_key(|(point, _)| std::cmp::Reverse(point.len()));
        Router {
            default,
            mounts,
            manage_script_name,
        }
    }

    /// The handler for a request, after moving the mountpoint from
    /// PATH_INFO to SCRIPT_NAME where `--manage-script-name` asks.
    pub fn route(&self, vars: &mut Vec<(VarName, Bytes)>) -> Option<&Arc<dyn Handler>> {
        if self.mounts.is_empty() {
            return self.default.as_ref();
        }
        let find = |vars: &[(VarName, Bytes)], v: Var| {
            vars.iter().position(|(k, _)| *k == VarName::Known(v))
        };
        let script = find(vars, Var::SCRIPT_NAME);
        let path = find(vars, Var::PATH_INFO);
        if self.manage_script_name
            && let Some(p) = path
        {
            let info = vars[p].1.clone();
            for (point, handler) in &self.mounts {
                let under = info.starts_with(point)
                    && (info.len() == point.len() || info[point.len()] == b'/');
                if under && !point.is_empty() {
                    vars[p].1 = info.slice(point.len()..);
                    match script {
                        Some(s) => vars[s].1 = point.clone(),
                        None => vars.push((VarName::Known(Var::SCRIPT_NAME), point.clone())),
                    }
                    return Some(handler);
                }
            }
        } else if let Some(s) = script {
            let name = &vars[s].1;
            let name = name.strip_suffix(b"/").unwrap_or(name);
            if let Some((_, handler)) = self.mounts.iter().find(|(point, _)| point[..] == *name) {
                return Some(handler);
            }
        }
        self.default.as_ref()
    }
}

impl Handler for Router {
    fn handle(self: Arc<Self>, mut req: Request) -> Responding {
        match self.route(&mut req.vars) {
            Some(handler) => handler.clone().handle(req),
            None => Box::pin(async {
                Response::plain(404, "Not Found", "No app is mounted at this path\n")
            }),
        }
    }

    fn concurrency(&self) -> usize {
        self.default
            .iter()
            .chain(self.mounts.iter().map(|(_, h)| h))
            .map(|h| h.concurrency())
            .max()
            .unwrap_or(1)
    }
}
