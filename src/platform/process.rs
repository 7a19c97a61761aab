//! What this process uses, as the operating system counts it, for the
//! standard `process_*` metrics: read from /proc/self on Linux.

use super::Usage;

/// Reads /proc/self and the open-files limit.
pub(crate) fn usage() -> Usage {
    let resident_bytes = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
        .map(|kib| kib * 1024);
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|entries| i64::try_from(entries.count()).unwrap_or(i64::MAX));
    let max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _)| i64::try_from(soft).unwrap_or(i64::MAX));
    // utime and stime, the 14th and 15th fields, in clock ticks (USER_HZ,
    // 100 on Linux); the command name before them may hold spaces.
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .map(|ticks| ticks as f64 / 100.0);
    Usage {
        resident_bytes,
        open_fds,
        max_fds,
        cpu_seconds,
    }
}
