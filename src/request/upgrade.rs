//! Handing a connection over to the app: an HTTP/1.1 `Upgrade` (WebSocket)
//! ends the HTTP exchange with a 101, and the byte stream goes on to a
//! session the handler supplies. A front end that can do this says so in
//! [`super::Request::upgradable`]; the handler answers with a 101 whose
//! body is [`super::ResponseBody::Upgrade`].

use std::future::Future;
use std::pin::Pin;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

/// The connection's bytes after the 101, whichever front end had them.
pub trait UpgradedIo: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> UpgradedIo for T {}

pub type Upgraded = Box<dyn UpgradedIo>;

/// What runs on the connection once the 101 is written: the front end
/// awaits it in the connection's task, so a stop waits for it too.
pub type Session =
    Box<dyn FnOnce(Upgraded, GoingAway) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Fires when the worker's stop has waited its mercy time: a session still
/// open then closes ("going away") instead of being cut.
#[derive(Clone)]
pub struct GoingAway(watch::Receiver<bool>);

impl GoingAway {
    pub fn new(rx: watch::Receiver<bool>) -> GoingAway {
        GoingAway(rx)
    }

    pub async fn fired(&mut self) {
        if self.0.wait_for(|going| *going).await.is_err() {
            // The worker is gone without saying: never fire.
            std::future::pending::<()>().await;
        }
    }
}
