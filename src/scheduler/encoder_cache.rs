//! The encoder cache (`encoder_cache_mb` per model; 0 turns it off): for an input's token ids,
//! the encoder's output over its real positions and, once a decoder has started from it, its
//! first decoder step (the logits, the one-position self-attention K/V and the cross-attention
//! K/V, the projection that costs more than a decoder step). The first step always starts from
//! the decoder start token, so it depends on the input alone. Least recently used entries leave
//! first, within the byte budget; the model's lanes share one cache.
//!
//! A hit skips the encoder, and the first decoder step when the entry has it: the row's values
//! are the bytes computed before, put back into the batch with zeros where the batch pads it
//! (padding is masked, so it never reaches a real position). Rows of one batch with the same
//! input are computed once. A batch where nothing was found and nothing repeats runs exactly as
//! without the cache (its rows are copied in afterwards).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::kv::RowCache;
use crate::model::{DecoderState, Encoded, Logits, ModelError, Seq2SeqModel};

use super::buckets::encode_bucketed;
use super::lru::Lru;

/// What the cache counts (`t5serve_encoder_cache_*`); zeros while it is off.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Rows whose encoder output was found (in the cache, or computed for an earlier row of
    /// the same batch).
    pub hits: AtomicU64,
    /// Rows whose input the encoder had to run for.
    pub misses: AtomicU64,
    pub evictions: AtomicU64,
    /// Bytes the entries hold.
    pub bytes: AtomicU64,
}

/// One input's cached work.
pub struct Entry {
    /// `[len, d_model]`: the encoder's output over the input's positions.
    hidden: Arc<[f32]>,
    first: Option<Arc<FirstStep>>,
}

/// The first decoder step of one input.
pub struct FirstStep {
    logits: Box<[f32]>,
    cache: RowCache,
}

impl Entry {
    /// Bytes held, the key's ids and bookkeeping included.
    fn bytes(&self, key: &[u32]) -> usize {
        let first = self.first.as_ref().map_or(0, |f| std::mem::size_of_val(&*f.logits) + f.cache.bytes());
        std::mem::size_of_val(&*self.hidden) + first + 2 * std::mem::size_of_val(key) + 128
    }
}

pub struct EncoderCache {
    entries: Mutex<Lru<Arc<Entry>>>,
    counters: Arc<CacheCounters>,
}

impl EncoderCache {
    /// A cache of `capacity` bytes counting into `counters`; `None` for 0 (off).
    pub fn new(capacity: usize, counters: Arc<CacheCounters>) -> Option<Self> {
        (capacity > 0).then(|| Self { entries: Mutex::new(Lru::new(capacity)), counters })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru<Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, key: &[u32]) -> Option<Arc<Entry>> {
        let found = self.lock().get(key);
        let counter = if found.is_some() { &self.counters.hits } else { &self.counters.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    fn put(&self, key: &[u32], entry: Arc<Entry>) {
        let bytes = entry.bytes(key);
        let mut entries = self.lock();
        let inserted = entries.insert(key, entry, bytes);
        self.counters.bytes.store(entries.bytes() as u64, Ordering::Relaxed);
        self.counters.evictions.fetch_add(inserted.evicted as u64, Ordering::Relaxed);
    }
}

impl Drop for EncoderCache {
    /// A model unloaded (or a version replaced) holds no more cache.
    fn drop(&mut self) {
        self.counters.bytes.store(0, Ordering::Relaxed);
    }
}

/// Input tokens the encoder ran over, and the padded size of its batches.
pub type EncoderTokens = (usize, usize);

/// One input's encoder output over its real positions, `[len, d_model]`.
pub type Hidden = Arc<[f32]>;

/// A batch after its encoder run and first decoder step.
pub(super) struct Prefill {
    pub(super) enc: Encoded,
    pub(super) logits: Logits,
    pub(super) state: DecoderState,
    pub(super) encoded: EncoderTokens,
}

/// Each distinct input of a batch (in first-seen order) and, for every row, its distinct input.
fn distinct<'a>(inputs: &[&'a [u32]]) -> (Vec<&'a [u32]>, Vec<usize>) {
    let mut seen: HashMap<&[u32], usize> = HashMap::new();
    let mut unique = Vec::new();
    let of_row = inputs
        .iter()
        .map(|&ids| {
            *seen.entry(ids).or_insert_with(|| {
                unique.push(ids);
                unique.len() - 1
            })
        })
        .collect();
    (unique, of_row)
}

/// Encodes inputs sorted by length (in length buckets) and runs their first decoder step as one
/// batch; with a cache, what it holds is reused and what was computed is added to it.
pub(super) fn prefill(
    model: &Seq2SeqModel,
    cache: Option<&EncoderCache>,
    inputs: &[&[u32]],
) -> Result<Prefill, ModelError> {
    let start = |n| vec![model.dims.decoder_start_token_id as i64; n];
    let Some(cache) = cache else {
        let (enc, padded) = encode_bucketed(model, inputs)?;
        let (logits, state) = model.decode_first(&start(inputs.len()), &enc)?;
        return Ok(Prefill { enc, logits, state, encoded: (inputs.iter().map(|r| r.len()).sum(), padded) });
    };
    let (unique, of_row) = distinct(inputs);
    let repeats = inputs.len() - unique.len();
    cache.counters.hits.fetch_add(repeats as u64, Ordering::Relaxed);
    let mut found: Vec<Option<Arc<Entry>>> = unique.iter().map(|ids| cache.get(ids)).collect();
    // The inputs without a first step, and among them those without an encoder output.
    let need: Vec<usize> = (0..unique.len()).filter(|&u| found[u].as_ref().is_none_or(|e| e.first.is_none())).collect();
    let to_encode: Vec<&[u32]> = need.iter().filter(|&&u| found[u].is_none()).map(|&u| unique[u]).collect();
    let mut encoded = (0, 0);
    let mut direct = None;
    if !need.is_empty() {
        let enc = if to_encode.is_empty() {
            None
        } else {
            let (enc, padded) = encode_bucketed(model, &to_encode)?;
            encoded = (to_encode.iter().map(|r| r.len()).sum(), padded);
            Some(enc)
        };
        // The hidden states of each input in `need`: a row of the new batch, or cached.
        let mut next_new = 0;
        let hidden: Vec<Arc<[f32]>> = need
            .iter()
            .map(|&u| match &found[u] {
                Some(e) => e.hidden.clone(),
                None => {
                    next_new += 1;
                    enc.as_ref().expect("encoded").row_hidden(next_new - 1, unique[u].len()).into()
                }
            })
            .collect();
        let batch = match enc {
            Some(enc) if to_encode.len() == need.len() => enc,
            _ => Encoded::from_rows(&hidden.iter().map(|h| &**h).collect::<Vec<_>>(), model.dims.d_model, true),
        };
        let (logits, state) = model.decode_first(&start(need.len()), &batch)?;
        for (k, &u) in need.iter().enumerate() {
            let first = FirstStep { logits: logits.row(k).into(), cache: state.cut_row(k, unique[u].len()) };
            let entry = Arc::new(Entry { hidden: hidden[k].clone(), first: Some(Arc::new(first)) });
            cache.put(unique[u], entry.clone());
            found[u] = Some(entry);
        }
        // Nothing reused and nothing repeated: the batch as computed, as without the cache.
        if need.len() == inputs.len() && to_encode.len() == need.len() {
            direct = Some(Prefill { enc: batch, logits, state, encoded });
        }
    }
    if let Some(p) = direct {
        return Ok(p);
    }
    let rows: Vec<&Entry> =
        of_row.iter().map(|&u| &**found[u].as_ref().expect("every input found or computed")).collect();
    let firsts: Vec<&FirstStep> = rows.iter().map(|e| &**e.first.as_ref().expect("a first step")).collect();
    let hidden: Vec<&[f32]> = rows.iter().map(|e| &*e.hidden).collect();
    let vocab = firsts[0].logits.len();
    let logits = Logits::from_rows(firsts.iter().flat_map(|f| f.logits.iter().copied()).collect(), vocab);
    let state = DecoderState::from_rows(&firsts.iter().map(|f| &f.cache).collect::<Vec<_>>());
    let enc = Encoded::from_rows(&hidden, model.dims.d_model, model.steps_need_encoder_output());
    Ok(Prefill { enc, logits, state, encoded })
}

/// Each input's encoder output over its real positions (`[len, d_model]`), for embedding rows:
/// from the cache where it is there, else encoded (each distinct input once) and added to it.
/// Returns them with the input tokens the encoder ran over and the padded size of its batches.
pub(super) fn encoder_outputs(
    model: &Seq2SeqModel,
    cache: &EncoderCache,
    inputs: &[&[u32]],
) -> Result<(Vec<Hidden>, EncoderTokens), ModelError> {
    let (unique, of_row) = distinct(inputs);
    cache.counters.hits.fetch_add((inputs.len() - unique.len()) as u64, Ordering::Relaxed);
    let mut hidden: Vec<Option<Arc<[f32]>>> =
        unique.iter().map(|ids| cache.get(ids).map(|e| e.hidden.clone())).collect();
    let missing: Vec<usize> = (0..unique.len()).filter(|&u| hidden[u].is_none()).collect();
    let mut encoded = (0, 0);
    if !missing.is_empty() {
        let rows: Vec<&[u32]> = missing.iter().map(|&u| unique[u]).collect();
        let (enc, padded) = encode_bucketed(model, &rows)?;
        encoded = (rows.iter().map(|r| r.len()).sum(), padded);
        for (k, &u) in missing.iter().enumerate() {
            let h: Arc<[f32]> = enc.row_hidden(k, unique[u].len()).into();
            cache.put(unique[u], Arc::new(Entry { hidden: h.clone(), first: None }));
            hidden[u] = Some(h);
        }
    }
    Ok((of_row.iter().map(|&u| hidden[u].clone().expect("found or encoded")).collect(), encoded))
}
