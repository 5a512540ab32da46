//! The one path behind every route: admit, validate, tokenize, submit, then collect or stream
//! under `request_timeout_ms`. A route translates its dialect into an `api::Request` and a
//! `Prompt`, and the results back; nothing else. The warm-up takes the same path as an
//! internal caller, without the client limits (admission, draining, the request timeout).

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::api::{self, Decoding, Task, Validated};
use crate::scheduler::{Event, RowRequest};

use super::AppState;
use super::error::ApiError;
use super::served::Served;
use super::tokenize;
pub use super::tokenize::Prompt;

/// Who sends the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A client: admission (`max_concurrent_requests`, draining) and `request_timeout_ms` apply.
    Client,
    /// The server itself (the warm-up): none of the client limits apply.
    Internal,
}

/// A request whose rows are queued: collect their results, or stream the one row's tokens.
pub struct Submitted {
    pub(super) app: AppState,
    /// The model the request runs on.
    pub model: Arc<Served>,
    /// Each row's events, and the index of the text it belongs to (a long translated text is
    /// several rows).
    pub(super) rows: Vec<(usize, UnboundedReceiver<Event>)>,
    /// The client sent one text.
    pub single: bool,
    /// What the rows do, as validated (a sampled request's seed included).
    pub task: Task,
    pub(super) arrived: Instant,
    /// When the request times out (`None` for internal callers).
    pub(super) deadline: Option<tokio::time::Instant>,
    /// Held until the answer is complete (a stream's end included).
    pub(super) _permit: Option<Admitted>,
}

/// A client request's admission: a permit of `max_concurrent_requests`, and one of its model's
/// share; both are given back when the answer is complete.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    model: Arc<Served>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.model.in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The most requests one model may hold when `models` models are served: all of
/// `max_concurrent_requests` alone; with others, all but a reserve that each other model keeps
/// (`max_concurrent_requests / (2 * models)`, at least 1), so that a burst on one model cannot
/// take the permits of a quiet one.
pub fn model_share(max_concurrent_requests: usize, models: usize) -> usize {
    if models <= 1 {
        return max_concurrent_requests;
    }
    let reserve = (max_concurrent_requests / (2 * models)).max(1);
    max_concurrent_requests.saturating_sub((models - 1) * reserve).max(1)
}

impl Submitted {
    /// The decoding settings of a generation request.
    pub fn decoding(&self) -> Option<&Decoding> {
        match &self.task {
            Task::Generate(d) => Some(d),
            Task::Score(_) | Task::Embed(_) => None,
        }
    }
}

impl AppState {
    /// Runs one short generation through the whole path (tokenizer, queue, encoder, both decoder
    /// graphs), so that the first client does not pay for first-run allocations. With several
    /// decode lanes it runs alone first (on the solo sessions), then once in every lane at once
    /// (each on its lane's own sessions). An internal request: no client limit applies.
    pub async fn warm_up(&self) -> Result<(), ApiError> {
        for model in self.models.all() {
            self.warm_up_model(&model).await?;
        }
        Ok(())
    }

    /// The warm-up of one model (a loaded or reloaded one before it serves).
    pub async fn warm_up_model(&self, model: &Arc<Served>) -> Result<(), ApiError> {
        #[cfg(feature = "fault-injection")]
        let seed = crate::faults::warm_up_seed();
        #[cfg(not(feature = "fault-injection"))]
        let seed = 0;
        let request = || {
            let parameters = api::GenerateParameters {
                max_new_tokens: Some(2),
                min_new_tokens: Some(2),
                seed: Some(seed),
                ..Default::default()
            };
            api::Request::generate("inputs", api::Inputs::One("warm up".into()), parameters)
        };
        self.submit(Caller::Internal, model, request(), Prompt::Text).await?.collect().await?;
        let lanes = model.scheduler.lanes();
        if lanes > 1 {
            // Submitted one by one, the rows go to the least loaded lanes: one each.
            let mut each = Vec::with_capacity(lanes);
            for _ in 0..lanes {
                each.push(self.submit(Caller::Internal, model, request(), Prompt::Text).await?);
            }
            for submitted in each {
                submitted.collect().await?;
            }
        }
        Ok(())
    }

    /// Admission: a permit, within the model's share, or 429 at once rather than an unbounded
    /// wait; 503 while draining.
    fn admit(&self, model: &Arc<Served>) -> Result<Admitted, ApiError> {
        use std::sync::atomic::Ordering;
        if self.health.is_draining() {
            return Err(ApiError::Unavailable("the server is shutting down".into()));
        }
        let total = self.limits.max_concurrent_requests;
        let models = self.models.ready_count();
        let share = model_share(total, models);
        if model.in_flight.fetch_add(1, Ordering::SeqCst) >= share {
            model.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::Overloaded(format!(
                "model {:?} holds its share of max_concurrent_requests ({share} of {total}, with {models} models \
                 served; the rest is kept for the others); retry later",
                model.id
            )));
        }
        match self.admission.clone().try_acquire_owned() {
            // The model's share is given back when `Admitted` is dropped.
            Ok(permit) => Ok(Admitted { _permit: permit, model: model.clone() }),
            Err(_) => {
                model.in_flight.fetch_sub(1, Ordering::SeqCst);
                Err(ApiError::Overloaded(format!("the server is at max_concurrent_requests ({total}); retry later")))
            }
        }
    }

    /// The error of a client request that ran out of `request_timeout_ms`; `where_` says what
    /// it was doing then.
    pub(super) fn timed_out(&self, where_: &str) -> ApiError {
        ApiError::DeadlineExceeded(format!(
            "the request did not finish within request_timeout_ms ({} ms): {where_}",
            self.limits.request_timeout_ms
        ))
    }

    /// Admits, validates, tokenizes and queues a request on `model`; returns once its rows are
    /// queued.
    pub async fn submit(
        &self,
        caller: Caller,
        model: &Arc<Served>,
        req: api::Request,
        prompt: Prompt,
    ) -> Result<Submitted, ApiError> {
        let arrived = Instant::now();
        super::note_request_model(&model.id);
        let (permit, deadline) = match caller {
            Caller::Client => {
                let timeout = std::time::Duration::from_millis(self.limits.request_timeout_ms);
                (Some(self.admit(model)?), Some(tokio::time::Instant::from(arrived + timeout)))
            }
            Caller::Internal => (None, None),
        };
        let v = api::validate(req, &model.limits)?;
        let (single, task) = (v.single, v.task.clone());
        let rows = match deadline {
            Some(at) => tokio::time::timeout_at(at, self.queue(model, v, prompt, arrived))
                .await
                .map_err(|_| self.timed_out("its texts were still being tokenized"))?,
            None => self.queue(model, v, prompt, arrived).await,
        }?;
        let model = model.clone();
        Ok(Submitted { app: self.clone(), model, rows, single, task, arrived, deadline, _permit: permit })
    }

    /// Tokenizes a validated request and queues its rows.
    async fn queue(
        &self,
        model: &Served,
        v: Validated,
        prompt: Prompt,
        arrived: Instant,
    ) -> Result<Vec<(usize, UnboundedReceiver<Event>)>, ApiError> {
        let labels = match &v.task {
            Task::Score(api::Labels::Texts(labels)) => {
                let limit = model.limits.max_new_tokens_limit;
                Some(tokenize::labels(self.tokenizing.clone(), model.tokenizer.clone(), limit, labels.clone()).await?)
            }
            Task::Score(api::Labels::FirstTokens(ids)) => Some(ids.iter().map(|&id| vec![id]).collect()),
            Task::Generate(_) | Task::Embed(_) => None,
        };
        let inputs =
            tokenize::texts(self.tokenizing.clone(), model.tokenizer.clone(), model.limits.clone(), &v, prompt).await?;
        let deadline = Some(arrived + v.queue_deadline);
        let copies = v.copies;
        // Copy `j` of text `i` is row `i * copies + j`, sampled with the seed plus `j`.
        let inputs = inputs
            .into_iter()
            .flat_map(|(owner, ids)| (0..copies).map(move |j| (owner * copies + j, j as u64, ids.clone())));
        let (rows, receivers): (Vec<_>, Vec<_>) = inputs
            .map(|(owner, copy, ids)| {
                let (row, rx) = match (&v.task, &labels) {
                    (Task::Generate(d), _) => {
                        let params =
                            crate::generation::GenerationParams { seed: d.params.seed.wrapping_add(copy), ..d.params };
                        let (row, rx) = RowRequest::new(ids, params);
                        let report = crate::generation::Report { logprob: d.logprobs, top: d.top };
                        let row = row.with_stop(d.stop.clone()).with_report(report).with_beam(d.beam);
                        (row.with_logit_bias(d.logit_bias.clone()), rx)
                    }
                    (Task::Score(_), labels) => RowRequest::scoring(ids, labels.clone().unwrap_or_default()),
                    (Task::Embed(settings), _) => RowRequest::embedding(ids, *settings),
                };
                (row.with_deadline(deadline), (owner, rx))
            })
            .unzip();
        api::check_cost(rows.iter().map(|r| (r.input_ids.len(), r.width(), r.params.max_new_tokens)), &model.limits)?;
        model.metrics.input_tokens.inc_by(rows.iter().map(|r| r.input_ids.len() as u64).sum());
        model.scheduler.submit(rows)?;
        Ok(receivers)
    }
}

#[cfg(test)]
mod tests {
    use super::model_share;

    #[test]
    fn each_other_model_keeps_a_reserve_of_the_admission_permits() {
        assert_eq!(model_share(256, 1), 256);
        // Two models: each keeps 256 / 4 = 64 that the other cannot take.
        assert_eq!(model_share(256, 2), 192);
        assert_eq!(model_share(256, 4), 256 - 3 * 32);
        // Small limits still leave every model at least one.
        assert_eq!(model_share(4, 2), 3);
        assert_eq!(model_share(2, 8), 1);
    }
}
