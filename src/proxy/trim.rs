//! Gives freed heap memory back to the operating system once many sessions have ended or parked.
//!
//! glibc keeps what is freed in its arenas for later allocations, so after a burst of sessions
//! (thousands of pool connections opened at once, then parked or closed) the process would keep
//! the burst's peak as its resident size. Every second this task compares the sessions running
//! in tasks (open minus parked), and the open sessions, with the highest counts seen since the
//! last trim; when either has fallen by [`TRIM_AFTER_DROP`] or more, it calls `malloc_trim(0)`,
//! which hands free pages back from every arena. Elsewhere (other C libraries) it does nothing.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::proxy::ProxyContext;

/// How far the count of sessions in tasks must fall before memory is trimmed.
pub(crate) const TRIM_AFTER_DROP: u64 = 256;

/// Runs until `stop` is cancelled.
pub(crate) async fn run(ctx: Arc<ProxyContext>, stop: CancellationToken) {
    // Also the open sessions: parked sessions that all close at once resume into tasks and end
    // between two looks, so the count in tasks never shows their peak, but the open count does.
    let (mut peak, mut peak_open) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let open = ctx.global_active.get();
        let parked = ctx.parking.as_ref().map_or(0, |lot| lot.len() as u64);
        let in_tasks = open.saturating_sub(parked);
        peak = peak.max(in_tasks);
        peak_open = peak_open.max(open);
        if peak - in_tasks >= TRIM_AFTER_DROP || peak_open - open >= TRIM_AFTER_DROP {
            let released = tokio::task::spawn_blocking(release_free_memory)
                .await
                .unwrap_or(false);
            debug!(
                from = peak,
                to = in_tasks,
                released,
                "sessions in tasks fell; trimmed the heap"
            );
            (peak, peak_open) = (in_tasks, open);
        }
    }
}

/// Returns free heap pages to the system; whether any were released.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_memory() -> bool {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_memory() -> bool {
    false
}
