//! The admin endpoint (loopback by default): `/healthz`, `/readyz`, `/metrics`, `/status`,
//! `/connections` (open connections' records), `/kernel/connections`, `/rdma` (RDMA intents
//! and queue pairs).
use crate::core::conn::Shared;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::net::TcpListener;
use weir_telemetry::records::RecordView;
use weir_telemetry::{Metrics, ResultLabels, TlsStatLabels};
use weir_tls::ktls::Support;

pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(route(&req, &shared)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                tracing::debug!(error = %e, "admin connection error");
            }
        });
    }
}

fn route(req: &Request<hyper::body::Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match readiness(shared) {
            Ok(()) => text(StatusCode::OK, "ready\n".into()),
            Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {reason}\n")),
        },
        "/metrics" => {
            let mut r = text(StatusCode::OK, metrics_text(shared));
            if let Ok(v) = "text/plain; version=0.0.4; charset=utf-8".parse() {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        }
        "/status" => text(StatusCode::OK, status_json(shared)),
        "/connections" => text(StatusCode::OK, connections_json(shared)),
        "/kernel/connections" => text(StatusCode::OK, crate::kernel::facts::connections_json(shared)),
        "/rdma" => match &shared.rdma {
            Some(rdma) => text(StatusCode::OK, rdma.report()),
            None => text(StatusCode::NOT_FOUND, "no RDMA settings in this node's config\n".into()),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

/// Every open mesh connection's record, as a JSON array (what `weir top` shows).
fn connections_json(shared: &Shared) -> String {
    serde_json::to_string(&connections(shared)).unwrap_or_else(|_| "[]".into())
}

/// Every open mesh connection's record by id, a host plane's joined with the DPU's record of
/// the same connection.
pub(crate) fn connections(shared: &Shared) -> Vec<RecordView> {
    let now = SystemTime::now();
    let mut views: Vec<_> = shared.records.all().iter().map(|r| r.view(now)).collect();
    shared.role.annotate(&mut views);
    views.sort_by_key(|v| v.id);
    views
}

/// Ready when this plane is ready by its own checks and, for a host plane or a DPU, the
/// other plane is too (DESIGN.md "Roles": readiness is the conjunction).
fn readiness(shared: &Shared) -> Result<(), String> {
    let now = SystemTime::now();
    shared.role.readiness(own_readiness(shared, now), now)
}

/// Ready by this plane's own checks: its SVID and every SVID it holds for workloads are valid
/// and rotating.
pub(crate) fn own_readiness(shared: &Shared, now: SystemTime) -> Result<(), String> {
    shared.store.readiness(now)?;
    for w in shared.workloads.values() {
        if let Some(svid) = &w.svid {
            svid.store.readiness(now).map_err(|e| format!("workload {}: {e}", w.name))?;
        }
    }
    for (name, store) in &shared.acting_for {
        store.readiness(now).map_err(|e| format!("workload {name}: {e}"))?;
    }
    Ok(())
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}

/// Refreshes the gauges read from identity state, then encodes every metric.
pub(crate) fn metrics_text(shared: &Shared) -> String {
    let m = &shared.metrics;
    crate::kernel::facts::fold(shared, &mut shared.kernel_reported.lock().unwrap_or_else(|p| p.into_inner()));
    let svid = shared.store.current();
    let expiry = svid.not_after.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    m.svid_expiry_seconds.set(i64::try_from(expiry).unwrap_or(i64::MAX));
    let state = shared.store.rotation_state();
    // Counters can only go up: bring them level with the store's totals.
    for (result, total) in [("ok", state.rotations), ("error", state.failures)] {
        let c = m.svid_rotations.get_or_create(&ResultLabels { result });
        c.inc_by(total.saturating_sub(c.get()));
    }
    shared.role.refresh(m);
    if shared.rdma.is_some() {
        crate::rdma::port_counters(shared);
    }
    // Host-wide kTLS counters (decrypt errors, device resyncs, …): absent without the tls module.
    if let weir_probe::Probe::Known { value } = weir_probe::tls_stat::read() {
        for (stat, v) in value {
            m.kernel_tls_stat.get_or_create(&TlsStatLabels { stat }).set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }
    Metrics::encode(&m.registry())
}

pub(crate) fn active_connections(shared: &Shared) -> i64 {
    shared.open.load(std::sync::atomic::Ordering::Relaxed)
}

fn status_json(shared: &Shared) -> String {
    let svid = shared.store.current();
    let state = shared.store.rotation_state();
    let (ktls, reason) = match &shared.ktls {
        Support::Available(k) => (true, format!("kernel TLS available ({} TLS 1.3 suites)", k.suites.len())),
        Support::Unavailable(reason) => (false, reason.clone()),
    };
    // Whether the kernel rekeys, as the start-up probe found: null without kTLS.
    let rekey = shared.ktls.kernel().map(|k| match &k.rekey {
        weir_tls::ktls::Rekey::Supported => {
            serde_json::json!({ "supported": true, "records_per_key": k.records_per_key })
        }
        weir_tls::ktls::Rekey::Unsupported(why) => {
            serde_json::json!({ "supported": false, "records_per_key": k.records_per_key, "reason": why })
        }
    });
    let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    serde_json::json!({
        "spiffe_id": svid.id.as_str(),
        "svid_serial": svid.serial,
        "svid_not_after": unix(svid.not_after),
        "rotations": state.rotations,
        "rotation_failures": state.failures,
        "last_rotation_error": state.last_error,
        "ktls": ktls,
        "mode_reason": reason,
        "ktls_rekey": rekey,
        "ready": readiness(shared).is_ok(),
    })
    .to_string()
        + "\n"
}
