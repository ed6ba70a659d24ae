//! How a role reaches the core: the core calls these hooks at the points where roles differ
//! (a connection's record, its close, the connection list, readiness, a scrape) and never asks
//! which role it is in. A role implements [`Role`] and is registered in the core at start.
use std::time::SystemTime;
use weir_telemetry::records::RecordView;
use weir_telemetry::Metrics;

/// What a role adds to the core's bookkeeping.
pub(crate) trait Role: Send + Sync {
    /// The role's name in records and log lines.
    fn label(&self) -> &'static str;

    /// A mesh connection closed (`record`: as it ended), before its closing log line.
    fn closed(&self, _record: &RecordView, _metrics: &Metrics) {}

    /// The records `/connections` is about to list, to join facts the role holds.
    fn annotate(&self, _views: &mut [RecordView]) {}

    /// Readiness as this role judges it, given the core's own (`own`).
    fn readiness(&self, own: Result<(), String>, _now: SystemTime) -> Result<(), String> {
        own
    }

    /// Brings the role's gauges up to date before metrics are encoded.
    fn refresh(&self, _metrics: &Metrics) {}
}

/// The `node` role: a node on its own, with nothing to add.
pub(crate) struct Standalone;

impl Role for Standalone {
    fn label(&self) -> &'static str {
        "node"
    }
}
