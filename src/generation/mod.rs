//! Token selection and stop conditions on plain slices: no model, no I/O, unit-tested alone.

pub mod beam;
pub mod detokenize;
pub mod processors;

use serde::Serialize;

/// Decoding parameters of one row, already validated by the API layer. The defaults are plain
/// greedy decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationParams {
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
    /// Sample from the (warped) distribution instead of taking the argmax.
    pub do_sample: bool,
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1.0 = off.
    pub top_p: f32,
    /// 1.0 = off.
    pub typical_p: f32,
    /// 1.0 = off.
    pub repetition_penalty: f32,
    /// 0 = off.
    pub no_repeat_ngram_size: usize,
    /// OpenAI's additive penalties over the generated ids; 0 = off.
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// Seed of the row's sampler; the same seed gives the same tokens, alone or in any batch.
    pub seed: u64,
}

impl Default for GenerationParams {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl GenerationParams {
    /// Plain greedy decoding of up to 20 tokens.
    pub const DEFAULT: Self = Self {
        max_new_tokens: 20,
        min_new_tokens: 0,
        do_sample: false,
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
        typical_p: 1.0,
        repetition_penalty: 1.0,
        no_repeat_ngram_size: 0,
        presence_penalty: 0.0,
        frequency_penalty: 0.0,
        seed: 0,
    };

    /// Plain greedy decoding of exactly `min..=max` tokens.
    pub fn greedy(max_new_tokens: usize, min_new_tokens: usize) -> Self {
        Self { max_new_tokens, min_new_tokens, ..Self::default() }
    }

    fn needs_processing(&self) -> bool {
        self.do_sample
            || self.repetition_penalty != 1.0
            || self.no_repeat_ngram_size > 0
            || self.presence_penalty != 0.0
            || self.frequency_penalty != 0.0
    }
}

/// What a row reports about each token it chooses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Report {
    /// The chosen token's log-probability.
    pub logprob: bool,
    /// The log-probabilities of this many most likely tokens (0: none).
    pub top: usize,
}

/// One chosen token, with what was asked about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Chosen {
    pub token: u32,
    pub logprob: Option<f32>,
    /// The most likely tokens and their log-probabilities, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// Chooses one row's tokens step by step: logits processors, then the argmax or a seeded draw.
/// Keeps the row's decoder ids (start token included, as transformers' processors see them).
#[derive(Debug, Clone)]
pub struct TokenChooser {
    params: GenerationParams,
    /// Added to the logits before anything else (OpenAI's `logit_bias`).
    bias: std::sync::Arc<[(u32, f32)]>,
    eos: u32,
    history: Vec<u32>,
    rng: processors::Rng,
    scratch: Vec<f32>,
}

impl TokenChooser {
    pub fn new(params: GenerationParams, decoder_start: u32, eos: u32) -> Self {
        Self {
            params,
            bias: std::sync::Arc::from([]),
            eos,
            history: vec![decoder_start],
            rng: processors::Rng::new(params.seed),
            scratch: Vec::new(),
        }
    }

    /// Adds these `(id, bias)` pairs to every step's logits.
    pub fn with_logit_bias(mut self, bias: std::sync::Arc<[(u32, f32)]>) -> Self {
        self.bias = bias;
        self
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.history.len() - 1
    }

    /// The next token given this step's raw logits; it is appended to the history.
    pub fn next(&mut self, logits: &[f32]) -> u32 {
        self.next_with_logprob(logits, false).0
    }

    /// The next token and, if asked, its log-probability under the processed distribution it
    /// was chosen from (what TGI reports in `details`).
    pub fn next_with_logprob(&mut self, logits: &[f32], want_logprob: bool) -> (u32, Option<f32>) {
        let c = self.choose(logits, Report { logprob: want_logprob, top: 0 });
        (c.token, c.logprob)
    }

    /// The next token, and what `report` asks about it: log-probabilities under the processed
    /// distribution it was chosen from (after the bias, penalties and warpers), the most likely
    /// alternatives under the same distribution.
    pub fn choose(&mut self, logits: &[f32], report: Report) -> Chosen {
        let p = self.params;
        let generated = self.generated();
        let plain = !p.needs_processing() && self.bias.is_empty();
        if plain && !report.logprob && report.top == 0 {
            let token = greedy_next(logits, generated, &p, self.eos);
            self.history.push(token);
            return Chosen { token, logprob: None, top: Vec::new() };
        }
        let l = &mut self.scratch;
        l.clear();
        l.extend_from_slice(logits);
        processors::logit_bias(l, &self.bias);
        processors::repetition_penalty(l, &self.history, p.repetition_penalty);
        processors::presence_frequency(l, &self.history[1..], p.presence_penalty, p.frequency_penalty);
        processors::no_repeat_ngram(l, &self.history, p.no_repeat_ngram_size);
        if generated < p.min_new_tokens
            && let Some(v) = l.get_mut(self.eos as usize)
        {
            *v = f32::NEG_INFINITY;
        }
        let token = if p.do_sample {
            processors::temperature(l, p.temperature);
            if p.top_k > 0 {
                processors::top_k(l, p.top_k, 1);
            }
            processors::top_p(l, p.top_p, 1);
            processors::typical_p(l, p.typical_p, 1);
            processors::sample(l, &mut self.rng) as u32
        } else {
            argmax(l, None) as u32
        };
        let log_z = if report.logprob || report.top > 0 { processors::log_sum_exp(l) } else { 0.0 };
        let logprob = report.logprob.then(|| l[token as usize] - log_z);
        let top = processors::top_logprobs(l, report.top, log_z);
        self.history.push(token);
        Chosen { token, logprob, top }
    }

    /// Why the row stops after the token just chosen, if it does.
    pub fn finished(&self) -> Option<FinishReason> {
        let last = *self.history.last().expect("the start token is always there");
        finish_reason(last, self.generated(), &self.params, self.eos)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model produced its end-of-sequence token.
    Eos,
    /// `max_new_tokens` were generated.
    Length,
    /// The text reached one of the request's stop sequences.
    Stop,
}

/// Index of the largest value; the first one wins a tie (as `torch.argmax`). `banned` is skipped.
pub fn argmax(logits: &[f32], banned: Option<usize>) -> usize {
    // Two passes the compiler vectorises (the largest value, then its first position) instead of
    // one branchy scalar loop: it runs over the whole vocabulary for every row at every step.
    let (head, tail) = match banned {
        Some(b) if b < logits.len() => (&logits[..b], &logits[b + 1..]),
        _ => (logits, &[][..]),
    };
    let max = lane_max(head).max(lane_max(tail));
    let first = |part: &[f32], offset: usize| part.iter().position(|&v| v == max).map(|i| i + offset);
    let tail_start = logits.len() - tail.len();
    first(head, 0)
        .or_else(|| first(tail, tail_start))
        // Nothing but NaN: the first index that is not banned.
        .unwrap_or(if banned == Some(0) { 1 } else { 0 })
}

/// The largest value (NaN ignored; -inf when there is none), over 16 independent lanes.
fn lane_max(values: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = values.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = a.max(v);
        }
    }
    rest.iter().chain(&acc).fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

/// Greedy choice of the next token, given how many tokens the row has generated so far.
/// EOS is suppressed until `min_new_tokens` are reached (transformers' MinNewTokensLogitsProcessor).
pub fn greedy_next(logits: &[f32], generated: usize, params: &GenerationParams, eos: u32) -> u32 {
    let banned = (generated < params.min_new_tokens).then_some(eos as usize);
    argmax(logits, banned) as u32
}

/// Whether a row stops after emitting `token` as its `generated`-th token (1-based).
pub fn finish_reason(token: u32, generated: usize, params: &GenerationParams, eos: u32) -> Option<FinishReason> {
    if token == eos {
        Some(FinishReason::Eos)
    } else if generated >= params.max_new_tokens {
        Some(FinishReason::Length)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: GenerationParams = GenerationParams { max_new_tokens: 3, min_new_tokens: 2, ..DEFAULT };
    const DEFAULT: GenerationParams = GenerationParams::DEFAULT;

    #[test]
    fn argmax_takes_first_of_equal_values() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0], None), 1);
    }

    #[test]
    fn argmax_matches_a_plain_scan_on_long_rows() {
        let mut rng = processors::Rng::new(7);
        for len in [1, 15, 16, 17, 100, 32_128] {
            let row: Vec<f32> = (0..len).map(|_| (rng.uniform() * 40.0).round() as f32 - 20.0).collect();
            for banned in [None, Some(0), Some(len / 2), Some(len - 1)] {
                let plain = (0..len)
                    .filter(|&i| Some(i) != banned)
                    .fold(None, |best: Option<usize>, i| match best {
                        Some(b) if row[b] >= row[i] => Some(b),
                        _ => Some(i),
                    })
                    .unwrap_or(0);
                if len > 1 || banned.is_none() {
                    assert_eq!(argmax(&row, banned), plain, "len {len}, banned {banned:?}");
                }
            }
        }
    }

    #[test]
    fn argmax_skips_banned_index() {
        assert_eq!(argmax(&[1.0, 3.0, 2.0], Some(1)), 2);
    }

    #[test]
    fn argmax_handles_all_negative_infinity() {
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY], Some(0)), 1);
    }

    #[test]
    fn eos_is_suppressed_until_min_new_tokens() {
        let logits = [0.0, 9.0, 1.0]; // EOS (id 1) is the best token
        assert_eq!(greedy_next(&logits, 0, &P, 1), 2);
        assert_eq!(greedy_next(&logits, 1, &P, 1), 2);
        assert_eq!(greedy_next(&logits, 2, &P, 1), 1);
    }

    #[test]
    fn chooser_applies_penalties_and_tracks_history() {
        let params = GenerationParams { repetition_penalty: 4.0, ..GenerationParams::greedy(3, 0) };
        let mut c = TokenChooser::new(params, 0, 1);
        // Token 2 wins first; then its penalised logit (3 / 4) loses to token 3.
        assert_eq!(c.next(&[0.0, -1.0, 3.0, 2.0]), 2);
        assert_eq!(c.next(&[0.0, -1.0, 3.0, 2.0]), 3);
        assert_eq!(c.generated(), 2);
        assert_eq!(c.finished(), None);
        // Both penalised now: 3 / 4 beats 2 / 4 and the start token's 0.
        assert_eq!(c.next(&[0.0, -1.0, 3.0, 2.0]), 2);
        assert_eq!(c.finished(), Some(FinishReason::Length));
    }

    #[test]
    fn logprob_is_that_of_the_processed_distribution() {
        let mut c = TokenChooser::new(GenerationParams::greedy(3, 1), 0, 1);
        // EOS (id 1) is banned at the first step, so the choice is among ids 0 and 2 only.
        let (t, lp) = c.next_with_logprob(&[0.0, 5.0, 0.0], true);
        assert_eq!(t, 0);
        assert!((lp.unwrap() - 0.5f32.ln()).abs() < 1e-6, "{lp:?}");
        let (t, lp) = c.next_with_logprob(&[0.0, 5.0, 0.0], false);
        assert_eq!((t, lp), (1, None));
    }

    #[test]
    fn bias_and_penalties_steer_the_choice_and_top_reports_alternatives() {
        let params = GenerationParams { frequency_penalty: 2.5, ..GenerationParams::greedy(5, 0) };
        let bias: std::sync::Arc<[(u32, f32)]> = std::sync::Arc::from([(3u32, 1.5f32)]);
        let mut c = TokenChooser::new(params, 0, 1).with_logit_bias(bias);
        let logits = [0.0, -9.0, 2.0, 1.0];
        // Id 3 is biased to 2.5 and beats id 2 (2.0); once chosen, it pays 2.5 per use.
        let first = c.choose(&logits, Report { logprob: true, top: 2 });
        assert_eq!(first.token, 3);
        assert_eq!(first.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![3, 2]);
        assert_eq!(first.logprob, Some(first.top[0].1));
        let second = c.choose(&logits, Report::default());
        assert_eq!((second.token, second.logprob, second.top.len()), (2, None, 0));
    }

    #[test]
    fn seeded_sampling_repeats() {
        let params = GenerationParams { do_sample: true, seed: 9, top_k: 3, ..GenerationParams::greedy(50, 0) };
        let logits: Vec<f32> = (0..10).map(|i| (i as f32) * 0.3).collect();
        let run = || {
            let mut c = TokenChooser::new(params, 0, 99);
            (0..20).map(|_| c.next(&logits)).collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        assert!(a.iter().all(|&t| t >= 7), "top_k 3 keeps ids 7, 8, 9: {a:?}");
    }

    #[test]
    fn rows_stop_at_eos_or_length() {
        assert_eq!(finish_reason(1, 1, &P, 1), Some(FinishReason::Eos));
        assert_eq!(finish_reason(5, 2, &P, 1), None);
        assert_eq!(finish_reason(5, 3, &P, 1), Some(FinishReason::Length));
        // EOS as the last allowed token is still an EOS finish.
        assert_eq!(finish_reason(1, 3, &P, 1), Some(FinishReason::Eos));
    }
}
