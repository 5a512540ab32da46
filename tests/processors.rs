//! The server's logits processors against transformers' own (tests/data/processors.json,
//! written by scripts/make_test_models.py): same rows in, same rows out.

use serde::Deserialize;
use std::collections::BTreeMap;
use t5serve::generation::processors as p;

#[derive(Deserialize)]
struct Golden {
    logits: Vec<Vec<Option<f32>>>,
    history: Vec<Vec<u32>>,
    cases: BTreeMap<String, Vec<Vec<Option<f32>>>>,
}

fn row(v: &[Option<f32>]) -> Vec<f32> {
    v.iter().map(|x| x.unwrap_or(f32::NEG_INFINITY)).collect()
}

#[test]
fn processors_match_transformers() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/processors.json");
    let g: Golden = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(g.cases.len(), 10);
    for (name, rows) in &g.cases {
        let (kind, value) = name.split_once('=').unwrap();
        for (r, want) in rows.iter().enumerate() {
            let mut l = row(&g.logits[r]);
            let h = &g.history[r];
            match kind {
                "repetition_penalty" => p::repetition_penalty(&mut l, h, value.parse().unwrap()),
                "no_repeat_ngram_size" => p::no_repeat_ngram(&mut l, h, value.parse().unwrap()),
                "temperature" => p::temperature(&mut l, value.parse().unwrap()),
                "top_k" => p::top_k(&mut l, value.parse().unwrap(), 1),
                "top_p" => p::top_p(&mut l, value.parse().unwrap(), 1),
                "typical_p" => p::typical_p(&mut l, value.parse().unwrap(), 1),
                other => panic!("unknown case {other}"),
            }
            for (i, (got, want)) in l.iter().zip(row(want)).enumerate() {
                let same = (got.is_infinite() && want.is_infinite()) || (got - want).abs() <= 1e-5;
                assert!(same, "{name} row {r} id {i}: {got} vs transformers {want}");
            }
        }
    }
}
