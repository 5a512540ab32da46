//! Logits processors and warpers with transformers' semantics, on plain slices. Each works on
//! one row's logits (`&mut [f32]`, one value per vocabulary id) and, where it needs it, the
//! row's decoder ids so far *including the decoder start token* (what transformers passes as
//! `input_ids` for encoder-decoder models). Order, as in transformers' `generate`: repetition
//! penalty, no-repeat n-gram, min-new-tokens, then temperature, top-k, top-p, typical-p.

/// `RepetitionPenaltyLogitsProcessor`: every id already present is divided by `penalty` when
/// its logit is positive and multiplied by it when negative.
pub fn repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut seen = history.to_vec();
    seen.sort_unstable();
    seen.dedup();
    for id in seen {
        if let Some(v) = logits.get_mut(id as usize) {
            *v = if *v < 0.0 { *v * penalty } else { *v / penalty };
        }
    }
}

/// `NoRepeatNGramLogitsProcessor`: bans every token that would complete an n-gram of size `n`
/// already present in `history`.
pub fn no_repeat_ngram(logits: &mut [f32], history: &[u32], n: usize) {
    if n == 0 || history.len() + 1 < n {
        return;
    }
    let prefix = &history[history.len() + 1 - n..];
    for window in history.windows(n) {
        if &window[..n - 1] == prefix
            && let Some(v) = logits.get_mut(window[n - 1] as usize)
        {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// OpenAI's presence and frequency penalties: each id generated `c` times so far is lowered by
/// `c * frequency + presence` (additive, over the generated ids only, the start token excluded).
pub fn presence_frequency(logits: &mut [f32], generated: &[u32], presence: f32, frequency: f32) {
    if (presence == 0.0 && frequency == 0.0) || generated.is_empty() {
        return;
    }
    let mut seen = generated.to_vec();
    seen.sort_unstable();
    for run in seen.chunk_by(|a, b| a == b) {
        if let Some(v) = logits.get_mut(run[0] as usize) {
            *v -= run.len() as f32 * frequency + presence;
        }
    }
}

/// Adds each `(id, bias)` to that id's logit (OpenAI's `logit_bias`; ids outside the row are
/// skipped, the API refuses them first).
pub fn logit_bias(logits: &mut [f32], bias: &[(u32, f32)]) {
    for &(id, b) in bias {
        if let Some(v) = logits.get_mut(id as usize) {
            *v += b;
        }
    }
}

/// The `k` most likely ids of a row with their log-probabilities (`log_z`: the row's
/// log-sum-exp), most likely first, ties by lower id; ids at -inf are left out.
pub fn top_logprobs(logits: &[f32], k: usize, log_z: f32) -> Vec<(u32, f32)> {
    if k == 0 {
        return Vec::new();
    }
    let mut ids: Vec<u32> = (0..logits.len() as u32).filter(|&i| logits[i as usize].is_finite()).collect();
    let by_rank = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    if ids.len() > k {
        ids.select_nth_unstable_by(k - 1, by_rank);
        ids.truncate(k);
    }
    ids.sort_by(by_rank);
    ids.into_iter().map(|i| (i, logits[i as usize] - log_z)).collect()
}

/// `TemperatureLogitsWarper`.
pub fn temperature(logits: &mut [f32], t: f32) {
    if t != 1.0 {
        for v in logits.iter_mut() {
            *v /= t;
        }
    }
}

/// `TopKLogitsWarper`: keeps the `k` largest (and every value tied with the k-th).
pub fn top_k(logits: &mut [f32], k: usize, min_keep: usize) {
    let k = k.max(min_keep);
    if k == 0 || k >= logits.len() {
        return;
    }
    let mut sorted: Vec<f32> = logits.to_vec();
    sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let threshold = sorted[k - 1];
    for v in logits.iter_mut() {
        if *v < threshold {
            *v = f32::NEG_INFINITY;
        }
    }
}

/// Indices sorted by ascending logit (stable, like `torch.sort`), and the softmax of the row.
fn ascending_with_probs(logits: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]));
    (order, softmax(logits))
}

/// `TopPLogitsWarper`: keeps the smallest set of most likely tokens whose probability sums to
/// at least `p` (transformers removes tokens whose ascending cumulative probability is <= 1 - p).
pub fn top_p(logits: &mut [f32], p: f32, min_keep: usize) {
    if p >= 1.0 {
        return;
    }
    let (order, probs) = ascending_with_probs(logits);
    let n = order.len();
    let mut cumulative = 0.0f32;
    let mut remove = Vec::new();
    for (rank, &i) in order.iter().enumerate() {
        cumulative += probs[i];
        if cumulative <= 1.0 - p && rank < n.saturating_sub(min_keep) {
            remove.push(i);
        }
    }
    for i in remove {
        logits[i] = f32::NEG_INFINITY;
    }
}

/// `TypicalLogitsWarper`: ranks tokens by how far their surprise is from the row's entropy and
/// keeps the closest ones up to probability `mass` (ties with the last kept token stay).
pub fn typical_p(logits: &mut [f32], mass: f32, min_keep: usize) {
    if mass >= 1.0 || logits.is_empty() {
        return;
    }
    let log_z = log_sum_exp(logits);
    let logp: Vec<f32> = logits.iter().map(|v| v - log_z).collect();
    let entropy: f32 = -logp.iter().filter(|l| l.is_finite()).map(|l| l.exp() * l).sum::<f32>();
    let shift: Vec<f32> = logp.iter().map(|l| (-l - entropy).abs()).collect();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| shift[a].total_cmp(&shift[b]));
    let mut cumulative = 0.0f32;
    let mut below = 0;
    for &i in &order {
        cumulative += logp[i].exp();
        if cumulative < mass {
            below += 1;
        }
    }
    let threshold = shift[order[below.min(order.len() - 1)]];
    for (rank, &i) in order.iter().enumerate() {
        if rank >= min_keep && shift[i] > threshold {
            logits[i] = f32::NEG_INFINITY;
        }
    }
}

/// `ln(sum(exp(x)))`, accumulated in f64: over a 32k vocabulary an f32 running sum drifts by
/// ~1e-4 in log space (many equal small terms round the same way), which shows in beam scores.
pub fn log_sum_exp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return max;
    }
    let sum: f64 = logits.iter().map(|&v| ((v - max) as f64).exp()).sum();
    (max as f64 + sum.ln()) as f32
}

pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let log_z = log_sum_exp(logits);
    logits.iter().map(|v| (v - log_z).exp()).collect()
}

/// A seeded generator (SplitMix64): the same seed gives the same draws on every machine.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Draws an id from the softmax of `logits` (entries at -inf never drawn).
pub fn sample(logits: &[f32], rng: &mut Rng) -> usize {
    let probs = softmax(logits);
    let total: f64 = probs.iter().map(|&p| p as f64).sum();
    let mut target = rng.uniform() * total;
    let mut last_possible = 0;
    for (i, &p) in probs.iter().enumerate() {
        if p > 0.0 {
            last_possible = i;
            if target < p as f64 {
                return i;
            }
            target -= p as f64;
        }
    }
    last_possible
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEG: f32 = f32::NEG_INFINITY;

    #[test]
    fn presence_and_frequency_penalties_are_additive_per_count() {
        let mut l = vec![1.0, 1.0, 1.0, 1.0];
        // Id 2 twice, id 0 once: 1 - (2 * 0.5 + 0.25) and 1 - (0.5 + 0.25).
        presence_frequency(&mut l, &[2, 0, 2], 0.25, 0.5);
        assert_eq!(l, vec![0.25, 1.0, -0.25, 1.0]);
        let mut l = vec![1.0, 1.0];
        presence_frequency(&mut l, &[1], -1.0, 0.0);
        assert_eq!(l, vec![1.0, 2.0]);
    }

    #[test]
    fn logit_bias_adds_to_the_named_ids() {
        let mut l = vec![0.0, 1.0, 2.0];
        logit_bias(&mut l, &[(0, 5.0), (2, -100.0), (9, 1.0)]);
        assert_eq!(l, vec![5.0, 1.0, -98.0]);
    }

    #[test]
    fn top_logprobs_are_the_best_ids_best_first() {
        let l = [0.0, 3.0, NEG, 3.0, 1.0];
        let z = log_sum_exp(&l);
        let top = top_logprobs(&l, 3, z);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3, 4]);
        assert!((top[2].1 - (1.0 - z)).abs() < 1e-6);
        // Never an id at -inf, even when fewer are left than asked for.
        assert_eq!(top_logprobs(&l, 9, z).len(), 4);
        assert!(top_logprobs(&l, 0, z).is_empty());
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let mut l = vec![2.0, -2.0, 4.0, 1.0];
        // Token 1 appears twice: penalised once, like transformers' gather/scatter.
        repetition_penalty(&mut l, &[0, 1, 1, 2], 2.0);
        assert_eq!(l, vec![1.0, -4.0, 2.0, 1.0]);
    }

    #[test]
    fn no_repeat_ngram_bans_completions_of_seen_ngrams() {
        // history 0 5 6 7 5 6: bigram (5,6) was followed by 7, and the row now ends in 6;
        // with n = 3 the last two tokens (5,6) already occurred followed by 7, so 7 is banned.
        let mut l = vec![0.0; 10];
        no_repeat_ngram(&mut l, &[0, 5, 6, 7, 5, 6], 3);
        assert_eq!(l[7], NEG);
        assert_eq!(l.iter().filter(|v| v.is_infinite()).count(), 1);
        // n = 2: everything that followed a 6 before (7) is banned.
        let mut l = vec![0.0; 10];
        no_repeat_ngram(&mut l, &[0, 5, 6, 7, 5, 6], 2);
        assert_eq!(l[7], NEG);
        // Too short a history bans nothing.
        let mut l = vec![0.0; 10];
        no_repeat_ngram(&mut l, &[0], 3);
        assert!(l.iter().all(|v| *v == 0.0));
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth_value() {
        let mut l = vec![1.0, 5.0, 3.0, 3.0, 0.0];
        top_k(&mut l, 2, 1);
        assert_eq!(l, vec![NEG, 5.0, 3.0, 3.0, NEG]);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probabilities 0.5, 0.3, 0.2 (logits are their logs)
        let mut l: Vec<f32> = [0.5f32, 0.3, 0.2].iter().map(|p| p.ln()).collect();
        top_p(&mut l, 0.75, 1);
        assert!(l[0].is_finite() && l[1].is_finite() && l[2] == NEG, "{l:?}");
        let mut l: Vec<f32> = [0.5f32, 0.3, 0.2].iter().map(|p| p.ln()).collect();
        top_p(&mut l, 0.4, 1);
        assert!(l[0].is_finite() && l[1] == NEG && l[2] == NEG, "{l:?}");
    }

    #[test]
    fn top_p_always_keeps_min_tokens() {
        let mut l = vec![10.0, 0.0, 0.0];
        top_p(&mut l, 0.01, 2);
        assert_eq!(l.iter().filter(|v| v.is_finite()).count(), 2);
    }

    #[test]
    fn typical_p_keeps_tokens_near_the_entropy() {
        // p = 0.6, 0.3, 0.1: entropy 0.898; |surprise - entropy| = 0.387, 0.306, 1.405.
        let probs = [0.6f32, 0.3, 0.1];
        let mut l: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        typical_p(&mut l, 0.5, 1);
        assert!(l[0].is_finite() && l[1].is_finite() && l[2] == NEG, "{l:?}");
        let mut l: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        typical_p(&mut l, 0.2, 1);
        assert!(l[0] == NEG && l[1].is_finite() && l[2] == NEG, "{l:?}");
        // Uniform: every token is equally typical, and ties with the last kept one stay.
        let mut l = vec![0.0; 4];
        typical_p(&mut l, 0.5, 1);
        assert!(l.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn temperature_scales() {
        let mut l = vec![2.0, -4.0];
        temperature(&mut l, 2.0);
        assert_eq!(l, vec![1.0, -2.0]);
    }

    #[test]
    fn sampling_is_reproducible_and_respects_the_distribution() {
        let logits: Vec<f32> = [0.7f32, 0.2, 0.1, 0.0].iter().map(|p| p.ln()).collect();
        let draws = |seed| {
            let mut rng = Rng::new(seed);
            (0..2000).map(|_| sample(&logits, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draws(42), draws(42));
        assert_ne!(draws(42), draws(43));
        let d = draws(7);
        let freq = |i| d.iter().filter(|&&x| x == i).count() as f64 / d.len() as f64;
        assert!((freq(0) - 0.7).abs() < 0.04 && (freq(1) - 0.2).abs() < 0.04, "{} {}", freq(0), freq(1));
        assert_eq!(freq(3), 0.0, "a zero-probability token is never drawn");
    }
}
