//! What `pyclave bench` reads off the system: latency percentiles, a
//! process's CPU time, and the memory of the zygote and idle workers.

use std::time::Duration;

use serde::Serialize;

/// Latency summary of one run, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latencies {
    pub count: usize,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Latencies {
    pub fn of(samples: &mut [u64]) -> Self {
        samples.sort_unstable();
        let at = |fraction: f64| {
            if samples.is_empty() {
                return 0;
            }
            let index = ((samples.len() as f64 * fraction).ceil() as usize).saturating_sub(1);
            samples[index.min(samples.len() - 1)]
        };
        Self {
            count: samples.len(),
            p50_us: at(0.50),
            p90_us: at(0.90),
            p99_us: at(0.99),
            max_us: samples.last().copied().unwrap_or(0),
        }
    }
}

/// The median of `values` (0 for none).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// CPU time a process has used so far (all its threads, those gone too),
/// to the nanosecond: `/proc`'s utime and stime count 10 ms ticks, coarser
/// than a short run's share per job.
pub fn process_cpu(pid: u32) -> Duration {
    nix::time::clock_getcpuclockid(nix::unistd::Pid::from_raw(pid as i32))
        .and_then(nix::time::clock_gettime)
        .map(Duration::from)
        .unwrap_or_default()
}

/// CPU time the whole machine has spent not idle so far (user, nice,
/// system, irq and softirq of every CPU in `/proc/stat`).
pub fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .find_map(|line| line.strip_prefix("cpu "))
        .map(|fields| {
            let fields: Vec<u64> = fields.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            // user nice system idle iowait irq softirq ...
            [0, 1, 2, 5, 6].iter().filter_map(|&i| fields.get(i)).sum()
        })
        .unwrap_or(0);
    from_clock_ticks(ticks)
}

/// `/proc`'s clock ticks as time.
fn from_clock_ticks(ticks: u64) -> Duration {
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / per_second)
}

/// `key` of `/proc/<pid>/<file>` in kB, as bytes.
fn proc_kb(pid: u32, file: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok().map(|kb| kb * 1024)
    })
}

/// Resident set size.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    proc_kb(pid, "status", "VmRSS")
}

/// Proportional set size, and the unique set size: the process's own
/// memory, which its exit frees. That is its private anonymous pages, per
/// mapping the lesser of `Anonymous` and `Private_Dirty`: a file's pages
/// stay in the page cache whoever maps them (the zygote's heap file
/// included: a page of it only one worker maps counts as private in
/// `smaps`), and anonymous pages it shares with the zygote are not its own.
pub fn pss_uss_bytes(pid: u32) -> Option<(u64, u64)> {
    let pss = proc_kb(pid, "smaps_rollup", "Pss")?;
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).ok()?;
    Some((pss, private_anonymous_bytes(&smaps)))
}

fn private_anonymous_bytes(smaps: &str) -> u64 {
    let kb = |line: &str, key: &str| -> Option<u64> {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    };
    let (mut total, mut anonymous, mut private_dirty) = (0, 0, 0);
    for line in smaps.lines() {
        if let Some(value) = kb(line, "Anonymous") {
            anonymous = value;
        } else if let Some(value) = kb(line, "Private_Dirty") {
            private_dirty = value;
        } else if line.starts_with("VmFlags") {
            // The last field of each mapping.
            total += anonymous.min(private_dirty);
            (anonymous, private_dirty) = (0, 0);
        }
    }
    total * 1024
}

/// Children of `pid` (from `/proc/<pid>/task/*/children`).
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| text.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).rev().collect();
        let summary = Latencies::of(&mut samples);
        assert_eq!((summary.p50_us, summary.p90_us, summary.p99_us, summary.max_us), (50, 90, 99, 100));
        assert_eq!(Latencies::of(&mut []).p99_us, 0);
        assert_eq!(Latencies::of(&mut [7]).p50_us, 7);
    }

    #[test]
    fn only_private_anonymous_pages_are_a_process_s_own() {
        let smaps = "\
7f00-7f10 rw-p 00000000 00:01 94497 /memfd:pyclave-zygote-heap (deleted)
Private_Dirty:      9304 kB
Anonymous:          1644 kB
VmFlags: rd wr mr mw me ac
7f10-7f20 rw-p 00000000 00:00 0
Shared_Dirty:       3000 kB
Private_Dirty:        40 kB
Anonymous:          3040 kB
VmFlags: rd wr mr mw me ac
7f20-7f30 r-xp 00000000 08:01 12 /usr/lib/libc.so.6
Private_Clean:       100 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
";
        assert_eq!(private_anonymous_bytes(smaps), (1644 + 40) * 1024);
    }

    #[test]
    fn own_process_figures_are_readable() {
        let me = std::process::id();
        assert!(rss_bytes(me).is_some_and(|rss| rss > 0));
        let (pss, uss) = pss_uss_bytes(me).expect("smaps_rollup");
        assert!(pss > 0 && uss > 0);
        let busy = std::time::Instant::now();
        while busy.elapsed() < Duration::from_millis(30) {}
        assert!(process_cpu(me) > Duration::ZERO);
    }
}
