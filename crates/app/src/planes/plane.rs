//! The two plane roles as the core sees them: each registers a [`Plane`] as the node's
//! [`Role`], which keeps what only that plane has (the other plane's state; the DPU's outbox of
//! closed host-channel records; the host's view of the DPU's wire leg) and answers the core's
//! hooks with it.
use crate::core::role::Role;
use crate::planes::control::OtherPlane;
use crate::planes::wire_facts::{leg_key, Outbox, WireFacts};
use std::sync::Arc;
use std::time::SystemTime;
use weir_telemetry::records::RecordView;
use weir_telemetry::{Metrics, PlaneLabels};

/// A node running as one of the two planes.
pub(crate) enum Plane {
    /// The DPU: its closed host-channel records wait here for the host plane.
    Dpu { other: Arc<OtherPlane>, outbox: Outbox },
    /// The host plane: the DPU's wire-side records, joined to its own.
    Host { other: Arc<OtherPlane>, wire_facts: WireFacts },
}

impl Plane {
    /// What this plane knows of the other one.
    pub fn other(&self) -> &Arc<OtherPlane> {
        match self {
            Self::Dpu { other, .. } | Self::Host { other, .. } => other,
        }
    }
}

impl Role for Plane {
    fn label(&self) -> &'static str {
        match self {
            Self::Dpu { .. } => "dpu",
            Self::Host { .. } => "host",
        }
    }

    fn closed(&self, r: &RecordView, metrics: &Metrics) {
        match self {
            Self::Dpu { outbox, .. } => {
                if r.captured.is_some() {
                    outbox.push(r.clone(), metrics);
                }
            }
            Self::Host { wire_facts, .. } => {
                if let Some(w) = wire_facts.take(leg_key(r)) {
                    let wire_tcp = w.tcp.unwrap_or_default();
                    tracing::info!(
                        target: "weir::access",
                        conn = r.id, wire_conn = w.id, wire_peer = w.peer, wire_mode = w.mode,
                        wire_local = %w.local, wire_remote = %w.remote, wire_srtt_us = wire_tcp.srtt_us,
                        wire_retransmits = wire_tcp.retransmits, "wire leg, as the DPU reported it"
                    );
                }
            }
        }
    }

    fn annotate(&self, views: &mut [RecordView]) {
        if let Self::Host { wire_facts, .. } = self {
            for v in views {
                v.wire = wire_facts.of(leg_key(v)).map(Box::new);
            }
        }
    }

    /// The conjunction (DESIGN.md "Roles"): this plane by its own checks, then the other one.
    fn readiness(&self, own: Result<(), String>, now: SystemTime) -> Result<(), String> {
        own.map_err(|e| format!("plane {}: {e}", self.label()))?;
        self.other().readiness(now)
    }

    fn refresh(&self, m: &Metrics) {
        let other = self.other();
        let labels = PlaneLabels { plane: other.name };
        m.plane_ready.get_or_create(&labels).set(i64::from(other.readiness(SystemTime::now()).is_ok()));
        if let Some(state) = other.state() {
            m.plane_svid_expiry_seconds.get_or_create(&labels).set(i64::try_from(state.not_after).unwrap_or(i64::MAX));
        }
    }
}
