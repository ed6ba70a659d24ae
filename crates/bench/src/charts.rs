//! The report's SVG charts: bars per path with min–max whiskers and ratio labels, and latency
//! percentiles per path. Plain SVG text, no script, no external assets.
use super::report::{Role, Row};
use std::fmt::Write as _;

/// Metric names the latency chart picks up.
pub const P50: &str = "p50 latency";
/// See [`P50`].
pub const P99: &str = "p99 latency";
/// Metric name of the 99.9th latency percentile.
pub const P999: &str = "p99.9 latency";

pub(super) const GREY: &str = "#718096";
pub(super) const PEER: &str = "#dd6b20";
pub(super) const WEIR: [&str; 3] = ["#2b6cb0", "#6b46c1", "#2f855a"];
pub(super) const WIDTH: f64 = 920.0;

/// A colour per path: grey direct, orange peers, shades for Weir's paths in order.
pub(super) fn colours<'a>(paths: impl Iterator<Item = (&'a str, Role)>) -> Vec<(&'a str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for (path, role) in paths {
        if out.iter().any(|(p, _)| *p == path) {
            continue;
        }
        let weirs = out.iter().filter(|(_, c)| WEIR.contains(c)).count();
        out.push((
            path,
            match role {
                Role::Direct => GREY,
                Role::Peer => PEER,
                Role::Weir => WEIR[weirs % WEIR.len()],
            },
        ));
    }
    out
}

pub(super) fn colour_of(colours: &[(&str, &'static str)], path: &str) -> &'static str {
    colours.iter().find(|(p, _)| *p == path).map_or(GREY, |(_, c)| c)
}

/// Horizontal bars, one per path: median bar, min–max whisker, value and ratios; a path
/// without figures shows its reason instead.
pub(super) fn bar_chart(rows: &[&Row]) -> String {
    const LABEL: f64 = 260.0;
    const PLOT: f64 = 400.0;
    const ROW: f64 = 26.0;
    let scale = nice_ceil(rows.iter().filter_map(|r| r.max.or(r.median)).fold(0.0, f64::max));
    let x = |v: f64| LABEL + PLOT * (v / scale).clamp(0.0, 1.0);
    let bottom = 8.0 + ROW * rows.len() as f64;
    let colours = colours(rows.iter().map(|r| (r.path.as_str(), r.role)));
    let mut s = svg_open(bottom + 22.0);
    // Steps of 0.5 on a scale of 2, of 0.2, 0.5 or 1 on 1, 2.5 and 5 (times a power of ten).
    let steps = if (scale / 10f64.powf(scale.log10().floor()) - 2.0).abs() < 1e-9 { 4 } else { 5 };
    for i in 0..=steps {
        let v = scale * f64::from(i) / f64::from(steps);
        let _ = writeln!(
            s,
            "<line x1=\"{x:.1}\" y1=\"4\" x2=\"{x:.1}\" y2=\"{bottom}\" stroke=\"#e2e8f0\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#4a5568\">{}</text>",
            bottom + 16.0,
            tick(v),
            x = x(v)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let top = 8.0 + ROW * i as f64;
        let mid = top + ROW / 2.0;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{mid:.1}\" dy=\".35em\" text-anchor=\"end\"><title>{}</title>{}</text>",
            LABEL - 8.0,
            esc(&r.path),
            esc(&short(&r.path, 38))
        );
        let (Some(median), Some(min), Some(max)) = (r.median, r.min, r.max) else {
            let why = r.reason.as_deref().unwrap_or("no figures");
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{mid:.1}\" dy=\".35em\" fill=\"#c53030\" font-style=\"italic\"><title>{}</title>{}</text>",
                LABEL + 4.0,
                esc(why),
                esc(&short(why, 90))
            );
            continue;
        };
        let _ = writeln!(
            s,
            "<rect x=\"{LABEL}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"><title>{}: {} {} \
             (min {}, max {}, {} sample(s))</title></rect>",
            top + 4.0,
            x(median) - LABEL,
            ROW - 8.0,
            colour_of(&colours, &r.path),
            esc(&r.path),
            num(median),
            esc(r.unit),
            num(min),
            num(max),
            r.samples
        );
        if max > min {
            let (x0, x1) = (x(min), x(max));
            let _ = writeln!(
                s,
                "<path d=\"M{x0:.1} {mid:.1}H{x1:.1}M{x0:.1} {:.1}V{:.1}M{x1:.1} {:.1}V{:.1}\" stroke=\"#1a202c\"/>",
                mid - 5.0,
                mid + 5.0,
                mid - 5.0,
                mid + 5.0
            );
        }
        let mut label = num(median);
        if let Some(d) = r.ratio_direct.filter(|_| r.role != Role::Direct) {
            let _ = write!(label, " · {d:.2}× direct");
        }
        if let (Some(p), Some(peer)) = (r.ratio_peer, &r.peer) {
            if *peer != r.path {
                let _ = write!(label, " · {p:.2}× {}", peer.split_whitespace().next().unwrap_or("peer"));
            }
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{mid:.1}\" dy=\".35em\">{}</text>",
            x(median).max(x(max)) + 6.0,
            esc(&label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// p50 and p99 per path as dots joined by a line on a log scale, whiskers min–max, with a
/// legend; paths are set a little apart so equal figures stay visible.
pub(super) fn latency_chart(rows: &[&Row]) -> String {
    const LEFT: f64 = 60.0;
    const PLOT_W: f64 = 340.0;
    const TOP: f64 = 10.0;
    const PLOT_H: f64 = 200.0;
    let points = |path: &str, metric: &str| {
        rows.iter().find(|r| r.path == path && r.metric == metric).and_then(|r| Some((r.median?, r.min?, r.max?)))
    };
    let colours = colours(rows.iter().map(|r| (r.path.as_str(), r.role)));
    let latencies = rows.iter().filter(|r| r.metric == P50 || r.metric == P99);
    let (lo, hi) = latencies
        .flat_map(|r| [r.min, r.max])
        .flatten()
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, f64::MIN_POSITIVE), |(lo, hi), v| (lo.min(v), hi.max(v)));
    // Whole decades around the figures.
    let (lo, hi) = (lo.min(hi).log10().floor(), hi.log10().ceil());
    let hi = if hi > lo { hi } else { lo + 1.0 };
    let y = |v: f64| TOP + PLOT_H * (1.0 - ((v.max(1e-9).log10() - lo) / (hi - lo)).clamp(0.0, 1.0));
    let xs = [(P50, "p50", LEFT + PLOT_W * 0.25), (P99, "p99", LEFT + PLOT_W * 0.75)];
    let mut s = svg_open(TOP + PLOT_H + 30.0);
    let steps: &[f64] = if hi - lo > 3.0 { &[1.0] } else { &[1.0, 2.0, 5.0] };
    let ticks = (lo as i32..hi as i32).flat_map(|d| steps.iter().map(move |m| m * 10f64.powi(d)));
    for v in ticks.chain([10f64.powf(hi)]) {
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e2e8f0\"/>\
             <text x=\"{:.1}\" y=\"{y:.1}\" dy=\".35em\" text-anchor=\"end\" fill=\"#4a5568\">{}</text>",
            LEFT + PLOT_W,
            LEFT - 6.0,
            tick(v),
            y = y(v)
        );
    }
    for (_, label, x) in xs {
        let _ =
            writeln!(s, "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>", TOP + PLOT_H + 20.0);
    }
    for (i, &(path, colour)) in colours.iter().enumerate() {
        let (p50, p99) = (points(path, P50), points(path, P99));
        let ly = TOP + 10.0 + 22.0 * i as f64;
        let legend = match (p50, p99) {
            (Some(a), Some(b)) => format!("{}: p50 {} ms, p99 {} ms", short(path, 40), num(a.0), num(b.0)),
            _ => {
                let why =
                    rows.iter().find(|r| r.path == path).and_then(|r| r.reason.as_deref()).unwrap_or("no figures");
                format!("{}: {}", short(path, 40), short(why, 40))
            }
        };
        let _ = writeln!(
            s,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{ly:.1}\" dy=\".35em\"><title>{}</title>{}</text>",
            LEFT + PLOT_W + 30.0,
            ly - 6.0,
            LEFT + PLOT_W + 48.0,
            esc(path),
            esc(&legend)
        );
        let dx = 6.0 * (i as f64 - (colours.len() as f64 - 1.0) / 2.0);
        let pts: Vec<(f64, (f64, f64, f64))> =
            xs.iter().zip([p50, p99]).filter_map(|(&(_, _, x), p)| Some((x + dx, p?))).collect();
        if let [(xa, a), (xb, b)] = pts[..] {
            let _ = writeln!(
                s,
                "<line x1=\"{xa:.1}\" y1=\"{:.1}\" x2=\"{xb:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>",
                y(a.0),
                y(b.0)
            );
        }
        for (x, (median, min, max)) in pts {
            let _ = writeln!(
                s,
                "<path d=\"M{x:.1} {:.1}V{:.1}\" stroke=\"{colour}\"/>\
                 <circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{colour}\"><title>{}: {} ms</title></circle>",
                y(min),
                y(max),
                y(median),
                esc(path),
                num(median)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

pub(super) fn svg_open(height: f64) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {WIDTH} {height:.0}\" font-family=\"sans-serif\" font-size=\"12\" role=\"img\">\n"
    )
}

/// The smallest 1, 2, 2.5 or 5 × 10^n at or above `v` (1 for nothing to show).
pub(super) fn nice_ceil(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().map(|m| m * p).find(|&c| c >= v * (1.0 - 1e-12)).unwrap_or(10.0 * p)
}

/// An axis tick: the value as short as it reads.
pub(super) fn tick(v: f64) -> String {
    format!("{}", round_sig(v, 6))
}

/// `v` to `digits` significant digits.
pub(super) fn round_sig(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let scale = 10f64.powi(digits - 1 - v.abs().log10().floor() as i32);
    (v * scale).round() / scale
}

/// A figure with about three significant digits.
pub(super) fn num(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        a if a >= 0.1 || a == 0.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

pub(super) fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// Text for HTML and SVG content and attributes.
pub(super) fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
