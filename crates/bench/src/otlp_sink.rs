//! A stand-in OTLP/gRPC collector for the full-telemetry row: answers every export call with
//! an empty success, counting calls and bytes, so span export costs Weir what a real
//! collector on the same host would (HTTP/2, protobuf encoding) without one being installed.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;

/// A running sink.
pub(super) struct Sink {
    pub addr: SocketAddr,
    calls: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sink {
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (calls, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (c, b) = (calls.clone(), bytes.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (c, b) = (c.clone(), b.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (c, b) = (c.clone(), b.clone());
                        async move {
                            let body = req.into_body().collect().await.map(|r| r.to_bytes().len()).unwrap_or(0);
                            c.fetch_add(1, Ordering::Relaxed);
                            b.fetch_add(body as u64, Ordering::Relaxed);
                            Ok::<_, std::convert::Infallible>(ok_response())
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Ok(Self { addr, calls, bytes, task })
    }

    /// What it received, for the report's notes.
    pub fn summary(&self) -> String {
        let (calls, bytes) = (self.calls.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed));
        format!("{calls} OTLP export calls, {:.1} MiB of spans", bytes as f64 / (1 << 20) as f64)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// gRPC success: an empty message (5-byte frame header, length 0) and `grpc-status: 0`.
fn ok_response() -> Response<http_body_util::combinators::WithTrailers<Full<Bytes>, TrailersReady>> {
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", hyper::header::HeaderValue::from_static("0"));
    let body = Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])).with_trailers(std::future::ready(Some(Ok(trailers))));
    let mut r = Response::new(body);
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/grpc"));
    r
}

type TrailersReady = std::future::Ready<Option<Result<hyper::HeaderMap, std::convert::Infallible>>>;
