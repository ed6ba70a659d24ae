//! Structured results of `weir bench`: every figure as a row (scenario, load, metric, path,
//! median with min–max, ratios to the direct path and to the best peer, or why there is none),
//! written by `--out DIR` as `report.json` and `report.html`, a self-contained page with one
//! inline-SVG bar chart per metric and, for the HTTP scenario, the latency percentiles per path.
use super::charts::{bar_chart, esc, latency_chart, round_sig};
pub use super::charts::{P50, P99, P999};
use anyhow::Context;
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Instant, SystemTime};

/// Version of the JSON layout, raised when a field changes meaning or goes away.
const SCHEMA: u32 = 1;

/// What a path is in its scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// No mesh: the baseline of `ratio_direct`.
    Direct,
    /// Weir.
    Weir,
    /// A reference mesh (haproxy): `ratio_peer` is to the best of them.
    Peer,
}

/// Which way a metric improves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Rates.
    Higher,
    /// Costs and latencies.
    Lower,
}

/// One metric of one path: its figures, or why it has none.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `hop`, `http`, `connect` or `churn`.
    pub scenario: &'static str,
    /// What ran, e.g. `1 KiB` or `256 MiB bulk (iperf3)`.
    pub load: String,
    /// What was measured, e.g. `requests/s`.
    pub metric: &'static str,
    /// Unit of `median`, `min` and `max`.
    pub unit: &'static str,
    /// Which way the metric improves.
    pub better: Better,
    /// The path's name as in the markdown tables.
    pub path: String,
    /// What the path is.
    pub role: Role,
    /// Measurements the figures come from.
    pub samples: usize,
    /// Median over the samples (`None` with a `reason`).
    pub median: Option<f64>,
    /// Smallest sample.
    pub min: Option<f64>,
    /// Largest sample.
    pub max: Option<f64>,
    /// Median ÷ the direct path's median.
    pub ratio_direct: Option<f64>,
    /// Median ÷ the best peer's median.
    pub ratio_peer: Option<f64>,
    /// The peer `ratio_peer` is to.
    pub peer: Option<String>,
    /// Why there are no figures (not installed, failed: …).
    pub reason: Option<String>,
}

/// A table cell: `v` with `digits` decimals, or a dash.
pub fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or("–".to_owned(), |v| format!("{v:.digits$}"))
}

/// A table cell for a row's median, with its min–max when `with_range`; a dash without figures.
pub fn median_cell(r: Option<&Row>, digits: usize, with_range: bool) -> String {
    match r {
        Some(Row { median: Some(m), min: Some(lo), max: Some(hi), .. }) if with_range => {
            format!("{m:.digits$} ({lo:.digits$}–{hi:.digits$})")
        }
        Some(Row { median: Some(m), .. }) => format!("{m:.digits$}"),
        _ => "–".to_owned(),
    }
}

/// One path's samples of a metric, or why it has none.
pub struct Figures {
    path: String,
    role: Role,
    samples: Result<Vec<f64>, String>,
}

impl Figures {
    /// Samples of `path`.
    pub fn of(path: &str, role: Role, samples: Vec<f64>) -> Self {
        Self { path: path.to_owned(), role, samples: Ok(samples) }
    }

    /// `path` has no figures, because of `why`.
    pub fn none(path: &str, role: Role, why: &str) -> Self {
        Self { path: path.to_owned(), role, samples: Err(why.to_owned()) }
    }
}

/// How many samples, and their median, min and max.
type Stat = (usize, (f64, f64, f64));

/// A metric measured on several paths of one scenario.
pub struct Metric {
    /// Scenario name.
    pub scenario: &'static str,
    /// What ran.
    pub load: String,
    /// What was measured.
    pub name: &'static str,
    /// Its unit.
    pub unit: &'static str,
    /// Which way it improves.
    pub better: Better,
}

impl Metric {
    /// One row per path, with ratios to the direct path and to the best peer of the same run.
    pub fn rows(&self, paths: Vec<Figures>) -> Vec<Row> {
        // Per path: how many samples and their median, min and max, or why there are none.
        let stats: Vec<Result<Stat, String>> = paths
            .iter()
            .map(|f| match &f.samples {
                Ok(v) if v.is_empty() => Err("no figures".to_owned()),
                Ok(v) if v.iter().any(|x| !x.is_finite()) => Err("no finite figures".to_owned()),
                Ok(v) => Ok((v.len(), super::median(v.clone()))),
                Err(why) => Err(why.clone()),
            })
            .collect();
        let median_of = |role: Role| {
            let of_role = paths.iter().zip(&stats).filter(move |(f, _)| f.role == role);
            of_role.filter_map(|(f, s)| Some((f.path.as_str(), s.as_ref().ok()?.1 .0)))
        };
        let direct = median_of(Role::Direct).next().map(|(_, m)| m);
        let peer = median_of(Role::Peer).reduce(|a, b| match self.better {
            Better::Higher if b.1 > a.1 => b,
            Better::Lower if b.1 < a.1 => b,
            _ => a,
        });
        let ratio = |a: f64, b: Option<f64>| b.filter(|b| *b > 0.0).map(|b| a / b);
        paths
            .iter()
            .zip(&stats)
            .map(|(f, stat)| {
                let r = |v: f64| round_sig(v, 6);
                let (samples, (median, min, max)) = match stat {
                    Ok((n, m)) => (*n, (Some(r(m.0)), Some(r(m.1)), Some(r(m.2)))),
                    Err(_) => (0, (None, None, None)),
                };
                Row {
                    scenario: self.scenario,
                    load: self.load.clone(),
                    metric: self.name,
                    unit: self.unit,
                    better: self.better,
                    path: f.path.clone(),
                    role: f.role,
                    samples,
                    median,
                    min,
                    max,
                    ratio_direct: median.and_then(|m| ratio(m, direct)).map(|v| round_sig(v, 4)),
                    ratio_peer: median.and_then(|m| ratio(m, peer.map(|p| p.1))).map(|v| round_sig(v, 4)),
                    peer: median.and(peer).map(|p| p.0.to_owned()),
                    reason: stat.as_ref().err().cloned(),
                }
            })
            .collect()
    }
}

/// What one scenario yields: its markdown as printed, its rows, its notes.
pub struct Section {
    /// The tables and notes printed to stdout.
    pub markdown: String,
    /// Every figure.
    pub rows: Vec<Row>,
    /// The notes (also in the markdown).
    pub notes: Vec<String>,
}

/// How the run was set up.
#[derive(Debug, Serialize)]
pub struct Settings {
    /// `--quick`.
    pub quick: bool,
    /// `--reps`.
    pub reps: usize,
    /// `--scenario`.
    pub scenario: String,
    /// MiB per bulk run.
    pub bulk_mib: u64,
    /// Idle connections held per path.
    pub idle_conns: usize,
    /// Seconds per wrk run.
    pub wrk_secs: u64,
    /// Connects per probe run, and probe runs per cgroup.
    pub connects: usize,
    /// Repetitions of the connect scenario.
    pub connect_reps: usize,
    /// Seconds per churn run.
    pub churn_secs: u64,
}

#[derive(Debug, Serialize)]
struct Run {
    date: String,
    weir_version: &'static str,
    git_commit: Option<String>,
    kernel: String,
    cpus: usize,
    cpu_model: String,
    #[serde(flatten)]
    settings: Settings,
    elapsed_s: f64,
}

#[derive(Debug, Serialize)]
struct ScenarioRun {
    name: &'static str,
    elapsed_s: f64,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct Note {
    scenario: &'static str,
    text: String,
}

#[derive(Debug, Serialize)]
struct Json<'a> {
    schema: u32,
    run: &'a Run,
    scenarios: &'a [ScenarioRun],
    rows: &'a [Row],
    notes: &'a [Note],
}

/// The sections of one `weir bench`, collected for `--out`.
pub struct Report {
    started: Instant,
    run: Run,
    scenarios: Vec<ScenarioRun>,
    rows: Vec<Row>,
    notes: Vec<Note>,
}

impl Report {
    /// A report of a run set up as `settings`, on this machine, now.
    pub fn new(settings: Settings) -> Self {
        let date = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let run = Run {
            date: utc(date),
            weir_version: env!("CARGO_PKG_VERSION"),
            git_commit: git_commit(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned(),
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu_model: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
                .unwrap_or_default(),
            settings,
            elapsed_s: 0.0,
        };
        Self { started: Instant::now(), run, scenarios: Vec::new(), rows: Vec::new(), notes: Vec::new() }
    }

    /// Runs scenario `name`, prints its markdown and keeps its rows; its error is kept too
    /// (the report says the scenario failed) and returned.
    pub fn scenario(&mut self, name: &'static str, f: impl FnOnce() -> anyhow::Result<Section>) -> anyhow::Result<()> {
        let started = Instant::now();
        let result = f();
        let elapsed_s = round_sig(started.elapsed().as_secs_f64(), 4);
        match result {
            Ok(s) => {
                print!("{}", s.markdown);
                self.rows.extend(s.rows);
                self.notes.extend(s.notes.into_iter().map(|text| Note { scenario: name, text }));
                self.scenarios.push(ScenarioRun { name, elapsed_s, error: None });
                Ok(())
            }
            Err(e) => {
                self.scenarios.push(ScenarioRun { name, elapsed_s, error: Some(format!("{e:#}")) });
                Err(e)
            }
        }
    }

    /// Writes `dir/report.json` and `dir/report.html`.
    pub fn write(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.run.elapsed_s = round_sig(self.started.elapsed().as_secs_f64(), 4);
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let json =
            Json { schema: SCHEMA, run: &self.run, scenarios: &self.scenarios, rows: &self.rows, notes: &self.notes };
        let mut text = serde_json::to_string_pretty(&json)?;
        text.push('\n');
        for (name, content) in [("report.json", text), ("report.html", self.html())] {
            let path = dir.join(name);
            std::fs::write(&path, content).with_context(|| format!("write {}", path.display()))?;
        }
        Ok(())
    }

    /// The page: run metadata, then per scenario one bar chart per (load, metric), the HTTP
    /// latency percentiles and the notes.
    fn html(&self) -> String {
        let r = &self.run;
        let mut h = String::from(
            "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>weir bench</title>\n<style>\n\
             body { font-family: sans-serif; max-width: 960px; margin: 1em auto; color: #1a202c; }\n\
             figure { margin: 1em 0; } figcaption { font-weight: bold; margin-bottom: .3em; }\n\
             .meta td { padding: 0 1em 0 0; } .err { color: #c53030; } li { margin: .3em 0; }\n\
             </style>\n</head>\n<body>\n",
        );
        let _ = writeln!(h, "<h1>weir bench: {}</h1>", esc(&r.date));
        let _ = writeln!(h, "<table class=\"meta\">");
        let s = &r.settings;
        let meta = [
            ("commit", r.git_commit.clone().unwrap_or_else(|| "unknown".into())),
            ("kernel", r.kernel.clone()),
            ("CPUs", format!("{} × {}", r.cpus, r.cpu_model)),
            ("run", format!("{}, {} rep(s), scenario {}", if s.quick { "quick" } else { "full" }, s.reps, s.scenario)),
            (
                "durations",
                format!(
                    "{} MiB bulk, {} idle connections, {} s per wrk run, {} × {} connects, {} s per churn run; took {:.0} s",
                    s.bulk_mib, s.idle_conns, s.wrk_secs, s.connect_reps, s.connects, s.churn_secs, r.elapsed_s
                ),
            ),
        ];
        for (k, v) in meta {
            let _ = writeln!(h, "<tr><td>{k}</td><td>{}</td></tr>", esc(&v));
        }
        let _ = writeln!(h, "</table>");
        let _ = writeln!(
            h,
            "<p>Bars: medians; whiskers: min–max over the repetitions. Ratios are to the direct path and to \
             the best peer of the same run.</p>"
        );
        for sc in &self.scenarios {
            let _ = writeln!(h, "<h2>{} <small>({:.0} s)</small></h2>", sc.name, sc.elapsed_s);
            if let Some(e) = &sc.error {
                let _ = writeln!(h, "<p class=\"err\">failed: {}</p>", esc(e));
            }
            let rows: Vec<&Row> = self.rows.iter().filter(|r| r.scenario == sc.name).collect();
            let mut groups: Vec<(&str, &str)> = Vec::new();
            for r in &rows {
                if !groups.contains(&(r.load.as_str(), r.metric)) {
                    groups.push((r.load.as_str(), r.metric));
                }
            }
            for &(load, metric) in &groups {
                let g: Vec<&Row> = rows.iter().copied().filter(|r| r.load == load && r.metric == metric).collect();
                let Some(first) = g.first() else { continue };
                let better = if first.better == Better::Higher { "higher" } else { "lower" };
                let _ = writeln!(
                    h,
                    "<figure><figcaption>{}: {} ({}, {better} is better)</figcaption>\n{}</figure>",
                    esc(load),
                    esc(metric),
                    esc(first.unit),
                    bar_chart(&g)
                );
            }
            let mut loads: Vec<&str> = Vec::new();
            for r in rows.iter().filter(|r| r.metric == P50 || r.metric == P99) {
                if !loads.contains(&r.load.as_str()) {
                    loads.push(&r.load);
                }
            }
            for load in loads {
                let g: Vec<&Row> = rows.iter().copied().filter(|r| r.load == load).collect();
                let _ = writeln!(
                    h,
                    "<figure><figcaption>{}: latency percentiles (ms)</figcaption>\n{}</figure>",
                    esc(load),
                    latency_chart(&g)
                );
            }
            let notes: Vec<&Note> = self.notes.iter().filter(|n| n.scenario == sc.name).collect();
            if !notes.is_empty() {
                let _ = writeln!(h, "<details><summary>notes ({})</summary><ul>", notes.len());
                for n in notes {
                    let _ = writeln!(h, "<li>{}</li>", esc(&n.text));
                }
                let _ = writeln!(h, "</ul></details>");
            }
        }
        h.push_str("</body>\n</html>\n");
        h
    }
}

/// `git rev-parse HEAD` in the current directory, if that is a checkout.
fn git_commit() -> Option<String> {
    let out = std::process::Command::new("git").args(["rev-parse", "HEAD"]).output().ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}

/// `secs` since the epoch as an RFC 3339 UTC date (civil-from-days, H. Hinnant).
fn utc(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charts::*;

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_827_696), "2000-02-29T12:34:56Z");
        assert_eq!(utc(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn ratios_are_to_direct_and_the_best_peer() {
        let m = Metric { scenario: "t", load: "l".into(), name: "rate", unit: "1/s", better: Better::Higher };
        let rows = m.rows(vec![
            Figures::of("direct", Role::Direct, vec![100.0, 90.0, 110.0]),
            Figures::of("weir", Role::Weir, vec![50.0]),
            Figures::of("peer a", Role::Peer, vec![25.0]),
            Figures::of("peer b", Role::Peer, vec![40.0]),
            Figures::none("peer c", Role::Peer, "not installed"),
        ]);
        assert_eq!(
            (rows[0].median, rows[0].min, rows[0].max, rows[0].samples),
            (Some(100.0), Some(90.0), Some(110.0), 3)
        );
        assert_eq!(rows[1].ratio_direct, Some(0.5));
        assert_eq!(rows[1].ratio_peer, Some(1.25));
        assert_eq!(rows[1].peer.as_deref(), Some("peer b"));
        assert_eq!(
            (rows[4].median, rows[4].ratio_peer, rows[4].reason.as_deref()),
            (None, None, Some("not installed"))
        );
        let lower = Metric { better: Better::Lower, ..m };
        let rows = lower.rows(vec![Figures::of("a", Role::Peer, vec![3.0]), Figures::of("b", Role::Peer, vec![2.0])]);
        assert_eq!(rows[0].ratio_peer, Some(1.5));
        assert_eq!(
            Metric { better: Better::Lower, ..lower }.rows(vec![Figures::of("x", Role::Weir, vec![])])[0]
                .reason
                .as_deref(),
            Some("no figures")
        );
    }

    #[test]
    fn page_has_a_chart_per_metric_and_the_latencies() {
        let settings = Settings {
            quick: true,
            reps: 3,
            scenario: "http".into(),
            bulk_mib: 1,
            idle_conns: 1,
            wrk_secs: 1,
            connects: 1,
            connect_reps: 3,
            churn_secs: 1,
        };
        let mut report = Report::new(settings);
        let metric = |name, better| Metric { scenario: "http", load: "1 KiB".into(), name, unit: "ms", better };
        let paths = |base: f64| {
            vec![
                Figures::of("direct <nginx>", Role::Direct, vec![base, base * 1.1, base * 0.9]),
                Figures::of("weir a", Role::Weir, vec![base * 2.0, base * 2.5, base * 1.8]),
                Figures::of("weir b", Role::Weir, vec![base * 2.0, base * 2.2, base * 1.9]),
                Figures::none("haproxy", Role::Peer, "not installed: `make setup`"),
            ]
        };
        let mut rows = metric("requests/s", Better::Higher).rows(paths(20_000.0));
        rows.extend(metric(P50, Better::Lower).rows(paths(0.7)));
        rows.extend(metric(P99, Better::Lower).rows(paths(30.0)));
        let section = Section { markdown: String::new(), rows, notes: vec!["a & b".into()] };
        report.scenario("http", || Ok(section)).expect("scenario");
        let html = report.html();
        assert_eq!(html.matches("<svg").count(), 4, "3 metrics and the latencies");
        assert_eq!(html.matches("</svg>").count(), 4);
        assert!(html.contains("direct &lt;nginx&gt;") && html.contains("a &amp; b") && !html.contains("<nginx>"));
        assert!(html.contains("not installed: `make setup`"));
        if let Some(dump) = std::env::var_os("WEIR_REPORT_DUMP") {
            std::fs::write(dump, &html).expect("dump");
        }
    }

    #[test]
    fn scales() {
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(7.3), 10.0);
        assert_eq!(nice_ceil(230.0), 250.0);
        assert_eq!(nice_ceil(1000.0), 1000.0);
        assert_eq!(esc("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
        assert_eq!(round_sig(4279.576150778027, 6), 4279.58);
        assert_eq!(round_sig(0.000123456789, 3), 0.000123);
        assert_eq!(tick(2.5 * 0.1 / 4.0 * 3.0), "0.1875");
    }
}
