//! The served model against transformers: greedy ids and per-step top-5 logits (golden.json),
//! batch invariance, and the KV cache against full recomputation. Real ONNX Runtime, committed model.

mod common;

use common::*;
use ndarray::Array2;
use t5serve::generation::{FinishReason, GenerationParams, greedy_next};
use t5serve::scheduler::Event;
use t5serve::scheduler::buckets::pad_batch;

/// Compares one prompt's served ids and logits with the golden ones. Returns how many steps
/// were compared before a near-tie (if any) ended the comparison.
fn compare_case(case: &GoldenCase, ids: &[u32], logits: &[Vec<f32>], eos: u32, min_new: usize) -> usize {
    assert_eq!(logits.len(), ids.len());
    for (step, top) in case.top5.iter().enumerate() {
        let served = &logits[step];
        for (id, want) in top.ids.iter().zip(&top.logits) {
            let got = served[*id as usize];
            assert!(
                (got - want).abs() <= TOL,
                "{:?} step {step}: logit of token {id} is {got}, transformers gives {want}",
                case.prompt
            );
        }
        // The margin between the golden choice and the best alternative transformers could take.
        let allowed: Vec<(u32, f32)> = top
            .ids
            .iter()
            .copied()
            .zip(top.logits.iter().copied())
            .filter(|(id, _)| step >= min_new || *id != eos)
            .collect();
        let (best, second) = (allowed[0], allowed.get(1).copied());
        assert_eq!(best.0, case.ids[step], "golden ids are the argmax of golden logits");
        if let Some(second) = second
            && best.1 - second.1 < TOL
        {
            assert!(
                ids[step] == best.0 || ids[step] == second.0,
                "{:?} step {step}: near-tie between {} and {}, served {}",
                case.prompt,
                best.0,
                second.0,
                ids[step]
            );
            return step;
        }
        assert_eq!(ids[step], case.ids[step], "{:?} step {step}: token differs from transformers", case.prompt);
    }
    case.top5.len()
}

fn parity_for(model_dir: std::path::PathBuf) {
    let g = golden();
    let model = load(&model_dir);
    let eos = model.dims.eos_token_id;
    assert_eq!(eos, g.eos_token_id);
    let tokenizer = t5serve::model::TextTokenizer::from_file(&model_dir.join("tokenizer.json")).unwrap();
    let mut compared = 0;
    for case in &g.cases {
        assert_eq!(
            tokenizer.encode(&case.prompt).unwrap(),
            case.input_ids,
            "tokenizer matches transformers for {:?}",
            case.prompt
        );
        let mut rec = Recorder::default();
        let out = decode_batch(&model, std::slice::from_ref(&case.input_ids), golden_params(&g), &mut rec);
        assert_eq!(out[0].ids.len(), g.steps);
        assert!(
            matches!(out[0].finished, Event::Finished { reason: FinishReason::Length, generated_tokens, .. } if generated_tokens == g.steps)
        );
        compared += compare_case(case, &out[0].ids, &rec.steps[&0], eos, g.min_new_tokens);
    }
    // Near-ties may end a prompt early, but most steps must really be compared.
    assert!(compared >= g.cases.len() * g.steps * 3 / 4, "only {compared} steps compared");
}

#[test]
fn greedy_ids_and_top5_logits_match_transformers() {
    parity_for(tiny_model());
}

#[test]
fn merged_decoder_matches_transformers_too() {
    parity_for(tiny_model_merged());
}

#[test]
fn a_batch_gives_the_same_ids_as_one_by_one() {
    let g = golden();
    let model = load(&tiny_model());
    let inputs: Vec<Vec<u32>> = g.cases.iter().map(|c| c.input_ids.clone()).collect();
    let mut rec = Recorder::default();
    let batched = decode_batch(&model, &inputs, golden_params(&g), &mut rec);
    for (i, input) in inputs.iter().enumerate() {
        let alone = decode_batch(&model, std::slice::from_ref(input), golden_params(&g), &mut Recorder::default());
        assert_eq!(batched[i], alone[0], "row {i} ({:?}) differs between batch and single", g.cases[i].prompt);
    }
}

#[test]
fn rows_leave_the_batch_as_they_finish() {
    // Different max_new_tokens in one batch: each row stops at its own length, the rest go on.
    let g = golden();
    let model = load(&tiny_model());
    let mut rec = Recorder::default();
    let inputs: Vec<Vec<u32>> = g.cases.iter().take(3).map(|c| c.input_ids.clone()).collect();
    let (rows, mut rxs): (Vec<_>, Vec<_>) = inputs
        .iter()
        .zip([3usize, 24, 10])
        .map(|(ids, n)| t5serve::scheduler::RowRequest::new(ids.clone(), GenerationParams::greedy(n, n)))
        .unzip();
    t5serve::scheduler::batch::run_batch(&model, rows, &mut rec);
    for (i, n) in [3usize, 24, 10].into_iter().enumerate() {
        let mut ids = Vec::new();
        while let Ok(Event::Token { id, .. }) = rxs[i].try_recv() {
            ids.push(id);
        }
        assert_eq!(ids, g.cases[i].ids[..n], "row {i}");
    }
}

/// Greedy decoding that reruns the decoder over the whole prefix at every step (no cache).
fn greedy_uncached(
    model: &t5serve::model::Seq2SeqModel,
    input: &[u32],
    params: &GenerationParams,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    let dims = model.dims.clone();
    let (ids, mask) = pad_batch(&[input], dims.pad_token_id);
    let enc = model.encode(ids, mask).unwrap();
    let mut prefix = vec![dims.decoder_start_token_id as i64];
    let (mut out, mut all_logits) = (Vec::new(), Vec::new());
    for step in 0..params.max_new_tokens {
        let p = Array2::from_shape_vec((1, prefix.len()), prefix.clone()).unwrap();
        let logits = model.decode_uncached(&p, &enc).unwrap();
        let last = logits.slice(ndarray::s![0, prefix.len() - 1, ..]).to_vec();
        let token = greedy_next(&last, step, params, dims.eos_token_id);
        all_logits.push(last);
        out.push(token);
        if token == dims.eos_token_id {
            break;
        }
        prefix.push(token as i64);
    }
    (out, all_logits)
}

#[test]
fn cached_decoding_equals_uncached_decoding() {
    let g = golden();
    for dir in [tiny_model(), tiny_model_merged()] {
        let model = load(&dir);
        // The shortest, a middle and the longest prompt.
        for case in [&g.cases[1], &g.cases[4], &g.cases[9]] {
            let mut rec = Recorder::default();
            let cached = decode_batch(&model, std::slice::from_ref(&case.input_ids), golden_params(&g), &mut rec);
            let (uncached, logits) = greedy_uncached(&model, &case.input_ids, &golden_params(&g));
            assert_eq!(cached[0].ids, uncached, "{}: {:?}", dir.display(), case.prompt);
            for (step, (a, b)) in rec.steps[&0].iter().zip(&logits).enumerate() {
                let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
                assert!(diff <= TOL, "{:?} step {step}: cached and uncached logits differ by {diff}", case.prompt);
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct DecodingGolden {
    max_new_tokens: usize,
    min_new_tokens: usize,
    cases: Vec<DecodingCase>,
}

#[derive(serde::Deserialize)]
struct DecodingCase {
    prompt: String,
    parameters: std::collections::BTreeMap<String, f64>,
    ids: Vec<u32>,
    /// Per step, the top-2 margin of transformers' processed scores.
    margins: Vec<f32>,
}

#[test]
fn repetition_penalty_and_no_repeat_ngram_match_transformers() {
    let path = data_dir().join("golden_decoding.json");
    let g: DecodingGolden = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let model = load(&tiny_model());
    let tokenizer = t5serve::model::TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    assert!(g.cases.len() >= 8);
    let mut compared = 0;
    for case in &g.cases {
        let mut params = GenerationParams::greedy(g.max_new_tokens, g.min_new_tokens);
        for (k, v) in &case.parameters {
            match k.as_str() {
                "repetition_penalty" => params.repetition_penalty = *v as f32,
                "no_repeat_ngram_size" => params.no_repeat_ngram_size = *v as usize,
                other => panic!("unexpected golden parameter {other}"),
            }
        }
        let input = tokenizer.encode(&case.prompt).unwrap();
        let (rows, mut rxs): (Vec<_>, Vec<_>) =
            [t5serve::scheduler::RowRequest::new(input, params)].into_iter().unzip();
        t5serve::scheduler::batch::run_batch(&model, rows, &mut Recorder::default());
        let mut ids = Vec::new();
        while let Ok(Event::Token { id, .. }) = rxs[0].try_recv() {
            ids.push(id);
        }
        // Compare up to (and not past) the first near-tie, where either token is right.
        let n = case.margins.iter().position(|&m| m < TOL).unwrap_or(case.ids.len());
        assert_eq!(ids[..n], case.ids[..n], "{:?} with {:?}", case.prompt, case.parameters);
        compared += n;
    }
    assert!(compared >= g.cases.len() * g.max_new_tokens * 3 / 4, "only {compared} steps compared");
}

#[derive(serde::Deserialize)]
struct BeamGolden {
    max_new_tokens: usize,
    cases: Vec<BeamCase>,
}

#[derive(serde::Deserialize)]
struct BeamCase {
    prompt: String,
    parameters: serde_json::Value,
    sequences: Vec<BeamSeq>,
}

#[derive(serde::Deserialize, Debug)]
struct BeamSeq {
    ids: Vec<u32>,
    score: f32,
}

/// Decodes one beam search request and returns its hypotheses.
fn beam_decode(
    model: &t5serve::model::Seq2SeqModel,
    input: Vec<u32>,
    params: GenerationParams,
    beam: t5serve::generation::beam::BeamParams,
) -> Vec<t5serve::scheduler::Sequence> {
    let (row, mut rx) = t5serve::scheduler::RowRequest::new(input, params);
    t5serve::scheduler::batch::run_batch(model, vec![row.with_beam(Some(beam))], &mut Recorder::default());
    match rx.try_recv().expect("beam search finished") {
        Event::Sequences(s) => s,
        other => panic!("beam search sends its sequences first, not {other:?}"),
    }
}

fn beam_params(p: &serde_json::Value, max_new: usize) -> (GenerationParams, t5serve::generation::beam::BeamParams) {
    use t5serve::generation::beam::{BeamParams, EarlyStopping};
    let mut params = GenerationParams::greedy(max_new, 0);
    if let Some(r) = p.get("repetition_penalty") {
        params.repetition_penalty = r.as_f64().unwrap() as f32;
    }
    let early = match &p["early_stopping"] {
        serde_json::Value::Bool(true) => EarlyStopping::True,
        serde_json::Value::Bool(false) => EarlyStopping::False,
        _ => EarlyStopping::Never,
    };
    let beam = BeamParams {
        num_beams: p["num_beams"].as_u64().unwrap() as usize,
        num_return_sequences: p["num_return_sequences"].as_u64().unwrap() as usize,
        length_penalty: p["length_penalty"].as_f64().unwrap() as f32,
        early_stopping: early,
    };
    (params, beam)
}

/// The hypotheses equal transformers' (ids and scores); two whose golden scores are closer
/// than the tolerance may come in either order.
fn compare_beams(what: &str, got: &[t5serve::scheduler::Sequence], want: &[BeamSeq]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, w) in want.iter().enumerate() {
        let tied = |j: usize| want.get(j).is_some_and(|o| (o.score - w.score).abs() < 1e-4);
        let candidates: Vec<usize> = [i.wrapping_sub(1), i, i + 1].into_iter().filter(|&j| j == i || tied(j)).collect();
        let hit =
            candidates.iter().any(|&j| got.get(j).is_some_and(|g| g.ids == w.ids && (g.score - w.score).abs() < 1e-4));
        assert!(
            hit,
            "{what}: hypothesis {i} {:?} (score {}) not found; got {:?}",
            w.ids,
            w.score,
            got.iter().map(|g| (&g.ids, g.score)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn beam_search_matches_transformers() {
    let g: BeamGolden =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("golden_beam.json")).unwrap()).unwrap();
    let model = load(&tiny_model());
    let tokenizer = t5serve::model::TextTokenizer::from_file(&tiny_model().join("tokenizer.json")).unwrap();
    for case in &g.cases {
        let (params, beam) = beam_params(&case.parameters, g.max_new_tokens);
        let got = beam_decode(&model, tokenizer.encode(&case.prompt).unwrap(), params, beam);
        compare_beams(&format!("{:?} {}", case.prompt, case.parameters), &got, &case.sequences);
    }
}

#[test]
fn plain_greedy_stops_at_eos_and_min_new_tokens_suppresses_it() {
    let g = golden();
    let model = load(&tiny_model());
    let eos = model.dims.eos_token_id;
    let mut ended = 0;
    for case in &g.cases {
        // Without min_new_tokens: transformers' plain greedy ids, ending at EOS where it does.
        let out = decode_batch(
            &model,
            std::slice::from_ref(&case.input_ids),
            GenerationParams::greedy(g.steps, 0),
            &mut Recorder::default(),
        );
        assert_eq!(out[0].ids, case.natural_ids, "{:?}", case.prompt);
        let reason = if case.natural_ids.last() == Some(&eos) { FinishReason::Eos } else { FinishReason::Length };
        assert!(matches!(out[0].finished, Event::Finished { reason: r, .. } if r == reason), "{:?}", out[0].finished);
        if reason == FinishReason::Eos {
            ended += 1;
            // With min_new_tokens = 24 the same prompt runs on: EOS was suppressed (golden ids).
            assert!(case.ids.len() == g.steps && !case.ids[..case.natural_ids.len() - 1].contains(&eos));
        }
    }
    assert!(ended >= 4, "the tiny model ends {ended} golden prompts with EOS");
}
