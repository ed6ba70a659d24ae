//! NIC offload features that decide whether TLS or IPsec crypto can leave the CPU, per
//! interface, from one ethtool netlink `FEATURES_GET` dump (the ethtool crate). The kernel
//! (net/ethtool/features.c) sends `hw` as a value/mask bitset over every feature (a set value
//! bit = changeable), and `active` and `nochange` as plain lists; a feature not changeable in
//! `hw` or listed in `nochange` cannot be switched, which ethtool(8) prints as `[fixed]`.

use crate::report::Probe;
use ethtool::{EthtoolAttr, EthtoolFeatureAttr, EthtoolHeader};
use futures_util::StreamExt;
use serde::Serialize;
use std::time::Duration;

/// The features `weir scan` reports, in ethtool's names.
pub const FEATURES: [&str; 4] = ["tls-hw-tx-offload", "tls-hw-rx-offload", "tls-hw-record", "esp-hw-offload"];

/// One interface's offload features.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// The [`FEATURES`], in that order.
    pub features: Vec<Feature>,
}

/// One feature's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Feature {
    /// ethtool name.
    pub name: String,
    /// On now.
    pub active: bool,
    /// Cannot be changed (ethtool's `[fixed]`).
    pub fixed: bool,
}

impl Feature {
    /// `on`, `off`, `on [fixed]`, `off [fixed]`.
    pub fn label(&self) -> &'static str {
        match (self.active, self.fixed) {
            (true, false) => "on",
            (false, false) => "off",
            (true, true) => "on [fixed]",
            (false, true) => "off [fixed]",
        }
    }
}

/// Builds an interface from one `FEATURES_GET` reply's attributes; `None` without a device name.
pub fn interface(attrs: &[EthtoolFeatureAttr]) -> Option<Interface> {
    let mut name = None;
    let (mut hw, mut active, mut nochange) = (Vec::new(), Vec::new(), Vec::new());
    for attr in attrs {
        match attr {
            EthtoolFeatureAttr::Header(h) => {
                name = h.iter().find_map(|h| match h {
                    EthtoolHeader::DevName(n) => Some(n.clone()),
                    _ => None,
                })
            }
            // `hw` lists every feature; the value flag marks the changeable ones.
            EthtoolFeatureAttr::Hw(bits) => hw.extend(bits.iter().filter(|b| b.value).map(|b| b.name.clone())),
            // These are lists: presence is membership.
            EthtoolFeatureAttr::Active(bits) => active.extend(bits.iter().map(|b| b.name.clone())),
            EthtoolFeatureAttr::NoChange(bits) => nochange.extend(bits.iter().map(|b| b.name.clone())),
            _ => {}
        }
    }
    let has = |set: &[String], f: &str| set.iter().any(|n| n == f);
    let features = FEATURES
        .iter()
        .map(|f| Feature { name: (*f).into(), active: has(&active, f), fixed: !has(&hw, f) || has(&nochange, f) })
        .collect();
    Some(Interface { name: name?, features })
}

/// Dumps every interface's features over ethtool netlink. Must run inside a tokio runtime.
pub async fn interfaces() -> Probe<Vec<Interface>> {
    match tokio::time::timeout(Duration::from_secs(5), dump()).await {
        Ok(Ok(list)) => Probe::known(list),
        Ok(Err(reason)) => Probe::unknown(reason),
        Err(_) => Probe::unknown("ethtool netlink: no answer within 5 s"),
    }
}

async fn dump() -> Result<Vec<Interface>, String> {
    let (connection, mut handle, _) = ethtool::new_connection().map_err(|e| format!("ethtool netlink socket: {e}"))?;
    let conn = tokio::spawn(connection);
    let result = async {
        let mut replies = handle
            .feature()
            .get(None)
            .execute()
            .await
            .map_err(|e| format!("ethtool netlink (is the `ethtool` genetlink family there?): {e}"))?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            let reply = reply.map_err(|e| format!("ethtool FEATURES_GET: {e}"))?;
            let attrs: Vec<_> = reply
                .payload
                .nlas
                .into_iter()
                .filter_map(|a| match a {
                    EthtoolAttr::Feature(f) => Some(f),
                    _ => None,
                })
                .collect();
            out.extend(interface(&attrs));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }
    .await;
    conn.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use ethtool::EthtoolFeatureBit;

    fn bits(names: &[&str], value: bool) -> Vec<EthtoolFeatureBit> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| EthtoolFeatureBit { index: i as u32 + 1, name: (*n).into(), value })
            .collect()
    }

    #[test]
    fn active_changeable_and_fixed() {
        let attrs = vec![
            EthtoolFeatureAttr::Header(vec![EthtoolHeader::DevName("eth0".into())]),
            EthtoolFeatureAttr::Hw(bits(&["tls-hw-tx-offload", "tls-hw-rx-offload", "esp-hw-offload"], true)),
            EthtoolFeatureAttr::Hw(bits(&["tls-hw-record"], false)),
            EthtoolFeatureAttr::Active(bits(&["tls-hw-tx-offload", "tls-hw-record"], true)),
            EthtoolFeatureAttr::NoChange(bits(&["esp-hw-offload"], true)),
        ];
        let i = interface(&attrs).expect("named");
        let labels: Vec<_> = i.features.iter().map(|f| (f.name.as_str(), f.label())).collect();
        assert_eq!(
            labels,
            [
                ("tls-hw-tx-offload", "on"),
                ("tls-hw-rx-offload", "off"),
                ("tls-hw-record", "on [fixed]"),
                ("esp-hw-offload", "off [fixed]")
            ]
        );
        assert_eq!(interface(&attrs[1..]), None, "no header, no name");
    }
}
