//! Beam search bookkeeping on plain slices, with transformers' (4.57) semantics: log-softmax,
//! then the logits processors on log-probabilities, the top `2 * num_beams` continuations over
//! all beams, finished hypotheses scored `sum_logprobs / generated_len ** length_penalty`, and
//! `early_stopping` true / false (heuristic) / never. The decode loop owns the model rows: each
//! step it feeds one logits row per running beam and gathers cache rows by the parents returned.

use super::processors;
use super::{FinishReason, GenerationParams};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStopping {
    /// Stop as soon as `num_beams` hypotheses are finished.
    True,
    /// Stop when the best running beam, at its current length, cannot beat the worst finished one.
    False,
    /// Like False, but assume the best running beam could reach max length (the exact check).
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BeamParams {
    pub num_beams: usize,
    pub num_return_sequences: usize,
    pub length_penalty: f32,
    pub early_stopping: EarlyStopping,
}

#[derive(Debug, Clone, PartialEq)]
struct Beam {
    /// Decoder ids, start token included.
    ids: Vec<u32>,
    /// Sum of the (processed) log-probabilities of the generated tokens.
    sum: f32,
}

/// A finished hypothesis.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated ids (an ending EOS included).
    pub ids: Vec<u32>,
    /// `sum_logprobs / generated_len ** length_penalty`
    pub score: f32,
    pub reason: FinishReason,
}

#[derive(Debug, Clone)]
pub struct BeamSearch {
    beam: BeamParams,
    params: GenerationParams,
    eos: u32,
    running: Vec<Beam>,
    finished: Vec<Hypothesis>,
    improvement_possible: bool,
    done: bool,
}

impl BeamSearch {
    pub fn new(beam: BeamParams, params: GenerationParams, decoder_start: u32, eos: u32) -> Self {
        Self {
            beam,
            params,
            eos,
            // One running beam at first: transformers starts every beam but the first at -1e9,
            // so only the first one's continuations can be chosen at the first step.
            running: vec![Beam { ids: vec![decoder_start], sum: 0.0 }],
            finished: Vec::new(),
            improvement_possible: true,
            done: false,
        }
    }

    /// Rows the search needs in the next decoder run.
    pub fn rows(&self) -> usize {
        if self.done { 0 } else { self.running.len() }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Tokens generated so far by the running beams.
    pub fn generated(&self) -> usize {
        self.running.first().map_or(0, |b| b.ids.len() - 1)
    }

    /// One step: `logits[b]` are the raw logits of running beam `b`. Returns, for each beam of
    /// the next step, the index of its parent among the current running beams (empty when done).
    pub fn step(&mut self, logits: &[&[f32]]) -> Vec<usize> {
        assert_eq!(logits.len(), self.running.len(), "one logits row per running beam");
        let n = self.beam.num_beams;
        let k = 2 * n;
        let cur_len = self.running[0].ids.len();
        let max_length = 1 + self.params.max_new_tokens;
        let generated = cur_len - 1;

        // Candidates (accumulated log-prob, beam, token): the top k of each beam, then overall.
        let mut candidates: Vec<(f32, usize, u32)> = Vec::with_capacity(k * logits.len());
        let mut lp = Vec::new();
        for (b, row) in logits.iter().enumerate() {
            let beam = &self.running[b];
            lp.clear();
            let log_z = processors::log_sum_exp(row);
            lp.extend(row.iter().map(|v| v - log_z));
            processors::repetition_penalty(&mut lp, &beam.ids, self.params.repetition_penalty);
            processors::no_repeat_ngram(&mut lp, &beam.ids, self.params.no_repeat_ngram_size);
            if generated < self.params.min_new_tokens
                && let Some(v) = lp.get_mut(self.eos as usize)
            {
                *v = f32::NEG_INFINITY;
            }
            for (tok, v) in top_k_indices(&lp, k) {
                candidates.push((v + beam.sum, b, tok as u32));
            }
        }
        // Highest first; ties by flat index (beam-major), as a stable top-k would.
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        candidates.truncate(k);

        let hits = |tok: u32| tok == self.eos || cur_len + 1 >= max_length;
        let all_hit = candidates.iter().all(|c| hits(c.2));

        // Finished hypotheses: only among the top `num_beams` candidates.
        let full = self.finished.len() >= n && self.beam.early_stopping == EarlyStopping::True;
        if !full && self.improvement_possible {
            for &(sum, b, tok) in candidates.iter().take(n) {
                if !hits(tok) || !sum.is_finite() {
                    continue;
                }
                let mut ids = self.running[b].ids[1..].to_vec();
                ids.push(tok);
                let score = sum / (cur_len as f32).powf(self.beam.length_penalty);
                let reason = if tok == self.eos { FinishReason::Eos } else { FinishReason::Length };
                self.finished.push(Hypothesis { ids, score, reason });
            }
            self.finished.sort_by(|a, b| b.score.total_cmp(&a.score));
            self.finished.truncate(n);
        }

        // The next running beams: the best `num_beams` candidates that did not stop.
        let mut parents = Vec::with_capacity(n);
        let mut next = Vec::with_capacity(n);
        for &(sum, b, tok) in &candidates {
            if next.len() == n {
                break;
            }
            if hits(tok) {
                continue;
            }
            let mut ids = self.running[b].ids.clone();
            ids.push(tok);
            next.push(Beam { ids, sum });
            parents.push(b);
        }

        // Can a running beam still beat the worst finished hypothesis?
        let new_len = cur_len + 1;
        if let Some(best) = next.first() {
            let hypothetical = if self.beam.early_stopping == EarlyStopping::Never && self.beam.length_penalty > 0.0 {
                max_length - 1
            } else {
                new_len - 1
            };
            let best_possible = best.sum / (hypothetical as f32).powf(self.beam.length_penalty);
            let worst_finished = if self.finished.len() >= n {
                self.finished.iter().map(|h| h.score).fold(f32::INFINITY, f32::min)
            } else {
                -1.0e9
            };
            self.improvement_possible &= best_possible > worst_finished;
        }
        let all_finished_and_early = self.finished.len() >= n && self.beam.early_stopping == EarlyStopping::True;
        self.done = !self.improvement_possible || all_finished_and_early || all_hit || next.len() < n;
        self.running = next;
        if self.done { Vec::new() } else { parents }
    }

    /// The last token of each running beam (what the next decoder run is fed).
    pub fn last_tokens(&self) -> Vec<u32> {
        self.running.iter().map(|b| *b.ids.last().expect("start token")).collect()
    }

    pub fn params(&self) -> &BeamParams {
        &self.beam
    }

    /// The best `num_return_sequences` hypotheses, best first.
    pub fn results(&self) -> Vec<Hypothesis> {
        self.finished.iter().take(self.beam.num_return_sequences).cloned().collect()
    }
}

/// The `k` largest values of `v` with their indices (ties: lower index first), unordered.
fn top_k_indices(v: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    let k = k.min(v.len());
    if k == 0 {
        return Vec::new();
    }
    let cmp = |a: &usize, b: &usize| v[*b].total_cmp(&v[*a]).then(a.cmp(b));
    idx.select_nth_unstable_by(k - 1, cmp);
    idx.truncate(k);
    idx.into_iter().map(|i| (i, v[i])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(max_new: usize) -> GenerationParams {
        GenerationParams::greedy(max_new, 0)
    }

    fn logp(p: &[f32]) -> Vec<f32> {
        p.iter().map(|x| x.ln()).collect()
    }

    #[test]
    fn keeps_the_most_likely_sequence_not_the_greedy_one() {
        // vocab: 0 = start/pad, 1 = EOS, 2 = "a", 3 = "b".
        // Step 1: "a" 0.6, "b" 0.4. After "a": EOS 0.5 / "a" 0.25 / "b" 0.25; after "b": EOS 0.9.
        let bp = BeamParams {
            num_beams: 2,
            num_return_sequences: 2,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::True,
        };
        let mut s = BeamSearch::new(bp, params(5), 0, 1);
        let first = logp(&[1e-9, 1e-9, 0.6, 0.4]);
        let parents = s.step(&[&first]);
        assert_eq!(parents, vec![0, 0], "both beams grow from the single start beam");
        let after_a = logp(&[1e-9, 0.5, 0.25, 0.25]);
        let after_b = logp(&[1e-9, 0.9, 0.05, 0.05]);
        s.step(&[&after_a, &after_b]);
        assert!(s.is_done(), "two finished hypotheses with early stopping");
        let r = s.results();
        // "b EOS": ln(0.4 * 0.9) / 2 = -0.51 beats "a EOS": ln(0.6 * 0.5) / 2 = -0.60.
        assert_eq!(r[0].ids, vec![3, 1]);
        assert_eq!(r[1].ids, vec![2, 1]);
        assert!((r[0].score - (0.4f32 * 0.9).ln() / 2.0).abs() < 1e-5);
        assert_eq!(r[0].reason, FinishReason::Eos);
    }

    #[test]
    fn stops_at_max_new_tokens_with_length_hypotheses() {
        let bp = BeamParams {
            num_beams: 2,
            num_return_sequences: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::False,
        };
        let mut s = BeamSearch::new(bp, params(2), 0, 1);
        let row = logp(&[0.01, 0.01, 0.58, 0.4]);
        let parents = s.step(&[&row]);
        assert_eq!(parents.len(), 2);
        s.step(&[&row, &row]);
        assert!(s.is_done());
        let r = s.results();
        assert_eq!(r[0].ids, vec![2, 2]);
        assert_eq!(r[0].reason, FinishReason::Length);
    }

    #[test]
    fn min_new_tokens_blocks_eos() {
        let bp = BeamParams {
            num_beams: 2,
            num_return_sequences: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::True,
        };
        let mut p = params(4);
        p.min_new_tokens = 2;
        let mut s = BeamSearch::new(bp, p, 0, 1);
        let row = logp(&[0.01, 0.9, 0.05, 0.04]);
        s.step(&[&row]);
        s.step(&[&row, &row]);
        s.step(&[&row, &row]);
        let r = s.results();
        assert!(r[0].ids.len() >= 3, "{r:?}");
        assert_eq!(*r[0].ids.last().unwrap(), 1);
    }
}
