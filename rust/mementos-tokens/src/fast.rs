//! The fast byte-level BPE backend (`mementos-bpe`): exact HF counts for GPT-2, Qwen2/Qwen3 and
//! Llama-3 style tokenizers, refused (never approximated) for anything else.

use std::ops::Range;

use mementos_bpe::FastBpe;
use mementos_core::Delim;

use crate::{SegmentCounter, TokensError};

/// Counts with [`FastBpe`].
pub struct FastCounter {
    bpe: FastBpe,
    /// No added token contains an ASCII letter followed by a space, so no added-token match can
    /// span a [`cut`] position (see [`FastCounter::count_range`]).
    cuts_are_safe: bool,
}

impl FastCounter {
    /// Load from a `tokenizer.json` string; an unsupported feature is
    /// [`TokensError::Unsupported`] (the caller falls back to the HF backend).
    pub fn from_json(json: &str) -> Result<Self, TokensError> {
        let bpe = FastBpe::from_json(json).map_err(|e| TokensError::Unsupported(e.to_string()))?;
        Self::new(bpe)
    }

    /// Load from a `tokenizer.json` as it is on disk, registering the six delimiters the way
    /// `mementos_fast.load_tokenizer` does: a delimiter that is already an added token keeps its
    /// settings; any other becomes an added token matched before normalization. Counting with
    /// the result equals counting with [`FastCounter::from_json`] of the registered tokenizer's
    /// JSON (the ids of the delimiters it adds are placeholders: this counter only counts). It
    /// needs neither the Python `tokenizers` object nor its JSON dump, so `analyze --tokenizer`
    /// can start counting while the Python side still loads the tokenizer it checks this
    /// counter against.
    pub fn from_file_json(json: &str) -> Result<Self, TokensError> {
        let bpe = FastBpe::from_json(json).map_err(|e| TokensError::Unsupported(e.to_string()))?;
        let delims: Vec<(&str, u32)> =
            Delim::ALL.iter().enumerate().map(|(i, d)| (d.text(), u32::MAX - i as u32)).collect();
        let bpe = bpe.with_raw_added(&delims).map_err(|e| TokensError::Unsupported(e.to_string()))?;
        Self::new(bpe)
    }

    fn new(bpe: FastBpe) -> Result<Self, TokensError> {
        let cuts_are_safe =
            bpe.added_tokens().all(|t| !t.as_bytes().windows(2).any(|w| w[0].is_ascii_alphabetic() && w[1] == b' '));
        let counter = FastCounter { bpe, cuts_are_safe };
        for d in Delim::ALL {
            if counter.bpe.count(d.text()) != 1 {
                return Err(TokensError::MissingDelimiter(d.text()));
            }
        }
        Ok(counter)
    }
}

/// Whether byte `p` of `b` is a *cut*: an ASCII space between two ASCII letters.
///
/// Every text splits there exactly as its two halves do (`count(t) = count(t[..p]) +
/// count(t[p..])`) under each pipeline `FastBpe` accepts:
///
/// - split patterns (GPT-2, Qwen2/3, Llama-3, see `mementos_bpe::pretok`): the only alternatives
///   that match a letter are the contractions (`'s`, ..., no space inside) and the letter runs
///   (`[^\r\n\p{L}\p{N}]?\p{L}+`, ` ?\p{L}+`), which are greedy and end exactly where the letters
///   end; so a match ends at `p`, and every match before it was decided on characters before `p`
///   (the look-ahead of `\s+(?!\S)` and of the runs stops at the first letter). A match at `p`
///   depends only on the text from `p` on (no pattern has a look-behind);
/// - the NFC normalizer: a space is a starter that composes with nothing, so normalizing the
///   halves equals normalizing the whole;
/// - `ByteLevel(add_prefix_space)`: the right half starts with a space, so none is added to it,
///   and the left half starts as the whole does;
/// - added tokens: a match spanning `p` would contain the letter and the space at `p - 1`, `p`;
///   the caller checks that no added token contains a letter followed by a space.
#[inline]
fn cut(b: &[u8], p: usize) -> bool {
    b[p] == b' ' && b[p - 1].is_ascii_alphabetic() && b[p + 1].is_ascii_alphabetic()
}

impl SegmentCounter for FastCounter {
    #[inline]
    fn count(&self, text: &str) -> usize {
        self.bpe.count(text)
    }

    /// With cuts `p < q` inside `r` (the first and the last), `text` = `text[..p]` + `text[p..q]` +
    /// `text[q..]` and `text[r]` = `text[r.start..p]` + `text[p..q]` + `text[q..r.end]`, so
    /// `count(text[r]) = whole - count(text[..p]) - count(text[q..]) + count(text[r.start..p]) +
    /// count(text[q..r.end])`: only the words at both edges are counted again.
    fn count_range(&self, text: &str, r: Range<usize>, whole: usize) -> usize {
        if r.start == 0 && r.end == text.len() {
            return whole;
        }
        let b = text.as_bytes();
        if !self.cuts_are_safe || r.len() < 5 {
            return self.count(&text[r]);
        }
        let inner = r.start + 1..r.end - 1;
        let Some(p) = inner.clone().find(|&p| cut(b, p)) else {
            return self.count(&text[r]);
        };
        let Some(q) = inner.rev().find(|&q| cut(b, q)) else {
            return self.count(&text[r]);
        };
        if q <= p {
            return self.count(&text[r]);
        }
        let (outer, edges) = (
            self.count(&text[..p]) + self.count(&text[q..]),
            self.count(&text[r.start..p]) + self.count(&text[q..r.end]),
        );
        debug_assert!(whole >= outer);
        (whole + edges).saturating_sub(outer)
    }

    fn name(&self) -> &str {
        "fast"
    }
}

/// The token count of every row of a string column with `bpe` alone (added tokens as the
/// tokenizer.json defines them; null rows stay null), rows in parallel on `threads`.
pub fn bpe_count_arrays(
    bpe: &FastBpe,
    arrays: &[&dyn arrow_array::Array],
    threads: Option<usize>,
) -> Result<arrow_array::Int64Array, mementos_core::CoreError> {
    let rows = mementos_core::column_rows(arrays)?;
    let rows = rows.as_ref();
    crate::check_utf8(rows)?;
    let parts = mementos_core::par::map_chunks(rows, threads, mementos_core::par::Work::Tokenize, |r| {
        r.map(|i| rows.is_valid(i).then(|| bpe.count(crate::count::row_str(rows.bytes(i))) as i64)).collect::<Vec<_>>()
    })?;
    Ok(parts.into_iter().flatten().collect())
}
