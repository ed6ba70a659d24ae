//! HTTP on the mesh: the one L7 decision per request (rate limit, policy, normalization),
//! request telemetry, HTTP/1.1 and HTTP/2 serving of inbound services, and the routing table
//! of outbound HTTP listeners. Knows no role; opens no mesh connection.
pub(crate) mod h2;
pub(crate) mod http1;
pub(crate) mod routing;
