//! Processes under measurement: start them pinned to a CPU, read their CPU time and memory
//! from /proc, stop them.
use anyhow::Context;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A child process that is killed when dropped.
pub struct Proc {
    child: Child,
}

impl Proc {
    /// Runs `program args` under `taskset -c cpus`, output to `log`.
    pub fn pinned(cpus: &str, program: &str, args: &[&str], log: &Path) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log)?;
        let child = Command::new("taskset")
            .args(["-c", cpus, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("start {program} (is it installed? `make setup`)"))?;
        Ok(Self { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the process to stop (SIGTERM) and waits up to `grace` for it to exit, for programs
    /// that must clean up after themselves (nginx's master stops its workers).
    pub fn terminate(&mut self, grace: std::time::Duration) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// User + system CPU seconds of a process (all its threads).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    match (f.get(11), f.get(12)) {
        (Some(u), Some(s)) => (u + s) / ticks_per_second(),
        _ => 0.0,
    }
}

fn ticks_per_second() -> f64 {
    // USER_HZ is 100 on every Linux ABI Weir targets.
    100.0
}

/// True while process `pid` runs (it exists and is not a zombie waiting to be reaped).
pub fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()).is_some_and(|s| s != "Z" && s != "X")
}

/// Resident set size in KiB (`VmRSS`), or peak (`VmHWM`).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.trim_start_matches(':').split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Busy CPU seconds of the whole machine (all CPUs), from /proc/stat.
pub fn machine_busy_seconds() -> f64 {
    busy_seconds("cpu")
}

/// Busy seconds of one CPU (`"0"`, `"1"`, …), from /proc/stat.
pub fn cpu_busy_seconds(cpu: &str) -> f64 {
    busy_seconds(&format!("cpu{cpu}"))
}

/// All but idle and iowait time of the /proc/stat line named `name`.
fn busy_seconds(name: &str) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap_or("");
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return 0.0;
    }
    let total: f64 = v.iter().take(8).sum();
    (total - v[3] - v[4]) / ticks_per_second()
}

/// True when `program` is on PATH.
pub fn installed(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

/// The direct children of `pid` (every thread's), e.g. nginx's workers.
pub fn children(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten();
    let lists = tasks.filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok());
    lists.flat_map(|l| l.split_whitespace().filter_map(|c| c.parse().ok()).collect::<Vec<u32>>()).collect()
}
