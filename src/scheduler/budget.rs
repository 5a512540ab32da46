//! The memory budget every model's scheduler shares (`max_batch_memory_mb`, process-wide): the
//! encoder output and worst-case key/value cache of running rows. Each decode lane holds a grant
//! of it: taken before its rows start (`claim`), given back as they finish (`settle`). With
//! several models, each other model keeps a reserve that one model's burst cannot take:
//! `total / (2 x models)`, the rule admission follows (`pipeline::model_share`). A model with
//! nothing running may still start the row at its queue's head even beyond its share, if the
//! pool has the room, so that a row that fits its lane's budget always runs in the end.
//!
//! Pure bookkeeping under one lock, taken once per lane per loop turn.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The process's budget, in bytes.
pub struct MemoryPool {
    total: usize,
    state: Mutex<PoolState>,
    next_key: AtomicU64,
}

#[derive(Default)]
struct PoolState {
    used: usize,
    /// Bytes held by each model's lanes, by the key of its `ModelBudget`.
    models: BTreeMap<u64, usize>,
}

/// One model's (one scheduler's) part of the pool; its lanes claim and settle through it. It
/// leaves the pool when dropped (its last lane has ended).
pub struct ModelBudget {
    pool: Arc<MemoryPool>,
    key: u64,
}

impl MemoryPool {
    pub fn new(total: usize) -> Arc<Self> {
        Arc::new(Self { total, state: Default::default(), next_key: AtomicU64::new(0) })
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes held now, over every model.
    pub fn used(&self) -> usize {
        self.lock().used
    }

    /// A new model's part.
    pub fn join(self: &Arc<Self>) -> Arc<ModelBudget> {
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        self.lock().models.insert(key, 0);
        Arc::new(ModelBudget { pool: self.clone(), key })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most one of `models` models may hold: all of it alone; else all but the reserves of
    /// the others.
    pub fn share(&self, models: usize) -> usize {
        if models <= 1 {
            return self.total;
        }
        let reserve = self.total / (2 * models);
        self.total - (models - 1) * reserve
    }
}

impl ModelBudget {
    /// A lane that holds `*held` bytes, whose running rows need `running`, and that may use up to
    /// `want` in all: gives back what it holds beyond `running`, then takes what the pool allows
    /// towards `want`. `head` is what the row at the head of its queue needs alone (0 for an
    /// empty queue). Returns the bytes the lane holds now (at least `running`), the limit its
    /// next batch is formed under.
    pub fn claim(&self, held: &mut usize, running: usize, want: usize, head: usize) -> usize {
        let mut s = self.pool.lock();
        release(&mut s, self.key, held, running);
        let share = self.pool.share(s.models.len());
        let mine = s.models.get(&self.key).copied().unwrap_or(0);
        let mut room = share.saturating_sub(mine);
        if mine == 0 {
            room = room.max(head);
        }
        let grant = want.saturating_sub(*held).min(room).min(self.pool.total.saturating_sub(s.used));
        s.used += grant;
        *s.models.entry(self.key).or_default() += grant;
        *held += grant;
        *held
    }

    /// Gives back what a lane holds beyond what its running rows need (without taking the lock
    /// when there is nothing to give back, as on most decode steps).
    pub fn settle(&self, held: &mut usize, running: usize) {
        if *held > running {
            release(&mut self.pool.lock(), self.key, held, running);
        }
    }

    /// The process's budget.
    pub fn total(&self) -> usize {
        self.pool.total
    }

    /// Bytes this model's lanes hold.
    pub fn held(&self) -> usize {
        self.pool.lock().models.get(&self.key).copied().unwrap_or(0)
    }
}

fn release(s: &mut PoolState, key: u64, held: &mut usize, running: usize) {
    let back = held.saturating_sub(running);
    if back == 0 {
        return;
    }
    s.used -= back;
    if let Some(m) = s.models.get_mut(&key) {
        *m -= back;
    }
    *held -= back;
}

impl Drop for ModelBudget {
    fn drop(&mut self) {
        let mut s = self.pool.lock();
        let left = s.models.remove(&self.key).unwrap_or(0);
        s.used -= left;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_model_may_use_all_of_it() {
        let pool = MemoryPool::new(1000);
        let a = pool.join();
        let mut held = 0;
        assert_eq!(a.claim(&mut held, 0, 600, 100), 600, "its lane's budget");
        assert_eq!(a.claim(&mut held, 0, 1200, 100), 1000, "all of the pool, no more");
        assert_eq!(pool.used(), 1000);
        a.settle(&mut held, 300);
        assert_eq!((held, pool.used(), a.held()), (300, 300, 300));
    }

    #[test]
    fn a_burst_on_one_model_leaves_the_others_their_reserve() {
        let pool = MemoryPool::new(1000);
        let (a, b) = (pool.join(), pool.join());
        // Two models: each keeps 1000 / 4 = 250 the other cannot take.
        assert_eq!(pool.share(2), 750);
        let (mut ha, mut hb) = (0, 0);
        assert_eq!(a.claim(&mut ha, 0, 1000, 10), 750);
        assert_eq!(b.claim(&mut hb, 0, 1000, 10), 250, "the quiet model gets its reserve at once");
        assert_eq!(pool.used(), 1000);
        // a's rows finish: what it gives back, b may take up to its share.
        a.settle(&mut ha, 100);
        assert_eq!(b.claim(&mut hb, 250, 1000, 10), 750);
        assert_eq!(a.claim(&mut ha, 100, 1000, 10), 250, "a gets what is left: {}", pool.used());
        // A third model: the shares shrink; nothing running, it gets what is free.
        let c = pool.join();
        assert_eq!(pool.share(3), 1000 - 2 * 166);
        let mut hc = 0;
        assert_eq!(c.claim(&mut hc, 0, 1000, 10), 0, "the pool is full");
        b.settle(&mut hb, 0);
        assert_eq!(c.claim(&mut hc, 0, 1000, 10), 668, "up to its share");
        drop(c);
        assert_eq!(pool.used(), 250, "a model that leaves gives back what it held");
    }

    #[test]
    fn a_model_with_nothing_running_may_start_its_head_row_beyond_its_share() {
        let pool = MemoryPool::new(1000);
        let (a, _b) = (pool.join(), pool.join());
        let mut held = 0;
        // The head row needs 900 alone, more than a's share (750) but within the pool.
        assert_eq!(a.claim(&mut held, 0, 1000, 900), 900);
        // Once it runs, a is held to its share again.
        assert_eq!(a.claim(&mut held, 900, 1000, 50), 900);
    }
}
