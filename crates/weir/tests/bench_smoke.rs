//! `weir bench --quick --out DIR` once, as root on this host: the report it writes is complete
//! and well-formed (every scenario and path of the run has rows, every row has figures or says
//! why not, the page has its charts; the host/DPU path, which needs root and eBPF, measured).
//! No assertion on any speed.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use serde_json::Value;
use std::process::Command;
use std::time::Instant;

/// Scenarios of `--scenario all` and the paths each must report, by name prefix.
const EXPECTED: [(&str, &[&str]); 4] = [
    ("hop", &["direct", "weir (userspace TLS)", "weir (kTLS)", "weir host plane + DPU", "haproxy", "nginx", "envoy"]),
    ("http", &["direct", "weir http, splice", "weir http, copy", "haproxy", "nginx", "envoy"]),
    ("connect", &["no programs", "workload"]),
    ("churn", &["direct", "weir", "haproxy", "nginx", "envoy"]),
];

#[test]
fn quick_bench_writes_a_complete_report() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["bench", "--quick", "--out"])
        .arg(dir.path())
        .output()
        .expect("run weir bench");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "weir bench --quick: {}\n{stdout}\n{stderr}", o.status);
    eprintln!("weir bench --quick took {:.0} s", took.as_secs_f64());

    let text = std::fs::read_to_string(dir.path().join("report.json")).expect("report.json");
    let json: Value = serde_json::from_str(&text).expect("report.json parses");
    let run = &json["run"];
    for key in ["date", "weir_version", "kernel"] {
        assert!(run[key].as_str().is_some_and(|s| !s.is_empty()), "run.{key} in {run}");
    }
    assert!(run["cpus"].as_u64().is_some_and(|n| n >= 1), "run.cpus in {run}");
    assert_eq!(run["quick"], Value::Bool(true));
    assert_eq!(run["reps"].as_u64(), Some(1));
    assert!(run["git_commit"].is_null() || run["git_commit"].as_str().is_some_and(|c| c.len() == 40), "{run}");
    for key in ["bulk_mib", "idle_conns", "wrk_secs", "connects", "churn_secs", "elapsed_s"] {
        assert!(run[key].as_f64().is_some_and(|v| v > 0.0), "run.{key} in {run}");
    }

    let scenarios = json["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, EXPECTED.map(|(s, _)| s), "{text}");
    for s in scenarios {
        assert!(s["error"].is_null(), "scenario failed: {s}");
    }

    let rows = json["rows"].as_array().expect("rows");
    for row in rows {
        for key in ["scenario", "load", "metric", "unit", "path", "role", "better"] {
            assert!(row[key].as_str().is_some_and(|s| !s.is_empty()), "{key} in {row}");
        }
        let figures = ["median", "min", "max"].map(|k| row[k].as_f64());
        match (figures, row["reason"].as_str()) {
            ([Some(median), Some(min), Some(max)], None) => {
                assert!(min <= median && median <= max && min.is_finite() && max.is_finite(), "{row}");
                assert!(row["samples"].as_u64().is_some_and(|n| n >= 1), "{row}");
            }
            ([None, None, None], Some(why)) => assert!(!why.trim().is_empty(), "{row}"),
            _ => panic!("a row needs either median, min and max or a reason: {row}"),
        }
    }
    for (scenario, paths) in EXPECTED {
        let of: Vec<&Value> = rows.iter().filter(|r| r["scenario"] == scenario).collect();
        for prefix in paths {
            assert!(
                of.iter().any(|r| r["path"].as_str().is_some_and(|p| p.starts_with(prefix))),
                "no {scenario} row for a path {prefix}…"
            );
        }
        // The direct path (the ratios' baseline) has its figures.
        assert!(
            of.iter().any(|r| r["role"] == "direct" && r["median"].is_number()),
            "no {scenario} figures for the direct path"
        );
    }
    // The host/DPU path needs only root and eBPF, which this host has (unlike kTLS): it must
    // measure, the host plane's own share too.
    for metric in ["throughput", "host-side mesh CPU"] {
        let planes = rows.iter().find(|r| {
            r["metric"] == metric && r["path"].as_str().is_some_and(|p| p.starts_with("weir host plane + DPU"))
        });
        assert!(planes.is_some_and(|r| r["median"].is_number()), "host/DPU path {metric}: {planes:?}");
    }
    let reasons: Vec<&str> = rows.iter().filter_map(|r| r["reason"].as_str()).collect();
    eprintln!("{} rows, {} without figures: {reasons:?}", rows.len(), reasons.len());

    let html = std::fs::read_to_string(dir.path().join("report.html")).expect("report.html");
    assert!(html.len() > 5000, "report.html is {} bytes", html.len());
    assert!(html.starts_with("<!doctype html>") && html.trim_end().ends_with("</html>"));
    let svgs = html.matches("<svg").count();
    assert!(svgs >= EXPECTED.len(), "{svgs} charts");
    assert_eq!(svgs, html.matches("</svg>").count(), "unclosed svg");
    assert!(html.contains("latency percentiles"), "no latency chart");
    // Self-contained: nothing to load, nothing to run.
    for no in ["<script", "src=", "href=", "@import"] {
        assert!(!html.contains(no), "report.html has {no}");
    }
}
