//! Incremental detokenization and stop sequences, on plain data (the decode function is
//! passed in). SentencePiece drops the leading space of a decoded text and some characters span
//! several byte tokens, so text is emitted as the difference between two decodes of a sliding
//! window, and held back while it ends in an incomplete character. The concatenated increments
//! equal the decode of all ids.

/// Turns a stream of ids into text increments.
#[derive(Debug, Default, Clone)]
pub struct Detokenizer {
    ids: Vec<u32>,
    prefix: usize,
    read: usize,
}

impl Detokenizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one id; returns the text it completes (often empty for a partial character).
    pub fn push(&mut self, id: u32, decode: impl Fn(&[u32]) -> String) -> String {
        self.ids.push(id);
        let before = decode(&self.ids[self.prefix..self.read]);
        let now = decode(&self.ids[self.prefix..]);
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.is_char_boundary(before.len()) {
            let increment = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            increment
        } else {
            String::new()
        }
    }

    /// Text still held back at the end of the sequence (an incomplete character, as decoded).
    pub fn flush(&mut self, decode: impl Fn(&[u32]) -> String) -> String {
        let before = decode(&self.ids[self.prefix..self.read]);
        let now = decode(&self.ids[self.prefix..]);
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        if now.len() > before.len() && now.is_char_boundary(before.len()) {
            now[before.len()..].to_string()
        } else {
            String::new()
        }
    }
}

/// Watches the generated text for stop sequences.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    text: String,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops, text: String::new() }
    }

    /// Adds a text increment. If a stop sequence now occurs, returns the part of the increment
    /// up to the end of the earliest-ending stop sequence (the text is cut exactly there).
    pub fn push(&mut self, increment: &str) -> Option<String> {
        if self.stops.is_empty() {
            return None;
        }
        let start = self.text.len();
        self.text.push_str(increment);
        // Only matches that end inside the new increment are new.
        let end = self
            .stops
            .iter()
            .filter_map(|s| {
                let from = start.saturating_sub(s.len().saturating_sub(1));
                let from = (0..=from).rev().find(|&i| self.text.is_char_boundary(i)).unwrap_or(0);
                self.text[from..].find(s.as_str()).map(|i| from + i + s.len())
            })
            .min()?;
        Some(self.text[start..end.max(start)].to_string())
    }
}

/// OpenAI's stop semantics over text that the decode loop cuts just after a stop sequence:
/// the stop sequence itself is not returned. Holds back the end of the text that could still
/// become a stop sequence (so a stream never sends what it would have to take back), and drops
/// the stop sequence when the row finishes on one.
#[derive(Debug, Clone, Default)]
pub struct StopHold {
    stops: Vec<String>,
    held: String,
}

impl StopHold {
    pub fn new(stops: Vec<String>) -> Self {
        Self { stops, held: String::new() }
    }

    /// Adds a text increment; returns what can be sent now.
    pub fn push(&mut self, increment: &str) -> String {
        self.held.push_str(increment);
        // The longest end of the held text that begins some stop sequence stays held.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| self.stops.iter().any(|s| s.starts_with(&self.held[i..])))
            .unwrap_or(self.held.len());
        let rest = self.held.split_off(keep);
        std::mem::replace(&mut self.held, rest)
    }

    /// The rest of the text when the row finishes; without the stop sequence it ends with, when
    /// it `stopped` on one (the longest, if several end there).
    pub fn finish(&mut self, stopped: bool) -> String {
        let mut rest = std::mem::take(&mut self.held);
        if stopped && let Some(s) = self.stops.iter().filter(|s| rest.ends_with(s.as_str())).max_by_key(|s| s.len()) {
            rest.truncate(rest.len() - s.len());
        }
        rest
    }

    /// A whole text, as `push` then `finish`.
    pub fn trim(stops: &[String], text: &str, stopped: bool) -> String {
        let mut hold = Self::new(stops.to_vec());
        let mut out = hold.push(text);
        out.push_str(&hold.finish(stopped));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy SentencePiece-like decoder: "▁" marks a word start, dropped at the very beginning;
    /// ids >= 100 are raw bytes (so "é" = 0xC3 0xA9 spans two ids).
    fn decode(ids: &[u32]) -> String {
        let vocab = ["▁hello", "▁world", "!", "▁caf"];
        let mut bytes = Vec::new();
        for &id in ids {
            if id >= 100 {
                bytes.push((id - 100) as u8);
            } else {
                bytes.extend_from_slice(vocab[id as usize].replace('▁', " ").as_bytes());
            }
        }
        let s = String::from_utf8_lossy(&bytes).into_owned();
        s.strip_prefix(' ').map(str::to_string).unwrap_or(s)
    }

    #[test]
    fn increments_concatenate_to_the_full_decode() {
        let ids = [0, 1, 2, 3, 100 + 0xC3, 100 + 0xA9, 1];
        let mut d = Detokenizer::new();
        let mut parts: Vec<String> = ids.iter().map(|&i| d.push(i, decode)).collect();
        parts.push(d.flush(decode));
        assert_eq!(parts.concat(), decode(&ids));
        assert_eq!(parts[0], "hello");
        assert_eq!(parts[1], " world", "word boundaries keep their space");
        assert_eq!(parts[4], "", "half a character is held back");
        assert_eq!(parts[5], "é");
    }

    #[test]
    fn flush_returns_a_dangling_partial_character() {
        let mut d = Detokenizer::new();
        assert_eq!(d.push(0, decode), "hello");
        assert_eq!(d.push(100 + 0xC3, decode), "");
        assert_eq!(d.flush(decode), "\u{FFFD}");
    }

    #[test]
    fn stop_cuts_where_the_stop_string_ends() {
        let mut m = StopMatcher::new(vec!["lo w".into(), "xyz".into()]);
        assert_eq!(m.push("hel"), None);
        assert_eq!(m.push("lo world"), Some("lo w".into()));
    }

    #[test]
    fn stop_spanning_increments_and_earliest_end_wins() {
        let mut m = StopMatcher::new(vec!["cd".into(), "bcdef".into()]);
        assert_eq!(m.push("ab"), None);
        assert_eq!(m.push("c"), None);
        assert_eq!(m.push("defg"), Some("d".into()));
    }

    #[test]
    fn stop_hold_sends_what_cannot_start_a_stop_and_drops_the_stop() {
        let mut h = StopHold::new(vec!["END".into(), "xé".into()]);
        assert_eq!(h.push("abc E"), "abc ");
        assert_eq!(h.push("N"), "");
        assert_eq!(h.push("o x"), "ENo ");
        assert_eq!(h.push("é"), "");
        assert_eq!(h.finish(true), "");
        let mut h = StopHold::new(vec!["END".into()]);
        assert_eq!(h.push("wE"), "w");
        // Not stopped (length): what was held is sent as it is.
        assert_eq!(h.finish(false), "E");
        assert_eq!(StopHold::trim(&["ei".into()], "zwei", true), "zw");
        assert_eq!(StopHold::trim(&["d".into(), "cd".into()], "abcd", true), "ab");
        assert_eq!(StopHold::trim(&[], "abc", false), "abc");
    }

    #[test]
    fn no_stops_never_match() {
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("anything"), None);
    }

    #[test]
    fn stop_with_multibyte_text() {
        let mut m = StopMatcher::new(vec!["é!".into()]);
        assert_eq!(m.push("café"), None);
        assert_eq!(m.push("!?"), Some("!".into()));
    }
}
