//! The CA's network API in process: a `CaServer` on 127.0.0.1 with a temporary CA, asked by
//! `RemoteCa` (the planes' client) and by hand-made requests.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use weir_identity::{Ca, IdentitySource, SpiffeId, Validity};
use weir_tls::ca_api::{CaServer, Clients, Refusal, RemoteCa, MAX_MESSAGE};
use weir_tls::SpiffeServerVerifier;

const TD: &str = "weir.local";
const DPU_TOKEN: &str = "d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1d1";
const HOST_TOKEN: &str = "4040404040404040404040404040404040404040404040404040404040404040";

fn id(s: &str) -> SpiffeId {
    format!("spiffe://{TD}/{s}").parse().unwrap()
}

/// A CA server on 127.0.0.1 with clients `dpu0` (its plane ID and `ns/host/*`) and `host0`.
struct Served {
    addr: SocketAddr,
    server: Arc<CaServer>,
    root_pem: String,
    dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

impl Served {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::init(&dir.path().join("ca"), TD).unwrap();
        let root_pem = ca.root_pem().to_owned();
        std::fs::write(dir.path().join("dpu0.token"), format!("{DPU_TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("host0.token"), HOST_TOKEN).unwrap();
        let clients = dir.path().join("clients.toml");
        std::fs::write(
            &clients,
            format!(
                "[[clients]]\nname = \"dpu0\"\ntoken_file = \"dpu0.token\"\nids = [\"spiffe://{TD}/ns/dpu/sa/plane\", \"spiffe://{TD}/ns/host/*\"]\n\
                 [[clients]]\nname = \"host0\"\ntoken_file = \"host0.token\"\nids = [\"spiffe://{TD}/ns/hostplane/sa/plane\"]\n"
            ),
        )
        .unwrap();
        let clients = Clients::load(&clients, TD).unwrap();
        let server = CaServer::new(ca, clients, Duration::from_secs(3600)).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(server.clone().serve(listener));
        Self { addr, server, root_pem, dir, _rt: rt }
    }

    fn client(&self, token: &str) -> RemoteCa {
        RemoteCa::new(&self.addr.to_string(), TD, self.root_pem.as_bytes(), token.to_owned()).unwrap()
    }

    fn refused(&self, why: Refusal) -> u64 {
        self.server.stats().refused.get(&why).copied().unwrap_or(0)
    }
}

/// Chain to the root and exactly the expected SPIFFE ID, as a peer's verifier judges it.
fn verify(root_pem: &str, chain: &[CertificateDer<'static>], expected: &SpiffeId) -> Result<(), rustls::Error> {
    let mut roots = rustls::RootCertStore::empty();
    for r in weir_identity::TrustBundle::from_pem(TD, root_pem.as_bytes()).unwrap().roots {
        roots.add(r).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let v = SpiffeServerVerifier::new(Arc::new(roots), expected.clone(), provider);
    let name = ServerName::try_from("weir.mesh").unwrap();
    rustls::client::danger::ServerCertVerifier::verify_server_cert(
        &v,
        &chain[0],
        &chain[1..],
        &name,
        &[],
        UnixTime::now(),
    )
    .map(|_| ())
}

/// Sends `line` over TLS (verifying the CA's certificate) and returns the answer line.
fn raw(served: &Served, line: &[u8]) -> serde_json::Value {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(weir_identity::TrustBundle::from_pem(TD, served.root_pem.as_bytes()).unwrap().roots[0].clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let v = SpiffeServerVerifier::new(Arc::new(roots), id("weir/ca"), provider.clone());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(v))
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("ca").unwrap()).unwrap();
    let sock = TcpStream::connect(served.addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(line).unwrap();
    tls.flush().unwrap();
    let mut answer = String::new();
    std::io::BufReader::new(tls).read_line(&mut answer).unwrap();
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("answer {answer:?}: {e}"))
}

#[test]
fn an_allowed_id_gets_an_svid_that_chains_to_the_root_and_carries_exactly_that_id() {
    let served = Served::start();
    let ca = served.client(DPU_TOKEN);
    let want = id("ns/dpu/sa/plane");
    // Ten days asked, one hour (the server's cap) given.
    let svid = ca.fetch_svid(&want, Duration::from_secs(10 * 86_400)).expect("issued");
    assert_eq!(svid.id, want);
    verify(&served.root_pem, &svid.chain, &want).expect("chains to the root with the asked ID");
    assert!(svid.not_after <= SystemTime::now() + Duration::from_secs(3600 + 5), "lifetime capped by the server");
    assert!(svid.not_after > SystemTime::now() + Duration::from_secs(3500));
    let bundle = ca.trust_bundle().expect("bundle");
    assert_eq!(bundle.roots.len(), 1, "the CA's bundle from the answer");
    assert_eq!(served.server.stats().issued, 1);
}

#[test]
fn the_server_ignores_the_names_a_csr_asks_for() {
    let served = Served::start();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params.subject_alt_names.push(rcgen::SanType::URI(format!("spiffe://{TD}/weir/ca").try_into().unwrap()));
    params.distinguished_name.push(rcgen::DnType::CommonName, "root");
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    let request = serde_json::json!({"token": DPU_TOKEN, "id": id("ns/host/sa/cart").to_string(), "csr_pem": csr, "ttl_secs": 60});
    let answer = raw(&served, format!("{request}\n").as_bytes());
    let chain = answer["chain_pem"].as_str().unwrap_or_else(|| panic!("issued: {answer}"));
    let der: Vec<CertificateDer<'static>> =
        rustls::pki_types::pem::PemObject::pem_slice_iter(chain.as_bytes()).collect::<Result<_, _>>().unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&der[0]).unwrap();
    let san = cert.subject_alternative_name().unwrap().expect("a SAN").value;
    assert_eq!(san.general_names.len(), 1, "exactly one name: {:?}", san.general_names);
    assert_eq!(weir_identity::spiffe_id_of_der(&der[0]).unwrap(), id("ns/host/sa/cart"));
    assert_eq!(cert.public_key().subject_public_key.data.as_ref(), key.public_key_raw(), "the CSR's key");
}

#[test]
fn a_wrong_token_is_refused_with_the_reason() {
    let served = Served::start();
    let err = served.client(&"0".repeat(64)).fetch_svid(&id("ns/dpu/sa/plane"), Duration::from_secs(60)).unwrap_err();
    assert_eq!(err.to_string(), format!("CA {}: refused: unknown token", served.addr));
    assert_eq!(served.refused(Refusal::BadToken), 1);
}

#[test]
fn an_id_outside_the_clients_list_is_refused_with_the_reason() {
    let served = Served::start();
    let host = served.client(HOST_TOKEN);
    let err = host.fetch_svid(&id("ns/dpu/sa/plane"), Duration::from_secs(60)).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("CA {}: refused: id spiffe://{TD}/ns/dpu/sa/plane not allowed for client host0", served.addr)
    );
    host.fetch_svid(&id("ns/hostplane/sa/plane"), Duration::from_secs(60)).expect("its own ID");
    // Nobody gets the CA server's own identity.
    let err = served.client(DPU_TOKEN).fetch_svid(&id("weir/ca"), Duration::from_secs(60)).unwrap_err();
    assert!(err.to_string().contains("not allowed for client dpu0"), "{err}");
    assert_eq!(served.refused(Refusal::NotAllowed), 2);
}

#[test]
fn a_prefix_allows_ids_below_it_and_not_a_sibling_prefix() {
    let served = Served::start();
    let dpu = served.client(DPU_TOKEN);
    for ok in ["ns/host/sa/cart", "ns/host/x"] {
        let svid = dpu.fetch_svid(&id(ok), Duration::from_secs(60)).unwrap_or_else(|e| panic!("{ok}: {e}"));
        assert_eq!(svid.id, id(ok));
    }
    for refused in ["ns/hostile/x", "ns/host", "ns/hostx/sa/cart"] {
        let err = dpu.fetch_svid(&id(refused), Duration::from_secs(60)).unwrap_err();
        assert!(err.to_string().contains("not allowed for client dpu0"), "{refused}: {err}");
    }
    let other_domain: SpiffeId = "spiffe://other.domain/ns/host/sa/cart".parse().unwrap();
    let err = dpu.fetch_svid(&other_domain, Duration::from_secs(60)).unwrap_err();
    assert!(err.to_string().contains("is not in trust domain weir.local"), "{err}");
}

#[test]
fn malformed_requests_get_an_error_answer_and_the_server_keeps_serving() {
    let served = Served::start();
    let answer = raw(&served, b"{not json\n");
    assert!(answer["error"].as_str().unwrap().starts_with("malformed request"), "{answer}");
    assert!(answer.get("chain_pem").is_none());
    let answer = raw(
        &served,
        b"{\"token\":\"x\",\"id\":\"spiffe://weir.local/a\",\"csr_pem\":\"x\",\"ttl_secs\":1,\"extra\":1}\n",
    );
    assert!(answer["error"].as_str().unwrap().contains("unknown field"), "{answer}");
    let too_long = vec![b'a'; MAX_MESSAGE + 10];
    let answer = raw(&served, &too_long);
    assert!(answer["error"].as_str().unwrap().contains("longer than"), "{answer}");
    let bad_csr = serde_json::json!({"token": DPU_TOKEN, "id": id("ns/dpu/sa/plane").to_string(), "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "ttl_secs": 60});
    let answer = raw(&served, format!("{bad_csr}\n").as_bytes());
    assert!(answer["error"].as_str().unwrap().starts_with("bad CSR"), "{answer}");
    assert_eq!(served.refused(Refusal::Malformed), 3);
    assert_eq!(served.refused(Refusal::BadCsr), 1);
    served.client(DPU_TOKEN).fetch_svid(&id("ns/dpu/sa/plane"), Duration::from_secs(60)).expect("still serving");
}

#[test]
fn an_unreachable_or_silent_ca_gives_a_clear_error() {
    let closed = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let anchor = Ca::init(&tempfile::tempdir().unwrap().path().join("ca"), TD).unwrap().root_pem().to_owned();
    let ca = RemoteCa::new(&addr.to_string(), TD, anchor.as_bytes(), DPU_TOKEN.into()).unwrap();
    let err = ca.fetch_svid(&id("ns/dpu/sa/plane"), Duration::from_secs(60)).unwrap_err().to_string();
    assert!(err.starts_with(&format!("CA {addr}: connect: Connection refused")), "{err}");

    // Accepts, never speaks: the handshake times out (3 s), it does not hang.
    let silent = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let ca = RemoteCa::new(&addr.to_string(), TD, anchor.as_bytes(), DPU_TOKEN.into()).unwrap();
    let started = Instant::now();
    let err = ca.fetch_svid(&id("ns/dpu/sa/plane"), Duration::from_secs(60)).unwrap_err().to_string();
    assert_eq!(err, format!("CA {addr}: TLS handshake: timed out after 3 s"));
    assert!(started.elapsed() < Duration::from_secs(6), "{:?}", started.elapsed());
    drop(silent);
}

/// A TLS server presenting `svid`, for one connection.
fn impostor(svid: weir_identity::Svid) -> SocketAddr {
    let listener = StdListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(svid.chain.clone(), svid.private_key())
        .unwrap();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let _ = conn.complete_io(&mut sock);
        let _ = conn.complete_io(&mut sock);
    });
    addr
}

#[test]
fn a_server_with_the_wrong_identity_or_root_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::init(&dir.path().join("ca"), TD).unwrap();
    let valid = Validity::starting_now(Duration::from_secs(600));
    // The right root, another SPIFFE ID.
    let addr = impostor(ca.issue(&id("ns/x/sa/impostor"), valid).unwrap());
    let client = RemoteCa::new(&addr.to_string(), TD, ca.root_pem().as_bytes(), DPU_TOKEN.into()).unwrap();
    let err = client.fetch_svid(&id("ns/dpu/sa/plane"), Duration::from_secs(60)).unwrap_err().to_string();
    assert!(err.starts_with(&format!("CA {addr}: TLS handshake: invalid peer certificate")), "{err}");
    assert!(err.contains("spiffe://weir.local/weir/ca"), "{err}");
    // The right SPIFFE ID from another root.
    let other = Ca::init(&dir.path().join("other"), TD).unwrap();
    let addr = impostor(other.issue(&id("weir/ca"), valid).unwrap());
    let client = RemoteCa::new(&addr.to_string(), TD, ca.root_pem().as_bytes(), DPU_TOKEN.into()).unwrap();
    let err = client.fetch_svid(&id("ns/dpu/sa/plane"), Duration::from_secs(60)).unwrap_err().to_string();
    assert!(err.starts_with(&format!("CA {addr}: TLS handshake: invalid peer certificate")), "{err}");
}

fn clients_error(dir: &Path, toml: &str) -> String {
    let path = dir.join("bad.toml");
    std::fs::write(&path, toml).unwrap();
    Clients::load(&path, TD).unwrap_err().to_string()
}

#[test]
fn a_bad_clients_file_is_refused_naming_the_field() {
    let served = Served::start();
    let dir = served.dir.path();
    std::fs::write(dir.join("short.token"), "abc\n").unwrap();
    std::fs::write(dir.join("empty.token"), "\n").unwrap();
    let entry = |name: &str, token: &str, ids: &str| {
        format!("[[clients]]\nname = \"{name}\"\ntoken_file = \"{token}\"\nids = [{ids}]\n")
    };
    let ok_ids = format!("\"spiffe://{TD}/ns/a/sa/b\"");
    let bad = dir.join("bad.toml").display().to_string();
    let d = dir.display();
    let cases = [
        (
            entry("a", "short.token", &ok_ids),
            format!("{bad}: clients[0].token_file: {d}/short.token: the token is 3 characters"),
        ),
        (
            entry("a", "empty.token", &ok_ids),
            format!("clients[0].token_file: {d}/empty.token: the token is 0 characters"),
        ),
        (entry("a", "missing.token", &ok_ids), format!("clients[0].token_file: {d}/missing.token: No such file")),
        (entry("a", "dpu0.token", "\"spiffe://weir.local/ns/a/*/*\""), "clients[0].ids[0]: ".to_owned()),
        (entry("a", "dpu0.token", "\"http://x\""), "clients[0].ids[0]: \"http://x\" is not a SPIFFE ID".to_owned()),
        (
            entry("a", "dpu0.token", "\"spiffe://other.td/ns/a/sa/b\""),
            "clients[0].ids[0]: \"spiffe://other.td/ns/a/sa/b\" is not in trust domain weir.local".to_owned(),
        ),
        (entry("a", "dpu0.token", ""), "clients[0].ids: empty".to_owned()),
        (
            entry("a", "dpu0.token", &ok_ids) + &entry("b", "dpu0.token", &ok_ids),
            "clients[1].token_file: the same token as client \"a\"".to_owned(),
        ),
        (
            entry("a", "dpu0.token", &ok_ids) + &entry("a", "host0.token", &ok_ids),
            "clients[1].name: client \"a\" is listed twice".to_owned(),
        ),
        ("[[clients]]\nname = \"a\"\nids = []\n".to_owned(), "missing field `token_file`".to_owned()),
        (entry("a", "dpu0.token", &ok_ids) + "colour = \"red\"\n", "line 5: unknown field `colour`".to_owned()),
        (String::new(), "clients: no [[clients]]".to_owned()),
    ];
    for (toml, want) in cases {
        let got = clients_error(dir, &toml);
        assert!(got.contains(&want), "{toml}\n  got:  {got}\n  want: …{want}…");
    }
}
