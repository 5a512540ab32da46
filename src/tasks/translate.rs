//! Translation prompts per language pair, and splitting long texts at sentence boundaries.

use serde::{Deserialize, Serialize};

/// A supported pair and its prompt template (with `{text}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LanguagePair {
    pub source: String,
    pub target: String,
    pub template: String,
}

impl LanguagePair {
    /// T5's own prompt: `translate {source} to {target}: {text}`.
    pub fn t5(source: &str, target: &str) -> Self {
        Self {
            source: source.into(),
            target: target.into(),
            template: format!("translate {source} to {target}: {{text}}"),
        }
    }

    /// Whether the pair is `source -> target`, ignoring case.
    pub fn matches(&self, source: &str, target: &str) -> bool {
        self.source.eq_ignore_ascii_case(source) && self.target.eq_ignore_ascii_case(target)
    }
}

/// `SOURCE:TARGET` (a flag or environment variable): the pair with T5's prompt. Other
/// templates are set in the configuration file.
impl std::str::FromStr for LanguagePair {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            Some((source, target)) if !source.trim().is_empty() && !target.trim().is_empty() => {
                Ok(Self::t5(source.trim(), target.trim()))
            }
            _ => Err(format!("{s:?} is not a language pair (SOURCE:TARGET, e.g. English:German)")),
        }
    }
}

/// Splits `text` after sentence-ending punctuation (. ! ? and their full-width forms) followed
/// by whitespace, keeping the punctuation with its sentence. Whitespace between sentences is
/// returned with the pieces so that joining them with a space reproduces the text's sentences.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for (i, &(pos, c)) in chars.iter().enumerate() {
        let ends = matches!(c, '.' | '!' | '?' | '。' | '！' | '？');
        let next_is_space = chars.get(i + 1).is_some_and(|&(_, n)| n.is_whitespace());
        if ends && next_is_space {
            let end = pos + c.len_utf8();
            let s = text[start..end].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = end;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Groups consecutive sentences into chunks whose length, `overhead` plus the sum of their
/// sentences' `cost`, stays within `limit` (a sentence longer than the limit alone is its own
/// chunk; the caller rejects it). Each sentence is measured once, so this is linear in the text;
/// it stops after `max_chunks + 1` chunks (the caller refuses the text then).
pub fn chunks(
    sentences: &[&str],
    limit: usize,
    overhead: usize,
    max_chunks: usize,
    cost: impl Fn(&str) -> usize,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut used = overhead;
    for s in sentences {
        let c = cost(s);
        if current.is_empty() || used + c <= limit {
            if !current.is_empty() {
                current.push(' ');
            }
            current.push_str(s);
            used += c;
        } else {
            out.push(std::mem::replace(&mut current, s.to_string()));
            used = overhead + c;
            if out.len() > max_chunks {
                return out;
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_after_sentence_punctuation_only() {
        assert_eq!(sentences("One. Two! Three? Four"), vec!["One.", "Two!", "Three?", "Four"]);
        assert_eq!(sentences("3.14 is pi. Yes"), vec!["3.14 is pi.", "Yes"]);
        assert_eq!(sentences("  "), Vec::<&str>::new());
    }

    #[test]
    fn chunks_respect_the_limit() {
        let s = ["aa.", "bb.", "cc.", "dddddddd."];
        let c = chunks(&s, 8, 0, 10, |t| t.len());
        assert_eq!(c, vec!["aa. bb.", "cc.", "dddddddd."]);
        // With a per-chunk overhead (the prompt template), fewer sentences fit.
        assert_eq!(chunks(&s, 8, 3, 10, |t| t.len()), vec!["aa.", "bb.", "cc.", "dddddddd."]);
        // It stops one chunk past max_chunks.
        assert_eq!(chunks(&s, 8, 3, 1, |t| t.len()).len(), 2);
    }

    #[test]
    fn pairs_parse_from_flags() {
        assert_eq!("English:German".parse::<LanguagePair>().unwrap(), LanguagePair::t5("English", "German"));
        assert!("English".parse::<LanguagePair>().unwrap_err().contains("SOURCE:TARGET"));
    }

    #[test]
    fn t5_prompt() {
        let p = LanguagePair::t5("English", "German");
        assert_eq!(p.template, "translate English to German: {text}");
        assert!(p.matches("english", "GERMAN"));
    }
}
