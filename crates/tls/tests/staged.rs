//! A connection on its way to the kernel ([`weir_tls::ktls::Staged`]) before the switch, on this
//! host's kernel (no kTLS needed): the unbuffered rustls handshake against tokio-rustls peers
//! both ways, application data both ways, close_notify, a wrong peer identity refused with
//! rustls' own error, and a peer's KeyUpdate followed in userspace. The switch itself needs a
//! kernel with kTLS: crates/app/tests/ktls.rs, in the guests.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_identity::{Ca, IdentitySource, SpiffeId, Validity};
use weir_tls::ktls;
use weir_tls::{Session, TlsConfigs};

fn configs(ca: &Ca, sa: &str) -> TlsConfigs {
    let id = SpiffeId::workload("weir.test", "test", sa).unwrap();
    let svid = Arc::new(ca.issue(&id, Validity::starting_now(Duration::from_secs(600))).unwrap());
    TlsConfigs::new(svid, &ca.trust_bundle().unwrap(), None, true).unwrap()
}

fn name() -> ServerName<'static> {
    ServerName::try_from("weir.mesh").unwrap()
}

async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    (client, listener.accept().await.unwrap().0)
}

#[tokio::test]
async fn staged_client_talks_to_a_rustls_server_and_follows_its_key_updates() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::init(&dir.path().join("ca"), "weir.test").unwrap();
    let (server_cfg, client_cfg) = (configs(&ca, "server"), configs(&ca, "client"));
    let (c, s) = pair().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg.server());
    let server = tokio::spawn(async move {
        let mut tls = acceptor.accept(s).await.unwrap();
        let mut got = vec![0u8; 5];
        tls.read_exact(&mut got).await.unwrap();
        // Two records, a KeyUpdate between them (asking for the client's too).
        tls.write_all(b"first").await.unwrap();
        tls.get_mut().1.refresh_traffic_keys().unwrap();
        tls.write_all(b"second").await.unwrap();
        tls.flush().await.unwrap();
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.unwrap();
        (got, rest)
    });
    let mut tls = ktls::connect(client_cfg.client(&server_cfg.id()).unwrap(), name(), c).await.unwrap();
    assert_eq!(weir_tls::peer_spiffe_id(tls.tls_state()), Some(server_cfg.id()));
    tls.write_all(b"hello").await.unwrap();
    tls.flush().await.unwrap();
    let mut got = [0u8; 11];
    tls.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"firstsecond");
    // Sent under the client's new key: the server only reads it if the KeyUpdate was answered.
    tls.write_all(b"after the update").await.unwrap();
    tls.shutdown().await.unwrap();
    let (hello, rest) = server.await.unwrap();
    assert_eq!((hello.as_slice(), rest.as_slice()), (&b"hello"[..], &b"after the update"[..]));
}

#[tokio::test]
async fn staged_server_accepts_a_rustls_client_and_sees_its_close_notify() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::init(&dir.path().join("ca"), "weir.test").unwrap();
    let (server_cfg, client_cfg) = (configs(&ca, "server"), configs(&ca, "client"));
    let (c, s) = pair().await;
    let connector = tokio_rustls::TlsConnector::from(client_cfg.client(&server_cfg.id()).unwrap());
    let client = tokio::spawn(async move {
        let mut tls = connector.connect(name(), c).await.unwrap();
        tls.write_all(&[7u8; 40_000]).await.unwrap();
        tls.shutdown().await.unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer).await.unwrap();
        answer
    });
    let mut tls = ktls::accept(server_cfg.server(), s).await.unwrap();
    assert_eq!(weir_tls::peer_spiffe_id(tls.tls_state()), Some(client_cfg.id()));
    let mut got = Vec::new();
    tls.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, vec![7u8; 40_000], "three records, read to the peer's close_notify");
    tls.write_all(b"bye").await.unwrap();
    tls.shutdown().await.unwrap();
    assert_eq!(client.await.unwrap(), b"bye");
}

#[tokio::test]
async fn a_server_with_another_spiffe_id_is_refused_with_rustls_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::init(&dir.path().join("ca"), "weir.test").unwrap();
    let (server_cfg, client_cfg) = (configs(&ca, "impostor"), configs(&ca, "client"));
    let expected = SpiffeId::workload("weir.test", "test", "server").unwrap();
    let (c, s) = pair().await;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg.server());
    let server = tokio::spawn(async move { acceptor.accept(s).await.map(|_| ()) });
    let err = ktls::connect(client_cfg.client(&expected).unwrap(), name(), c).await.unwrap_err();
    let inner = err.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            inner,
            Some(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        ),
        "{err:?}"
    );
    // The server heard why: rustls' alert, not a bare EOF.
    let server_err = server.await.unwrap().unwrap_err();
    assert!(server_err.to_string().contains("received fatal alert"), "{server_err}");
}
