//! A set of byte ranges `[start, end)`, kept merged: which parts of a file the receiver has,
//! which the sender must (re)send.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent half-open ranges of `u64`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end; ranges never overlap nor touch.
    map: BTreeMap<u64, u64>,
    /// Sum of the range lengths.
    covered: u64,
}

impl RangeSet {
    /// An empty set.
    pub fn new() -> RangeSet {
        RangeSet::default()
    }

    /// True when no byte is in the set.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Number of bytes in the set.
    pub fn covered(&self) -> u64 {
        self.covered
    }

    /// Number of disjoint ranges.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Adds `[start, end)`; returns how many bytes were new.
    pub fn insert(&mut self, start: u64, end: u64) -> u64 {
        if start >= end {
            return 0;
        }
        let (mut new_start, mut new_end) = (start, end);
        // Fast path: append to (or extend) the last range.
        if let Some((&s, &e)) = self.map.last_key_value() {
            if s <= start && start <= e {
                if end <= e {
                    return 0;
                }
                self.map.insert(s, end);
                self.covered += end - e;
                return end - e;
            }
        }
        // A range starting before `start` that touches it absorbs it.
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e >= start {
                new_start = s;
                new_end = new_end.max(e);
            }
        }
        let mut removed = 0;
        let absorbed: Vec<(u64, u64)> = self
            .map
            .range(new_start..=new_end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in absorbed {
            self.map.remove(&s);
            removed += e - s;
            new_end = new_end.max(e);
        }
        self.map.insert(new_start, new_end);
        let added = (new_end - new_start) - removed;
        self.covered += added;
        added
    }

    /// Removes `[start, end)`.
    pub fn remove(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let mut first = start;
        if let Some((&s, _)) = self.map.range(..start).next_back() {
            first = s;
        }
        let hit: Vec<(u64, u64)> = self.map.range(first..end).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in hit {
            if e <= start {
                continue;
            }
            self.map.remove(&s);
            self.covered -= e - s;
            if s < start {
                self.map.insert(s, start);
                self.covered += start - s;
            }
            if e > end {
                self.map.insert(end, e);
                self.covered += e - end;
            }
        }
    }

    /// True when every byte of `[start, end)` is in the set.
    pub fn contains_range(&self, start: u64, end: u64) -> bool {
        if start >= end {
            return true;
        }
        match self.map.range(..=start).next_back() {
            Some((_, &e)) => e >= end,
            None => false,
        }
    }

    /// End of the range that starts at 0, or 0.
    pub fn contiguous_prefix(&self) -> u64 {
        match self.map.first_key_value() {
            Some((&0, &e)) => e,
            _ => 0,
        }
    }

    /// The ranges of `[start, end)` that are *not* in the set, in order.
    pub fn gaps(&self, start: u64, end: u64) -> Vec<Range<u64>> {
        let mut out = Vec::new();
        let mut cursor = start;
        let mut first = start;
        if let Some((&s, _)) = self.map.range(..=start).next_back() {
            first = s;
        }
        for (&s, &e) in self.map.range(first..end) {
            if e <= cursor {
                continue;
            }
            if s > cursor {
                out.push(cursor..s.min(end));
            }
            cursor = cursor.max(e);
            if cursor >= end {
                break;
            }
        }
        if cursor < end {
            out.push(cursor..end);
        }
        out
    }

    /// Removes and returns up to `max` bytes from the front of the set, as one range.
    pub fn pop_front(&mut self, max: u64) -> Option<Range<u64>> {
        let (s, e) = self.map.pop_first()?;
        let take_end = if max == 0 {
            e
        } else {
            e.min(s.saturating_add(max))
        };
        self.covered -= take_end - s;
        if take_end < e {
            self.map.insert(take_end, e);
        }
        Some(s..take_end)
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_merges_and_counts() {
        let mut r = RangeSet::new();
        assert_eq!(r.insert(0, 10), 10);
        assert_eq!(r.insert(20, 30), 10);
        assert_eq!(r.insert(5, 25), 10);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![0..30]);
        assert_eq!(r.covered(), 30);
        assert_eq!(r.insert(30, 40), 10);
        assert_eq!(r.len(), 1);
        assert_eq!(r.insert(0, 40), 0);
        assert_eq!(r.insert(50, 60), 10);
        assert_eq!(r.insert(45, 70), 15);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![0..40, 45..70]);
        assert_eq!(r.covered(), 65);
    }

    #[test]
    fn gaps_and_prefix() {
        let mut r = RangeSet::new();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.gaps(0, 50), vec![0..10, 20..30, 40..50]);
        assert_eq!(r.gaps(15, 35), vec![20..30]);
        assert_eq!(r.gaps(12, 18), Vec::<Range<u64>>::new());
        assert_eq!(r.contiguous_prefix(), 0);
        r.insert(0, 10);
        assert_eq!(r.contiguous_prefix(), 20);
        assert!(r.contains_range(0, 20));
        assert!(!r.contains_range(0, 21));
    }

    #[test]
    fn remove_splits() {
        let mut r = RangeSet::new();
        r.insert(0, 100);
        r.remove(10, 20);
        r.remove(90, 200);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![0..10, 20..90]);
        assert_eq!(r.covered(), 80);
        r.remove(0, 50);
        assert_eq!(r.iter().collect::<Vec<_>>(), vec![50..90]);
        assert_eq!(r.covered(), 40);
    }

    #[test]
    fn pop_front_limits() {
        let mut r = RangeSet::new();
        r.insert(0, 100);
        r.insert(200, 210);
        assert_eq!(r.pop_front(30), Some(0..30));
        assert_eq!(r.pop_front(0), Some(30..100));
        assert_eq!(r.pop_front(30), Some(200..210));
        assert_eq!(r.pop_front(30), None);
        assert_eq!(r.covered(), 0);
    }

    #[test]
    fn random_against_bitmap() {
        let mut seed = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50 {
            let mut r = RangeSet::new();
            let mut bits = [false; 200];
            for _ in 0..40 {
                let a = next() % 200;
                let b = (a + next() % 30).min(200);
                if next() % 3 == 0 {
                    r.remove(a, b);
                    bits[a as usize..b as usize].fill(false);
                } else {
                    r.insert(a, b);
                    bits[a as usize..b as usize].fill(true);
                }
                let count = bits.iter().filter(|b| **b).count() as u64;
                assert_eq!(r.covered(), count);
                let gaps: u64 = r.gaps(0, 200).iter().map(|g| g.end - g.start).sum();
                assert_eq!(gaps, 200 - count);
            }
        }
    }
}
