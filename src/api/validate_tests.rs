//! Unit tests of `validate`: every limit and every contract of a validated request.

use super::*;
use crate::generation::GenerationParams;
use serde_json::json;

fn limits() -> Limits {
    Limits {
        max_labels: 3,
        max_num_beams: 4,
        max_stop_sequences: 2,
        max_concurrent_requests: 4,
        queue_deadline_ms: 1000,
        request_timeout_ms: 60_000,
        max_input_tokens: 8,
        max_new_tokens_limit: 100,
        default_max_new_tokens: 20,
        max_client_batch_size: 2,
        max_translate_chunks: 4,
        max_request_cost: 0,
        vocab_size: 100,
    }
}

#[test]
fn penalties_bias_and_top_tokens_are_checked() {
    let run = |p: GenerateParameters| {
        validate(Request::generate("inputs", Inputs::One("x".into()), p), &limits()).map(|v| match v.task {
            Task::Generate(d) => (d.params.presence_penalty, d.params.frequency_penalty, d.top, d.logit_bias),
            Task::Score(_) | Task::Embed(_) => unreachable!(),
        })
    };
    let bias = |pairs: &[(&str, f64)]| Some(pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect());
    let ok = run(GenerateParameters {
        presence_penalty: Some(-2.0),
        frequency_penalty: Some(1.5),
        top_n_tokens: Some(5),
        logit_bias: bias(&[("7", -100.0), ("99", 3.0)]),
        ..Default::default()
    })
    .unwrap();
    assert_eq!((ok.0, ok.1, ok.2), (-2.0, 1.5, 5));
    assert_eq!(&ok.3[..], &[(7, -100.0), (99, 3.0)]);
    for (p, msg) in [
        (GenerateParameters { presence_penalty: Some(2.5), ..Default::default() }, "presence_penalty must be in"),
        (GenerateParameters { top_n_tokens: Some(21), ..Default::default() }, "top_n_tokens must be in [0, 20]"),
        (GenerateParameters { logit_bias: bias(&[("100", 1.0)]), ..Default::default() }, "below the vocabulary"),
        (GenerateParameters { logit_bias: bias(&[("x", 1.0)]), ..Default::default() }, "below the vocabulary"),
        (GenerateParameters { logit_bias: bias(&[("1", 101.0)]), ..Default::default() }, "[-100, 100]"),
        (
            GenerateParameters { num_beams: Some(2), logit_bias: bias(&[("1", 1.0)]), ..Default::default() },
            "cannot be combined with beam search",
        ),
    ] {
        let e = run(p).unwrap_err().0;
        assert!(e.contains(msg), "{e}");
    }
}

#[test]
fn copies_count_against_the_batch_limit_and_streams() {
    let r = |copies, stream| Request {
        copies,
        stream,
        ..Request::generate("inputs", Inputs::One("x".into()), GenerateParameters::default())
    };
    assert_eq!(validate(r(2, false), &limits()).unwrap().copies, 2);
    assert!(validate(r(3, false), &limits()).unwrap_err().0.contains("3 rows; the limit is 2"));
    // Every row of a request may stream (the route's format says which row a token is of).
    assert_eq!(validate(r(2, true), &limits()).unwrap().copies, 2);
}

/// The texts and `single` of a generation request with these inputs, validated.
fn parse_inputs(inputs: &serde_json::Value, limits: &Limits) -> Result<(Vec<String>, bool), ValidationError> {
    let inputs: Inputs = serde_json::from_value(inputs.clone()).map_err(|e| ValidationError(e.to_string()))?;
    validate(Request::generate("inputs", inputs, GenerateParameters::default()), limits).map(|v| (v.texts, v.single))
}

#[test]
fn inputs_accept_string_or_list() {
    assert_eq!(parse_inputs(&json!("hi"), &limits()).unwrap(), (vec!["hi".to_string()], true));
    let t = parse_inputs(&json!(["a", "b"]), &limits()).unwrap();
    assert_eq!((t.0.len(), t.1), (2, false));
}

#[test]
fn inputs_reject_bad_shapes_with_their_index() {
    let cases = [
        (json!(""), "inputs must not be empty"),
        (json!("   "), "inputs must not be empty"),
        (json!([]), "inputs must not be an empty list"),
        (json!(["a", 3]), "invalid type: integer `3`, expected a string"),
        (json!(["a", ""]), "inputs[1] must not be empty"),
        (json!(["a", "b", "c"]), "inputs has 3 items; the limit is 2 (max_client_batch_size)"),
        (json!(7), "invalid type: integer `7`, expected a string or a list of strings"),
        (json!({"a": 1}), "invalid type: map, expected a string or a list of strings"),
    ];
    for (v, msg) in cases {
        assert_eq!(parse_inputs(&v, &limits()).unwrap_err().0, msg, "{v}");
    }
}

#[test]
fn parameters_default_and_ranges() {
    let p = GenerateParameters::default().decoding(&limits()).unwrap();
    assert_eq!(p, GenerationParams { seed: p.seed, ..GenerationParams::greedy(20, 0) });
    for bad in [0, -1, 101] {
        let e = GenerateParameters { max_new_tokens: Some(bad), ..Default::default() }.decoding(&limits());
        assert!(e.unwrap_err().0.contains("max_new_tokens must be between 1 and 100"));
    }
    let e = GenerateParameters { max_new_tokens: Some(5), min_new_tokens: Some(6), ..Default::default() }
        .decoding(&limits());
    assert!(e.unwrap_err().0.contains("min_new_tokens must be between 0 and max_new_tokens (5), got 6"));
}

#[test]
fn sampling_parameters_are_checked_and_imply_sampling() {
    let ok = |p: GenerateParameters| p.decoding(&limits());
    let p = ok(GenerateParameters { temperature: Some(0.5), seed: Some(3), ..Default::default() }).unwrap();
    assert!(p.do_sample && p.temperature == 0.5 && p.seed == 3);
    let cases = [
        (
            GenerateParameters { temperature: Some(0.0), ..Default::default() },
            "parameters.temperature must be in [0.01, 100], got 0",
        ),
        (GenerateParameters { top_p: Some(1.5), ..Default::default() }, "parameters.top_p must be in (0, 1], got 1.5"),
        (GenerateParameters { top_k: Some(0), ..Default::default() }, "parameters.top_k must be at least 1, got 0"),
        (
            GenerateParameters { typical_p: Some(-1.0), ..Default::default() },
            "parameters.typical_p must be in (0, 1], got -1",
        ),
        (
            GenerateParameters { repetition_penalty: Some(0.0), ..Default::default() },
            "parameters.repetition_penalty must be in [0.01, 100], got 0",
        ),
        (
            GenerateParameters { no_repeat_ngram_size: Some(65), ..Default::default() },
            "parameters.no_repeat_ngram_size must be in [0, 64], got 65",
        ),
        (
            GenerateParameters { do_sample: Some(false), top_k: Some(3), ..Default::default() },
            "temperature, top_k, top_p and typical_p apply to sampling only; set do_sample to true or leave them out",
        ),
    ];
    for (p, msg) in cases {
        assert_eq!(ok(p).unwrap_err().0, msg);
    }
}

#[test]
fn deadline_defaults_to_the_config_and_may_only_shorten() {
    let ms = |v| GenerateParameters { deadline_ms: v, ..Default::default() }.queue_deadline(&limits());
    assert_eq!(ms(None).unwrap().as_millis(), 1000);
    assert_eq!(ms(Some(20)).unwrap().as_millis(), 20);
    assert!(ms(Some(0)).is_err());
    assert!(ms(Some(1001)).unwrap_err().0.contains("deadline_ms must be between 1 and 1000"));
}

#[test]
fn beam_parameters_are_checked() {
    let b = |p: GenerateParameters| p.beam(&limits());
    assert_eq!(b(GenerateParameters::default()).unwrap(), None);
    let p = b(GenerateParameters {
        num_beams: Some(4),
        num_return_sequences: Some(2),
        length_penalty: Some(0.5),
        early_stopping: Some(serde_json::json!("never")),
        ..Default::default()
    })
    .unwrap()
    .unwrap();
    assert_eq!((p.num_beams, p.num_return_sequences, p.early_stopping), (4, 2, EarlyStopping::Never));
    let errors = [
        (GenerateParameters { num_beams: Some(5), ..Default::default() }, "num_beams must be between 1 and 4"),
        (
            GenerateParameters { num_beams: Some(2), num_return_sequences: Some(3), ..Default::default() },
            "num_return_sequences",
        ),
        (GenerateParameters { num_beams: Some(2), do_sample: Some(true), ..Default::default() }, "sampling cannot"),
        (GenerateParameters { length_penalty: Some(2.0), ..Default::default() }, "beam search only"),
        (
            GenerateParameters { num_beams: Some(2), early_stopping: Some(serde_json::json!(3)), ..Default::default() },
            "early_stopping must be",
        ),
    ];
    for (p, msg) in errors {
        let e = b(p).unwrap_err().0;
        assert!(e.contains(msg), "{e}");
    }
}

#[test]
fn stop_sequences_are_bounded() {
    let p = |stop: Vec<&str>| GenerateParameters {
        stop: Some(stop.into_iter().map(String::from).collect()),
        ..Default::default()
    };
    assert_eq!(p(vec!["a", "b"]).stop_sequences(&limits()).unwrap().len(), 2);
    assert!(p(vec!["a", "b", "c"]).stop_sequences(&limits()).unwrap_err().0.contains("max_stop_sequences"));
    assert_eq!(
        p(vec!["a", ""]).stop_sequences(&limits()).unwrap_err().0,
        "parameters.stop[1] must be 1 to 256 bytes long"
    );
}

#[test]
fn token_count_limit_names_the_input() {
    assert!(check_token_count(Some(3), 8, &limits()).is_ok());
    let e = check_token_count(Some(3), 9, &limits()).unwrap_err();
    assert_eq!(e.0, "inputs[3] has 9 tokens; the limit is 8 (max_input_tokens)");
}
