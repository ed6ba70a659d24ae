//! The demo's sample backend: an HTTP/1.1 server that serves `GET /bytes/N` (N deterministic
//! bytes), echoes `POST /echo`, and answers `GET /trace` with the traceparent it received.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Byte `i` of every generated body: both ends compute the expected hash from it.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31).wrapping_add(7) % 251) as u8).collect()
}

/// Starts the backend on an ephemeral loopback port.
pub async fn start() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, hyper::service::service_fn(handle))
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn handle(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_owned();
    let body = if path == "/trace" {
        // What trace context reached the backend (the server node sets it on every request).
        let tp = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or("none");
        Bytes::from(tp.to_owned())
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        match n.parse::<usize>() {
            Ok(n) if n <= 1 << 30 => Bytes::from(pattern(n)),
            _ => return Ok(status(StatusCode::BAD_REQUEST)),
        }
    } else if path == "/echo" {
        match req.into_body().collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return Ok(status(StatusCode::BAD_REQUEST)),
        }
    } else {
        return Ok(status(StatusCode::NOT_FOUND));
    };
    Ok(Response::new(Full::new(body)))
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    r
}
