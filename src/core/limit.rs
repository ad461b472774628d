//! Counting open connections against a limit, without a lock.
//!
//! One [`ActiveCount`] exists for the whole process, one per listener and one per backend. A
//! connection takes a [`Slot`] in each: `try_acquire` refuses when the limit is reached, and the
//! slot gives its count back when dropped, so counts cannot drift or go negative whichever way a
//! connection ends.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many connections are open now.
#[derive(Debug, Default)]
pub(crate) struct ActiveCount(AtomicU64);

impl ActiveCount {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl AsRef<ActiveCount> for ActiveCount {
    fn as_ref(&self) -> &ActiveCount {
        self
    }
}

/// Takes one count in the [`ActiveCount`] of `owner`, unless `max` is reached.
pub(crate) fn try_acquire<T: AsRef<ActiveCount>>(
    owner: &Arc<T>,
    max: Option<u64>,
) -> Option<Slot<T>> {
    let count = &(**owner).as_ref().0;
    match max {
        None => {
            count.fetch_add(1, Ordering::Relaxed);
        }
        Some(max) => {
            count
                .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                    (n < max).then_some(n + 1)
                })
                .ok()?;
        }
    }
    Some(Slot(owner.clone()))
}

/// One open connection counted in its owner's [`ActiveCount`] until dropped.
#[derive(Debug)]
pub(crate) struct Slot<T: AsRef<ActiveCount>>(Arc<T>);

impl<T: AsRef<ActiveCount>> Slot<T> {
    pub(crate) fn owner(&self) -> &Arc<T> {
        &self.0
    }
}

impl<T: AsRef<ActiveCount>> Drop for Slot<T> {
    fn drop(&mut self) {
        (*self.0).as_ref().0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_up_to_the_limit_and_give_back_on_drop() {
        let count = Arc::new(ActiveCount::default());
        let a = try_acquire(&count, Some(2)).unwrap();
        let b = try_acquire(&count, Some(2)).unwrap();
        assert!(try_acquire(&count, Some(2)).is_none());
        assert_eq!(count.get(), 2);
        drop(a);
        let c = try_acquire(&count, Some(2)).unwrap();
        drop((b, c));
        assert_eq!(count.get(), 0);
        let unlimited: Vec<_> = (0..100)
            .map(|_| try_acquire(&count, None).unwrap())
            .collect();
        assert_eq!(count.get(), 100);
        drop(unlimited);
        assert_eq!(count.get(), 0);
    }

    #[test]
    fn concurrent_acquires_never_exceed_the_limit() {
        let count = Arc::new(ActiveCount::default());
        let granted = AtomicU64::new(0);
        let all_tried = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let mut held = Vec::new();
                    for _ in 0..1000 {
                        if let Some(slot) = try_acquire(&count, Some(10)) {
                            granted.fetch_add(1, Ordering::Relaxed);
                            assert!(count.get() <= 10);
                            held.push(slot);
                        }
                    }
                    // Hold the slots until every thread has tried.
                    all_tried.wait();
                });
            }
        });
        assert_eq!(granted.load(Ordering::Relaxed), 10);
        assert_eq!(count.get(), 0);
    }
}
