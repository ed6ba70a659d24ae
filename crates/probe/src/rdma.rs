//! RDMA devices from /sys/class/infiniband: each port's link layer (InfiniBand or Ethernet for
//! RoCE) and its counters (`counters/` and `hw_counters/`). RDMA moves memory to memory past
//! the socket layer, so no proxy ever sees it.

use crate::report::{Counter, Probe};
use serde::Serialize;
use std::path::Path;

const CLASS: &str = "/sys/class/infiniband";

/// One RDMA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RdmaDevice {
    /// Device name (`mlx5_0`, `rxe0`).
    pub name: String,
    /// Its ports.
    pub ports: Vec<RdmaPort>,
}

/// One port of an RDMA device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RdmaPort {
    /// Port number.
    pub port: String,
    /// `InfiniBand` or `Ethernet` (RoCE); empty if unreadable.
    pub link_layer: String,
    /// `counters/` and `hw_counters/` files (`hw_counters/` names are prefixed `hw:`).
    pub counters: Vec<Counter>,
}

impl RdmaPort {
    /// The value of the counter named `name` as listed here (`hw:sent_pkts` for
    /// `hw_counters/sent_pkts`); `None` if the port has no such readable counter.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters.iter().find(|c| c.name == name).map(|c| c.value)
    }
}

/// Reads every RDMA device of a sysfs class directory (the real one is /sys/class/infiniband).
pub fn devices_in(class: &Path) -> Probe<Vec<RdmaDevice>> {
    let entries = match std::fs::read_dir(class) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probe::known(Vec::new()),
        Err(e) => return Probe::unknown(format!("{}: {e}", class.display())),
    };
    let mut devices: Vec<_> = entries
        .flatten()
        .map(|dev| {
            let mut ports: Vec<_> = names(&dev.path().join("ports"))
                .into_iter()
                .map(|port| {
                    let dir = dev.path().join("ports").join(&port);
                    let link_layer =
                        std::fs::read_to_string(dir.join("link_layer")).unwrap_or_default().trim().to_owned();
                    let mut counters = counters(&dir.join("counters"), "");
                    counters.extend(counters_hw(&dir));
                    RdmaPort { port, link_layer, counters }
                })
                .collect();
            ports.sort_by(|a, b| a.port.cmp(&b.port));
            RdmaDevice { name: dev.file_name().to_string_lossy().into_owned(), ports }
        })
        .collect();
    devices.sort_by(|a, b| a.name.cmp(&b.name));
    Probe::known(devices)
}

/// Reads /sys/class/infiniband.
pub fn devices() -> Probe<Vec<RdmaDevice>> {
    devices_in(Path::new(CLASS))
}

fn counters_hw(port: &Path) -> Vec<Counter> {
    counters(&port.join("hw_counters"), "hw:")
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Counter files whose content is an unsigned integer; others (unreadable, or some drivers'
/// write-only files) are left out.
fn counters(dir: &Path, prefix: &str) -> Vec<Counter> {
    names(dir)
        .into_iter()
        .filter_map(|n| {
            let value = std::fs::read_to_string(dir.join(&n)).ok()?.trim().parse().ok()?;
            Some(Counter { name: format!("{prefix}{n}"), value })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_ports_and_counters_from_a_sysfs_tree() {
        let root = std::env::temp_dir().join(format!("weir-rdma-{}", std::process::id()));
        let port = root.join("rxe0/ports/1");
        std::fs::create_dir_all(port.join("counters")).expect("mkdir");
        std::fs::create_dir_all(port.join("hw_counters")).expect("mkdir");
        std::fs::write(port.join("link_layer"), "Ethernet\n").expect("write");
        std::fs::write(port.join("counters/port_xmit_data"), "42\n").expect("write");
        std::fs::write(port.join("counters/bogus"), "n/a\n").expect("write");
        std::fs::write(port.join("hw_counters/rcvd_pkts"), "7\n").expect("write");
        let got = devices_in(&root);
        std::fs::remove_dir_all(&root).expect("cleanup");
        let devs = got.value().expect("readable");
        assert_eq!(devs.len(), 1);
        assert_eq!(devs[0].name, "rxe0");
        assert_eq!(devs[0].ports[0].link_layer, "Ethernet");
        let names: Vec<_> = devs[0].ports[0].counters.iter().map(|c| (c.name.as_str(), c.value)).collect();
        assert_eq!(names, [("port_xmit_data", 42), ("hw:rcvd_pkts", 7)]);
        assert_eq!(devs[0].ports[0].counter("hw:rcvd_pkts"), Some(7));
        assert_eq!(devs[0].ports[0].counter("rcvd_pkts"), None);
        assert_eq!(devices_in(Path::new("/nonexistent/infiniband")), Probe::known(Vec::new()));
    }
}
