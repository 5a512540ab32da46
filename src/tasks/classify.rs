//! Turning label log-likelihoods into probabilities, and filling prompt templates.
//!
//! Each label `l` has a score `s_l`: the sum of its tokens' log-probabilities (EOS included),
//! divided by its token count when length normalisation is asked for.
//! - single-label: `p_l = exp(s_l) / sum_k exp(s_k)` (a softmax over the candidates; sums to 1);
//! - multi-label: `p_l = sigmoid(s_l - max_{k != l} s_k)`, the probability that `l` beats its best
//!   alternative, independent for each label (they need not sum to 1).

use serde::Serialize;

/// Where the input goes in a template.
pub const TEXT_SLOT: &str = "{text}";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelProbability {
    pub label: String,
    pub score: f64,
}

/// `(label, score)` pairs, sorted from the most to the least likely (stable for ties).
pub fn probabilities(labels: &[String], scores: &[f64], multi_label: bool) -> Vec<LabelProbability> {
    assert_eq!(labels.len(), scores.len(), "one score per label");
    let probs: Vec<f64> = if multi_label {
        (0..scores.len())
            .map(|i| {
                let best_other = scores
                    .iter()
                    .enumerate()
                    .filter(|&(j, _)| j != i)
                    .map(|(_, &s)| s)
                    .fold(f64::NEG_INFINITY, f64::max);
                1.0 / (1.0 + (best_other - scores[i]).exp())
            })
            .collect()
    } else {
        let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let total: f64 = exps.iter().sum();
        exps.iter().map(|e| e / total).collect()
    };
    let mut out: Vec<LabelProbability> =
        labels.iter().zip(probs).map(|(l, p)| LabelProbability { label: l.clone(), score: p }).collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    out
}

/// Fills `template` with the input text.
pub fn fill(template: &str, text: &str) -> String {
    template.replacen(TEXT_SLOT, text, 1)
}

/// A template must hold the slot exactly once.
pub fn check_template(template: &str) -> Result<(), String> {
    match template.matches(TEXT_SLOT).count() {
        1 => Ok(()),
        0 => Err(format!("template must contain {TEXT_SLOT}")),
        _ => Err(format!("template must contain {TEXT_SLOT} only once")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        vec!["a".into(), "b".into(), "c".into()]
    }

    #[test]
    fn softmax_over_labels_sums_to_one_and_is_sorted() {
        let p = probabilities(&labels(), &[-1.0, -3.0, -2.0], false);
        let total: f64 = p.iter().map(|x| x.score).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(p.iter().map(|x| x.label.as_str()).collect::<Vec<_>>(), vec!["a", "c", "b"]);
        let e = [(-1f64).exp(), (-3f64).exp(), (-2f64).exp()];
        assert!((p[0].score - e[0] / e.iter().sum::<f64>()).abs() < 1e-12);
    }

    #[test]
    fn multi_label_compares_with_the_best_alternative() {
        let p = probabilities(&labels(), &[-1.0, -3.0, -1.0], true);
        // a and c tie: each beats its best alternative with probability 1/2.
        assert!((p[0].score - 0.5).abs() < 1e-12 && (p[1].score - 0.5).abs() < 1e-12);
        // b: sigmoid(-3 - (-1)) = sigmoid(-2)
        assert!((p[2].score - 1.0 / (1.0 + 2f64.exp())).abs() < 1e-12);
    }

    #[test]
    fn templates_need_exactly_one_slot() {
        assert_eq!(fill("language: {text}", "vier"), "language: vier");
        assert!(check_template("x {text}").is_ok());
        assert!(check_template("x").is_err());
        assert!(check_template("{text} {text}").is_err());
    }
}
