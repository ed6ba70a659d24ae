//! GETs from a running node's admin endpoint (`weir top`, `weir scan --admin`): one HTTP/1.0
//! request, the whole body, and a clear error naming the endpoint when it is not a 200.
use anyhow::{bail, Context as _};
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The body of `GET path` at `admin`.
pub fn get(admin: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(2))
        .with_context(|| format!("connecting to the admin endpoint {admin}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: weir\r\n\r\n").as_bytes())?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { bail!("{admin}: not an HTTP response") };
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("{admin}{path}: {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_owned())
}
