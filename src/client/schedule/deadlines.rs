//! When each task is next due, ordered by time, so the earliest is found without scanning.

use std::{
    collections::{BTreeSet, HashMap},
    hash::Hash,
    time::Instant,
};

/// At most one deadline per key, ordered by time.
///
/// Invariant: `by_time` and `by_key` hold the same (deadline, key) pairs; every change goes
/// through [`Deadlines::set`] and [`Deadlines::clear`], so they cannot drift apart.
#[derive(Debug)]
pub(super) struct Deadlines<K> {
    by_time: BTreeSet<(Instant, K)>,
    by_key: HashMap<K, Instant>,
}

impl<K> Default for Deadlines<K> {
    fn default() -> Self {
        Self {
            by_time: BTreeSet::new(),
            by_key: HashMap::new(),
        }
    }
}

impl<K: Ord + Hash + Clone> Deadlines<K> {
    /// Sets (or moves) `key`'s deadline to `at`.
    pub(super) fn set(&mut self, key: K, at: Instant) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    /// Removes `key`'s deadline; returns it.
    pub(super) fn clear(&mut self, key: &K) -> Option<Instant> {
        let at = self.by_key.remove(key)?;
        self.by_time.remove(&(at, key.clone()));
        Some(at)
    }

    /// `key`'s deadline.
    pub(super) fn get(&self, key: &K) -> Option<Instant> {
        self.by_key.get(key).copied()
    }

    /// The earliest deadline.
    pub(super) fn first(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// The key with the earliest deadline if that deadline is at or before `now`; its deadline
    /// stays set.
    pub(super) fn due(&self, now: Instant) -> Option<&K> {
        self.by_time
            .first()
            .filter(|(at, _)| *at <= now)
            .map(|(_, key)| key)
    }

    /// Removes and returns the key with the earliest deadline if that is at or before `now`.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<K> {
        let key = self.due(now)?.clone();
        self.clear(&key);
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn given_moved_and_cleared_deadlines_then_the_earliest_remaining_is_due_first() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut d = Deadlines::default();
        d.set("a", t0 + 3 * s);
        d.set("b", t0 + 2 * s);
        d.set("c", t0 + 5 * s);
        d.set("b", t0 + 4 * s);
        assert_eq!(d.first(), Some(t0 + 3 * s));
        assert_eq!(d.clear(&"a"), Some(t0 + 3 * s));
        assert_eq!(d.get(&"b"), Some(t0 + 4 * s));
        assert_eq!(d.pop_due(t0 + 3 * s), None);
        assert_eq!(d.pop_due(t0 + 5 * s), Some("b"));
        assert_eq!(d.pop_due(t0 + 5 * s), Some("c"));
        assert_eq!(d.first(), None);
        assert!(d.by_key.is_empty() && d.by_time.is_empty());
    }
}
