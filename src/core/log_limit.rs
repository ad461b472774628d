//! Log lines about single clients, limited: a flood of refused clients (a connection storm, a
//! scanner, a misconfigured pool) must not flood the log too. Each call site has a [`LogLimit`];
//! it lets one line through per second and counts the others, and the next line that goes
//! through says how many were left out (`suppressed=N`). The metrics count every event.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One line per [`LogLimit::EVERY`] for one call site.
#[derive(Debug)]
pub(crate) struct LogLimit {
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub(crate) const EVERY: Duration = Duration::from_secs(1);

    pub(crate) const fn new() -> LogLimit {
        LogLimit {
            state: Mutex::new(Window {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(lines left out since the last one)` when a line may be written now; `None` when
    /// it is to be left out (and is counted).
    pub(crate) fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut window = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match window.last {
            Some(last) if now.saturating_duration_since(last) < Self::EVERY => {
                window.suppressed += 1;
                None
            }
            _ => {
                window.last = Some(now);
                Some(std::mem::take(&mut window.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_and_the_count_of_the_rest() {
        let limit = LogLimit::new();
        let start = Instant::now();
        assert_eq!(limit.allow_at(start), Some(0));
        for i in 1..100 {
            assert_eq!(limit.allow_at(start + Duration::from_millis(i * 5)), None);
        }
        assert_eq!(
            limit.allow_at(start + Duration::from_millis(1000)),
            Some(99)
        );
        assert_eq!(limit.allow_at(start + Duration::from_millis(1001)), None);
        assert_eq!(limit.allow_at(start + Duration::from_secs(5)), Some(1));
    }
}
