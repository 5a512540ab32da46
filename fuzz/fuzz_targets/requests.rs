//! Fuzzes request parsing and validation: the JSON bodies of /v1/generate, /v1/classify,
//! /v1/translate and TGI's /generate, turned into an `api::Request` as each handler does and
//! checked by `api::validate`, the one validation every route makes before tokenizing. Validation errors are expected; panics, overflows, hangs and huge allocations are
//! the bugs. Accepted requests are also checked against the documented contracts (an accepted
//! value must lie inside its documented range).
//!
//! Input: one selector byte, then the JSON body.
//! - `selector % 4`: 0 GenerateRequest, 1 ClassifyRequest, 2 TranslateRequest, 3 TgiRequest;
//! - `(selector / 4) % 3`: the limits, from 0 `Config::default()`, 1 the smallest valid config,
//!   2 the largest valid config. The seeds use ASCII '0'..'3' (default limits).

#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use t5serve::api::{self, ClassifyRequest, GenerateRequest, Limits, LongTexts, Task, TranslateRequest, Validated};
use t5serve::config::Config;
use t5serve::generation::{Chosen, GenerationParams, Report, TokenChooser};
use t5serve::http::TaskSettings;
use t5serve::http::tgi::TgiRequest;
use t5serve::model::ModelTasks;
use t5serve::tasks::{classify, translate};

/// The configs requests are validated against; each must pass `Config::validate` (the server
/// refuses to start otherwise), so only limits a running server can have are fuzzed.
static PROFILES: LazyLock<[(Limits, TaskSettings); 3]> = LazyLock::new(|| {
    let smallest = Config {
        max_input_tokens: 1,
        max_new_tokens_limit: 1,
        default_max_new_tokens: 1,
        max_client_batch_size: 1,
        max_stop_sequences: 0,
        max_num_beams: 1,
        max_labels: 2,
        queue_deadline_ms: 1,
        ..Config::default()
    };
    let largest = Config {
        max_input_tokens: 65_536,
        max_new_tokens_limit: 65_536,
        default_max_new_tokens: 65_536,
        max_client_batch_size: 4096,
        max_stop_sequences: 64,
        max_num_beams: 64,
        max_labels: 4096,
        queue_deadline_ms: 3_600_000,
        ..Config::default()
    };
    [Config::default(), smallest, largest].map(|c| {
        c.validate().expect("a config the server accepts");
        (Limits::new(&c, 32128), TaskSettings::resolve(&c, &ModelTasks::default()).expect("no chat template"))
    })
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let (limits, tasks) = &PROFILES[(selector as usize / 4) % 3];
    match selector % 4 {
        0 => {
            if let Ok(req) = serde_json::from_slice::<GenerateRequest>(body) {
                generate(&req, limits);
            }
        }
        1 => {
            if let Ok(req) = serde_json::from_slice::<ClassifyRequest>(body) {
                classify(&req, limits, tasks);
            }
        }
        2 => {
            if let Ok(req) = serde_json::from_slice::<TranslateRequest>(body) {
                translate(&req, limits, tasks);
            }
        }
        _ => {
            if let Ok(req) = serde_json::from_slice::<TgiRequest>(body) {
                tgi(&req, limits);
            }
        }
    }
});

/// `http::generate::generate` up to tokenization.
fn generate(req: &GenerateRequest, limits: &Limits) {
    let stream = req.stream.unwrap_or(false);
    let request = api::Request { stream, ..api::Request::generate("inputs", req.inputs.clone(), req.parameters.clone()) };
    if let Ok(v) = api::validate(request, limits) {
        check(&v, &req.parameters, limits);
        assert!(!stream || v.single, "a stream of several texts: {v:?}");
    }
}

/// `http::classify::classify` up to tokenization (labels default to the configured set, which
/// is empty here: no model directory).
fn classify(req: &ClassifyRequest, limits: &Limits, tasks: &TaskSettings) {
    let labels = req.labels.clone().unwrap_or_else(|| tasks.classify_labels.clone());
    let Ok(v) = api::validate(api::Request::score(req.inputs.clone(), labels), limits) else { return };
    check(&v, &Default::default(), limits);
    let Task::Score(labels) = &v.task else { panic!("a classify request generates: {v:?}") };
    assert!((2..=limits.max_labels).contains(&labels.len()));
    for (i, l) in labels.iter().enumerate() {
        assert!(!l.trim().is_empty() && !labels[..i].contains(l), "labels accepted: {labels:?}");
    }
    // What the handler does with the scores, on stand-in log-likelihoods.
    let scores: Vec<f64> = labels.iter().map(|l| -(l.len() as f64) / 4.0).collect();
    let ranked = classify::probabilities(labels, &scores, req.multi_label.unwrap_or(false));
    assert_eq!(ranked.len(), labels.len());
    for p in &ranked {
        assert!((0.0..=1.0).contains(&p.score), "probability {} of {:?}", p.score, p.label);
    }
    let template = req.template.clone().unwrap_or_else(|| tasks.classify_template.clone());
    if classify::check_template(&template).is_ok() {
        for text in &v.texts {
            let prompt = classify::fill(&template, text);
            assert_eq!(prompt.len(), template.len() - classify::TEXT_SLOT.len() + text.len());
        }
    }
}

/// `http::translate::translate` up to tokenization, then the sentence splitting of
/// `http::tokenize` with a stand-in token count (words + EOS) instead of the tokenizer.
fn translate(req: &TranslateRequest, limits: &Limits, tasks: &TaskSettings) {
    let pair = tasks.translate_pairs.iter().find(|p| p.matches(&req.source_lang, &req.target_lang));
    let p = &req.parameters;
    if p.stop.is_some() || p.details.is_some() {
        return;
    }
    let request = api::Request {
        long_texts: LongTexts::Split,
        ..api::Request::generate("text", req.text.clone(), req.parameters.clone())
    };
    let (Ok(v), Some(pair)) = (api::validate(request, limits), pair) else { return };
    check(&v, p, limits);
    let limit = limits.max_input_tokens;
    let count = |chunk: &str| classify::fill(&pair.template, chunk).split_whitespace().count() + 1;
    for text in &v.texts {
        let sentences = translate::sentences(text);
        for s in &sentences {
            assert!(!s.is_empty() && s.trim() == *s, "sentence {s:?} of {text:?}");
        }
        // Words are additive, as the server's token counts nearly are (it re-checks each chunk).
        let chunks = translate::chunks(&sentences, limit, count(""), usize::MAX, |s| s.split_whitespace().count());
        assert_eq!(chunks.join(" "), sentences.join(" "), "chunks of {text:?}");
        for c in &chunks {
            assert!(count(c) <= limit || sentences.contains(&c.as_str()), "chunk {c:?} over the limit {limit}");
        }
    }
}

/// `http::tgi::run` up to tokenization, plus its `truncate` on stand-in token ids.
fn tgi(req: &TgiRequest, limits: &Limits) {
    let Ok(p) = req.parameters.to_v1() else { return };
    let request = api::Request { logprobs: true, ..api::Request::generate("inputs", req.inputs.clone().into(), p.clone()) };
    let Ok(v) = api::validate(request, limits) else { return };
    assert!(v.single);
    check(&v, &p, limits);
    let Task::Generate(d) = &v.task else { panic!("a TGI request scores: {v:?}") };
    // TGI requests never use beam search, and always report log-probabilities.
    assert!(d.beam.is_none() && d.logprobs, "{d:?}");
    if let Some(n) = v.truncate {
        let mut row: Vec<u32> = (0..req.inputs.len().min(4096) as u32).collect();
        let drop = row.len().saturating_sub(n);
        row.drain(..drop);
        assert!(row.len() <= n && n <= limits.max_input_tokens);
    }
}

/// The contracts of a validated request.
fn check(v: &Validated, p: &api::GenerateParameters, limits: &Limits) {
    assert!(!v.texts.is_empty());
    assert!(!v.single || v.texts.len() == 1);
    assert!(v.texts.len() <= limits.max_client_batch_size);
    let byte_limit = match (v.long_texts, v.truncate) {
        (LongTexts::Refuse, None) => limits.max_input_tokens.saturating_mul(32),
        _ => usize::MAX,
    };
    for s in &v.texts {
        assert!(!s.trim().is_empty() && s.len() <= byte_limit, "text accepted: {s:?}");
    }
    let d = v.queue_deadline;
    assert!(d.as_millis() >= 1 && d.as_millis() <= limits.queue_deadline_ms as u128, "{d:?}");
    let Task::Generate(d) = &v.task else { return };
    if let Some(b) = &d.beam {
        assert!(b.num_beams >= 2 && b.num_beams <= limits.max_num_beams, "{b:?}");
        assert!(b.num_return_sequences >= 1 && b.num_return_sequences <= b.num_beams, "{b:?}");
        assert!(b.length_penalty.is_finite(), "{b:?}");
        assert!(!d.params.do_sample, "beam search accepted with sampling: {p:?}");
        assert!(d.stop.is_empty(), "beam search accepted with stop sequences: {p:?}");
        assert!(!v.stream, "beam search accepted with a stream");
    }
    assert!(v.texts.len() * v.copies <= limits.max_client_batch_size);
    assert!(d.top <= api::MAX_TOP_TOKENS);
    for &(id, bias) in d.logit_bias.iter() {
        assert!((id as usize) < limits.vocab_size && bias.is_finite() && bias.abs() <= 100.0, "{id} {bias}");
    }
    assert!(d.stop.len() <= limits.max_stop_sequences);
    for s in &d.stop {
        assert!(!s.is_empty() && s.len() <= api::MAX_STOP_BYTES);
    }
    check_params(&d.params, p, limits);
}

fn check_params(g: &GenerationParams, p: &api::GenerateParameters, limits: &Limits) {
    assert!(g.max_new_tokens >= 1 && g.max_new_tokens <= limits.max_new_tokens_limit, "{g:?}");
    assert!(g.min_new_tokens <= g.max_new_tokens, "{g:?}");
    assert!(g.temperature.is_finite() && g.temperature >= 0.01 && g.temperature <= 100.0, "{g:?}");
    assert!(g.repetition_penalty.is_finite() && g.repetition_penalty >= 0.01 && g.repetition_penalty <= 100.0);
    assert!(g.top_p.is_finite() && g.top_p >= 0.0 && g.top_p <= 1.0, "{g:?}");
    assert!(g.typical_p.is_finite() && g.typical_p >= 0.0 && g.typical_p <= 1.0, "{g:?}");
    assert!(g.no_repeat_ngram_size <= 64, "{g:?}");
    assert!(g.presence_penalty.abs() <= 2.0 && g.frequency_penalty.abs() <= 2.0, "{g:?}");
    if !g.do_sample {
        assert!(p.temperature.is_none() && p.top_k.is_none() && p.top_p.is_none() && p.typical_p.is_none());
    }
    // Accepted parameters must be usable: a few steps of the token chooser on plausible logits.
    // (An unset seed is random in `validate`; a fixed one keeps the run reproducible.)
    let g = GenerationParams { seed: p.seed.unwrap_or(0), ..*g };
    let vocab = 16usize;
    let mut chooser = TokenChooser::new(g, 0, 1);
    for step in 0..4u32 {
        let logits: Vec<f32> = (0..vocab as u32).map(|i| ((i * 7 + step * 3) % 11) as f32 * 4.5 - 20.0).collect();
        let report = Report { logprob: step % 2 == 0, top: step as usize };
        let Chosen { token, logprob, top } = chooser.choose(&logits, report);
        assert!((token as usize) < vocab, "token {token} with {g:?}");
        assert!(top.len() <= step as usize && top.iter().all(|t| t.1 <= 1e-4), "{top:?}");
        if let Some(lp) = logprob {
            assert!(lp <= 1e-4 && !lp.is_nan(), "logprob {lp} with {g:?}");
        }
        if chooser.finished().is_some() {
            break;
        }
    }
}
