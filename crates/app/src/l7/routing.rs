//! Where an outbound HTTP request goes: the first route whose Host and path prefix match (the
//! config always ends with a catch-all), then a weighted pick among its split. Pure: the random
//! draw is an argument.
use weir_config::HttpRoute;

/// The first route matching `host` (lower case, no port) and the normalized `path`.
pub(crate) fn choose<'r>(routes: &'r [HttpRoute], host: Option<&str>, path: &str) -> Option<&'r HttpRoute> {
    routes.iter().find(|r| r.host.as_deref().is_none_or(|h| Some(h) == host) && under(&r.path_prefix, path))
}

/// Segment-aware prefix: `/api` covers `/api` and `/api/x`, not `/apix`.
fn under(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The split entry that `draw` (uniform over any u32) lands on, in proportion to the weights.
pub(crate) fn pick(split: &[(String, u32)], draw: u32) -> Option<&str> {
    let total: u64 = split.iter().map(|(_, w)| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut at = u64::from(draw) % total;
    for (service, weight) in split {
        if at < u64::from(*weight) {
            return Some(service);
        }
        at -= u64::from(*weight);
    }
    None
}

/// The Host a request is for: the authority of an absolute-form target, else the Host field;
/// lower case, without a port.
pub(crate) fn host_of(head: &weir_http::RequestHead) -> Option<String> {
    let raw = match crate::l7::http1::absolute_authority(&head.target) {
        Some(a) => a,
        None => {
            let field = head.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("host"))?;
            String::from_utf8_lossy(&field.1).trim().to_owned()
        }
    };
    // An IPv6 literal keeps its brackets; anything else loses its port.
    let host = match raw.find(']') {
        Some(end) if raw.starts_with('[') => &raw[..=end],
        _ => raw.split(':').next().unwrap_or(""),
    };
    Some(host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn route(host: Option<&str>, prefix: &str, split: &[(&str, u32)]) -> HttpRoute {
        HttpRoute {
            host: host.map(str::to_owned),
            path_prefix: prefix.to_owned(),
            split: split.iter().map(|(s, w)| ((*s).to_owned(), *w)).collect(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            retries: 0,
        }
    }

    #[test]
    fn first_match_by_host_then_segment_aware_prefix_then_catch_all() {
        let routes = [
            route(Some("api.example"), "/v2", &[("api-v2", 1)]),
            route(None, "/static/", &[("cdn", 1)]),
            route(None, "/", &[("default", 1)]),
        ];
        let svc = |host: Option<&str>, path: &str| choose(&routes, host, path).map(|r| r.split[0].0.as_str());
        assert_eq!(svc(Some("api.example"), "/v2"), Some("api-v2"));
        assert_eq!(svc(Some("api.example"), "/v2/users"), Some("api-v2"));
        assert_eq!(svc(Some("api.example"), "/v20"), Some("default"), "segment-aware");
        assert_eq!(svc(Some("other.example"), "/v2"), Some("default"), "host must match");
        assert_eq!(svc(None, "/static/a.css"), Some("cdn"));
        assert_eq!(svc(None, "/static"), Some("default"), "a prefix ending in / is a plain prefix");
    }

    #[test]
    fn weighted_picks_follow_the_weights_exactly_over_the_draw_space() {
        let split = [("a".to_owned(), 90), ("b".to_owned(), 10)];
        let mut counts = [0u32; 2];
        for draw in 0..1000u32 {
            match pick(&split, draw) {
                Some("a") => counts[0] += 1,
                Some("b") => counts[1] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(counts, [900, 100]);
        assert_eq!(pick(&[], 5), None);
    }

    #[test]
    fn host_comes_from_absolute_form_or_the_host_field_without_port() {
        let head = |raw: &[u8]| match weir_http::parse_request(raw, &weir_http::Limits::default()) {
            Ok(weir_http::Parsed::Complete { head, .. }) => head,
            other => panic!("{other:?}"),
        };
        assert_eq!(host_of(&head(b"GET / HTTP/1.1\r\nHost: API.Example:8080\r\n\r\n")).as_deref(), Some("api.example"));
        assert_eq!(host_of(&head(b"GET http://b.example/x HTTP/1.1\r\nHost: a\r\n\r\n")).as_deref(), Some("b.example"));
        assert_eq!(host_of(&head(b"GET / HTTP/1.1\r\n\r\n")), None);
    }
}
