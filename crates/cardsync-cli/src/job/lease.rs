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

/// When process `pid` started (clock ticks since boot, from `/proc/PID/stat`), on Linux, and
/// whether it has ended but was not reaped yet (a zombie, state `Z`; or `X`, dead).
fn process_stat(pid: u32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<(u64, bool)> {
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = fields.next()?;
    let start = fields.nth(18)?.parse().ok()?;
    Some((start, matches!(state, "Z" | "X" | "x")))
}

fn process_start(pid: u32) -> Option<u64> {
    process_stat(pid).map(|(start, _)| start)
}

/// Whether a holder is provably gone: on this host, and its process no longer runs (it ended,
/// or ended and waits to be reaped by its parent, or its id now belongs to a process that
/// started at another time).
pub(crate) fn holder_gone(holder: &Holder) -> bool {
    if !Path::new("/proc/self/stat").exists() || holder.host != host_name() {
        return false;
    }
    match (process_stat(holder.pid), holder.process_start) {
        (None, _) => true,
        // A zombie runs no code and holds nothing: it only waits for its parent to reap it.
        (Some((_, true)), _) => true,
        (Some((now, false)), Some(then)) => now != then,
        (Some((_, false)), None) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_zombie_is_gone_and_a_running_process_is_not() {
        let running = "4242 (cardsync) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                       98765 1000 10 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(running), Some((98765, false)));
        let zombie = running.replacen(" S ", " Z ", 1);
        assert_eq!(parse_stat(&zombie), Some((98765, true)));
        // A name with spaces and parentheses.
        let odd = running.replacen("(cardsync)", "(a) b (c)", 1);
        assert_eq!(parse_stat(&odd), Some((98765, false)));
        assert!(!holder_gone(&this_holder()));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_child_that_exited_and_was_not_reaped_counts_as_gone() {
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawn true");
        let holder = Holder::new(host_name(), child.id(), now_ms())
            .with_process_start(process_start(child.id()));
        // Not reaped yet: a zombie until `wait`.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !process_stat(child.id()).is_some_and(|(_, zombie)| zombie) {
            assert!(
                std::time::Instant::now() < deadline,
                "the child did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(holder_gone(&holder));
        child.wait().expect("reaped");
        assert!(holder_gone(&holder));
    }
}
