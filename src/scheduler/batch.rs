//! A cohort: rows decoded together as one padded batch. It encodes once, runs the first decoder
//! step, then one cached step per token for the rows still running. A row that finishes, or
//! whose client went away, leaves at once and its cache rows are dropped.

use ndarray::Array2;

use crate::generation::detokenize::{Detokenizer, StopMatcher};
use crate::generation::{FinishReason, TokenChooser};
use crate::model::{DecoderState, Encoded, Logits, ModelError, Seq2SeqModel};

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
    /// Index in the submitted rows, for observers.
    index: usize,
    request: RowRequest,
    chooser: TokenChooser,
    detokenizer: Detokenizer,
    stop: StopMatcher,
    last: u32,
}

/// What a decoder run did to the cohort's rows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    /// Tokens produced by this run.
    pub tokens: usize,
    pub finished: usize,
    /// Rows dropped because their client went away.
    pub cancelled: usize,
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

pub struct Cohort {
    rows: Vec<Active>,
    enc: Encoded,
    state: DecoderState,
}

impl Cohort {
    /// Encodes the rows as one batch and runs the first decoder step, emitting each row's first
    /// token. `None` when no row is left (all closed, or all finished at once). On a model
    /// error every row has been sent an error event.
    pub fn start(
        model: &mut Seq2SeqModel,
        rows: Vec<RowRequest>,
        observer: &mut dyn StepObserver,
    ) -> Result<(Option<Cohort>, StepReport), ModelError> {
        let mut report = StepReport::default();
        let mut active: Vec<Active> = Vec::with_capacity(rows.len());
        for (index, request) in rows.into_iter().enumerate() {
            if request.events.is_closed() {
                report.cancelled += 1;
            } else {
                let chooser =
                    TokenChooser::new(request.params, model.dims.decoder_start_token_id, model.dims.eos_token_id);
                let stop = StopMatcher::new(request.stop.clone());
                active.push(Active { index, request, chooser, detokenizer: Detokenizer::new(), stop, last: 0 });
            }
        }
        if active.is_empty() {
            return Ok((None, report));
        }
        let dims = &model.dims;
        let inputs: Vec<&[u32]> = active.iter().map(|r| r.request.input_ids.as_slice()).collect();
        let (ids, mask) = pad_batch(&inputs, dims.pad_token_id);
        let start = vec![dims.decoder_start_token_id as i64; active.len()];
        let first = model.encode(ids, mask).and_then(|enc| {
            let (logits, state) = model.decode_first(&start, &enc)?;
            Ok((enc, logits, state))
        });
        let (enc, logits, state) = match first {
            Ok(v) => v,
            Err(e) => {
                fail_rows(&active, &e);
                return Err(e);
            }
        };
        let mut cohort = Cohort { rows: active, enc, state };
        let r = cohort.emit(model, &logits, observer);
        report.tokens += r.tokens;
        report.finished += r.finished;
        report.cancelled += r.cancelled;
        let cohort = match r.error {
            Some(e) => {
                cohort.fail(&e);
                return Err(e);
            }
            None => (!cohort.rows.is_empty()).then_some(cohort),
        };
        Ok((cohort, report))
    }

    /// One cached decoder step for every row. On a model error every row has been sent an
    /// error event and the cohort is empty.
    pub fn step(
        &mut self,
        model: &mut Seq2SeqModel,
        observer: &mut dyn StepObserver,
    ) -> Result<StepReport, ModelError> {
        let tokens: Vec<i64> = self.rows.iter().map(|r| r.last as i64).collect();
        let logits = match model.decode_next(&tokens, &self.enc, &mut self.state) {
            Ok(l) => l,
            Err(e) => {
                self.fail(&e);
                return Err(e);
            }
        };
        let r = self.emit(model, &logits, observer);
        if let Some(e) = r.error {
            self.fail(&e);
            return Err(e);
        }
        Ok(StepReport { tokens: r.tokens, finished: r.finished, cancelled: r.cancelled })
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// `(input_len, max_new_tokens)` of each row, for the memory budget.
    pub fn budget_rows(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.rows.iter().map(|r| (r.request.input_ids.len(), r.request.params.max_new_tokens))
    }

    /// Bytes held by the cohort's cache tensors and encoder output.
    pub fn cache_bytes(&self) -> usize {
        self.state.bytes() + self.enc.hidden.len() * 4
    }

    /// Chooses each row's token, reports it, and drops rows that finished or whose client left.
    fn emit(&mut self, model: &Seq2SeqModel, logits: &Logits, observer: &mut dyn StepObserver) -> EmitReport {
        let mut report = EmitReport::default();
        let mut keep = Vec::with_capacity(self.rows.len());
        for (i, row) in self.rows.iter_mut().enumerate() {
            let l = logits.row(i);
            observer.logits(row.index, row.chooser.generated(), l);
            let (token, logprob) = row.chooser.next_with_logprob(l, row.request.logprobs);
            row.last = token;
            report.tokens += 1;
            let decode = |ids: &[u32]| model.tokenizer.decode(ids).unwrap_or_default();
            let mut text = row.detokenizer.push(token, decode);
            let mut reason = row.chooser.finished();
            if let Some(cut) = row.stop.push(&text) {
                text = cut;
                reason = Some(FinishReason::Stop);
            } else if reason.is_some() {
                text.push_str(&row.detokenizer.flush(decode));
            }
            let delivered = row.request.events.send(Event::Token { id: token, text, logprob }).is_ok();
            match reason {
                Some(reason) => {
                    let _ = row.request.events.send(finished(row, reason));
                    report.finished += 1;
                }
                None if delivered => keep.push(i),
                None => report.cancelled += 1,
            }
        }
        if keep.len() < self.rows.len() {
            if !keep.is_empty()
                && let Err(e) = model.retain_rows(&keep, &mut self.enc, &mut self.state)
            {
                report.error = Some(e);
                return report;
            }
            let mut i = 0;
            self.rows.retain(|_| {
                let k = keep.contains(&i);
                i += 1;
                k
            });
        }
        report
    }

    /// Sends an error event to every row and empties the cohort.
    fn fail(&mut self, e: &ModelError) {
        fail_rows(&self.rows, e);
        self.rows.clear();
    }
}

#[derive(Default)]
struct EmitReport {
    tokens: usize,
    finished: usize,
    cancelled: usize,
    error: Option<ModelError>,
}

fn fail_rows(rows: &[Active], e: &ModelError) {
    tracing::error!(error = %e, rows = rows.len(), "decoding failed");
    for row in rows {
        let _ = row.request.events.send(Event::Error(super::RowError::Internal(e.to_string())));
    }
}

fn finished(row: &Active, reason: FinishReason) -> Event {
    Event::Finished { reason, input_tokens: row.request.input_ids.len(), generated_tokens: row.chooser.generated() }
}

/// Decodes `rows` to the end as one cohort on the calling thread (tests and tools).
pub fn run_batch(model: &mut Seq2SeqModel, rows: Vec<RowRequest>, observer: &mut dyn StepObserver) {
    let Ok((mut cohort, _)) = Cohort::start(model, rows, observer) else {
        return;
    };
    while let Some(c) = cohort.as_mut() {
        if c.step(model, observer).is_err() || c.is_empty() {
            cohort = None;
        }
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
