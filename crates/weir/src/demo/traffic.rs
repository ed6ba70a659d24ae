//! The demo's clients: HTTP/1.1 over the mesh (through the client node's outbound port), and
//! one impostor that tries the server node directly with an identity policy does not allow.
use anyhow::bail;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use weir_bench::http_client::get_text;
use weir_bench::http_client::{connect, Sender};

/// Sends a request and returns (status, body sha256, body length).
async fn exchange(sender: &mut Sender, method: &str, path: &str, body: Bytes) -> anyhow::Result<(u16, Vec<u8>, u64)> {
    let req = Request::builder().method(method).uri(path).header("host", "echo").body(Full::new(body))?;
    let mut resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let (mut h, mut n) = (Sha256::new(), 0u64);
    while let Some(frame) = resp.body_mut().frame().await {
        if let Ok(data) = frame?.into_data() {
            h.update(&data);
            n += data.len() as u64;
        }
    }
    Ok((status, h.finalize().to_vec(), n))
}

/// Latencies of many small keep-alive requests.
pub struct Small {
    pub requests: usize,
    pub connections: usize,
    pub latencies: Vec<Duration>,
}

/// `requests` GETs of 1 KiB spread over `connections` keep-alive connections, each body
/// checked.
pub async fn small_requests(addr: SocketAddr, requests: usize, connections: usize) -> anyhow::Result<Small> {
    let want = Sha256::digest(super::backend::pattern(1024)).to_vec();
    let per = requests.div_ceil(connections);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let want = want.clone();
        tasks.push(tokio::spawn(async move {
            let mut sender = connect(addr).await?;
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let (status, hash, _) = exchange(&mut sender, "GET", "/bytes/1024", Bytes::new()).await?;
                lat.push(t.elapsed());
                if status != 200 || hash != want {
                    bail!("small request: status {status}, body mismatch {}", hash != want);
                }
            }
            anyhow::Ok(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    latencies.sort();
    Ok(Small { requests: latencies.len(), connections, latencies })
}

/// One large download, hash-checked: (bytes, seconds).
pub async fn large_download(addr: SocketAddr, len: usize) -> anyhow::Result<(u64, f64)> {
    let want = Sha256::digest(super::backend::pattern(len)).to_vec();
    let mut sender = connect(addr).await?;
    let t = Instant::now();
    let (status, hash, n) = exchange(&mut sender, "GET", &format!("/bytes/{len}"), Bytes::new()).await?;
    let secs = t.elapsed().as_secs_f64();
    if status != 200 || hash != want || n != len as u64 {
        bail!("large download: status {status}, {n} of {len} bytes, hash match {}", hash == want);
    }
    Ok((n, secs))
}

/// One upload echoed back, hash-checked: bytes.
pub async fn upload_echo(addr: SocketAddr, len: usize) -> anyhow::Result<u64> {
    let body = Bytes::from(super::backend::pattern(len));
    let want = Sha256::digest(&body).to_vec();
    let mut sender = connect(addr).await?;
    let (status, hash, n) = exchange(&mut sender, "POST", "/echo", body).await?;
    if status != 200 || hash != want {
        bail!("upload echo: status {status}, {n} of {len} bytes, hash match {}", hash == want);
    }
    Ok(n)
}

/// An impostor holding a valid SVID of the same CA, but an identity the server's policy does
/// not list, connects straight to the server node. Returns what the server answered.
pub async fn impostor(
    inbound: SocketAddr,
    ca: &weir_identity::Ca,
    server_id: &weir_identity::SpiffeId,
) -> anyhow::Result<String> {
    use weir_identity::IdentitySource;
    use weir_tls::preamble::{Protocol, Request as Preamble, Status};
    let id = weir_identity::SpiffeId::workload(ca.trust_domain(), "demo", "impostor")?;
    let svid = Arc::new(ca.fetch_svid(&id, Duration::from_secs(300))?);
    let configs = weir_tls::TlsConfigs::new(svid, &ca.trust_bundle()?, None, false)?;
    let tcp = TcpStream::connect(inbound).await?;
    let name = rustls::pki_types::ServerName::try_from("weir.mesh")?;
    let mut tls = tokio_rustls::TlsConnector::from(configs.client(server_id)?).connect(name, tcp).await?;
    tls.write_all(&Preamble { service: "echo".into(), protocol: Protocol::Tcp }.encode()?).await?;
    let mut answer = [0u8; 6];
    match tls.read_exact(&mut answer).await {
        Ok(_) => Ok(format!("{:?}", Status::decode(&answer)?)),
        Err(e) => Ok(format!("connection closed ({e})")),
    }
}

/// What the L7 path did to two probes: a request its policy must deny, and one whose trace
/// context must reach the backend.
pub struct L7 {
    /// Status of `GET /admin` (the demo policy denies it).
    pub admin_status: u16,
    /// The traceparent the backend received for `GET /trace`.
    pub traceparent: String,
}

pub async fn l7_checks(addr: SocketAddr) -> anyhow::Result<L7> {
    let (admin_status, _) = get_text(addr, "/admin/users").await?;
    let (_, traceparent) = get_text(addr, "/trace").await?;
    Ok(L7 { admin_status, traceparent })
}
