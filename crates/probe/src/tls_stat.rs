//! Host-wide kTLS counters from /proc/net/tls_stat (net/tls/tls_proc.c): `name value` lines,
//! kept in the kernel's order. The file exists only while the `tls` module is loaded.

use crate::report::Probe;

/// Parses tls_stat text into (name, value) pairs. Lines that are not `name unsigned-integer`
/// are skipped: a counter this parser cannot read is not worth failing the others for.
pub fn parse(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let (name, value) = (it.next()?, it.next()?.parse().ok()?);
            it.next().is_none().then(|| (name.to_owned(), value))
        })
        .collect()
}

/// Reads /proc/net/tls_stat of the caller's network namespace.
pub fn read() -> Probe<Vec<(String, u64)>> {
    match std::fs::read_to_string("/proc/net/tls_stat") {
        Ok(text) => Probe::known(parse(&text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Probe::unknown("no /proc/net/tls_stat: the kernel's tls module is not loaded (or not built)")
        }
        Err(e) => Probe::unknown(format!("/proc/net/tls_stat: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_in_order_and_junk_skipped() {
        let text = "TlsCurrTxSw                     \t2\nTlsRxSw 5\nbroken\nTlsX -1\nTlsY 1 2\n\nTlsRxRekeyOk 0";
        let got = parse(text);
        assert_eq!(got, vec![("TlsCurrTxSw".into(), 2), ("TlsRxSw".into(), 5), ("TlsRxRekeyOk".into(), 0)]);
        assert!(parse("").is_empty());
    }
}
