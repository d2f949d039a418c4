//! The fast byte-level BPE backend (`mementos-bpe`): exact HF counts for GPT-2, Qwen2/Qwen3 and
//! Llama-3 style tokenizers, refused (never approximated) for anything else.

use mementos_bpe::FastBpe;
use mementos_core::Delim;

use crate::{SegmentCounter, TokensError};

/// Counts with [`FastBpe`].
pub struct FastCounter {
    bpe: FastBpe,
}

impl FastCounter {
    /// Load from a `tokenizer.json` string; an unsupported feature is
    /// [`TokensError::Unsupported`] (the caller falls back to the HF backend).
    pub fn from_json(json: &str) -> Result<Self, TokensError> {
        let bpe = FastBpe::from_json(json).map_err(|e| TokensError::Unsupported(e.to_string()))?;
        let counter = FastCounter { bpe };
        for d in Delim::ALL {
            if counter.bpe.count(d.text()) != 1 {
                return Err(TokensError::MissingDelimiter(d.text()));
            }
        }
        Ok(counter)
    }
}

impl SegmentCounter for FastCounter {
    #[inline]
    fn count(&self, text: &str) -> usize {
        self.bpe.count(text)
    }
    fn name(&self) -> &str {
        "fast"
    }
}
