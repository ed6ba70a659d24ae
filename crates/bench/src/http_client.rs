//! The one HTTP/1.1 client for a node's admin endpoint and for test traffic (`weir top`, `weir
//! scan --admin`, the demo, the bench, the local mesh's readiness wait), on hyper.
use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;

/// A connection's request sender.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Opens an HTTP/1.1 connection to `addr`.
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(addr).await.with_context(|| format!("connect {addr}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// GET `path` at `addr`: (status, body text).
pub async fn get_text(addr: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    get_on(connect(addr).await?, path).await
}

async fn get_on(mut sender: Sender, path: &str) -> anyhow::Result<(u16, String)> {
    let req = Request::builder().uri(path).header("host", "admin").body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// For the CLI, outside any runtime: the body of `GET path` at the admin endpoint `admin`
/// (connected within 2 s, answered within 5 s), or an error naming the endpoint: not reachable
/// ("connecting to the admin endpoint …"), silent, or not a 200.
pub fn get(admin: SocketAddr, path: &str) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let got = rt.block_on(async {
        let sender = tokio::time::timeout(Duration::from_secs(2), connect(admin))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out after 2 s")))
            .with_context(|| format!("connecting to the admin endpoint {admin}"))?;
        tokio::time::timeout(Duration::from_secs(5), get_on(sender, path))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 5 s")))
            .with_context(|| format!("asking the admin endpoint {admin}{path}"))
    });
    let (status, body) = got?;
    if status != 200 {
        bail!("{admin}{path}: HTTP {status}: {}", body.lines().next().unwrap_or(""));
    }
    Ok(body)
}
