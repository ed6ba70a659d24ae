//! What the benchmarked nodes logged: warnings and errors during a measured run, for the report.
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// UTC seconds of the day of a log timestamp (`2026-01-02T03:04:05.678901Z`).
pub(super) fn seconds_of_day(ts: &str) -> Option<f64> {
    let time = ts.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let (h, m, s) = (parts.next()?.parse::<f64>().ok()?, parts.next()?.parse::<f64>().ok()?, parts.next()?);
    Some(h * 3600.0 + m * 60.0 + s.parse::<f64>().ok()?)
}

pub(super) fn utc_seconds_of_day(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()).rem_euclid(86_400.0)
}

pub(super) fn problem_lines_in(logs: &[PathBuf]) -> Vec<String> {
    let lines: Vec<String> = logs
        .iter()
        .flat_map(|p| read_lines(p))
        .filter(|l| {
            ["WARN", "ERROR", "[warn]", "[error]", "[crit]", "[alert]", "[emerg]"].iter().any(|w| l.contains(w))
        })
        .collect();
    first_lines(lines)
}

pub(super) fn first_lines(mut lines: Vec<String>) -> Vec<String> {
    let n = lines.len();
    if n > 5 {
        lines.truncate(5);
        lines.push(format!("… {} more such lines", n - 5));
    }
    lines
}

/// A log's non-empty lines without ANSI colour codes.
pub(super) fn read_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(strip_ansi).filter(|l| !l.trim().is_empty()).collect()
}

pub(super) fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(super) fn log_tail(logs: &[PathBuf]) -> String {
    let lines: Vec<String> = logs.iter().flat_map(|p| read_lines(p)).collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!(" (log: {})", tail.join(" | "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_log_timestamps() {
        assert_eq!(seconds_of_day("2026-11-27T01:02:03.5Z"), Some(3723.5));
        assert_eq!(seconds_of_day("garbage"), None);
    }

    #[test]
    fn strips_colours() {
        assert_eq!(strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x"), "2026  WARN x");
    }
}
