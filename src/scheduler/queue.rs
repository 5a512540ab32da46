//! The waiting queue and batch formation, as pure logic: no tokio, no ONNX Runtime, no clock of
//! its own (callers pass `now`). FIFO order, a memory budget computed from the model's
//! dimensions, a batch-size cap, a queue delay, deadlines, and closed requests dropped unseen.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bytes a batch needs, from the model's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CostModel {
    /// Per padded encoder position: the encoder output kept for the batch (d_model floats) plus
    /// the cross-attention K/V of every decoder layer.
    pub bytes_per_encoder_token: usize,
    /// Per decoder position: the self-attention K/V of every decoder layer.
    pub bytes_per_decoder_token: usize,
}

impl CostModel {
    pub fn from_dims(d_model: usize, decoder_layers: usize, heads: usize, d_kv: usize) -> Self {
        let kv = 2 * decoder_layers * heads * d_kv * 4;
        Self { bytes_per_encoder_token: d_model * 4 + kv, bytes_per_decoder_token: kv }
    }

    /// Worst-case bytes of a batch of `(input_len, max_new_tokens)` rows: inputs are padded to
    /// the longest one, and every row may run to its `max_new_tokens`.
    pub fn batch_bytes(&self, rows: impl IntoIterator<Item = (usize, usize)>) -> usize {
        let (mut n, mut longest, mut decoder) = (0usize, 0usize, 0usize);
        for (input, max_new) in rows {
            n += 1;
            longest = longest.max(input);
            decoder += max_new + 1;
        }
        n * longest * self.bytes_per_encoder_token + decoder * self.bytes_per_decoder_token
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    pub max_batch_size: usize,
    /// Memory budget of everything running at once, in bytes.
    pub max_batch_bytes: usize,
    /// How long the first waiting request may wait for others to join it while nothing runs.
    pub max_queue_delay: Duration,
    /// Most input tokens one batch of new rows encodes (rows x the longest input); 0: no cap.
    /// The first waiting request always fits, whatever its size.
    pub max_prefill_tokens: usize,
}

/// What the queue needs to know about a waiting request.
pub trait Waiting {
    fn input_len(&self) -> usize;
    fn max_new_tokens(&self) -> usize;
    /// The client is gone; the request must never be scheduled.
    fn is_closed(&self) -> bool;
    /// Batch rows the request occupies (its beams for beam search).
    fn width(&self) -> usize {
        1
    }
}

#[derive(Debug)]
pub struct Entry<T> {
    pub item: T,
    pub enqueued: Instant,
    pub deadline: Option<Instant>,
}

/// What one call to `next_batch` decided.
#[derive(Debug)]
pub struct Formed<T> {
    /// To start now, in FIFO order.
    pub batch: Vec<Entry<T>>,
    /// Past their deadline while still queued: to be answered with a timeout, never run.
    pub expired: Vec<Entry<T>>,
    /// Closed by their clients while queued: dropped.
    pub closed: usize,
}

#[derive(Debug)]
pub struct Queue<T> {
    entries: VecDeque<Entry<T>>,
    limits: QueueLimits,
    cost: CostModel,
}

impl<T: Waiting> Queue<T> {
    pub fn new(limits: QueueLimits, cost: CostModel) -> Self {
        Self { entries: VecDeque::new(), limits, cost }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn push(&mut self, item: T, now: Instant, deadline: Option<Instant>) {
        self.entries.push_back(Entry { item, enqueued: now, deadline });
    }

    /// The earliest instant at which waiting entries should be looked at again (queue delay or a
    /// deadline), if any.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let delay = self.entries.front().map(|e| e.enqueued + self.limits.max_queue_delay);
        let deadline = self.entries.iter().filter_map(|e| e.deadline).min();
        match (delay, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Removes expired and closed entries; then, if `may_start`, takes the longest FIFO prefix
    /// that fits beside the `running` rows (`(input_len, max_new_tokens)` each) under the
    /// batch-size cap and the memory budget. A batch that is not full waits up to
    /// `max_queue_delay` (from its oldest entry) for company. Strict FIFO: a request that does
    /// not fit yet blocks those behind it, so a large request is never starved by small ones.
    pub fn next_batch(&mut self, now: Instant, running: &[(usize, usize)], may_start: bool) -> Formed<T> {
        self.next_batch_within(now, running, may_start, self.limits.max_batch_bytes)
    }

    /// Bytes the entry at the head needs alone (0 when the queue is empty).
    pub fn head_bytes(&self) -> usize {
        self.entries.front().map_or(0, |e| {
            let row = (e.item.input_len(), e.item.max_new_tokens());
            self.cost.batch_bytes(std::iter::repeat_n(row, e.item.width()))
        })
    }

    /// `next_batch` under a memory budget of `max_bytes` (at most the queue's own) for the
    /// running rows and the new ones together: the part of a shared budget the caller holds.
    pub fn next_batch_within(
        &mut self,
        now: Instant,
        running: &[(usize, usize)],
        may_start: bool,
        max_bytes: usize,
    ) -> Formed<T> {
        let max_bytes = max_bytes.min(self.limits.max_batch_bytes);
        let mut expired = Vec::new();
        let mut closed = 0;
        let mut kept = VecDeque::with_capacity(self.entries.len());
        for e in self.entries.drain(..) {
            if e.item.is_closed() {
                closed += 1;
            } else if e.deadline.is_some_and(|d| d <= now) {
                expired.push(e);
            } else {
                kept.push_back(e);
            }
        }
        self.entries = kept;

        let mut rows: Vec<(usize, usize)> = running.to_vec();
        let mut take = 0;
        let mut longest = 0; // the longest input among the new rows
        for e in &self.entries {
            let width = e.item.width();
            if rows.len() + width > self.limits.max_batch_size.max(width) {
                break;
            }
            let new_rows = rows.len() - running.len() + width;
            let (cap, padded) = (self.limits.max_prefill_tokens, new_rows * longest.max(e.item.input_len()));
            if cap > 0 && take > 0 && padded > cap {
                break;
            }
            rows.extend(std::iter::repeat_n((e.item.input_len(), e.item.max_new_tokens()), width));
            if self.cost.batch_bytes(rows.iter().copied()) > max_bytes {
                rows.truncate(rows.len() - width);
                break;
            }
            longest = longest.max(e.item.input_len());
            take += 1;
        }
        let full = take < self.entries.len() || rows.len() >= self.limits.max_batch_size;
        let waited_enough = self.entries.front().is_some_and(|e| now >= e.enqueued + self.limits.max_queue_delay);
        let start = may_start && take > 0 && (full || waited_enough);
        let batch = if start { self.entries.drain(..take).collect() } else { Vec::new() };
        Formed { batch, expired, closed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    #[derive(Debug, Clone)]
    struct Req {
        id: usize,
        input: usize,
        max_new: usize,
        width: usize,
        closed: Rc<Cell<bool>>,
    }

    impl Waiting for Req {
        fn input_len(&self) -> usize {
            self.input
        }
        fn max_new_tokens(&self) -> usize {
            self.max_new
        }
        fn is_closed(&self) -> bool {
            self.closed.get()
        }
        fn width(&self) -> usize {
            self.width
        }
    }

    fn req(id: usize, input: usize, max_new: usize) -> Req {
        Req { id, input, max_new, width: 1, closed: Rc::new(Cell::new(false)) }
    }

    /// One byte per token either way keeps budgets readable.
    const UNIT: CostModel = CostModel { bytes_per_encoder_token: 1, bytes_per_decoder_token: 1 };

    fn queue(max_batch_size: usize, max_batch_bytes: usize) -> Queue<Req> {
        Queue::new(
            QueueLimits {
                max_batch_size,
                max_batch_bytes,
                max_queue_delay: Duration::from_millis(5),
                max_prefill_tokens: 0,
            },
            UNIT,
        )
    }

    fn ids(f: &Formed<Req>) -> Vec<usize> {
        f.batch.iter().map(|e| e.item.id).collect()
    }

    #[test]
    fn test_batch_bytes_pads_inputs_and_reserves_max_new_tokens() {
        // 2 rows padded to 10 input tokens = 20, plus (4+1) + (6+1) decoder positions = 12.
        assert_eq!(UNIT.batch_bytes([(10, 4), (3, 6)]), 32);
        let real = CostModel::from_dims(512, 6, 8, 64);
        assert_eq!(real.bytes_per_decoder_token, 2 * 6 * 8 * 64 * 4);
        assert_eq!(real.bytes_per_encoder_token, 512 * 4 + 2 * 6 * 8 * 64 * 4);
    }

    #[test]
    fn test_next_batch_keeps_fifo_order() {
        let mut q = queue(8, 10_000);
        let t = Instant::now();
        for i in 0..5 {
            q.push(req(i, 5, 5), t, None);
        }
        let f = q.next_batch(t + Duration::from_millis(10), &[], true);
        assert_eq!(ids(&f), vec![0, 1, 2, 3, 4]);
        assert!(q.is_empty());
    }

    #[test]
    fn test_next_batch_respects_max_batch_size_counting_running_rows() {
        let mut q = queue(4, 10_000);
        let t = Instant::now();
        for i in 0..5 {
            q.push(req(i, 5, 5), t, None);
        }
        let f = q.next_batch(t + Duration::from_millis(10), &[(5, 5)], true);
        assert_eq!(ids(&f), vec![0, 1, 2]);
        assert_eq!(q.len(), 2);
    }

    fn capped(max_prefill_tokens: usize) -> Queue<Req> {
        let limits = QueueLimits { max_prefill_tokens, ..queue(32, 1 << 30).limits };
        Queue::new(limits, UNIT)
    }

    #[test]
    fn a_prefill_cap_splits_a_burst_by_padded_tokens_and_starts_the_rest_next() {
        // Inputs 10, 30, 10, 10: padded to the longest, two rows cost 2 x 30 = 60, three 90.
        let mut q = capped(64);
        let t = Instant::now();
        for (i, len) in [10, 30, 10, 10].into_iter().enumerate() {
            q.push(req(i, len, 5), t, None);
        }
        // Full by the cap: starts at once, without waiting for the queue delay.
        let f = q.next_batch(t, &[], true);
        assert_eq!(ids(&f), vec![0, 1]);
        // The rest: 2 x 10 = 20 tokens, under the cap but the queue is not full, so it waits
        // for company up to the delay, as any batch does.
        assert!(q.next_batch(t, &[(10, 5), (30, 5)], true).batch.is_empty());
        let f = q.next_batch(t + Duration::from_millis(10), &[(10, 5), (30, 5)], true);
        assert_eq!(ids(&f), vec![2, 3]);
    }

    #[test]
    fn a_prefill_cap_never_holds_back_a_request_larger_than_it() {
        let mut q = capped(16);
        let t = Instant::now();
        q.push(req(0, 100, 5), t, None);
        q.push(req(1, 1, 5), t, None);
        assert_eq!(ids(&q.next_batch(t, &[], true)), vec![0]);
        assert_eq!(ids(&q.next_batch(t + Duration::from_millis(10), &[], true)), vec![1]);
        // Beams count as rows: 4 beams of 5 tokens are 20 > 16, yet they start alone.
        let mut q = capped(16);
        q.push(Req { width: 4, ..req(2, 5, 5) }, t, None);
        assert_eq!(ids(&q.next_batch(t + Duration::from_millis(10), &[], true)), vec![2]);
    }

    #[test]
    fn no_prefill_cap_takes_every_row_that_fits() {
        let mut q = capped(0);
        let t = Instant::now();
        for i in 0..6 {
            q.push(req(i, 500, 5), t, None);
        }
        assert_eq!(ids(&q.next_batch(t + Duration::from_millis(10), &[], true)).len(), 6);
    }

    #[test]
    fn test_next_batch_token_budget() {
        // Each row alone costs 10 + 6 = 16; two rows 20 + 12 = 32; three 30 + 18 = 48.
        let mut q = queue(8, 40);
        let t = Instant::now();
        for i in 0..3 {
            q.push(req(i, 10, 5), t, None);
        }
        let f = q.next_batch(t + Duration::from_millis(10), &[], true);
        assert_eq!(ids(&f), vec![0, 1]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn a_shared_budget_held_in_part_limits_the_batch_never_beyond_the_queues_own() {
        let mut q = queue(8, 40);
        let t = Instant::now();
        assert_eq!(q.head_bytes(), 0);
        for i in 0..3 {
            q.push(req(i, 10, 5), t, None);
        }
        assert_eq!(q.head_bytes(), 16, "the head row alone");
        let later = t + Duration::from_millis(10);
        // The part of a shared budget the lane holds: 20 bytes, room for one row.
        assert_eq!(ids(&q.next_batch_within(later, &[], true, 20)), vec![0]);
        // A larger part does not raise the queue's own budget (40: two rows).
        assert_eq!(ids(&q.next_batch_within(later, &[], true, 1000)), vec![1, 2]);
        assert!(q.is_empty());
    }

    #[test]
    fn test_next_batch_is_strict_fifo_behind_a_large_request() {
        let mut q = queue(8, 100);
        let t = Instant::now();
        q.push(req(0, 10, 5), t, None); // 16
        q.push(req(1, 40, 40), t, None); // alone 81; with row 0: 80 + 47 = 127 > 100
        q.push(req(2, 1, 1), t, None); // would fit, but must not overtake row 1
        let later = t + Duration::from_millis(10);
        let f = q.next_batch(later, &[], true);
        assert_eq!(ids(&f), vec![0]);
        let f = q.next_batch(later, &[(10, 5)], true);
        assert!(f.batch.is_empty(), "row 1 waits for room, row 2 waits behind it");
        let f = q.next_batch(later, &[], true);
        assert_eq!(ids(&f), vec![1]);
    }

    #[test]
    fn test_queue_waits_for_company_until_max_queue_delay() {
        let mut q = queue(4, 10_000);
        let t = Instant::now();
        q.push(req(0, 5, 5), t, None);
        assert!(q.next_batch(t + Duration::from_millis(1), &[], true).batch.is_empty());
        q.push(req(1, 5, 5), t + Duration::from_millis(2), None);
        assert_eq!(q.next_wakeup(), Some(t + Duration::from_millis(5)));
        let f = q.next_batch(t + Duration::from_millis(5), &[], true);
        assert_eq!(ids(&f), vec![0, 1]);
    }

    #[test]
    fn test_full_batch_starts_without_waiting() {
        let mut q = queue(2, 10_000);
        let t = Instant::now();
        q.push(req(0, 5, 5), t, None);
        q.push(req(1, 5, 5), t, None);
        q.push(req(2, 5, 5), t, None);
        assert_eq!(ids(&q.next_batch(t, &[], true)), vec![0, 1]);
    }

    #[test]
    fn test_rows_start_beside_running_rows_after_the_delay() {
        let mut q = queue(8, 10_000);
        let t = Instant::now();
        q.push(req(0, 5, 5), t, None);
        assert!(q.next_batch(t, &[(5, 5)], true).batch.is_empty());
        assert_eq!(ids(&q.next_batch(t + Duration::from_millis(10), &[(5, 5)], true)), vec![0]);
    }

    #[test]
    fn test_no_batch_without_room_but_queue_is_still_pruned() {
        let mut q = queue(8, 10_000);
        let t = Instant::now();
        q.push(req(0, 5, 5), t, Some(t + Duration::from_millis(1)));
        q.push(req(1, 5, 5), t, None);
        let f = q.next_batch(t + Duration::from_millis(10), &[], false);
        assert!(f.batch.is_empty());
        assert_eq!(f.expired.len(), 1);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn test_queue_next_batch_dropped_receiver() {
        let mut q = queue(8, 10_000);
        let t = Instant::now();
        let gone = req(0, 5, 5);
        gone.closed.set(true);
        q.push(gone, t, None);
        q.push(req(1, 5, 5), t, None);
        let f = q.next_batch(t + Duration::from_millis(10), &[], true);
        assert_eq!(ids(&f), vec![1]);
        assert_eq!(f.closed, 1);
    }

    #[test]
    fn test_expired_requests_are_removed_before_batching() {
        let mut q = queue(8, 10_000);
        let t = Instant::now();
        q.push(req(0, 5, 5), t, Some(t + Duration::from_millis(3)));
        q.push(req(1, 5, 5), t, Some(t + Duration::from_secs(60)));
        let f = q.next_batch(t + Duration::from_millis(10), &[], true);
        assert_eq!(f.expired.iter().map(|e| e.item.id).collect::<Vec<_>>(), vec![0]);
        assert_eq!(ids(&f), vec![1]);
    }

    /// A small deterministic generator, so the property test needs no extra crate.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> usize {
            self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n) as usize
        }
    }

    #[test]
    fn property_budget_fifo_closed_and_expired_hold_under_random_traffic() {
        for seed in 0..200u64 {
            let mut rng = Lcg(seed);
            let budget = 200 + rng.next(800);
            let max_batch = 1 + rng.next(8);
            let mut q = queue(max_batch, budget);
            let t0 = Instant::now();
            let mut running: Vec<(usize, usize, usize)> = Vec::new(); // (id, input, max_new)
            let mut next_id = 0;
            let mut started: Vec<usize> = Vec::new();
            let mut closed_ids = Vec::new();
            let mut handles = Vec::new();
            for tick in 0..60u64 {
                let now = t0 + Duration::from_millis(tick);
                for _ in 0..rng.next(4) {
                    let (input, max_new) = (1 + rng.next(40), 1 + rng.next(40));
                    // The handle refuses a request that could never fit alone (check_fits).
                    if UNIT.batch_bytes([(input, max_new)]) > budget {
                        continue;
                    }
                    let r = req(next_id, input, max_new);
                    let deadline = (rng.next(5) == 0).then(|| now + Duration::from_millis(rng.next(10) as u64));
                    handles.push((r.clone(), deadline));
                    q.push(r, now, deadline);
                    next_id += 1;
                }
                if rng.next(6) == 0 && !handles.is_empty() {
                    let (r, _) = &handles[rng.next(handles.len() as u64)];
                    r.closed.set(true);
                    closed_ids.push(r.id);
                }
                let rows: Vec<(usize, usize)> = running.iter().map(|&(_, i, m)| (i, m)).collect();
                let f = q.next_batch(now, &rows, true);
                for e in &f.expired {
                    assert!(e.deadline.unwrap() <= now, "only expired entries are dropped");
                }
                for e in &f.batch {
                    assert!(!e.item.closed.get(), "seed {seed}: a closed request was scheduled");
                    assert!(e.deadline.is_none_or(|d| d > now), "seed {seed}: an expired request was scheduled");
                    started.push(e.item.id);
                    running.push((e.item.id, e.item.input, e.item.max_new));
                }
                let all: Vec<(usize, usize)> = running.iter().map(|&(_, i, m)| (i, m)).collect();
                assert!(UNIT.batch_bytes(all.iter().copied()) <= budget, "seed {seed}: budget exceeded");
                assert!(running.len() <= max_batch, "seed {seed}: batch size exceeded");
                // Some running rows finish.
                running.retain(|_| rng.next(3) != 0);
            }
            let mut sorted = started.clone();
            sorted.sort();
            assert_eq!(started, sorted, "seed {seed}: FIFO order broken");
        }
    }
}
