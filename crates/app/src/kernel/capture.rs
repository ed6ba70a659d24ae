//! The capture listener: connections the eBPF programs redirected from workload cgroups. The
//! kernel recorded each one's original destination and workload; this recovers them, checks
//! the workload's L4 rules again (defence in depth), and carries the connection like an
//! outbound one, presenting the workload's own SVID (on a host plane: to the DPU, which does).
use crate::core::conn::{Refusal, Shared};
use crate::outbound::listener as outbound;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// Accepts captured connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    crate::core::conn::accept_each(listener, "capture", |app, from| {
        let shared = shared.clone();
        async move { handle(app, from, &shared).await }
    })
    .await
}

async fn handle(app: TcpStream, from: SocketAddr, shared: &Arc<Shared>) {
    let id = shared.next_id();
    let _ = app.set_nodelay(true);
    let found = shared.orig_dst.as_ref().map(|o| o.take(from));
    let (workload, dst) = match found {
        Some(Ok(Some(found))) => found,
        Some(Ok(None)) | None => {
            return crate::core::conn::refuse_app(
                app,
                shared,
                id,
                Refusal::NoOriginalDestination,
                &format_args!("from {from}"),
            );
        }
        Some(Err(e)) => return crate::core::conn::refuse_app(app, shared, id, Refusal::NoOriginalDestination, &e),
    };
    let Some(w) = shared.workloads.get(&workload) else {
        return crate::core::conn::refuse_app(
            app,
            shared,
            id,
            Refusal::NoOriginalDestination,
            &format_args!("unknown workload {workload}"),
        );
    };
    if w.l4.read().unwrap_or_else(|p| p.into_inner()).denies(dst) {
        // The kernel should have refused this connect(): a rule changed in between, or the
        // programs are not the ones this config compiled. Refuse here too.
        return crate::core::conn::refuse_app(app, shared, id, Refusal::L4Denied, &format_args!("{} -> {dst}", w.name));
    }
    let Some(route) = shared.captured.get(&dst) else {
        return crate::core::conn::refuse_app(
            app,
            shared,
            id,
            Refusal::NoOriginalDestination,
            &format_args!("{dst} is not a captured service"),
        );
    };
    tracing::debug!(conn = id, workload = w.name, %dst, service = route.service, "captured connection");
    let captured = weir_telemetry::records::Captured { workload: w.name.clone(), app: from };
    let via = match (&shared.to_dpu, &w.svid) {
        (Some(_), _) => outbound::Via::Dpu(w.id.clone()),
        (None, Some(svid)) => outbound::Via::Tls(svid.tls.clone()),
        (None, None) => {
            let detail = format_args!("workload {} has no SVID on this node", w.name);
            return crate::core::conn::refuse_app(app, shared, id, Refusal::TlsHandshake, &detail);
        }
    };
    outbound::handle(app, route, &via, shared, Some(captured)).await
}
