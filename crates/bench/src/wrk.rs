//! Running wrk and reading its report (rate, latency distribution, bytes, errors).
use super::http::Load;
use super::CLIENT_CPU;
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::process::Command;

/// What wrk printed.
#[derive(Debug, Default, PartialEq)]
pub(super) struct WrkOut {
    pub(super) requests: f64,
    pub(super) rps: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    /// From the script's `done` hook (wrk's distribution stops at 99 %).
    pub(super) p999_ms: f64,
    pub(super) read_bytes: f64,
    pub(super) non_2xx_3xx: f64,
    pub(super) socket_errors: Option<String>,
}

/// Runs wrk against `load` through `entry` for `secs`, pinned to the client CPU; an error if it
/// fails, completes nothing, gets any non-2xx/3xx answer or reads less than the bodies.
pub(super) fn wrk(entry: SocketAddr, load: &Load, secs: u64) -> anyhow::Result<WrkOut> {
    let url = format!("http://{entry}{}", load.path);
    let script = std::env::temp_dir().join(format!("weir-bench-wrk-{}.lua", std::process::id()));
    std::fs::write(&script, P999_SCRIPT).context("write the wrk script")?;
    let out = Command::new("taskset")
        .args(["-c", CLIENT_CPU, "wrk", "-t1", &format!("-c{}", load.conns), &format!("-d{secs}s")])
        .args(["--timeout", "10s", "--latency", "-s"])
        .arg(&script)
        .arg(&url)
        .output()
        .context("run wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk {}: {}{}", out.status, stdout.trim(), String::from_utf8_lossy(&out.stderr).trim());
    }
    let w = parse_wrk(&stdout).with_context(|| format!("wrk output:\n{stdout}"))?;
    if w.requests < 1.0 {
        bail!("no request completed ({})", w.socket_errors.as_deref().unwrap_or("no socket errors"));
    }
    if w.non_2xx_3xx > 0.0 {
        bail!("{} of {} responses were not 2xx or 3xx", w.non_2xx_3xx, w.requests);
    }
    // wrk rounds the amount read to two decimals of its unit; heads only add to it.
    if w.read_bytes < 0.99 * w.requests * load.body as f64 {
        bail!("read {} bytes for {} responses of {} body bytes: short bodies", w.read_bytes, w.requests, load.body);
    }
    Ok(w)
}

/// Prints the 99.9th latency percentile (µs) when the run is done.
const P999_SCRIPT: &str = "done = function(summary, latency, requests)\n  \
                           io.write(string.format(\"p99.9_us %d\\n\", latency:percentile(99.9)))\nend\n";

pub(super) fn parse_wrk(text: &str) -> anyhow::Result<WrkOut> {
    let mut w = WrkOut::default();
    let (mut p50, mut p99, mut p999, mut rps, mut requests) = (None, None, None, None, None);
    let mut in_distribution = false;
    for line in text.lines().map(str::trim) {
        if line == "Latency Distribution" {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            match line.split_once('%') {
                Some((pct, value)) if pct.parse::<f64>().is_ok() => {
                    let ms = time_ms(value.trim()).with_context(|| format!("latency {value:?}"))?;
                    match pct {
                        "50" => p50 = Some(ms),
                        "99" => p99 = Some(ms),
                        _ => {}
                    }
                    continue;
                }
                _ => in_distribution = false,
            }
        }
        if let Some(v) = line.strip_prefix("p99.9_us ") {
            p999 = Some(v.trim().parse::<f64>().with_context(|| format!("p99.9 {v:?}"))? / 1000.0);
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>().with_context(|| format!("Requests/sec {v:?}"))?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            w.non_2xx_3xx = v.trim().parse().with_context(|| format!("Non-2xx {v:?}"))?;
        } else if line.starts_with("Socket errors:") {
            w.socket_errors = Some(line.to_owned());
        } else if let Some((n, rest)) = line.split_once(" requests in ") {
            requests = Some(n.trim().parse::<f64>().with_context(|| format!("requests {n:?}"))?);
            let read = rest.split(", ").nth(1).and_then(|r| r.strip_suffix(" read")).context("bytes read")?;
            w.read_bytes = size_bytes(read).with_context(|| format!("bytes read {read:?}"))?;
        }
    }
    w.p50_ms = p50.context("no 50% line in the latency distribution")?;
    w.p99_ms = p99.context("no 99% line in the latency distribution")?;
    w.p999_ms = p999.context("no p99.9 line from the wrk script")?;
    w.rps = rps.context("no Requests/sec line")?;
    w.requests = requests.context("no \"requests in\" line")?;
    Ok(w)
}

/// wrk's time with unit (`us`, `ms`, `s`, `m`, `h`) in milliseconds.
pub(super) fn time_ms(v: &str) -> Option<f64> {
    let units = [("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 60e3), ("h", 3600e3)];
    units.iter().find_map(|(u, f)| v.strip_suffix(u)?.parse::<f64>().ok().map(|n| n * f))
}

/// wrk's amount with binary unit (`B`, `KB`, `MB`, `GB`, `TB`) in bytes.
pub(super) fn size_bytes(v: &str) -> Option<f64> {
    let units =
        [("KB", 1024f64), ("MB", 1024f64.powi(2)), ("GB", 1024f64.powi(3)), ("TB", 1024f64.powi(4)), ("B", 1.0)];
    units.iter().find_map(|(u, f)| v.strip_suffix(u)?.parse::<f64>().ok().map(|n| n * f))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn parses_wrk_output() {
        let out = "Running 5s test @ http://127.0.0.1:8080/1k
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  10.00ms   90.00%
    Req/Sec    25.00k     1.00k   27.00k    80.00%
  Latency Distribution
     50%  850.00us
     75%    1.30ms
     90%    1.50ms
     99%    1.02s
  125000 requests in 5.00s, 150.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 0
  Non-2xx or 3xx responses: 10
Requests/sec:  25000.50
Transfer/sec:     30.00MB
p99.9_us 2500
";
        let w = parse_wrk(out).expect("parses");
        assert_eq!(w.requests, 125000.0);
        assert_eq!(w.rps, 25000.5);
        assert!((w.p50_ms - 0.85).abs() < 1e-9);
        assert!((w.p99_ms - 1020.0).abs() < 1e-9);
        assert!((w.p999_ms - 2.5).abs() < 1e-9);
        assert_eq!(w.read_bytes, 150.0 * 1024.0 * 1024.0);
        assert_eq!(w.non_2xx_3xx, 10.0);
        assert_eq!(w.socket_errors.as_deref(), Some("Socket errors: connect 0, read 2, write 0, timeout 0"));
    }

    #[test]
    fn missing_distribution_is_an_error() {
        assert!(parse_wrk("  10 requests in 1.00s, 10.00KB read\nRequests/sec: 10.00\n").is_err());
    }
}
