//! Log-probabilities in OpenAI's two shapes: the legacy object of `/v1/completions`
//! (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`) and the `content` list of chat.
//! A token is the text it adds to the answer; an alternative is its SentencePiece piece (word
//! marker as a space). They are the distribution the token was drawn from (after the bias,
//! penalties and temperature), as in `/v1/generate`'s details.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::api::TokenInfo;
use crate::model::TextTokenizer;

/// `/v1/completions`' `logprobs` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Legacy {
    pub tokens: Vec<String>,
    /// `null` for the tokens of an echoed prompt (the encoder reads them, nothing scores them).
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<BTreeMap<String, f32>>>,
    /// Each token's start in the choice's text, in characters.
    pub text_offset: Vec<usize>,
    /// Characters so far.
    #[serde(skip)]
    chars: usize,
}

impl Legacy {
    /// A logprobs object whose offsets start at `chars` (a stream's earlier text).
    pub fn starting_at(chars: usize) -> Self {
        Self { chars, ..Self::default() }
    }

    /// An echoed prompt's tokens: each is the prompt's text from the end of the token before
    /// it to its own end, so that they join to the prompt exactly; special tokens (the EOS the
    /// tokenizer appends) are left out.
    pub fn push_prompt(&mut self, text: &str, tokenizer: &TextTokenizer) {
        let chars: Vec<char> = text.chars().collect();
        let mut from = 0;
        let pieces = tokenizer.encode_with_offsets(text).unwrap_or_default();
        let count = pieces.len();
        for (i, (id, _, end)) in pieces.into_iter().enumerate() {
            if tokenizer.is_special(id) {
                continue;
            }
            let end = if i + 1 == count { chars.len() } else { end.clamp(from, chars.len()) };
            self.push_text(chars[from..end].iter().collect(), None, None);
            from = end;
        }
        if from < chars.len() {
            self.push_text(chars[from..].iter().collect(), None, None);
        }
    }

    /// A generated token, with its `k` most likely alternatives (and itself, as OpenAI always
    /// includes the chosen token).
    pub fn push(&mut self, token: &TokenInfo, k: usize, tokenizer: &TextTokenizer) {
        let mut top: BTreeMap<String, f32> =
            token.top_tokens.iter().take(k).map(|t| (t.text.clone(), t.logprob)).collect();
        if let Some(lp) = token.logprob {
            top.entry(tokenizer.piece(token.id)).or_insert(lp);
        }
        self.push_text(token.text.clone(), token.logprob, Some(top));
    }

    fn push_text(&mut self, text: String, logprob: Option<f32>, top: Option<BTreeMap<String, f32>>) {
        self.text_offset.push(self.chars);
        self.chars += text.chars().count();
        self.tokens.push(text);
        self.token_logprobs.push(logprob);
        self.top_logprobs.push(top);
    }
}

/// One token in chat's `logprobs.content`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatToken {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<ChatAlternative>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatAlternative {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// Chat's entry for a generated token, with its `k` most likely alternatives.
pub fn chat_token(token: &TokenInfo, k: usize) -> ChatToken {
    ChatToken {
        token: token.text.clone(),
        logprob: token.logprob.unwrap_or(0.0),
        bytes: token.text.as_bytes().to_vec(),
        top_logprobs: token
            .top_tokens
            .iter()
            .take(k)
            .map(|t| ChatAlternative { token: t.text.clone(), logprob: t.logprob, bytes: t.text.as_bytes().to_vec() })
            .collect(),
    }
}
