//! The Hugging Face `tokenizers` backend.

use std::str::FromStr;

use mementos_core::Delim;
use tokenizers::Tokenizer;

use crate::{SegmentCounter, TokensError};

/// Counts with the `tokenizers` crate: `encode_fast(text, false)`, exactly what the Python
/// package computes for `encode(text, add_special_tokens=False)` (same crate, same JSON).
pub struct HfCounter {
    tokenizer: Tokenizer,
}

impl HfCounter {
    /// Load from a `tokenizer.json` string. Truncation and padding are switched off (a count is
    /// of the whole text), and every delimiter must be an added token encoding to one id.
    pub fn from_json(json: &str) -> Result<Self, TokensError> {
        let mut tokenizer = Tokenizer::from_str(json).map_err(|e| TokensError::Tokenizer(e.to_string()))?;
        tokenizer.with_truncation(None).map_err(|e| TokensError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let counter = HfCounter { tokenizer };
        for d in Delim::ALL {
            let added = counter.tokenizer.get_added_tokens_decoder().values().any(|t| t.content == d.text());
            if !added || counter.count(d.text()) != 1 {
                return Err(TokensError::MissingDelimiter(d.text()));
            }
        }
        Ok(counter)
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }
}

impl SegmentCounter for HfCounter {
    fn count(&self, text: &str) -> usize {
        if text.is_empty() {
            return 0;
        }
        match self.tokenizer.encode_fast(text, false) {
            Ok(encoding) => encoding.len(),
            // Encoding a plain string without truncation has no failure mode in practice; a
            // failure is a bug, caught at the binding boundary as an internal error.
            Err(e) => panic!("tokenizers failed to encode a piece of {} bytes: {e}", text.len()),
        }
    }

    fn name(&self) -> &str {
        "hf"
    }
}
