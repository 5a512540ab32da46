//! Entity extraction the T5 way: the model writes the entities as text, `TYPE: span; TYPE:
//! span` (the separator and the type/span delimiter are set per model, `t5serve.json`
//! `"extract"`), and this module reads that text back and finds each span in the input. Pure
//! functions; the HTTP handler runs the model.
//!
//! The rules:
//! - the output is cut at the separator; blank parts are skipped (an empty output has no
//!   entities); a part without the delimiter, or with an empty type or span, is malformed and
//!   reported as such, never guessed at;
//! - a span is found in the input as written (case and accents included) at word edges: the
//!   character before it and the one after it are not letters or digits (or it starts or ends
//!   with one that is not); the k-th entity with the same text maps to its k-th such occurrence;
//! - a span not found so (misspelled, or more entities with that text than occurrences) keeps
//!   its text and score, with no offsets: it is never dropped or moved;
//! - found entities come in input order, then the ones not found, in the model's order.

use std::collections::HashMap;
use std::ops::Range;

use serde::Deserialize;

/// Where the input goes in an extraction template.
pub use super::classify::TEXT_SLOT;

/// A model's extraction settings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExtractSettings {
    /// The prompt, with `{text}` where the input goes.
    pub template: String,
    /// Between entities.
    pub separator: String,
    /// Between an entity's type and its span.
    pub delimiter: String,
}

impl Default for ExtractSettings {
    fn default() -> Self {
        Self { template: "entities: {text}".into(), separator: ";".into(), delimiter: ":".into() }
    }
}

impl ExtractSettings {
    pub fn check(&self) -> Result<(), String> {
        super::classify::check_template(&self.template).map_err(|e| format!("extract {e}"))?;
        if self.separator.trim().is_empty() || self.delimiter.trim().is_empty() {
            return Err("extract separator and delimiter must not be blank".into());
        }
        if self.separator == self.delimiter {
            return Err("extract separator and delimiter must differ".into());
        }
        Ok(())
    }
}

/// One entity as the model wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub kind: String,
    pub text: String,
    /// Where its span is in the output text (bytes), for its tokens' score.
    pub in_output: Range<usize>,
}

/// What the output says: its entities, and the parts that are not `TYPE<delimiter> span`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub entities: Vec<Written>,
    pub malformed: Vec<String>,
}

/// Reads the model's output.
pub fn parse(output: &str, s: &ExtractSettings) -> Parsed {
    let mut parsed = Parsed::default();
    let mut at = 0;
    for part in output.split(s.separator.as_str()) {
        let start = at;
        at += part.len() + s.separator.len();
        if part.trim().is_empty() {
            continue;
        }
        let Some((kind, span)) = part.split_once(s.delimiter.as_str()) else {
            parsed.malformed.push(part.trim().to_string());
            continue;
        };
        let (kind, text) = (kind.trim(), span.trim());
        if kind.is_empty() || text.is_empty() {
            parsed.malformed.push(part.trim().to_string());
            continue;
        }
        // The span's place in the output: after the delimiter, past its leading spaces.
        let span_start = start + kind_end(part, &s.delimiter) + (span.len() - span.trim_start().len());
        parsed.entities.push(Written {
            kind: kind.to_string(),
            text: text.to_string(),
            in_output: span_start..span_start + text.len(),
        });
    }
    parsed
}

/// Bytes of `part` up to the end of its first delimiter.
fn kind_end(part: &str, delimiter: &str) -> usize {
    part.find(delimiter).expect("split at it") + delimiter.len()
}

/// Each entity's place in `input` (bytes), by the rules above; `None` where it is not found.
pub fn locate(input: &str, entities: &[Written]) -> Vec<Option<Range<usize>>> {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    entities
        .iter()
        .map(|e| {
            let k = seen.entry(e.text.as_str()).or_insert(0);
            *k += 1;
            occurrences(input, &e.text).nth(*k - 1)
        })
        .collect()
}

/// The occurrences of `text` in `input` at word edges, left to right, not overlapping.
fn occurrences<'a>(input: &'a str, text: &'a str) -> impl Iterator<Item = Range<usize>> + 'a {
    let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() && !unspaced(c));
    let (first, last) = (text.chars().next(), text.chars().next_back());
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(i) = input[from..].find(text).map(|i| from + i) {
            let end = i + text.len();
            let before = input[..i].chars().next_back();
            let after = input[end..].chars().next();
            let edge_before = !(word(first) && word(before));
            let edge_after = !(word(last) && word(after));
            if edge_before && edge_after {
                from = end;
                return Some(i..end);
            }
            // Past this start, one character on.
            from = i + input[i..].chars().next().map_or(1, char::len_utf8);
        }
        None
    })
}

/// Characters of scripts written without spaces between words (Chinese, Japanese), where any
/// place is a word edge.
fn unspaced(c: char) -> bool {
    matches!(c, '\u{3040}'..='\u{30ff}' | '\u{3400}'..='\u{4dbf}' | '\u{4e00}'..='\u{9fff}' | '\u{f900}'..='\u{faff}')
}

/// A byte offset of `text` as a count of Unicode characters.
pub fn chars_at(text: &str, byte: usize) -> usize {
    text[..byte].chars().count()
}

/// A span's score: the probability its tokens' mean log-probability stands for, over the
/// generated tokens whose text overlaps `span` (bytes of the output, whose pieces are `pieces`
/// in order, each with its log-probability). `None` when no token covers it.
pub fn score(pieces: &[(&str, f32)], span: &Range<usize>) -> Option<f64> {
    let (mut at, mut sum, mut n) = (0, 0f64, 0usize);
    for (text, logprob) in pieces {
        let end = at + text.len();
        if !text.is_empty() && at < span.end && end > span.start {
            sum += *logprob as f64;
            n += 1;
        }
        at = end;
    }
    (n > 0).then(|| (sum / n as f64).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> ExtractSettings {
        ExtractSettings::default()
    }

    fn texts(p: &Parsed) -> Vec<(&str, &str)> {
        p.entities.iter().map(|e| (e.kind.as_str(), e.text.as_str())).collect()
    }

    #[test]
    fn the_output_is_read_entity_by_entity() {
        let out = "NUMBER: twenty one; NUMBER:seven ;DATE : May 3";
        let p = parse(out, &s());
        assert_eq!(texts(&p), vec![("NUMBER", "twenty one"), ("NUMBER", "seven"), ("DATE", "May 3")]);
        for e in &p.entities {
            assert_eq!(&out[e.in_output.clone()], e.text);
        }
        assert!(p.malformed.is_empty());
    }

    #[test]
    fn empty_and_malformed_outputs_are_reported_not_guessed() {
        assert_eq!(parse("", &s()), Parsed::default());
        assert_eq!(parse(" ; ;", &s()), Parsed::default());
        let p = parse("NUMBER: one; just words; : two; NUMBER:   ", &s());
        assert_eq!(texts(&p), vec![("NUMBER", "one")]);
        assert_eq!(p.malformed, vec!["just words", ": two", "NUMBER:"]);
        // The span may hold the delimiter itself.
        assert_eq!(texts(&parse("TIME: 10:30", &s())), vec![("TIME", "10:30")]);
        let custom = ExtractSettings { separator: " | ".into(), delimiter: "=".into(), ..s() };
        assert_eq!(texts(&parse("N=a; b | M=c", &custom)), vec![("N", "a; b"), ("M", "c")]);
    }

    fn written(texts: &[&str]) -> Vec<Written> {
        texts.iter().map(|t| Written { kind: "N".into(), text: t.to_string(), in_output: 0..0 }).collect()
    }

    #[test]
    fn repeated_spans_map_to_repeated_occurrences_at_word_edges() {
        let input = "seventeen and seven, then seven again";
        let found = locate(input, &written(&["seven", "seven", "seven", "seventeen"]));
        let slices: Vec<Option<&str>> = found.iter().map(|r| r.clone().map(|r| &input[r])).collect();
        assert_eq!(slices, vec![Some("seven"), Some("seven"), None, Some("seventeen")]);
        assert_eq!(found[0], Some(14..19), "not inside seventeen");
        assert_eq!(found[1], Some(26..31));
    }

    #[test]
    fn a_span_not_in_the_input_is_kept_without_offsets() {
        let found = locate("I have twenty-one cats", &written(&["twenty one", "twenty-one", "Twenty-one"]));
        assert_eq!(found, vec![None, Some(7..17), None]);
    }

    #[test]
    fn offsets_count_unicode_characters() {
        let input = "Ich habe dreißig Äpfel und 三 Bücher, dreißig!";
        let found = locate(input, &written(&["dreißig", "三", "dreißig"]));
        let chars: Vec<(usize, usize)> = found
            .iter()
            .map(|r| r.clone().unwrap())
            .map(|r| (chars_at(input, r.start), chars_at(input, r.end)))
            .collect();
        assert_eq!(chars, vec![(9, 16), (27, 28), (37, 44)]);
        let as_chars: Vec<char> = input.chars().collect();
        assert_eq!(as_chars[9..16].iter().collect::<String>(), "dreißig");
        assert_eq!(as_chars[27..28].iter().collect::<String>(), "三");
        // Chinese has no spaces between words: every place is an edge.
        let zh = "我有三本书和三只猫";
        let found = locate(zh, &written(&["三", "三"]));
        let chars: Vec<usize> = found.iter().map(|r| chars_at(zh, r.clone().unwrap().start)).collect();
        assert_eq!(chars, vec![2, 6]);
    }

    #[test]
    fn a_span_scores_the_mean_log_probability_of_its_tokens() {
        // "NUMBER: twenty one" in pieces; the span "twenty one" is bytes 8..18.
        let pieces = [("NUMBER", -0.1), (":", -0.2), (" twenty", -0.5), (" one", -1.5), ("", -9.0)];
        let p = score(&pieces, &(8..18)).unwrap();
        assert!((p - (-1.0f64).exp()).abs() < 1e-9, "{p}");
        assert_eq!(score(&pieces, &(40..41)), None);
    }

    #[test]
    fn settings_are_checked() {
        assert!(s().check().is_ok());
        assert!(ExtractSettings { template: "x".into(), ..s() }.check().is_err());
        assert!(ExtractSettings { separator: ":".into(), ..s() }.check().is_err());
        assert!(ExtractSettings { delimiter: " ".into(), ..s() }.check().is_err());
    }
}
