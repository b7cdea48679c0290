//! Crash and freeze points, for the tests that kill or freeze a process at each step of a job
//! (both journals, one scheme). Compiled only with the `test-hooks` feature, which only the
//! tests turn on: without it, [`reached`] and [`reached_by`] are empty functions and nothing
//! is read from the environment, so no release build can be made to stop itself.
//!
//! With the feature, `CARDSYNC_CRASH_AT=POINT:N` makes the process kill itself with SIGKILL
//! the N-th time it reaches POINT, and `CARDSYNC_FREEZE_AT=POINT:N` stops it there with
//! SIGSTOP (until someone sends SIGCONT). In-process tests register a hook of their own for
//! the runners whose name starts with a prefix ([`on`]).
//!
//! The points: on one machine `planned`, `sending`, `answered`, `sent`, `fetched`,
//! `finishing`, `renamed`, `done`, `apply` (every commit) and `recording` (a webhook event
//! about to be committed); in a PostgreSQL worker's lane `claimed`, `before-post`,
//! `after-post`, `before-results` and `recorded`.

/// The process reached `point`.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn reached(point: &str) {
    let _ = point;
}

/// Runner `who` reached `point`.
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn reached_by(who: &str, point: &str) {
    let _ = (who, point);
}

/// A hook registered with [`on`]; dropping it takes it away.
#[cfg(not(feature = "test-hooks"))]
#[must_use = "the hook is taken away when this is dropped"]
pub struct Registered(());

/// Calls `hook` with each point a runner whose name starts with `prefix` reaches (never, in a
/// build without the `test-hooks` feature).
#[cfg(not(feature = "test-hooks"))]
pub fn on(prefix: &str, hook: impl Fn(&str) + Send + Sync + 'static) -> Registered {
    let _ = (prefix, hook);
    Registered(())
}

#[cfg(feature = "test-hooks")]
pub use enabled::{Registered, on, reached, reached_by};

#[cfg(feature = "test-hooks")]
mod enabled {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

    type Hook = Arc<dyn Fn(&str) + Send + Sync>;

    /// How often each point was reached, and the in-process hooks by runner-name prefix.
    struct State {
        counts: HashMap<String, u32>,
        hooks: Vec<(u64, String, Hook)>,
        next: u64,
        frozen: bool,
    }

    static STATE: Mutex<Option<State>> = Mutex::new(None);

    fn state() -> MutexGuard<'static, Option<State>> {
        STATE.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = state();
        let s = guard.get_or_insert_with(|| State {
            counts: HashMap::new(),
            hooks: Vec::new(),
            next: 0,
            frozen: false,
        });
        f(s)
    }

    /// The process reached `point`: dies or freezes there if the environment says so.
    pub fn reached(point: &str) {
        let n = with(|s| {
            let n = s.counts.entry(point.to_owned()).or_default();
            *n += 1;
            *n
        });
        let at = |var: &str| {
            std::env::var(var).ok().is_some_and(|spec| {
                let (name, k) = spec.split_once(':').unwrap_or((spec.as_str(), "1"));
                name == point && k.parse() == Ok(n)
            })
        };
        let signal = |sig: &str| {
            let _ = std::process::Command::new("kill")
                .args([sig, &std::process::id().to_string()])
                .status();
        };
        if at("CARDSYNC_FREEZE_AT") && !with(|s| std::mem::replace(&mut s.frozen, true)) {
            signal("-STOP");
        }
        if at("CARDSYNC_CRASH_AT") {
            signal("-KILL");
            std::thread::sleep(std::time::Duration::from_secs(60));
            std::process::abort();
        }
    }

    /// Runner `who` reached `point`: its in-process hooks run, then [`reached`].
    pub fn reached_by(who: &str, point: &str) {
        let hooks: Vec<Hook> = with(|s| {
            s.hooks
                .iter()
                .filter(|(_, prefix, _)| who.starts_with(prefix.as_str()))
                .map(|(_, _, h)| h.clone())
                .collect()
        });
        for hook in hooks {
            hook(point);
        }
        reached(point);
    }

    /// A hook registered with [`on`]; dropping it takes it away.
    #[must_use = "the hook is taken away when this is dropped"]
    pub struct Registered(u64);

    impl Drop for Registered {
        fn drop(&mut self) {
            let id = self.0;
            with(|s| s.hooks.retain(|(i, _, _)| *i != id));
        }
    }

    /// Calls `hook` with each point that a runner whose name starts with `prefix` reaches.
    pub fn on(prefix: &str, hook: impl Fn(&str) + Send + Sync + 'static) -> Registered {
        with(|s| {
            s.next += 1;
            s.hooks.push((s.next, prefix.to_owned(), Arc::new(hook)));
            Registered(s.next)
        })
    }
}
