//! The accept loop. The sandbox serves its connections itself (hyper's HTTP/1 connection on a
//! tokio listener) instead of through `axum::serve`, for one reason: a fault must be able to
//! reset the connection a request came on, without a response, and a handler under
//! `axum::serve` can only return responses.
//!
//! How a reset works: each connection keeps a second descriptor of its socket (`try_clone`, a
//! `dup`) next to the one hyper owns, and puts a [`Connection`] into every request's
//! extensions. [`Connection::reset`] wakes the connection's task, which sets `SO_LINGER` to 0
//! on the socket and drops both descriptors: the kernel then sends RST instead of FIN and the
//! client sees "connection reset" — not a clean close, not a partial response. The handler's
//! future is dropped with the connection, so nothing after the reset runs.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// The connection a request arrived on, as a request extension.
#[derive(Clone)]
pub struct Connection {
    reset: Arc<Notify>,
    stop: watch::Receiver<bool>,
}

impl Connection {
    /// Resets the connection (RST, no response). Never completes: the connection's task drops
    /// the connection and this future with it.
    pub async fn reset(&self) -> Response {
        self.reset.notify_one();
        std::future::pending().await
    }

    /// Completes once the server is shutting down, so a deliberately slow answer does not
    /// hold up the shutdown.
    pub async fn stopping(&self) {
        let mut stop = self.stop.clone();
        // An error means the server is gone: as good as stopping.
        let _ = stop.wait_for(|stopping| *stopping).await;
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting and waits
/// for the requests in flight to be answered.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _peer)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        let (router, stop) = (router.clone(), stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(tcp, router, stop).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Every connection task holds a receiver: `closed` completes when the last one is done.
    let _ = stop_tx.send(true);
    drop(stop_rx);
    stop_tx.closed().await;
    Ok(())
}

/// As `axum::serve` does: errors about one connection are skipped; others (out of file
/// descriptors, say) pause accepting for a second instead of spinning.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn connection(
    tcp: TcpStream,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    // The second descriptor stays here while hyper owns the first; see the module comment.
    let std_stream = tcp.into_std()?;
    let control = std_stream.try_clone()?;
    let tcp = TcpStream::from_std(std_stream)?;

    let reset = Arc::new(Notify::new());
    let handle = Connection {
        reset: Arc::clone(&reset),
        stop: stop.clone(),
    };
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(handle.clone());
        router.clone().oneshot(request)
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service);
    tokio::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "connection error");
                }
                return Ok(());
            }
            () = reset.notified() => {
                // SO_LINGER belongs to the socket, not the descriptor: whichever of the two is
                // closed last (both are, on return) sends the RST.
                socket2::SockRef::from(&control).set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::Extension;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn get_raw(addr: std::net::SocketAddr, path: &str) -> io::Result<Vec<u8>> {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok(answer)
    }

    #[tokio::test]
    async fn a_handler_can_reset_its_connection() -> Result<(), Box<dyn std::error::Error>> {
        let router = Router::new().route("/ok", get(|| async { "fine" })).route(
            "/reset",
            get(|Extension(c): Extension<Connection>| async move { c.reset().await }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, async {
            let _ = stopped.await;
        }));

        // RST: an error on read, where a plain close would read as end of file.
        let reset = get_raw(addr, "/reset").await;
        assert!(
            reset
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset),
            "{reset:?}"
        );
        // Other connections are untouched, and a normal close is still a clean one.
        let ok = String::from_utf8(get_raw(addr, "/ok").await?)?;
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("fine"),
            "{ok}"
        );

        let _ = stop.send(());
        server.await??;
        assert!(TcpStream::connect(addr).await.is_err());
        Ok(())
    }
}
