//! Reranking the monoT5 way: each (query, document) pair is one input, `Query: {query}
//! Document: {document} Relevant:`, and its relevance is how much more likely the decoder's
//! first token is the "true" word than the "false" word: `raw = logit_true - logit_false` at the
//! first decoder step, `score = sigmoid(raw)`. The template and the two words are set per model
//! (`t5serve.json`, `"rerank"`). Pure functions; the scheduler scores the first step.

use serde::Deserialize;

/// Where the query goes in a rerank template.
pub const QUERY_SLOT: &str = "{query}";
/// Where the document goes in a rerank template.
pub const DOCUMENT_SLOT: &str = "{document}";

/// A model's rerank settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RerankSettings {
    /// Holds `{query}` and `{document}` once each.
    pub template: String,
    /// The word whose first token means "relevant" (`▁true` in the T5 vocabulary).
    pub true_word: String,
    /// The word whose first token means "not relevant".
    pub false_word: String,
}

impl Default for RerankSettings {
    fn default() -> Self {
        Self {
            template: "Query: {query} Document: {document} Relevant:".into(),
            true_word: "true".into(),
            false_word: "false".into(),
        }
    }
}

impl RerankSettings {
    /// A template must hold each slot exactly once, and the words must be set.
    pub fn check(&self) -> Result<(), String> {
        for slot in [QUERY_SLOT, DOCUMENT_SLOT] {
            match self.template.matches(slot).count() {
                1 => {}
                0 => return Err(format!("rerank template must contain {slot}")),
                _ => return Err(format!("rerank template must contain {slot} only once")),
            }
        }
        if self.true_word.trim().is_empty() || self.false_word.trim().is_empty() {
            return Err("rerank true_word and false_word must not be empty".into());
        }
        Ok(())
    }

    /// The model's input for one pair (the slots filled in one pass, so that a query holding
    /// `{document}` stays as it is).
    pub fn fill(&self, query: &str, document: &str) -> String {
        self.fill_with_span(query, document).0
    }

    /// The filled input and where the document is in it (bytes).
    pub fn fill_with_span(&self, query: &str, document: &str) -> (String, std::ops::Range<usize>) {
        let (q, d) = (self.template.find(QUERY_SLOT), self.template.find(DOCUMENT_SLOT));
        let (q, d) = (q.expect("checked at load"), d.expect("checked at load"));
        let mut parts = [(q, QUERY_SLOT, query), (d, DOCUMENT_SLOT, document)];
        parts.sort_by_key(|p| p.0);
        let mut out = String::with_capacity(self.template.len() + query.len() + document.len());
        let (mut at, mut span) = (0, 0..0);
        for (pos, slot, text) in parts {
            out.push_str(&self.template[at..pos]);
            if slot == DOCUMENT_SLOT {
                span = out.len()..out.len() + text.len();
            }
            out.push_str(text);
            at = pos + slot.len();
        }
        out.push_str(&self.template[at..]);
        (out, span)
    }
}

/// A pair's relevance from `diff`, the first step's logit of the true word minus the false
/// word's: itself with `raw`, otherwise its sigmoid (the probability of "true" against "false").
pub fn score(diff: f64, raw: bool) -> f64 {
    if raw { diff } else { 1.0 / (1.0 + (-diff).exp()) }
}

/// Document indices, most relevant first (ties keep the documents' order), at most `top_n`.
pub fn ranking(scores: &[f64], top_n: Option<usize>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(top_n.unwrap_or(usize::MAX));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_filled_once_per_slot() {
        let s = RerankSettings::default();
        assert_eq!(s.fill("who", "a doc"), "Query: who Document: a doc Relevant:");
        // A query that holds a slot is left as it is.
        assert_eq!(s.fill("{document}", "x"), "Query: {document} Document: x Relevant:");
        let swapped = RerankSettings { template: "{document} | {query}".into(), ..s };
        assert_eq!(swapped.fill("q", "d"), "d | q");
        let (text, span) = RerankSettings::default().fill_with_span("qü", "dé");
        assert_eq!(&text[span], "dé");
    }

    #[test]
    fn templates_need_both_slots_once() {
        assert!(RerankSettings::default().check().is_ok());
        let t = |template: &str| RerankSettings { template: template.into(), ..Default::default() }.check();
        assert!(t("{query}").is_err());
        assert!(t("{query} {document} {query}").is_err());
        let empty = RerankSettings { false_word: " ".into(), ..Default::default() };
        assert!(empty.check().is_err());
    }

    #[test]
    fn scores_are_the_sigmoid_of_the_logit_difference() {
        assert_eq!(score(1.5, true), 1.5);
        assert!((score(1.5, false) - 1.0 / (1.0 + (-1.5f64).exp())).abs() < 1e-15);
        assert_eq!(score(0.0, false), 0.5);
        assert!(score(-40.0, false) > 0.0 && score(40.0, false) <= 1.0);
    }

    #[test]
    fn ranking_is_best_first_stable_and_cut_at_top_n() {
        assert_eq!(ranking(&[0.1, 0.9, 0.5, 0.9], None), vec![1, 3, 2, 0]);
        assert_eq!(ranking(&[0.1, 0.9, 0.5], Some(2)), vec![1, 2]);
        assert_eq!(ranking(&[0.1], Some(5)), vec![0]);
    }
}
