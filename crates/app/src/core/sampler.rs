//! Off the data path: reads `TCP_INFO` of every open mesh leg on a timer and folds new
//! retransmits into the metrics; also the on-demand read a request's log line and span use
//! when the last sample is stale.
use crate::core::conn::{tcp_facts, Shared};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use weir_telemetry::records::{unix_ms, ConnRecord, TcpFacts};
use weir_telemetry::ConnLabels;

/// Runs until the task is aborted.
pub(crate) async fn run(shared: Arc<Shared>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for record in shared.records.all() {
            sample(&shared, &record);
        }
    }
}

/// Reads the record's socket now; `None` once the connection has closed.
pub(crate) fn sample(shared: &Shared, record: &ConnRecord) -> Option<TcpFacts> {
    let s = record.start();
    let info = weir_sys::tcp_info_if_same(record.fd()?, s.local, s.remote)?;
    let facts = tcp_facts(&info);
    let added = record.set_tcp(facts);
    if added > 0 {
        let labels = ConnLabels { direction: s.direction, mode: s.tls_mode, peer: s.peer.clone() };
        shared.metrics.tcp_retransmits.get_or_create(&labels).inc_by(u64::from(added));
    }
    Some(facts)
}

/// The record's latest facts, read afresh if older than `max_age`.
pub(crate) fn facts_within(shared: &Shared, record: &ConnRecord, max_age: Duration) -> Option<TcpFacts> {
    let now = unix_ms(SystemTime::now());
    match record.tcp() {
        Some(t) if now.saturating_sub(t.sampled_unix_ms) <= max_age.as_millis() as u64 => Some(t),
        stale => sample(shared, record).or(stale),
    }
}
