//! What the running kernel offers for kTLS: whether the `tls` ULP is there or loadable, whether
//! it can rekey TLS 1.3, and which `gcm(aes)` implementation it would use. Reads /proc,
//! /lib/modules and /boot; decides in pure functions that the tests call with literal inputs.

use crate::report::Probe;
use serde::Serialize;
use std::path::Path;

/// Can this kernel do kTLS, and how do we know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ktls {
    /// The `tls` ULP is registered or can be loaded.
    pub available: bool,
    /// The evidence, or why not.
    pub reason: String,
}

/// Can kTLS follow a TLS 1.3 KeyUpdate on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rekey {
    /// TLS 1.3 rekey of software kTLS is supported.
    pub supported: bool,
    /// The rule applied and the facts it was applied to.
    pub rule: String,
}

/// The kernel's `gcm(aes)` implementation with the highest priority: the one kTLS gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CryptoDriver {
    /// Driver name, e.g. `generic-gcm-aesni` or `gcm_base(ctr(aes-generic),ghash-generic)`.
    pub driver: String,
    /// Module that provides it (`kernel` when built in).
    pub module: String,
    /// Crypto API priority.
    pub priority: i64,
}

/// Facts gathered from the host that decide kTLS availability.
#[derive(Debug, Clone)]
pub struct KtlsFacts {
    /// Contents of /proc/sys/net/ipv4/tcp_available_ulp, or why it could not be read (it
    /// exists only in the initial network namespace).
    pub available_ulp: Result<String, String>,
    /// Kernel release (`uname -r`).
    pub release: String,
    /// Whether /lib/modules/<release> exists.
    pub modules_dir: bool,
    /// Path of a tls module file under it, if any.
    pub module_file: Option<String>,
    /// `kernel/net/tls/tls.ko` is listed in modules.builtin.
    pub builtin: bool,
    /// The `CONFIG_TLS` line of /boot/config-<release>, if that file exists.
    pub config_line: Option<String>,
}

/// The running kernel's release string.
pub fn release() -> Probe<String> {
    match std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        Ok(s) => Probe::known(s.trim().to_owned()),
        Err(e) => Probe::unknown(format!("/proc/sys/kernel/osrelease: {e}")),
    }
}

/// Reads the facts for [`judge_ktls`] from this host.
pub fn ktls_facts(release: &str) -> KtlsFacts {
    let dir = Path::new("/lib/modules").join(release);
    let module_file = ["tls.ko", "tls.ko.xz", "tls.ko.zst", "tls.ko.gz"]
        .iter()
        .map(|f| dir.join("kernel/net/tls").join(f))
        .find(|p| p.exists())
        .map(|p| p.display().to_string());
    let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
        .is_ok_and(|s| s.lines().any(|l| l.trim() == "kernel/net/tls/tls.ko"));
    let config_line = std::fs::read_to_string(format!("/boot/config-{release}")).ok().map(|s| {
        s.lines()
            .find(|l| l.starts_with("CONFIG_TLS=") || l.starts_with("# CONFIG_TLS is not set"))
            .unwrap_or("# CONFIG_TLS is not set")
            .to_owned()
    });
    KtlsFacts {
        available_ulp: std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp")
            .map_err(|e| format!("/proc/sys/net/ipv4/tcp_available_ulp: {e}")),
        release: release.to_owned(),
        modules_dir: dir.is_dir(),
        module_file,
        builtin,
        config_line,
    }
}

/// Decides kTLS availability from the facts.
pub fn judge_ktls(f: &KtlsFacts) -> Ktls {
    let ulps = f.available_ulp.as_deref().map(str::trim);
    if ulps.is_ok_and(|u| u.split_whitespace().any(|n| n == "tls")) {
        return Ktls { available: true, reason: "`tls` is registered in tcp_available_ulp".into() };
    }
    if let Some(file) = &f.module_file {
        return Ktls { available: true, reason: format!("`tls` module present ({file}); loaded on first use") };
    }
    if f.builtin {
        return Ktls { available: true, reason: "`tls` is built in (modules.builtin)".into() };
    }
    let listed = match ulps {
        Ok("") => "tcp_available_ulp is empty".to_owned(),
        Ok(u) => format!("tcp_available_ulp lists only: {u}"),
        Err(e) => format!("unreadable {e}"),
    };
    let reason = match (&f.config_line, f.modules_dir) {
        (Some(line), _) if line.starts_with("CONFIG_TLS=") => {
            format!("{listed}; /boot/config-{} says {line} but no tls module is installed", f.release)
        }
        (Some(_), _) | (None, true) => format!(
            "kernel built without CONFIG_TLS: {listed}, no tls module under /lib/modules/{} and none built in",
            f.release
        ),
        (None, false) => format!(
            "kernel built without CONFIG_TLS (or its modules are not installed): {listed}, no /lib/modules/{}",
            f.release
        ),
    };
    Ktls { available: false, reason }
}

/// TLS 1.3 rekey support as the kTLS probe found it on a live socket (a second TX key; the
/// kernel's version string is never asked).
pub fn rekey(support: &weir_tls::ktls::Support) -> Rekey {
    use weir_tls::ktls::{Rekey as Probed, Support};
    match support {
        Support::Available(k) => match &k.rekey {
            Probed::Supported => {
                Rekey { supported: true, rule: "a live kTLS socket took a second TX key (the start-up probe)".into() }
            }
            Probed::Unsupported(why) => Rekey { supported: false, rule: why.clone() },
        },
        Support::Unavailable(why) => Rekey { supported: false, rule: format!("no kTLS on this kernel: {why}") },
    }
}

/// The highest-priority `gcm(aes)` entry of /proc/crypto text.
pub fn gcm_aes_driver(proc_crypto: &str) -> Option<CryptoDriver> {
    entries(proc_crypto).filter(|e| e.name == "gcm(aes)").max_by_key(|e| e.priority).map(|e| CryptoDriver {
        driver: e.driver.into(),
        module: e.module.into(),
        priority: e.priority,
    })
}

/// Reads /proc/crypto and picks the `gcm(aes)` driver, or says why there is none.
pub fn active_gcm_aes() -> Probe<CryptoDriver> {
    let text = match std::fs::read_to_string("/proc/crypto") {
        Ok(t) => t,
        Err(e) => return Probe::unknown(format!("/proc/crypto: {e}")),
    };
    if let Some(d) = gcm_aes_driver(&text) {
        return Probe::known(d);
    }
    let aes = entries(&text)
        .filter(|e| e.name == "aes")
        .max_by_key(|e| e.priority)
        .map_or("none".to_owned(), |e| format!("{} (priority {})", e.driver, e.priority));
    Probe::unknown(format!(
        "no gcm(aes) instance in /proc/crypto yet (the kernel builds it on first use by kTLS or IPsec); \
         best aes cipher now: {aes}"
    ))
}

struct Entry<'a> {
    name: &'a str,
    driver: &'a str,
    module: &'a str,
    priority: i64,
}

fn entries(text: &str) -> impl Iterator<Item = Entry<'_>> {
    text.split("\n\n").filter_map(|block| {
        let field = |k: &str| {
            block.lines().find_map(|l| {
                let (key, value) = l.split_once(':')?;
                (key.trim() == k).then(|| value.trim())
            })
        };
        Some(Entry {
            name: field("name")?,
            driver: field("driver")?,
            module: field("module").unwrap_or("unknown"),
            priority: field("priority").and_then(|p| p.parse().ok()).unwrap_or(0),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ktls_from_ulp_list_module_or_builtin_else_a_reason() {
        let base = KtlsFacts {
            available_ulp: Err("gone".into()),
            release: "6.18.0".into(),
            modules_dir: true,
            module_file: None,
            builtin: false,
            config_line: None,
        };
        let with_ulp = KtlsFacts { available_ulp: Ok("mptcp tls\n".into()), ..base.clone() };
        assert!(judge_ktls(&with_ulp).available);
        let with_module =
            KtlsFacts { module_file: Some("/lib/modules/6.18.0/kernel/net/tls/tls.ko.xz".into()), ..base.clone() };
        assert!(judge_ktls(&with_module).reason.contains("tls.ko.xz"));
        assert!(judge_ktls(&KtlsFacts { builtin: true, ..base.clone() }).available);
        assert!(judge_ktls(&base).reason.contains("unreadable gone"), "{}", judge_ktls(&base).reason);
        let none = judge_ktls(&KtlsFacts { available_ulp: Ok("mptcp\n".into()), ..base });
        assert!(!none.available);
        assert!(none.reason.contains("without CONFIG_TLS") && none.reason.contains("mptcp"), "{}", none.reason);
    }

    #[test]
    fn highest_priority_gcm_aes_wins() {
        let text = "name         : gcm(aes)\ndriver       : gcm_base(ctr(aes-generic),ghash-generic)\n\
                    module       : gcm\npriority     : 100\n\n\
                    name         : gcm(aes)\ndriver       : generic-gcm-aesni\nmodule       : aesni_intel\n\
                    priority     : 400\n\nname : aes\ndriver : aes-generic\npriority : 100\n";
        let d = gcm_aes_driver(text).expect("two gcm(aes) entries");
        assert_eq!((d.driver.as_str(), d.module.as_str(), d.priority), ("generic-gcm-aesni", "aesni_intel", 400));
        assert_eq!(gcm_aes_driver("name : aes\ndriver : aes-generic\n"), None);
        assert_eq!(gcm_aes_driver(""), None);
    }
}
