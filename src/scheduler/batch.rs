//! A cohort: requests decoded together as one padded batch. It encodes once, runs the first
//! decoder step, then one cached step per token for the requests still running. A token-by-token
//! request is one batch row; a beam search request is one row per running beam, and its rows are
//! regathered by parent beam after every step. A request that finishes, or whose client went
//! away, leaves at once and its cache rows are dropped.

use ndarray::Array2;

use crate::generation::beam::BeamSearch;
use crate::generation::detokenize::{Detokenizer, StopMatcher};
use crate::generation::{FinishReason, TokenChooser};
use crate::model::kv::fill_holes;
use crate::model::{DecoderState, Encoded, Logits, ModelError, Seq2SeqModel};

use super::encoder_cache::{EncoderCache, Prefill, prefill};
use super::{Event, RowRequest, Sequence};

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
    mode: Mode,
}

enum Mode {
    Tokens(Tokens),
    Beams(Beams),
}

/// Greedy or sampled decoding: one row, one token per step.
struct Tokens {
    chooser: TokenChooser,
    detokenizer: Detokenizer,
    stop: StopMatcher,
    last: u32,
}

/// Beam search: one row per running beam (one at the first step).
struct Beams {
    search: BeamSearch,
    last: Vec<u32>,
}

impl Active {
    /// Rows this request occupies in the current batch.
    fn width(&self) -> usize {
        match &self.mode {
            Mode::Tokens(_) => 1,
            Mode::Beams(b) => b.search.rows(),
        }
    }
}

impl Tokens {
    /// Chooses the row's next token from its logits and reports it (and the end, if it is one);
    /// whether the row goes on.
    fn emit(
        &mut self,
        request: &RowRequest,
        index: usize,
        logits: &[f32],
        decode: &dyn Fn(&[u32]) -> String,
        observer: &mut dyn StepObserver,
        report: &mut EmitReport,
    ) -> bool {
        observer.logits(index, self.chooser.generated(), logits);
        let crate::generation::Chosen { token, logprob, top } = self.chooser.choose(logits, request.report);
        self.last = token;
        report.tokens += 1;
        let mut text = self.detokenizer.push(token, decode);
        let mut reason = self.chooser.finished();
        if let Some(cut) = self.stop.push(&text) {
            text = cut;
            reason = Some(FinishReason::Stop);
        } else if reason.is_some() {
            text.push_str(&self.detokenizer.flush(decode));
        }
        let delivered = request.events.send(Event::Token { id: token, text, logprob, top }).is_ok();
        match reason {
            Some(reason) => {
                let _ = request.events.send(finished(request, reason, self.chooser.generated()));
                report.finished += 1;
                false
            }
            None if delivered => true,
            None => {
                request.span.in_scope(|| tracing::info!("client gone; row cancelled"));
                report.cancelled += 1;
                false
            }
        }
    }
}

impl Beams {
    /// Advances the search by one step over its rows' logits; reports the hypotheses when it is
    /// done. Returns, while it goes on, the parent row (within its rows) of each next row.
    fn emit(
        &mut self,
        request: &RowRequest,
        logits: &[&[f32]],
        decode: &dyn Fn(&[u32]) -> String,
        report: &mut EmitReport,
    ) -> Option<Vec<usize>> {
        let parents = self.search.step(logits);
        report.tokens += logits.len();
        if self.search.is_done() {
            let sequences: Vec<Sequence> = self
                .search
                .results()
                .into_iter()
                .map(|h| Sequence { text: decode(&h.ids), ids: h.ids, score: h.score, reason: h.reason })
                .collect();
            let (reason, generated) = sequences.first().map_or((FinishReason::Length, 0), |s| (s.reason, s.ids.len()));
            let _ = request.events.send(Event::Sequences(sequences));
            let _ = request.events.send(finished(request, reason, generated));
            report.finished += 1;
            None
        } else if request.events.is_closed() {
            request.span.in_scope(|| tracing::info!("client gone; beams cancelled"));
            report.cancelled += 1;
            None
        } else {
            self.last = self.search.last_tokens();
            Some(parents)
        }
    }
}

/// What a decoder run did to the cohort's rows.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StepReport {
    /// Tokens produced by this run.
    pub tokens: usize,
    pub finished: usize,
    /// Rows dropped because their client went away.
    pub cancelled: usize,
    /// Encoder input tokens of the rows this run encoded, and the padded size of the batches
    /// they were encoded in (both 0 for a cached step).
    pub encoder_tokens: usize,
    pub encoder_padded_tokens: usize,
}

pub struct Cohort {
    rows: Vec<Active>,
    enc: Encoded,
    state: DecoderState,
    /// With a masked decoder graph: which self-attention positions each row attends to
    /// (`[rows, decoder_len]`, 0 = left padding of a row that joined later).
    mask: Option<Array2<i64>>,
}

impl Cohort {
    /// Encodes the rows as one batch and runs the first decoder step, emitting each row's first
    /// token. `None` when no row is left (all closed, or all finished at once). On a model
    /// error every row has been sent an error event.
    pub fn start(
        model: &Seq2SeqModel,
        rows: Vec<RowRequest>,
        cache: Option<&EncoderCache>,
        observer: &mut dyn StepObserver,
    ) -> Result<(Option<Cohort>, StepReport), ModelError> {
        let mut report = StepReport::default();
        let mut active: Vec<Active> = Vec::with_capacity(rows.len());
        for (index, request) in rows.into_iter().enumerate() {
            if request.events.is_closed() {
                request.span.in_scope(|| tracing::info!("client gone before decoding; row cancelled"));
                report.cancelled += 1;
            } else {
                let (start, eos) = (model.dims.decoder_start_token_id, model.dims.eos_token_id);
                let mode = match request.beam {
                    Some(beam) => Mode::Beams(Beams {
                        search: BeamSearch::new(beam, request.params, start, eos),
                        last: Vec::new(),
                    }),
                    None => Mode::Tokens(Tokens {
                        chooser: TokenChooser::new(request.params, start, eos)
                            .with_logit_bias(request.logit_bias.clone()),
                        detokenizer: Detokenizer::new(),
                        stop: StopMatcher::new(request.stop.clone()),
                        last: 0,
                    }),
                };
                active.push(Active { index, request, mode });
            }
        }
        if active.is_empty() {
            return Ok((None, report));
        }
        // Shortest first, so that length buckets keep the encoder's padding small.
        active.sort_by_key(|r| r.request.input_ids.len());
        let inputs: Vec<&[u32]> = active.iter().map(|r| r.request.input_ids.as_slice()).collect();
        let Prefill { mut enc, logits, state, encoded } = match prefill(model, cache, &inputs) {
            Ok(p) => p,
            Err(e) => {
                fail_rows(&active, &e);
                return Err(e);
            }
        };
        (report.encoder_tokens, report.encoder_padded_tokens) = encoded;
        if !model.steps_need_encoder_output() {
            enc.drop_hidden();
        }
        let mask = model.can_join().then(|| Array2::ones((logits.rows(), 1)));
        let mut cohort = Cohort { rows: active, enc, state, mask };
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
    pub fn step(&mut self, model: &Seq2SeqModel, observer: &mut dyn StepObserver) -> Result<StepReport, ModelError> {
        let tokens: Vec<i64> = self
            .rows
            .iter()
            .flat_map(|r| match &r.mode {
                Mode::Tokens(t) => vec![t.last as i64],
                Mode::Beams(b) => b.last.iter().map(|&t| t as i64).collect(),
            })
            .collect();
        let result = match &self.mask {
            Some(mask) => {
                // The new token is attended to by its own row.
                let step_mask =
                    ndarray::concatenate(ndarray::Axis(1), &[mask.view(), Array2::ones((mask.nrows(), 1)).view()])
                        .expect("same rows")
                        .as_standard_layout()
                        .into_owned();
                // Without padding the plain graph gives the same outputs and skips the mask's
                // ops (~0.6 ms a step at batch 1 on the t5-small shape).
                let r = if model.has_unmasked_step() && step_mask.iter().all(|&v| v == 1) {
                    model.decode_next(&tokens, &self.enc, &mut self.state)
                } else {
                    model.decode_next_masked(&tokens, &self.enc, &mut self.state, &step_mask)
                };
                self.mask = Some(step_mask);
                r
            }
            None => model.decode_next(&tokens, &self.enc, &mut self.state),
        };
        #[cfg(feature = "fault-injection")]
        let result = result
            .and_then(|l| crate::faults::decoder_step(self.rows.iter().map(|r| r.request.params.seed)).map(|()| l));
        let logits = match result {
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
        Ok(StepReport { tokens: r.tokens, finished: r.finished, cancelled: r.cancelled, ..StepReport::default() })
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Batch rows in use.
    pub fn len(&self) -> usize {
        self.rows.iter().map(Active::width).sum()
    }

    /// `(input_len, max_new_tokens)` of each batch row a request may occupy, for the memory budget.
    pub fn budget_rows(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.rows.iter().flat_map(|r| {
            std::iter::repeat_n((r.request.input_ids.len(), r.request.params.max_new_tokens), r.request.width())
        })
    }

    /// Positions in the self-attention cache (padding included).
    pub fn decoder_len(&self) -> usize {
        self.state.decoder_len()
    }

    /// Bytes held by the cohort's cache tensors and encoder output.
    pub fn cache_bytes(&self) -> usize {
        self.state.bytes() + self.enc.hidden.len() * 4
    }

    /// Chooses each request's next token(s), reports them, drops requests that finished or whose
    /// client left, and regathers the cache rows for the next step.
    fn emit(&mut self, model: &Seq2SeqModel, logits: &Logits, observer: &mut dyn StepObserver) -> EmitReport {
        let mut report = EmitReport::default();
        // For each row of the next batch, the row of the current batch it continues.
        let mut order = Vec::with_capacity(logits.rows());
        let mut offset = 0;
        let decode = |ids: &[u32]| model.tokenizer.decode(ids).unwrap_or_default();
        for mut row in std::mem::take(&mut self.rows) {
            let width = row.width();
            let goes_on = match &mut row.mode {
                Mode::Tokens(t) => t.emit(&row.request, row.index, logits.row(offset), &decode, observer, &mut report),
                Mode::Beams(b) => {
                    let slices: Vec<&[f32]> = (offset..offset + width).map(|i| logits.row(i)).collect();
                    b.emit(&row.request, &slices, &decode, &mut report).map(|parents| {
                        order.extend(parents.iter().map(|p| offset + p));
                    })
                }
                .is_some(),
            };
            if goes_on {
                if matches!(row.mode, Mode::Tokens(_)) {
                    order.push(offset);
                }
                self.rows.push(row);
            }
            offset += width;
        }
        if let Err(e) = self.regather(model, order, logits.rows()) {
            report.error = Some(e);
        }
        report
    }

    /// Keeps the cache rows of `order` (for each row of the next batch, the row of the current
    /// batch of `rows` rows it continues), and trims self-attention positions no row attends to.
    fn regather(&mut self, model: &Seq2SeqModel, mut order: Vec<usize>, rows: usize) -> Result<(), ModelError> {
        if self.rows.iter().all(|r| matches!(r.mode, Mode::Tokens(_))) && order.len() < rows {
            // One row per request, so any order will do: the rows that stay below the new size
            // keep their place and the rows past it fill the holes, so that only as many cache
            // rows are copied as left (not every row after the first that left).
            // `self.rows` follows `order` (increasing): the rows below the new size, then the tail,
            // which `fill_holes` hands out in the same order.
            let moved = fill_holes(&order);
            let tail = self.rows.split_off(order.partition_point(|&r| r < moved.len()));
            let (mut stay, mut tail) = (std::mem::take(&mut self.rows).into_iter(), tail.into_iter());
            self.rows = moved
                .iter()
                .map(|&r| if r < moved.len() { stay.next() } else { tail.next() }.expect("one row each"))
                .collect();
            order = moved;
        }
        let identity = order.len() == rows && order.iter().enumerate().all(|(i, &r)| i == r);
        if order.is_empty() || identity {
            return Ok(());
        }
        model.retain_rows(&order, &mut self.enc, &mut self.state)?;
        if let Some(mask) = &mut self.mask {
            *mask = mask.select(ndarray::Axis(0), &order);
            // Positions no remaining row attends to (padding of rows that left) go, once there
            // are enough of them to be worth a copy of the self-attention cache.
            let unused = (0..mask.ncols()).take_while(|&c| mask.column(c).iter().all(|&v| v == 0)).count();
            if unused > 0 && unused >= (mask.ncols() / 4).max(8).min(mask.ncols()) {
                *mask = mask.slice(ndarray::s![.., unused..]).as_standard_layout().into_owned();
                self.state.trim_front(unused)?;
            }
        }
        Ok(())
    }

    /// Whether new rows can join this cohort (it decodes with a decoder mask).
    pub fn can_absorb(&self) -> bool {
        self.mask.is_some()
    }

    /// Takes in the rows of a cohort that has just run its first step: their self-attention
    /// caches are left-padded to this cohort's length (masked), the cross-attention caches and
    /// encoder outputs right-padded to the longer input, and everything is joined along the batch.
    pub fn absorb(&mut self, other: Cohort) -> Result<(), ModelError> {
        let (Some(mine), Some(theirs)) = (&self.mask, &other.mask) else {
            return Err(ModelError::Output("joining cohorts needs the masked decoder graph".into()));
        };
        let len = mine.ncols().max(theirs.ncols());
        let pad = |m: &Array2<i64>| {
            let mut out = Array2::zeros((m.nrows(), len));
            out.slice_mut(ndarray::s![.., len - m.ncols()..]).assign(m);
            out
        };
        let mask = ndarray::concatenate(ndarray::Axis(0), &[pad(mine).view(), pad(theirs).view()]).expect("same width");
        self.state.join(other.state)?;
        self.enc.join(&other.enc);
        self.mask = Some(mask);
        self.rows.extend(other.rows);
        Ok(())
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
        row.request.span.in_scope(|| tracing::error!(error = %e, "decoding failed; the row gets an error"));
        let _ = row.request.events.send(Event::Error(super::RowError::Internal(e.to_string())));
    }
}

fn finished(request: &RowRequest, reason: FinishReason, generated_tokens: usize) -> Event {
    request.span.in_scope(|| tracing::debug!(?reason, generated_tokens, "row finished"));
    Event::Finished { reason, input_tokens: request.input_ids.len(), generated_tokens }
}

/// Decodes `rows` to the end as one cohort on the calling thread (tests and tools).
pub fn run_batch(model: &Seq2SeqModel, rows: Vec<RowRequest>, observer: &mut dyn StepObserver) {
    let Ok((mut cohort, _)) = Cohort::start(model, rows, None, observer) else {
        return;
    };
    while let Some(c) = cohort.as_mut() {
        if c.step(model, observer).is_err() || c.is_empty() {
            cohort = None;
        }
    }
}
