//! Who this process is, as a holder of a journal's lease, and whether another holder is gone:
//! what `sync` and `listen` need to take a journal over from a run that died.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use cardsync_job::Holder;

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// This process, as a lease holder.
pub(crate) fn this_holder() -> Holder {
    Holder::new(host_name(), std::process::id(), now_ms())
        .with_process_start(process_start(std::process::id()))
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// When process `pid` started (clock ticks since boot, from `/proc/PID/stat`), on Linux.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether a holder is provably gone: on this host, and its process no longer runs (or its
/// id now belongs to a process that started at another time).
pub(crate) fn holder_gone(holder: &Holder) -> bool {
    if !Path::new("/proc/self/stat").exists() || holder.host != host_name() {
        return false;
    }
    match (process_start(holder.pid), holder.process_start) {
        (None, _) => true,
        (Some(now), Some(then)) => now != then,
        (Some(_), None) => false,
    }
}
