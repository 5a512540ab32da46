//! The decode loop for one batch of rows: encode once, first decoder step, then one cached
//! step per token for the rows still running. A row that finishes, or whose client went away,
//! leaves the batch at once and its cache rows are dropped.

use ndarray::Array2;

use crate::generation::{self, FinishReason};
use crate::model::{ModelError, Seq2SeqModel};

use super::{Event, RowRequest};

/// Sees the raw logits of every row at every step (tests compare them with transformers).
pub trait StepObserver {
    fn logits(&mut self, row: usize, step: usize, logits: &[f32]);
}

/// Observes nothing.
pub struct NoObserver;

impl StepObserver for NoObserver {
    fn logits(&mut self, _: usize, _: usize, _: &[f32]) {}
}

struct Active {
    /// Index in the submitted batch.
    index: usize,
    request: RowRequest,
    generated: usize,
    last: u32,
}

/// Right-pads the rows' ids into `[batch, max_len]` ids and mask.
pub fn pad_batch(rows: &[&[u32]], pad: u32) -> (Array2<i64>, Array2<i64>) {
    let len = rows.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut ids = Array2::from_elem((rows.len(), len), pad as i64);
    let mut mask = Array2::zeros((rows.len(), len));
    for (i, r) in rows.iter().enumerate() {
        for (j, &t) in r.iter().enumerate() {
            ids[[i, j]] = t as i64;
            mask[[i, j]] = 1;
        }
    }
    (ids, mask)
}

/// Decodes `rows` greedily as one padded batch, sending each row's events as tokens come.
/// An ONNX Runtime failure ends the batch: every unfinished row gets an error event.
pub fn run_batch(model: &mut Seq2SeqModel, rows: Vec<RowRequest>, observer: &mut dyn StepObserver) {
    let mut active: Vec<Active> = rows
        .into_iter()
        .enumerate()
        .map(|(index, request)| Active {
            index,
            request,
            generated: 0,
            last: 0,
        })
        .collect();
    if let Err(e) = decode(model, &mut active, observer) {
        tracing::error!(error = %e, rows = active.len(), "decoding failed");
        for row in &active {
            let _ = row.request.events.send(Event::Error(e.to_string()));
        }
    }
}

fn decode(
    model: &mut Seq2SeqModel,
    active: &mut Vec<Active>,
    observer: &mut dyn StepObserver,
) -> Result<(), ModelError> {
    let dims = model.dims.clone();
    let eos = dims.eos_token_id;
    active.retain(|r| !r.request.events.is_closed());
    if active.is_empty() {
        return Ok(());
    }
    let inputs: Vec<&[u32]> = active
        .iter()
        .map(|r| r.request.input_ids.as_slice())
        .collect();
    let (ids, mask) = pad_batch(&inputs, dims.pad_token_id);
    let mut enc = model.encode(ids, mask)?;
    let start = vec![dims.decoder_start_token_id as i64; active.len()];
    let (mut logits, mut state) = model.decode_first(&start, &enc)?;
    loop {
        // Choose each row's token, report it, and note which rows go on.
        let mut keep = Vec::with_capacity(active.len());
        for (i, row) in active.iter_mut().enumerate() {
            let l = logits.row(i);
            observer.logits(row.index, row.generated, l);
            let token = generation::greedy_next(l, row.generated, &row.request.params, eos);
            row.generated += 1;
            row.last = token;
            let delivered = row.request.events.send(Event::Token { id: token }).is_ok();
            match generation::finish_reason(token, row.generated, &row.request.params, eos) {
                Some(reason) => {
                    let _ = row.request.events.send(finished(row, reason));
                }
                None if delivered => keep.push(i),
                None => tracing::debug!(row = row.index, "client went away; row dropped"),
            }
        }
        if keep.is_empty() {
            active.clear();
            return Ok(());
        }
        if keep.len() < active.len() {
            model.retain_rows(&keep, &mut enc, &mut state)?;
            let mut i = 0;
            active.retain(|_| {
                let k = keep.contains(&i);
                i += 1;
                k
            });
        }
        let tokens: Vec<i64> = active.iter().map(|r| r.last as i64).collect();
        logits = model.decode_next(&tokens, &enc, &mut state)?;
    }
}

fn finished(row: &Active, reason: FinishReason) -> Event {
    Event::Finished {
        reason,
        input_tokens: row.request.input_ids.len(),
        generated_tokens: row.generated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_batch_right_pads_and_masks() {
        let (ids, mask) = pad_batch(&[&[5, 6, 1], &[7, 1]], 0);
        assert_eq!(ids, ndarray::array![[5, 6, 1], [7, 1, 0]]);
        assert_eq!(mask, ndarray::array![[1, 1, 1], [1, 1, 0]]);
    }
}
