//! Token selection and stop conditions on plain slices: no model, no I/O, unit-tested alone.

pub mod processors;

use serde::Serialize;

/// Decoding parameters of one row, already validated by the API layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationParams {
    pub max_new_tokens: usize,
    pub min_new_tokens: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FinishReason {
    /// The model produced its end-of-sequence token.
    Eos,
    /// `max_new_tokens` were generated.
    Length,
}

/// Index of the largest value; the first one wins a tie (as `torch.argmax`). `banned` is skipped.
pub fn argmax(logits: &[f32], banned: Option<usize>) -> usize {
    let mut best = usize::MAX;
    let mut best_val = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if Some(i) == banned {
            continue;
        }
        if best == usize::MAX || v > best_val {
            best = i;
            best_val = v;
        }
    }
    best
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

    const P: GenerationParams = GenerationParams { max_new_tokens: 3, min_new_tokens: 2 };

    #[test]
    fn argmax_takes_first_of_equal_values() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0], None), 1);
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
    fn rows_stop_at_eos_or_length() {
        assert_eq!(finish_reason(1, 1, &P, 1), Some(FinishReason::Eos));
        assert_eq!(finish_reason(5, 2, &P, 1), None);
        assert_eq!(finish_reason(5, 3, &P, 1), Some(FinishReason::Length));
        // EOS as the last allowed token is still an EOS finish.
        assert_eq!(finish_reason(1, 3, &P, 1), Some(FinishReason::Eos));
    }
}
