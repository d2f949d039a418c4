//! `mementos-tokens`: exact per-segment token counts of MEMENTO traces, straight from Arrow.
//!
//! A tokenizer in which the six delimiters are added (special) tokens splits its input at every
//! delimiter *before* normalization and pre-tokenization. So the number of ids of a whole
//! response equals the ids of each text piece between delimiter occurrences plus one per
//! delimiter. This crate uses that: it scans each row once with `mementos-core` (the same scan
//! and parse as `parse_batch`), counts every piece with a [`SegmentCounter`], and derives from
//! those piece counts, without recounting, the total, the per-block and per-memento counts in
//! context, the per-span counts, and the think preamble / between-units / answer counts. Only the
//! tutorial's *stripped* items whose edges differ from the in-context text are counted again
//! (their first and last piece). Rows are read from the Arrow buffers (no copy, no Python) and
//! counted in parallel (`mementos_core::par`).
//!
//! Counting backends implement [`SegmentCounter`]; [`HfCounter`] wraps the Hugging Face
//! `tokenizers` crate, loaded from the same JSON the Python side produced, so both sides run one
//! configuration. [`counter_for`] picks a backend by name.

pub mod analyze;
pub mod count;
pub mod error;
pub mod fast;
pub mod hf;

pub use analyze::{analyze_arrays, analyze_rows, analyze_schema, AnalyzeOptions};
pub use count::{check_utf8, count_arrays, count_rows, count_text, output_schema, total_arrays, CountOptions};
pub use error::TokensError;
pub use fast::{bpe_count_arrays, FastCounter};
pub use hf::HfCounter;

/// Counts the tokens of a text piece that contains no MEMENTO delimiter.
///
/// `count(text)` must equal the number of ids the tokenizer gives `text` alone, with no
/// post-processor special tokens (`encode(text, add_special_tokens=False)` in Python).
pub trait SegmentCounter: Send + Sync {
    fn count(&self, text: &str) -> usize;
    /// Tokens of `text[r]` (a delimiter-free piece), given `whole = self.count(text)`. The
    /// default counts `text[r]`; a backend that can prove where its pipeline splits text (the
    /// fast byte-level BPE) derives it from `whole` and a few words at the edges instead, which is
    /// what makes the tutorial's stripped items (the whole block but its outer whitespace) cheap.
    fn count_range(&self, text: &str, r: std::ops::Range<usize>, whole: usize) -> usize {
        let _ = whole;
        self.count(&text[r])
    }
    /// The backend's name, reported with the results (e.g. `"hf"`).
    fn name(&self) -> &str;
}

/// The backend names [`counter_for`] accepts.
pub const BACKENDS: &[&str] = &["hf", "fast"];

/// Build the counter called `backend` from a tokenizer JSON (the output of the Python
/// `Tokenizer.to_str()`, with the delimiters already registered).
pub fn counter_for(backend: &str, tokenizer_json: &str) -> Result<Box<dyn SegmentCounter>, TokensError> {
    match backend {
        "hf" => Ok(Box::new(HfCounter::from_json(tokenizer_json)?)),
        "fast" => Ok(Box::new(FastCounter::from_json(tokenizer_json)?)),
        other => Err(TokensError::UnknownBackend(other.to_string(), BACKENDS.join(", "))),
    }
}

/// Replay units in tokens (`mementos_core::compact::replay`): each delimiter is one token, each
/// segment between delimiters is counted by `counter`, exactly as the whole response would be,
/// since the delimiters are special tokens that split the input first. Segments must be UTF-8:
/// check the rows with [`check_utf8`] first ([`replay_tokens`] does).
pub struct TokenUnits<'a>(pub &'a dyn SegmentCounter);

impl mementos_core::compact::Units for TokenUnits<'_> {
    fn text(&self, s: &[u8]) -> u64 {
        if s.is_empty() {
            return 0;
        }
        // Segments are cut at ASCII delimiters out of rows checked by `check_utf8`.
        self.0.count(simdutf8::basic::from_utf8(s).expect("segment of a valid UTF-8 row")) as u64
    }
    fn delim(&self, _: mementos_core::Delim) -> u64 {
        1
    }
    fn work(&self) -> mementos_core::par::Work {
        mementos_core::par::Work::Tokenize
    }
}

/// `mementos_core::ops::replay_arrays` in tokens: the rows (and prompt texts) are checked to be
/// UTF-8 first, then replayed with [`TokenUnits`].
pub fn replay_tokens(
    arrays: &[&dyn arrow_array::Array],
    opts: &mementos_core::compact::EngineOptions,
    prompt: mementos_core::ops::PromptLen<'_>,
    prompt_text: Option<(&[&dyn arrow_array::Array], bool)>,
    counter: &dyn SegmentCounter,
    threads: Option<usize>,
) -> Result<arrow_array::RecordBatch, mementos_core::CoreError> {
    check_utf8(mementos_core::column_rows(arrays)?.as_ref())?;
    if let Some((p, _)) = prompt_text {
        check_utf8(mementos_core::column_rows(p)?.as_ref())?;
    }
    mementos_core::ops::replay_arrays(arrays, opts, prompt, prompt_text, &TokenUnits(counter), threads)
}
