//! Label scoring for classification: the teacher-forced log-likelihood of each candidate label
//! (its tokens and EOS) given an input. Each input is encoded once; the first decoder step runs
//! once per input, and its cache (cross-attention K/V included) is copied to one row per label;
//! then all labels of all inputs are fed token by token in one batch.

use crate::generation::processors::log_sum_exp;
use crate::model::{ModelError, Seq2SeqModel};

use super::encoder_cache::{EncoderCache, EncoderTokens, Prefill, prefill};
use super::{Event, RowError, RowRequest};

/// The log-likelihood of one label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelScore {
    /// Sum of the log-probabilities of the label's tokens, EOS included.
    pub logprob: f32,
    /// Number of tokens scored (EOS included).
    pub tokens: usize,
    /// The raw logit of the label's first token at the first decoder step (reranking compares
    /// two of them).
    pub first_logit: f32,
}

/// Scores every row's labels and sends each row one `Event::Scores`; on a model error every row
/// gets an error event. Returns the encoder's (real, padded) input tokens.
pub fn score_rows(
    model: &Seq2SeqModel,
    rows: Vec<RowRequest>,
    cache: Option<&EncoderCache>,
) -> Result<(usize, usize), ModelError> {
    let mut rows: Vec<RowRequest> = rows.into_iter().filter(|r| !r.events.is_closed()).collect();
    if rows.is_empty() {
        return Ok((0, 0));
    }
    // Shortest first, for the encoder's length buckets; each row answers on its own channel.
    rows.sort_by_key(|r| r.input_ids.len());
    match score(model, &rows, cache) {
        Ok((scores, encoded)) => {
            for (row, s) in rows.iter().zip(scores) {
                let _ = row.events.send(Event::Scores(s));
            }
            Ok(encoded)
        }
        Err(e) => {
            tracing::error!(error = %e, rows = rows.len(), "label scoring failed");
            for row in &rows {
                let _ = row.events.send(Event::Error(RowError::Internal(e.to_string())));
            }
            Err(e)
        }
    }
}

/// Label scores of rows sorted by input length, and the encoder's (real, padded) input tokens.
fn score(
    model: &Seq2SeqModel,
    rows: &[RowRequest],
    cache: Option<&EncoderCache>,
) -> Result<(Vec<Vec<LabelScore>>, EncoderTokens), ModelError> {
    let dims = model.dims.clone();
    let inputs: Vec<&[u32]> = rows.iter().map(|r| r.input_ids.as_slice()).collect();
    let Prefill { mut enc, logits: first, mut state, encoded } = prefill(model, cache, &inputs)?;

    // One batch row per (input, label).
    let mut owner = Vec::new();
    let mut labels: Vec<&[u32]> = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        for l in r.labels.as_deref().unwrap_or_default() {
            owner.push(i);
            labels.push(l);
        }
    }
    let mut sums = vec![0f32; labels.len()];
    let mut first_logits = vec![0f32; labels.len()];
    // Step 0: the first decoder run's logits (per input) score every label's first token.
    for (j, l) in labels.iter().enumerate() {
        let row = first.row(owner[j]);
        first_logits[j] = row[l[0] as usize];
        sums[j] += row[l[0] as usize] - log_sum_exp(row);
    }
    let longest = labels.iter().map(|l| l.len()).max().unwrap_or(0);
    if longest > 1 {
        model.retain_rows(&owner, &mut enc, &mut state)?;
        for t in 1..longest {
            // Feed each label's previous token; finished labels feed padding, and are ignored.
            let feed: Vec<i64> =
                labels.iter().map(|l| if t < l.len() { l[t - 1] as i64 } else { dims.pad_token_id as i64 }).collect();
            let logits = model.decode_next(&feed, &enc, &mut state)?;
            for (j, l) in labels.iter().enumerate() {
                if t < l.len() {
                    let row = logits.row(j);
                    sums[j] += row[l[t] as usize] - log_sum_exp(row);
                }
            }
        }
    }
    let mut out: Vec<Vec<LabelScore>> = rows.iter().map(|_| Vec::new()).collect();
    for (j, l) in labels.iter().enumerate() {
        out[owner[j]].push(LabelScore { logprob: sums[j], tokens: l.len(), first_logit: first_logits[j] });
    }
    Ok((out, encoded))
}
