//! L4 rules per workload: deny by destination CIDR and port, and a concurrent-connection
//! limit. The same rules are compiled to eBPF map entries (enforced in `connect()`) and checked
//! here again in userspace when a captured connection reaches the node (defence in depth).
use std::net::{IpAddr, SocketAddr};

/// A destination network, optionally one port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DenyRule {
    /// Network address (host bits zero).
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub prefix: u8,
    /// Destination port; 0 = every port.
    pub port: u16,
}

impl DenyRule {
    /// Parses `CIDR`, `CIDR:port`, `[v6CIDR]:port`, or a bare address (a /32 or /128).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (net, port) = match s.strip_prefix('[') {
            Some(rest) => {
                let (net, after) = rest.split_once(']').ok_or("missing ']'")?;
                (net, after.strip_prefix(':'))
            }
            None if s.matches(':').count() == 1 => {
                let (n, p) = s.split_once(':').ok_or("bad port")?;
                (n, Some(p))
            }
            None => (s, None),
        };
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(0) => return Err("port 0 is not a port (leave the port out to mean every port)".into()),
                Ok(p) => p,
                Err(_) => return Err(format!("{p:?} is not a port")),
            },
            None => 0,
        };
        let (addr, prefix) = match net.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (net, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("/{p} is not a prefix length (0..={max})"))?,
            None => max,
        };
        if mask(addr, prefix) != addr {
            return Err(format!("{addr}/{prefix} has host bits set"));
        }
        Ok(Self { addr, prefix, port })
    }

    /// True when the rule covers `dst` (IPv4-mapped IPv6 destinations count as IPv4).
    pub fn covers(&self, dst: SocketAddr) -> bool {
        let ip = canonical(dst.ip());
        (self.port == 0 || self.port == dst.port())
            && ip.is_ipv4() == self.addr.is_ipv4()
            && mask(ip, self.prefix) == self.addr
    }
}

/// The L4 policy of one workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadL4 {
    /// Denied destinations.
    pub deny: Vec<DenyRule>,
    /// Concurrent outbound connections allowed; 0 = unlimited.
    pub max_connections: u32,
}

impl WorkloadL4 {
    /// True when `dst` is denied.
    pub fn denies(&self, dst: SocketAddr) -> bool {
        self.deny.iter().any(|r| r.covers(dst))
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix)) };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix)) };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    #[test]
    fn parses_rule_forms() {
        let r = DenyRule::parse("10.0.0.0/8:443").expect("valid");
        assert_eq!((r.addr, r.prefix, r.port), ("10.0.0.0".parse().expect("ip"), 8, 443));
        assert_eq!(DenyRule::parse("192.0.2.7").expect("valid").prefix, 32);
        let r = DenyRule::parse("[2001:db8::/32]:80").expect("valid");
        assert_eq!((r.prefix, r.port), (32, 80));
        assert_eq!(DenyRule::parse("::1").expect("valid").prefix, 128);
    }

    #[test]
    fn rejects_rules_that_cannot_compile() {
        for (bad, why) in [
            ("10.0.0.1/8", "host bits"),
            ("10.0.0.0/33", "prefix length"),
            ("10.0.0.0/8:0", "port 0"),
            ("10.0.0.0/8:70000", "not a port"),
            ("example.com", "not an IP"),
            ("[::1:80", "missing ']'"),
        ] {
            let err = DenyRule::parse(bad).expect_err(bad);
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn covers_cidr_port_and_mapped_addresses() {
        let p = WorkloadL4 {
            deny: vec![DenyRule::parse("10.1.0.0/16:443").expect("rule"), DenyRule::parse("::1").expect("rule")],
            max_connections: 0,
        };
        assert!(p.denies(sa("10.1.200.3:443")));
        assert!(!p.denies(sa("10.1.200.3:80")), "other port");
        assert!(!p.denies(sa("10.2.0.1:443")), "other network");
        assert!(p.denies(sa("[::ffff:10.1.0.9]:443")), "IPv4-mapped IPv6 is IPv4");
        assert!(p.denies(sa("[::1]:9999")), "any port");
        assert!(!p.denies(sa("127.0.0.1:9999")));
    }
}
