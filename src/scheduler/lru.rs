//! A least-recently-used map bounded in bytes: each value is inserted with its size, and the
//! least recently used values leave until the total fits. Pure; the encoder cache locks it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub struct Lru<V> {
    map: HashMap<Arc<[u32]>, Slot<V>>,
    /// Keys by their last use (a tick that only grows): the first is the least recently used.
    order: BTreeMap<u64, Arc<[u32]>>,
    tick: u64,
    bytes: usize,
    capacity: usize,
}

struct Slot<V> {
    value: V,
    bytes: usize,
    used: u64,
}

/// What an insertion did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    pub stored: bool,
    /// Values that left to make room.
    pub evicted: usize,
}

impl<V: Clone> Lru<V> {
    pub fn new(capacity: usize) -> Self {
        Self { map: HashMap::new(), order: BTreeMap::new(), tick: 0, bytes: 0, capacity }
    }

    /// Bytes of the values held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The value of `key`, now the most recently used.
    pub fn get(&mut self, key: &[u32]) -> Option<V> {
        self.tick += 1;
        let slot = self.map.get_mut(key)?;
        let k = self.order.remove(&slot.used).expect("every slot is in the order");
        slot.used = self.tick;
        self.order.insert(self.tick, k);
        Some(slot.value.clone())
    }

    /// Stores `value` (of `bytes`) under `key`, replacing what was there, and evicts the least
    /// recently used values until the total fits. A value larger than the whole capacity is not
    /// stored (what was under its key stays).
    pub fn insert(&mut self, key: &[u32], value: V, bytes: usize) -> Inserted {
        if bytes > self.capacity {
            return Inserted::default();
        }
        self.tick += 1;
        let key: Arc<[u32]> = match self.map.remove(key) {
            Some(old) => {
                self.bytes -= old.bytes;
                self.order.remove(&old.used).expect("every slot is in the order")
            }
            None => key.into(),
        };
        let mut evicted = 0;
        while self.bytes + bytes > self.capacity {
            let (_, oldest) = self.order.pop_first().expect("bytes held means values held");
            let slot = self.map.remove(&oldest).expect("every key in the order has a slot");
            self.bytes -= slot.bytes;
            evicted += 1;
        }
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, Slot { value, bytes, used: self.tick });
        self.bytes += bytes;
        Inserted { stored: true, evicted }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_leave_first_and_the_bytes_stay_bounded() {
        let mut lru = Lru::new(100);
        assert_eq!(lru.insert(&[1], "a", 40), Inserted { stored: true, evicted: 0 });
        assert_eq!(lru.insert(&[2], "b", 40).evicted, 0);
        // [1] was used last: [2] is the one to go.
        assert_eq!(lru.get(&[1]), Some("a"));
        assert_eq!(lru.insert(&[3], "c", 40), Inserted { stored: true, evicted: 1 });
        assert_eq!((lru.get(&[2]), lru.get(&[1]), lru.get(&[3])), (None, Some("a"), Some("c")));
        assert_eq!((lru.bytes(), lru.map.len()), (80, 2));
        // A big one pushes out both.
        assert_eq!(lru.insert(&[4], "d", 90).evicted, 2);
        assert_eq!((lru.bytes(), lru.map.len()), (90, 1));
    }

    #[test]
    fn replacing_a_key_counts_its_new_size_once() {
        let mut lru = Lru::new(100);
        lru.insert(&[1, 2], "small", 10);
        assert_eq!(lru.insert(&[1, 2], "bigger", 60), Inserted { stored: true, evicted: 0 });
        assert_eq!((lru.bytes(), lru.map.len(), lru.get(&[1, 2])), (60, 1, Some("bigger")));
    }

    #[test]
    fn a_value_larger_than_the_capacity_is_not_stored() {
        let mut lru = Lru::new(50);
        lru.insert(&[1], "a", 10);
        assert_eq!(lru.insert(&[1], "huge", 51), Inserted::default());
        assert_eq!((lru.get(&[1]), lru.bytes()), (Some("a"), 10));
        let mut off = Lru::new(0);
        assert!(!off.insert(&[1], "a", 1).stored && off.map.is_empty());
    }

    #[test]
    fn a_stream_of_distinct_keys_never_exceeds_the_capacity() {
        let mut lru = Lru::new(1000);
        let mut evicted = 0;
        for i in 0..500u32 {
            evicted += lru.insert(&[i, i + 1], i, 10 + (i as usize * 7) % 90).evicted;
            assert!(lru.bytes() <= 1000);
        }
        assert!(evicted > 400, "{evicted}");
        assert_eq!(lru.map.len(), lru.order.len());
    }
}
