//! Metrics of the HTTP/1.1 path: requests by outcome and status class, their duration, the
//! policy's verdicts, and body bytes that crossed userspace.
use crate::Direction;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a finished request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Listener.
    pub direction: Direction,
    /// Local service (bounded by config).
    pub service: String,
    /// Method, or `other` for a method outside the standard set (bounded).
    pub method: &'static str,
    /// `1xx` .. `5xx`, or `none` when no response was sent.
    pub status_class: &'static str,
    /// Data-path mode of the connection: `ktls_sw`, `userspace`, …, with `+copy` in copy mode.
    pub mode: &'static str,
    /// ok, local, bad_request, upstream_error, aborted.
    pub result: &'static str,
}

/// Labels of request durations.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// Local service.
    pub service: String,
    /// As in [`RequestLabels`].
    pub status_class: &'static str,
}

/// Labels of policy verdicts.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerdictLabels {
    /// Local service.
    pub service: String,
    /// allow, deny, bad_target, rate_limited.
    pub verdict: &'static str,
}

/// Labels of requests refused for their form.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectedLabels {
    /// Local service.
    pub service: String,
    /// A fixed set: syntax, head_too_large, too_many_headers, length_and_chunked,
    /// bad_content_length, bad_transfer_encoding, bad_chunk, version, head_timeout.
    pub reason: &'static str,
}

/// Labels of userspace body bytes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BodyLabels {
    /// Local service.
    pub service: String,
    /// As in [`RequestLabels`].
    pub mode: &'static str,
}

/// The HTTP path's metric families.
#[derive(Debug)]
pub struct HttpMetrics {
    /// Requests finished.
    pub requests: Family<RequestLabels, Counter>,
    /// Request duration, head in to response end.
    pub duration: Family<DurationLabels, Histogram, fn() -> Histogram>,
    /// Policy verdicts on request heads.
    pub verdicts: Family<VerdictLabels, Counter>,
    /// Body bytes that crossed userspace (0 when both legs splice).
    pub userspace_body: Family<BodyLabels, Counter>,
    /// Requests refused for their form (malformed head, head timeout).
    pub rejected: Family<RejectedLabels, Counter>,
}

fn duration_histogram() -> Histogram {
    // 100 us .. ~26 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 19))
}

impl Default for HttpMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            verdicts: Family::default(),
            userspace_body: Family::default(),
            rejected: Family::default(),
        }
    }
}

impl HttpMetrics {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "http_requests",
            "HTTP requests handled by the proxy, by result and status class",
            self.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request duration, head in to response end",
            self.duration.clone(),
        );
        r.register("http_rejected", "HTTP requests refused for their form, by reason", self.rejected.clone());
        r.register("http_policy_verdicts", "L7 policy verdicts on request heads", self.verdicts.clone());
        r.register(
            "http_userspace_body_bytes",
            "HTTP body bytes that crossed userspace (0 when both legs splice; the body where a leg is userspace TLS or in copy mode)",
            self.userspace_body.clone(),
        );
    }
}

/// A method as a bounded label.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    KNOWN.into_iter().find(|m| *m == method).unwrap_or("other")
}

/// A status as its class label.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "none",
    }
}
