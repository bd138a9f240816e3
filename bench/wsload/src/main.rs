//! WebSocket echo load: CONNS clients, each sending a SIZE-byte binary
//! message and waiting for its echo, for SECONDS. Prints messages/s and
//! the p50/p99 round trip. One thread: pin it with taskset.
//!
//!   wsload ws://127.0.0.1:8000/ CONNS SIZE SECONDS

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{Bytes, Message};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap_or_else(|| "ws://127.0.0.1:8000/".into());
    let conns: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(64);
    let size: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1024);
    let secs: f64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let payload = Bytes::from(vec![b'x'; size]);
    let mut sockets = Vec::new();
    for _ in 0..conns {
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("connect");
        sockets.push(ws);
    }
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|mut ws| {
            let payload = payload.clone();
            tokio::spawn(async move {
                let mut rtts = Vec::new();
                let mut errors = 0u64;
                while Instant::now() < end {
                    let t = Instant::now();
                    if ws.send(Message::Binary(payload.clone())).await.is_err() {
                        errors += 1;
                        break;
                    }
                    match ws.next().await {
                        Some(Ok(Message::Binary(b))) if b.len() == payload.len() => {
                            rtts.push(t.elapsed())
                        }
                        _ => {
                            errors += 1;
                            break;
                        }
                    }
                }
                let _ = ws.close(None).await;
                (rtts, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (r, e) = t.await.expect("task");
        all.extend(r);
        errors += e;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    println!(
        "messages {} msgs/s {:.0} p50_ms {:.3} p99_ms {:.3} errors {}",
        all.len(),
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        errors
    );
}
