//! Serving an axum router as AUTH's public HTTP roles do (the gateway, the
//! API): like `axum::serve` (HTTP/1.1), plus the limits a server facing
//! meters and browsers needs, which `axum::serve` does not set. A client gets [`HttpLimits::header_read`] to send a
//! request's headers (a client sending them a byte a second is cut off: the
//! slowloris attack), and a handler [`HttpLimits::request`] to produce its
//! response (408 beyond; a body streamed after that, such as Server-Sent
//! Events, is not limited). Each request carries the client's address as
//! `ConnectInfo<SocketAddr>`. On shutdown the server stops accepting and
//! lets the connections finish their requests in flight.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::IntoResponse;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Time limits of a public HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// From a connection's first byte (or the end of its previous request) to the end of the headers.
    pub header_read: Duration,
    /// From the end of the headers to the response's head.
    pub request: Duration,
    /// How long a shutdown waits for requests in flight.
    pub drain: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { header_read: Duration::from_secs(10), request: Duration::from_secs(30), drain: Duration::from_secs(10) }
    }
}

/// Serves `app` (HTTP/1.1) on `listener` under `limits` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let request_limit = limits.request;
    let app = app.layer(middleware::from_fn(move |request: Request, next: Next| async move {
        match tokio::time::timeout(request_limit, next.run(request)).await {
            Ok(response) => response,
            Err(_) => (StatusCode::REQUEST_TIMEOUT, "the request took longer than the server allows").into_response(),
        }
    }));
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read);
    // Every connection holds a receiver: the sender's `closed()` is when all are gone.
    let (stopping, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait, as axum::serve does.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(remote))));
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let stop = async move {
                // A closed channel means the server is gone: stop as well.
                let _ = stopped.wait_for(|stop| *stop).await;
            };
            let outcome = tokio::select! {
                outcome = connection.as_mut() => outcome,
                () = stop => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = outcome {
                tracing::debug!(error = %err, %remote, "connection ended with an error");
            }
        });
    }
    drop(listener);
    drop(stopped);
    stopping.send_replace(true);
    if tokio::time::timeout(limits.drain, stopping.closed()).await.is_err() {
        tracing::warn!(wait = ?limits.drain, "connections still open after the shutdown's wait; closing them");
    }
    Ok(())
}

/// The client's address of a request served by [`serve`].
pub type ClientAddr = ConnectInfo<SocketAddr>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::Instant;

    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn server(limits: HttpLimits) -> (SocketAddr, tokio_util::sync::CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/", get(|ConnectInfo(remote): ClientAddr| async move { remote.ip().to_string() }))
            .route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(30)).await }));
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(serve(listener, app, limits, stop.clone().cancelled_owned()));
        (address, stop)
    }

    #[tokio::test]
    async fn a_client_sending_headers_a_byte_a_second_is_cut_off() {
        let limits = HttpLimits { header_read: Duration::from_secs(2), ..HttpLimits::default() };
        let (address, _stop) = server(limits).await;
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        let started = Instant::now();
        let mut closed = false;
        for byte in b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle().take(60) {
            if client.write_all(&[*byte]).await.is_err() {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut buffer = [0_u8; 256];
            if let Ok(Ok(read)) = tokio::time::timeout(Duration::from_millis(1), client.read(&mut buffer)).await {
                // The server answers 408 or closes: either way it gave up on us.
                closed = read == 0 || buffer.starts_with(b"HTTP/1.1 408");
                if closed {
                    break;
                }
            }
        }
        assert!(closed, "the server kept a connection whose headers never ended");
        assert!(started.elapsed() < Duration::from_secs(6), "cut off within the header timeout: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_slow_handler_gets_408_and_the_client_address_is_known() {
        let limits = HttpLimits { request: Duration::from_millis(300), ..HttpLimits::default() };
        let (address, _stop) = server(limits).await;
        let client = reqwest::Client::new();
        let ip = client.get(format!("http://{address}/")).send().await.unwrap().text().await.unwrap();
        assert_eq!(ip, "127.0.0.1");
        let slow = client.get(format!("http://{address}/slow")).send().await.unwrap();
        assert_eq!(slow.status(), reqwest::StatusCode::REQUEST_TIMEOUT);
    }
}
