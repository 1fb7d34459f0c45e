//! Connections counted per source and in all (the SSH front end's connections not yet logged
//! in, the node API's open connections), for the per-source caps. A count lives as long as its
//! [`SourceGuard`]; a source whose count falls to zero is forgotten, so the table holds only
//! sources with open connections.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Open connections: in all, and per source key (see [`super::penalties::source_key`]).
#[derive(Debug, Default)]
pub struct SourceCounts {
    counts: Mutex<(u32, HashMap<IpAddr, u32>)>,
}

impl SourceCounts {
    /// An empty table to share.
    pub fn new() -> Arc<SourceCounts> {
        Arc::new(SourceCounts::default())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u32, HashMap<IpAddr, u32>)> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// (in all, from `key`).
    pub fn counts(&self, key: IpAddr) -> (u32, u32) {
        let c = self.lock();
        (c.0, c.1.get(&key).copied().unwrap_or(0))
    }

    /// Counts one more connection of `key` until the guard is dropped.
    pub fn take(self: &Arc<Self>, key: IpAddr) -> SourceGuard {
        let mut c = self.lock();
        c.0 += 1;
        *c.1.entry(key).or_insert(0) += 1;
        SourceGuard {
            counts: Arc::clone(self),
            key,
        }
    }
}

/// One counted connection; dropping it uncounts it.
#[derive(Debug)]
pub struct SourceGuard {
    counts: Arc<SourceCounts>,
    key: IpAddr,
}

impl Drop for SourceGuard {
    fn drop(&mut self) {
        let mut c = self.counts.lock();
        c.0 = c.0.saturating_sub(1);
        if let Some(n) = c.1.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.1.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_count_per_source_and_sources_at_zero_are_forgotten() {
        let counts = SourceCounts::new();
        let a: IpAddr = "192.0.2.2".parse().unwrap();
        let b: IpAddr = "192.0.2.3".parse().unwrap();
        let g1 = counts.take(a);
        let g2 = counts.take(a);
        let g3 = counts.take(b);
        assert_eq!(counts.counts(a), (3, 2));
        drop((g1, g3));
        assert_eq!(counts.counts(a), (1, 1));
        assert_eq!(counts.counts(b), (1, 0));
        drop(g2);
        assert_eq!(counts.counts(a), (0, 0));
        assert!(counts.lock().1.is_empty());
    }
}
