//! The Hugging Face `tokenizers` backend.

use std::str::FromStr;

use mementos_core::Delim;
use tokenizers::{Model, OffsetReferential, OffsetType, PreTokenizer, Tokenizer};

use crate::{SegmentCounter, TokensError};

/// Counts with the `tokenizers` crate: the ids of `encode_fast(text, false)`, exactly what the
/// Python package computes for `encode(text, add_special_tokens=False)` (same crate, same JSON).
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
        // The steps of `Tokenizer::encode_fast` (added-token split + normalization,
        // pre-tokenization, model), without building an `Encoding`: truncation is off and a
        // post-processor adds nothing when special tokens are not requested, so the number of
        // ids is the sum over splits. Splits that are added tokens already carry their token.
        let t = &self.tokenizer;
        let mut pre = t.get_added_vocabulary().extract_and_normalize(t.get_normalizer(), text);
        if let Some(pt) = t.get_pre_tokenizer() {
            if let Err(e) = pt.pre_tokenize(&mut pre) {
                panic!("tokenizers failed to pre-tokenize a piece of {} bytes: {e}", text.len());
            }
        }
        let model = t.get_model();
        pre.get_splits(OffsetReferential::Original, OffsetType::None)
            .into_iter()
            .map(|(piece, _, tokens)| match tokens {
                Some(tokens) => tokens.len(),
                None => match model.tokenize(piece) {
                    Ok(tokens) => tokens.len(),
                    // No failure mode for a plain string in practice; a failure is a bug,
                    // caught at the binding boundary as an internal error.
                    Err(e) => panic!("tokenizers failed to tokenize a piece of {} bytes: {e}", piece.len()),
                },
            })
            .sum()
    }

    fn name(&self) -> &str {
        "hf"
    }
}
