//! A relay between ldap3 and the directory that bounds what one message may cost.
//!
//! ldap3 buffers each message whole before it hands it over, and offers no limit
//! on a message's size: an entry of a gigabyte would be held in full before any
//! check could refuse it. The relay sits on the TCP stream (below TLS, which
//! ldap3 does itself), counts the bytes the server sent since the session last
//! took a message, and stops passing more once that count is past the cap. A
//! stream of messages of ordinary size keeps moving, as each message taken
//! lets the next bytes through. A message larger than the cap never completes:
//! when nothing is taken for [`STALL`] while the relay holds back, the message
//! cannot fit, and the relay closes the connection; the session then reports
//! the entry as too large instead of a lost connection.
//!
//! The relay listens on 127.0.0.1 for the one connection ldap3 opens to it,
//! and stops listening once that arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// How long the relay holds back, with nothing taken, before it decides that
/// the message in flight is larger than the cap.
pub const STALL: Duration = Duration::from_secs(3);

/// What the session and its relay share.
#[derive(Default)]
pub struct Gauge {
    /// Bytes the server sent since the session last took a message.
    pending: AtomicUsize,
    taken: Notify,
    /// Set when the relay closed the connection on a message past the cap.
    oversized: AtomicBool,
}

impl Gauge {
    /// The session took a complete message: the bytes before it are spent.
    pub fn took(&self) {
        self.pending.store(0, Ordering::SeqCst);
        self.taken.notify_waiters();
    }

    /// Whether the relay closed the connection on a message past the cap.
    pub fn oversized(&self) -> bool {
        self.oversized.load(Ordering::SeqCst)
    }
}

/// Relay `upstream` (the directory) through a loopback connection, holding back
/// past `cap` bytes a message; the end for ldap3, and the gauge to report to.
pub async fn relay(upstream: TcpStream, cap: usize) -> std::io::Result<(TcpStream, Arc<Gauge>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let address = listener.local_addr()?;
    let (ours, accepted) = tokio::join!(TcpStream::connect(address), listener.accept());
    let ours = ours?;
    let (local, _) = accepted?;
    drop(listener);
    let _ = upstream.set_nodelay(true);
    let _ = local.set_nodelay(true);
    let gauge = Arc::new(Gauge::default());
    let (mut from_server, mut to_server) = upstream.into_split();
    let (mut from_ldap3, mut to_ldap3) = local.into_split();
    // When ldap3 lets the connection go, the relay lets the server go too, even
    // one that never sends another byte.
    let closed = Arc::new(Notify::new());
    let on_close = closed.clone();
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut from_ldap3, &mut to_server).await;
        let _ = to_server.shutdown().await;
        on_close.notify_one();
    });
    let shared = gauge.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // Hold back while past the cap, until a message is taken.
            loop {
                let taken = shared.taken.notified();
                if shared.pending.load(Ordering::SeqCst) <= cap {
                    break;
                }
                tokio::select! {
                    () = taken => {}
                    () = closed.notified() => return,
                    () = tokio::time::sleep(STALL) => {
                        shared.oversized.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
            let n = tokio::select! {
                read = from_server.read(&mut buf) => match read {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                },
                () = closed.notified() => return,
            };
            if to_ldap3.write_all(&buf[..n]).await.is_err() {
                break;
            }
            shared.pending.fetch_add(n, Ordering::SeqCst);
        }
        let _ = to_ldap3.shutdown().await;
    });
    Ok((ours, gauge))
}
