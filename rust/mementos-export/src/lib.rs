//! `mementos-export`: the tokenized SFT export of MEMENTO traces, one Rust pipeline over Arrow.
//!
//! For each row of two string columns (`problem`, `response`):
//!
//! 1. the Memento ChatML text (FORMAT.md section 6), built in a reused buffer:
//!    `[<|im_start|>system\n{system}<|im_end|>\n]<|im_start|>user\n{problem}<|im_end|>\n<|im_start|>assistant\n{response}<|im_end|>\n`;
//! 2. its token ids, exactly Hugging Face `tokenizers`' `encode(text, add_special_tokens=False)`:
//!    with `mementos-bpe` ([`FastBpe`]) when it supports the tokenizer, else with the
//!    `tokenizers` crate itself; each token's byte range in the text (byte-level BPE tokens are
//!    byte strings, so the ranges are prefix sums of their lengths; a row whose normalization
//!    changes its bytes takes the ranges from `tokenizers`);
//! 3. per token: `labels` (the id on the assistant's response and its closing `<|im_end|>`, -100
//!    elsewhere), `segment` and `block_index`, and `evict_at` (the index of the first token that
//!    may no longer attend to this one, [`NEVER`] when none);
//! 4. Arrow list columns (`input_ids`, `labels`, `segment`, `block_index`, `evict_at`) and
//!    `n_tokens`, built in parallel over byte-balanced chunks of rows (`mementos_core::par`).
//!
//! A row's columns other than `input_ids` are first described as runs (module `runs`: labels
//! trained or not, (segment, block) pairs, evicted token ranges), then written out by one
//! function, `runs::materialize`: into the chunk's columns unpacked, straight into the row's
//! sequence when packed (the chunk keeps only its ids and runs), so no column is built twice.
//!
//! **Blocks and evictions come from the engine's plan** ([`mementos_core::compact::engine`]) run
//! over the response's delimiter occurrences (the prompt is never tracked): nothing about blocks
//! is recomputed here. Each delimiter is one special token, so a delimiter occurrence starts a
//! token; the plan's delimiter indexes become token indexes through that map, and
//! `evict_at[t] = trigger + 1` for every token of an evicted range (the earliest eviction wins when
//! ranges nest), in `O(T)` with a union-find "next unset token" pointer.
//!
//! [`pack`] bin-packs rows into sequences of at most `L` tokens (first-fit decreasing).

pub mod pack;
mod pieces;
mod runs;

use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, BooleanArray, Int32Array, Int8Array, LargeListArray, RecordBatch};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};
use mementos_bpe::FastBpe;
use mementos_core::compact::{engine, EngineOptions, Plan};
use mementos_core::par::{install, map_chunks, Work};
use mementos_core::scan::{scan_into, Delim, Token};
use mementos_core::CoreError;
use mementos_core::{column_rows, Rows};
use rayon::prelude::*;
use serde_json::Value;
use tokenizers::{AddedToken, Tokenizer};

pub use pack::{pack_columns, pack_ffd, packed_schema, Packing};
pub use runs::Runs;
use runs::{materialize, EvictRun, RowDest};

/// `evict_at` of a token no later token loses sight of (2**31 - 1).
pub const NEVER: i32 = i32::MAX;
/// The label of a token without loss.
pub const IGNORE_INDEX: i32 = -100;

/// Segment codes of the `segment` column (the value is the index; Python's `export.SEGMENTS`).
pub mod seg {
    /// Template tokens: `<|im_start|>`, role names, `<|im_end|>`, template newlines.
    pub const CHAT: i8 = 0;
    /// System prompt and problem text.
    pub const PROMPT: i8 = 1;
    /// `<think>` / `</think>`.
    pub const THINK: i8 = 2;
    pub const BLOCK_START: i8 = 3;
    /// Content of a block (innermost open block).
    pub const BLOCK: i8 = 4;
    pub const BLOCK_END: i8 = 5;
    pub const SUMMARY_START: i8 = 6;
    /// Content of the memento bound to a block.
    pub const MEMENTO: i8 = 7;
    pub const SUMMARY_END: i8 = 8;
    /// Response text outside any unit, before the first `</think>`.
    pub const BETWEEN: i8 = 9;
    /// Response text after the first `</think>`.
    pub const ANSWER: i8 = 10;
    pub const NAMES: [&str; 11] = [
        "chat",
        "prompt",
        "think",
        "block_start",
        "block",
        "block_end",
        "summary_start",
        "memento",
        "summary_end",
        "between",
        "answer",
    ];
}

/// Errors of loading a tokenizer for the export.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("the tokenizer does not encode {0:?} as one added token")]
    NotOneToken(String),
    #[error("backend must be 'auto', 'fast' or 'hf', got {0:?}")]
    UnknownBackend(String),
    /// `backend="fast"` for a tokenizer the fast BPE cannot reproduce exactly.
    #[error("{0}")]
    Unsupported(String),
}

impl From<ExportError> for CoreError {
    fn from(e: ExportError) -> Self {
        CoreError::InvalidArgument(e.to_string())
    }
}

/// What happens to a row longer than `max_length` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    Truncate,
    Drop,
}

impl FromStr for Overflow {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, CoreError> {
        mementos_core::error::parse_choice("overflow", s, &[("truncate", Overflow::Truncate), ("drop", Overflow::Drop)])
    }
}

/// Options of the tokenized export.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// The engine's block masking (keep_last_k, mask_delimiters, ...): what `evict_at` follows.
    pub engine: EngineOptions,
    /// A system turn before the user's.
    pub system_prompt: Option<String>,
    pub max_length: Option<usize>,
    pub overflow: Overflow,
    /// Worker threads, as everywhere (`mementos_core::par`).
    pub threads: Option<usize>,
}

impl ExportOptions {
    /// Check the options before any work (the export functions call it).
    pub fn check(&self) -> Result<(), CoreError> {
        mementos_core::par::check_threads(self.threads)?;
        if self.engine.keep_last_k < -1 {
            return Err(CoreError::InvalidArgument(format!(
                "keep_last_k must be -1 (never evict) or >= 0, got {}",
                self.engine.keep_last_k
            )));
        }
        if self.max_length == Some(0) {
            return Err(CoreError::InvalidArgument("max_length and pack must be >= 1".into()));
        }
        Ok(())
    }
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            engine: EngineOptions::default(),
            system_prompt: None,
            max_length: None,
            overflow: Overflow::Truncate,
            threads: None,
        }
    }
}

/// What happened to one input row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowFate {
    Kept,
    Truncated,
    NullText,
    PromptTooLong,
    TooLong,
    /// The problem or the response is not valid UTF-8 (Arrow requires it of string data, but an
    /// array imported through the C data interface is not validated by its producer): the row
    /// is dropped and counted, never tokenized as something else.
    InvalidUtf8,
    /// The `tokenizers` crate refused the row's ChatML text (a model without an unknown token
    /// meeting a word outside its vocabulary, say; never with a byte-level BPE): the row is
    /// dropped and counted.
    TokenizerError,
}

/// A tokenizer loaded for the export: the exact fast BPE when it supports the tokenizer, and
/// always the `tokenizers` crate (the fallback for rows whose normalization changes bytes).
pub struct Encoder {
    fast: Option<FastBpe>,
    hf: Tokenizer,
    /// The id of each delimiter, in `Delim::ALL` order.
    delimiter_ids: [u32; 6],
    /// Byte length of each id's token (byte-level BPE), `u32::MAX` when unknown.
    token_len: Vec<u32>,
    im_end: u32,
    /// Why the fast BPE is not used (None when it is).
    fast_refused: Option<String>,
    /// The fast BPE with a per-thread piece cache (None: plain `FastBpe::encode`).
    pieces: Option<pieces::PieceCache>,
}

/// GPT-2's byte-level alphabet: the set of characters that stand for one byte each.
fn byte_level_char(c: char) -> bool {
    let b = c as u32;
    (0x21..=0x7E).contains(&b)
        || (0xA1..=0xAC).contains(&b)
        || (0xAE..=0xFF).contains(&b)
        || (0x100..0x100 + 68).contains(&b)
}

impl Encoder {
    /// Load with a backend chosen by name: `"auto"` (the fast BPE when it supports the
    /// tokenizer, else `tokenizers`), `"fast"` (an error when unsupported) or `"hf"`.
    pub fn load(json: &str, backend: &str) -> Result<Encoder, ExportError> {
        let use_fast = use_fast(backend)?;
        Encoder::from_json(json, use_fast)?.requiring(backend)
    }

    /// `self`, or the reason the fast BPE is not used when `backend` is `"fast"`.
    fn requiring(self, backend: &str) -> Result<Encoder, ExportError> {
        if backend == "fast" && self.backend() != "fast" {
            return Err(ExportError::Unsupported(self.fast_refused().unwrap_or("unsupported").to_string()));
        }
        Ok(self)
    }

    /// Load from a `tokenizer.json` string (the delimiters already registered as added tokens,
    /// as `mementos_fast.load_tokenizer` does). `use_fast=false` forces the `tokenizers` crate.
    ///
    /// The `tokenizers` crate's `Tokenizer` (most of the load time) and the fast side
    /// ([`FastSide`]) are built at once, on two threads.
    pub fn from_json(json: &str, use_fast: bool) -> Result<Encoder, ExportError> {
        let (hf, side) = rayon::join(|| hf_tokenizer(json), || FastSide::build(json, None, use_fast));
        Encoder::from_parts(hf?, side?)
    }

    /// An encoder of `hf` (the delimiters registered) and the fast side built from the same
    /// `tokenizer.json`.
    fn from_parts(hf: Tokenizer, side: FastSide) -> Result<Encoder, ExportError> {
        let one = |s: &str| -> Result<u32, ExportError> {
            let enc = hf.encode(s, false).map_err(|e| ExportError::Tokenizer(e.to_string()))?;
            match enc.get_ids() {
                [id] if hf.get_added_tokens_decoder().contains_key(id) => Ok(*id),
                _ => Err(ExportError::NotOneToken(s.to_string())),
            }
        };
        let mut delimiter_ids = [0u32; 6];
        for (slot, d) in delimiter_ids.iter_mut().zip(Delim::ALL) {
            *slot = one(d.text())?;
        }
        let mut distinct = delimiter_ids;
        distinct.sort_unstable();
        if distinct.windows(2).any(|w| w[0] == w[1]) {
            return Err(ExportError::Tokenizer(format!("two delimiters share an id: {delimiter_ids:?}")));
        }
        one("<|im_start|>")?;
        let im_end = one("<|im_end|>")?;
        let FastSide { fast, fast_refused, token_len, pieces } = side;
        Ok(Encoder { fast, hf, delimiter_ids, token_len, im_end, fast_refused, pieces })
    }

    /// Load a `tokenizer.json` file's text as it is on disk: the delimiters it lacks are
    /// registered first, as special added tokens appended after its vocabulary (what
    /// `mementos_fast.load_tokenizer` does, with the same flags, so the ids are the same), then
    /// as [`Encoder::load`]. Nothing is loaded in Python. `mementos_fast` uses it only for files
    /// whose exactness its test suite checks (`VERIFIED_FAST_FILES`): the other checks of
    /// `load_tokenizer` (added tokens' flags, additive pieces) are not repeated here.
    ///
    /// The `tokenizers` crate's `Tokenizer` is parsed once and, at the same time on a second
    /// thread, the fast side is built from the file's JSON with the missing delimiters appended
    /// to its `added_tokens` under the ids the crate gives them ([`with_delimiters`]). The
    /// crate's ids are checked against those afterwards; should they differ, the fast side is
    /// built again from the crate's own serialization (one more parse).
    pub fn load_file_json(json: &str, backend: &str) -> Result<Encoder, ExportError> {
        let hf_with_delimiters = || -> Result<(Tokenizer, Delimiters), ExportError> {
            let mut hf = hf_tokenizer(json)?;
            let given = register_delimiters(&mut hf)?;
            Ok((hf, given))
        };
        if !use_fast(backend)? {
            // No fast side to build: nothing to check the crate's ids against.
            let (hf, _) = hf_with_delimiters()?;
            return Encoder::from_parts(hf, FastSide::build(json, None, false)?);
        }
        let (hf, side) = rayon::join(hf_with_delimiters, || -> Result<Option<(FastSide, Delimiters)>, ExportError> {
            let mut root: Value = serde_json::from_str(json).map_err(|e| ExportError::Tokenizer(e.to_string()))?;
            let Some(added) = with_delimiters(&mut root) else {
                return Ok(None);
            };
            if added.is_empty() {
                return Ok(Some((FastSide::build(json, Some(root), true)?, added)));
            }
            let text = serde_json::to_string(&root).map_err(|e| ExportError::Tokenizer(e.to_string()))?;
            Ok(Some((FastSide::build(&text, Some(root), true)?, added)))
        });
        let (hf, given) = hf?;
        let side = match side {
            Ok(Some((side, assumed))) if assumed == given => side,
            // The crate gave other ids (or the JSON is not as expected): build the fast side from
            // the crate's own serialization, with the delimiters as it registered them.
            _ => {
                let json = hf.to_string(false).map_err(|e| ExportError::Tokenizer(e.to_string()))?;
                FastSide::build(&json, None, true)?
            }
        };
        Encoder::from_parts(hf, side)?.requiring(backend)
    }

    /// The id of each delimiter, in `Delim::ALL` order.
    pub fn delimiter_ids(&self) -> [u32; 6] {
        self.delimiter_ids
    }

    /// `"fast"` (mementos-bpe) or `"hf"` (the tokenizers crate).
    pub fn backend(&self) -> &'static str {
        if self.fast.is_some() {
            "fast"
        } else {
            "hf"
        }
    }

    /// Why the fast BPE is not in use.
    pub fn fast_refused(&self) -> Option<&str> {
        self.fast_refused.as_deref()
    }

    /// Ids of `text` and the byte range of each token. On the fast paths the tokens are the
    /// text's bytes in order, each range ending where the next begins: `starts` gets the `n + 1`
    /// boundaries (token `t` is `starts[t]..starts[t + 1]`, the last boundary `text.len()`) and
    /// `ends` is left empty ([`Ranges::Tiled`]). On the `tokenizers` path (offsets from the
    /// normalization's alignments) token `t` is `starts[t]..ends[t]`, in order or not
    /// ([`Ranges::Offsets`]). An error when the `tokenizers` crate refuses the text.
    fn encode(
        &self,
        text: &str,
        ids: &mut Vec<u32>,
        starts: &mut Vec<u32>,
        ends: &mut Vec<u32>,
    ) -> Result<Ranges, tokenizers::Error> {
        ids.clear();
        starts.clear();
        ends.clear();
        if let (Some(fast), Some(cache)) = (&self.fast, &self.pieces) {
            if cache.encode(fast, &self.token_len, text, ids, starts) {
                debug_assert!(starts.len() == ids.len() + 1 && starts.is_sorted());
                debug_assert!(starts.first() == Some(&0) && starts.last() == Some(&(text.len() as u32)));
                return Ok(Ranges::Tiled);
            }
            ids.clear();
            starts.clear();
        }
        if let Some(fast) = &self.fast {
            *ids = fast.encode(text);
            let mut pos = 0u64;
            let mut ok = true;
            starts.reserve(ids.len() + 1);
            for &id in ids.iter() {
                let l = self.token_len.get(id as usize).copied().unwrap_or(u32::MAX);
                if l == u32::MAX {
                    ok = false;
                    break;
                }
                starts.push(pos as u32);
                pos += l as u64;
            }
            starts.push(pos as u32);
            if ok && pos == text.len() as u64 {
                return Ok(Ranges::Tiled);
            }
            ids.clear();
            starts.clear();
        }
        let enc = self.hf.encode(text, false)?;
        ids.extend_from_slice(enc.get_ids());
        for &(s, e) in enc.get_offsets() {
            starts.push(s as u32);
            ends.push(e as u32);
        }
        Ok(Ranges::Offsets(starts.is_sorted() && ends.is_sorted()))
    }
}

/// How [`Encoder::encode`] gave the tokens' byte ranges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ranges {
    /// `starts` holds `n + 1` boundaries, token `t` is `starts[t]..starts[t + 1]`.
    Tiled,
    /// Token `t` is `starts[t]..ends[t]`; true when both are non-decreasing (then [`export_row`]
    /// finds its boundaries by binary search).
    Offsets(bool),
}

/// Delimiters registered in a tokenizer: (content, id) pairs, in `Delim::ALL` order.
type Delimiters = Vec<(String, u32)>;

/// Whether `backend` (`"auto"`, `"fast"` or `"hf"`) may use the fast BPE.
fn use_fast(backend: &str) -> Result<bool, ExportError> {
    match backend {
        "auto" | "fast" => Ok(true),
        "hf" => Ok(false),
        _ => Err(ExportError::UnknownBackend(backend.to_string())),
    }
}

/// Register in `hf` the delimiters it lacks, as `mementos_fast.load_tokenizer` does (special: not
/// normalized, not single-word, no strip); the (content, id) pairs the crate gave them, in
/// `Delim::ALL` order.
fn register_delimiters(hf: &mut Tokenizer) -> Result<Delimiters, ExportError> {
    let present: std::collections::HashSet<String> =
        hf.get_added_tokens_decoder().values().map(|t| t.content.clone()).collect();
    let missing: Vec<AddedToken> =
        Delim::ALL.iter().filter(|d| !present.contains(d.text())).map(|d| AddedToken::from(d.text(), true)).collect();
    if missing.is_empty() {
        return Ok(Vec::new());
    }
    hf.add_special_tokens(missing.iter().cloned()).map_err(|e| ExportError::Tokenizer(e.to_string()))?;
    Ok(missing.iter().map(|t| (t.content.clone(), hf.token_to_id(&t.content).unwrap_or(u32::MAX))).collect())
}

/// A `tokenizers` crate `Tokenizer` of `json`, without truncation or padding.
fn hf_tokenizer(json: &str) -> Result<Tokenizer, ExportError> {
    let mut hf = Tokenizer::from_str(json).map_err(|e| ExportError::Tokenizer(e.to_string()))?;
    hf.with_truncation(None).map_err(|e| ExportError::Tokenizer(e.to_string()))?;
    hf.with_padding(None);
    Ok(hf)
}

/// What the fast BPE needs of a `tokenizer.json`, built apart from the `tokenizers` crate's
/// `Tokenizer` so that both load at once.
struct FastSide {
    fast: Option<FastBpe>,
    fast_refused: Option<String>,
    token_len: Vec<u32>,
    pieces: Option<pieces::PieceCache>,
}

impl FastSide {
    /// From the JSON text (and its parse, when the caller has it already).
    fn build(json: &str, root: Option<Value>, use_fast: bool) -> Result<FastSide, ExportError> {
        let refused =
            |why: String| FastSide { fast: None, fast_refused: Some(why), token_len: Vec::new(), pieces: None };
        if !use_fast {
            return Ok(refused("the hf backend was requested".to_string()));
        }
        let fast = match FastBpe::from_json(json) {
            Ok(f) => f,
            Err(e) => return Ok(refused(e.to_string())),
        };
        let root = match root {
            Some(r) => r,
            None => serde_json::from_str(json).map_err(|e| ExportError::Tokenizer(e.to_string()))?,
        };
        let token_len = token_lengths(&root);
        let pieces = pieces::PieceCache::new(&root, &fast);
        Ok(FastSide { fast: Some(fast), fast_refused: None, token_len, pieces })
    }
}

/// Append to `root`'s `added_tokens` the delimiters it lacks, as special tokens with the ids the
/// `tokenizers` crate gives the tokens it adds (`AddedVocabulary::add_tokens`: the model's id for
/// a content in its vocabulary, otherwise the next id after the vocabulary and the added
/// tokens); return the (content, id) pairs appended, in `Delim::ALL` order (None when delimiters
/// are missing and there is no `added_tokens` list to append them to). The caller checks them
/// against the crate's.
fn with_delimiters(root: &mut Value) -> Option<Delimiters> {
    let vocab = root.get("model").and_then(|m| m.get("vocab")).and_then(Value::as_object);
    let vocab_size = vocab.map_or(0, |v| v.len()) as u32;
    let model_id = |c: &str| vocab.and_then(|v| v.get(c)).and_then(Value::as_u64).map(|i| i as u32);
    let existing: Vec<(String, u32)> = root
        .get("added_tokens")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t.get("content")?.as_str()?.to_string(), t.get("id")?.as_u64()? as u32)))
        .collect();
    let mut next = existing.iter().map(|(_, id)| *id).max().map_or(vocab_size, |max| {
        if max >= vocab_size || vocab_size == 0 {
            max + 1
        } else {
            vocab_size
        }
    });
    let mut added = Vec::new();
    for d in Delim::ALL {
        let c = d.text();
        if existing.iter().any(|(e, _)| e == c) {
            continue;
        }
        let id = model_id(c).unwrap_or_else(|| {
            next += 1;
            next - 1
        });
        added.push((c.to_string(), id));
    }
    if added.is_empty() {
        return Some(added);
    }
    let list = root.get_mut("added_tokens")?.as_array_mut()?;
    for (c, id) in &added {
        list.push(serde_json::json!({
            "id": id, "content": c, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true,
        }));
    }
    Some(added)
}

/// Byte length of every id of a byte-level BPE `tokenizer.json` (vocabulary strings over GPT-2's
/// byte alphabet; added tokens by their UTF-8 content).
fn token_lengths(root: &Value) -> Vec<u32> {
    let mut lens: Vec<u32> = Vec::new();
    let mut set = |id: u64, len: u32| {
        let id = id as usize;
        if id >= lens.len() {
            lens.resize(id + 1, u32::MAX);
        }
        lens[id] = len;
    };
    if let Some(vocab) = root.get("model").and_then(|m| m.get("vocab")).and_then(Value::as_object) {
        for (tok, id) in vocab {
            if let Some(id) = id.as_u64() {
                let len = if tok.chars().all(byte_level_char) { tok.chars().count() as u32 } else { u32::MAX };
                set(id, len);
            }
        }
    }
    for t in root.get("added_tokens").and_then(Value::as_array).into_iter().flatten() {
        if let (Some(c), Some(id)) = (t.get("content").and_then(Value::as_str), t.get("id").and_then(Value::as_u64)) {
            set(id, c.len() as u32);
        }
    }
    lens
}

const USER_OPEN: &str = "<|im_start|>user\n";
const TURN_CLOSE: &str = "<|im_end|>\n";
const ASSISTANT_OPEN: &str = "<|im_start|>assistant\n";
const IM_END: &str = "<|im_end|>";
const SYSTEM_OPEN: &str = "<|im_start|>system\n";

/// Per-thread scratch, reused across rows.
#[derive(Default)]
struct Scratch {
    text: String,
    ids: Vec<u32>,
    starts: Vec<u32>,
    ends: Vec<u32>,
    delims: Vec<Token>,
    plan: Plan,
    delim_token: Vec<u32>,
    delim_block: Vec<i32>,
    stack: Vec<i32>,
    next: Vec<u32>,
}

/// Output columns of a chunk of rows (flat values plus per-row lengths).
#[derive(Default)]
pub struct Columns {
    pub input_ids: Vec<i32>,
    pub labels: Vec<i32>,
    pub segment: Vec<i8>,
    pub block_index: Vec<i32>,
    pub evict_at: Vec<i32>,
    pub lengths: Vec<i32>,
    pub fates: Vec<RowFate>,
}

/// Byte positions of the parts of one row's chat text.
#[derive(Debug)]
struct Layout {
    sys: Range<usize>,
    problem: Range<usize>,
    /// The response, then `<|im_end|>` at `response.end`.
    response: Range<usize>,
}

fn build_text(buf: &mut String, system: Option<&str>, problem: &str, response: &str) -> Layout {
    buf.clear();
    let mut sys = 0..0;
    if let Some(s) = system {
        buf.push_str(SYSTEM_OPEN);
        sys = buf.len()..buf.len() + s.len();
        buf.push_str(s);
        buf.push_str(TURN_CLOSE);
    }
    buf.push_str(USER_OPEN);
    let p0 = buf.len();
    buf.push_str(problem);
    let p1 = buf.len();
    buf.push_str(TURN_CLOSE);
    buf.push_str(ASSISTANT_OPEN);
    let r0 = buf.len();
    buf.push_str(response);
    let r1 = buf.len();
    buf.push_str(TURN_CLOSE);
    Layout { sys, problem: p0..p1, response: r0..r1 }
}

/// Union-find "next token whose `evict_at` is unset" (with path halving): `next[i] == i` for an
/// unset token, else an index past `i` with every token in between set.
fn find(next: &mut [u32], mut i: u32) -> u32 {
    while next[i as usize] != i {
        let up = next[next[i as usize] as usize];
        next[i as usize] = up;
        i = up;
    }
    i
}

/// The last byte of token `t` (its first for an empty range): what decides its label and its
/// prompt segment.
#[inline]
fn last_byte(starts: &[u32], ends: &[u32], t: usize) -> u32 {
    ends[t].saturating_sub(1).max(starts[t])
}

/// The number of tokens whose last byte is before `x`, by binary search: the tokens' last bytes
/// are non-decreasing when `starts` and `ends` are (each is the larger of two non-decreasing
/// values).
fn tokens_before(starts: &[u32], ends: &[u32], x: u32) -> usize {
    let (mut lo, mut hi) = (0, ends.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if last_byte(starts, ends, mid) < x {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// Append one row's `labels` runs (all its tokens) and the `segment` runs of its prompt (tokens
/// `0..first`, block -1) to `runs`. A token's last byte decides both: it is trained when that
/// byte is in the response or its closing `<|im_end|>`, and a prompt token is `PROMPT` when that
/// byte is in the system prompt or the problem, else `CHAT`. With the ranges in order
/// (`in_order`) each condition holds on one run of tokens, found by binary search; otherwise
/// (offsets out of order, which only `tokenizers` could give) token by token.
fn labels_and_prompt(
    ids: &[u32],
    starts: &[u32],
    ends: &[u32],
    lay: &Layout,
    first: usize,
    in_order: bool,
    runs: &mut Runs,
) {
    let n = ids.len();
    let resp_at = lay.response.start as u32;
    let trained_end = (lay.response.end + IM_END.len()) as u32;
    if in_order {
        let (lo, hi) = (tokens_before(starts, ends, resp_at), tokens_before(starts, ends, trained_end));
        runs.label(lo, false);
        runs.label(hi - lo, true);
        runs.label(n - hi, false);
        // The system prompt precedes the problem in the text, so its run precedes the problem's.
        let mut t = 0;
        for r in [&lay.sys, &lay.problem] {
            if r.is_empty() {
                continue;
            }
            let a = tokens_before(starts, ends, r.start as u32).clamp(t, first);
            let b = tokens_before(starts, ends, r.end as u32).clamp(a, first);
            runs.seg(a - t, seg::CHAT, -1);
            runs.seg(b - a, seg::PROMPT, -1);
            t = b;
        }
        runs.seg(first - t, seg::CHAT, -1);
    } else {
        for t in 0..n {
            let last = last_byte(starts, ends, t);
            runs.label(1, last >= resp_at && last < trained_end);
        }
        for t in 0..first {
            let last = last_byte(starts, ends, t) as usize;
            let prompt = lay.problem.contains(&last) || lay.sys.contains(&last);
            runs.seg(1, if prompt { seg::PROMPT } else { seg::CHAT }, -1);
        }
    }
}

/// Every token `t` of `range` not set yet gets `value` (by the union-find `next`, which then
/// marks them set; `next` has one entry per token of the row plus one): each run of unset tokens
/// is appended to `out` as one [`EvictRun`]. Each token is set once and the scans stop at the
/// first set token, so a row's evictions cost `O(T)` however their ranges nest. The runs are
/// disjoint, in the order they were set.
fn set_unset(next: &mut [u32], out: &mut Vec<EvictRun>, range: Range<u32>, value: i32) {
    let n = (next.len() - 1) as u32;
    let end = range.end as usize;
    let mut i = find(next, range.start.min(n)) as usize;
    while i < end {
        let mut j = i + 1;
        while j < end && next[j] == j as u32 {
            j += 1;
        }
        out.push(EvictRun { start: i as u32, end: j as u32, at: value });
        // Every token of the run now points past it (to `j`, set or not).
        next[i..j].fill(j as u32);
        i = find(next, j as u32) as usize;
    }
}

/// Tokenize one row: append its ids to `out.input_ids` and its length to `out.lengths`, and
/// describe its other columns as runs, the current row of `runs` ([`materialize`] writes them).
/// Nothing is appended for a dropped row.
fn export_row(
    enc: &Encoder,
    opts: &ExportOptions,
    problem: &str,
    response: &str,
    sc: &mut Scratch,
    out: &mut Columns,
    runs: &mut Runs,
) -> RowFate {
    let lay = build_text(&mut sc.text, opts.system_prompt.as_deref(), problem, response);
    let Scratch { text, ids, starts, ends, delims, plan, delim_token, delim_block, stack, next } = sc;
    let Ok(ranges) = enc.encode(text, ids, starts, ends) else {
        return RowFate::TokenizerError;
    };
    let n = ids.len();
    // Token `t` is `starts[t]..ends[t]`; tiled ranges are ordered (fast paths always).
    let (starts, ends, in_order): (&[u32], &[u32], bool) = match ranges {
        Ranges::Tiled => (&starts[..n], &starts[1..], true),
        Ranges::Offsets(in_order) => (starts, ends, in_order),
    };
    let resp_at = lay.response.start as u32;

    // The first token holding a byte of the response (the prompt is everything before it).
    let first = ends.partition_point(|&e| e <= resp_at);
    // The first token at or after the closing <|im_end|> (the response is first..tail).
    let tail = starts.partition_point(|&s| s < lay.response.end as u32).max(first);

    if let Some(limit) = opts.max_length {
        if first >= limit {
            return RowFate::PromptTooLong;
        }
        if n > limit && opts.overflow == Overflow::Drop {
            return RowFate::TooLong;
        }
    }
    let base = out.input_ids.len();
    out.input_ids.extend(ids.iter().map(|&i| i as i32));
    runs.begin_row();
    labels_and_prompt(ids, starts, ends, &lay, first, in_order, runs);

    // The response: the engine's plan over its delimiter occurrences.
    scan_into(response.as_bytes(), delims);
    engine(delims, &opts.engine, plan);
    // Token index of each delimiter occurrence (the token starting at its byte): the first token
    // at or after the previous one that ends after the delimiter's first byte.
    delim_token.clear();
    let mut t = first;
    for d in delims.iter() {
        let p = resp_at + d.start as u32;
        if in_order {
            t += ends[t..].partition_point(|&e| e <= p);
        } else {
            while t < n && ends[t] <= p {
                t += 1;
            }
        }
        delim_token.push(t.min(n.saturating_sub(1)) as u32);
    }
    delim_block.clear();
    delim_block.resize(delims.len(), -1);
    for (b, blk) in plan.blocks.iter().enumerate() {
        for i in [Some(blk.open), blk.close, blk.summary_open, blk.summary_close].into_iter().flatten() {
            delim_block[i] = b as i32;
        }
    }
    // One sweep: each delimiter token gets its own segment, the runs of tokens between two
    // delimiters the state's (innermost open block, else memento in progress, else between /
    // answer). `segment` and `block_index` are runs of (segment, block) pairs.
    stack.clear();
    let mut memento = -1i32;
    let mut answer = false;
    let mut t = first;
    let state = |stack: &Vec<i32>, memento: i32, answer: bool| -> (i8, i32) {
        if let Some(&b) = stack.last() {
            (seg::BLOCK, b)
        } else if memento >= 0 {
            (seg::MEMENTO, memento)
        } else if answer {
            (seg::ANSWER, -1)
        } else {
            (seg::BETWEEN, -1)
        }
    };
    for (i, d) in delims.iter().enumerate() {
        let dt = (delim_token[i] as usize).max(t);
        let run = dt.min(tail).saturating_sub(t);
        if run > 0 {
            let (s, b) = state(stack, memento, answer);
            runs.seg(run, s, b);
            t += run;
        }
        if t >= tail {
            break;
        }
        let b = delim_block[i];
        let blk = (b >= 0).then(|| &plan.blocks[b as usize]);
        let (code, owner) = match d.delim {
            Delim::ThinkStart => (seg::THINK, -1),
            Delim::ThinkEnd => {
                // The answer is the text after the first `</think>` (as the parser's walk).
                answer = true;
                (seg::THINK, -1)
            }
            Delim::BlockStart => {
                stack.push(b);
                (seg::BLOCK_START, b)
            }
            Delim::BlockEnd => match blk {
                Some(k) if k.close == Some(i) => {
                    stack.pop();
                    (seg::BLOCK_END, b)
                }
                _ => (seg::BLOCK_END, -1),
            },
            Delim::SummaryStart => match blk {
                Some(k) if k.summary_open == Some(i) => {
                    memento = b;
                    (seg::SUMMARY_START, b)
                }
                _ => (seg::SUMMARY_START, -1),
            },
            Delim::SummaryEnd => match blk {
                Some(k) if k.summary_close == Some(i) => {
                    memento = -1;
                    (seg::SUMMARY_END, b)
                }
                _ => (seg::SUMMARY_END, -1),
            },
        };
        runs.seg(1, code, owner);
        t += 1;
    }
    if t < tail {
        let (s, b) = state(stack, memento, answer);
        runs.seg(tail - t, s, b);
        t = tail;
    }
    runs.seg(n - t, seg::CHAT, -1);

    // evict_at: trigger + 1 over each evicted token range, the earliest eviction winning.
    if !plan.evictions.is_empty() {
        next.clear();
        next.extend(0..=n as u32);
        let whole = opts.engine.evicts_delimiters();
        for ev in &plan.evictions {
            let blk = &plan.blocks[ev.block];
            let Some(close) = blk.close else { continue };
            let (o, c) = (delim_token[blk.open], delim_token[close]);
            let range = if whole { o..c + 1 } else { o + 1..c };
            let at = delim_token[ev.at] as i32 + 1;
            set_unset(next, &mut runs.evicts, range, at);
        }
        runs.sort_evictions(n);
    }

    let mut len = n;
    let mut fate = RowFate::Kept;
    if let Some(limit) = opts.max_length {
        if n > limit {
            len = limit;
            fate = RowFate::Truncated;
            out.input_ids.truncate(base + limit);
            runs.truncate_row(limit);
        }
    }
    debug_assert_eq!(runs.current_tokens(), (len, len));
    debug_assert!(ids.last() != Some(&enc.im_end) || n >= 1);
    out.lengths.push(len as i32);
    fate
}

/// A chunk of rows described for packing: `cols` holds their `input_ids`, `lengths` and fates
/// (its other token columns are empty), `runs` the other columns of each kept row, in order.
pub struct Part {
    pub cols: Columns,
    pub runs: Runs,
}

/// Export the chunk `rows`. Unpacked (`keep_runs` false) each kept row is materialized into the
/// returned columns at once; for packing the rows' runs are kept instead (and `cols` holds only
/// the ids, lengths and fates), for [`pack_columns`] to materialize each row in its sequence.
fn export_chunk(
    enc: &Encoder,
    opts: &ExportOptions,
    problems: &dyn Rows,
    responses: &dyn Rows,
    rows: Range<usize>,
    keep_runs: bool,
) -> Part {
    let mut sc = Scratch::default();
    let mut out = Columns::default();
    let mut runs = Runs::default();
    // About one token per 3 bytes of text (Qwen3 averages 3.05 on English, math and code) plus
    // the chat template's: 2 tokens per 5 bytes of problem and response avoids nearly all the
    // doubling copies of the growing token columns.
    let bytes: usize = rows
        .clone()
        .filter(|&i| problems.is_valid(i) && responses.is_valid(i))
        .map(|i| problems.bytes(i).len() + responses.bytes(i).len())
        .sum();
    let tokens = bytes / 5 * 2 + 1024;
    out.input_ids.reserve(tokens);
    if !keep_runs {
        out.labels.reserve(tokens);
        out.segment.reserve(tokens);
        out.block_index.reserve(tokens);
        out.evict_at.reserve(tokens);
    }
    out.lengths.reserve(rows.len());
    out.fates.reserve(rows.len());
    for i in rows {
        if !problems.is_valid(i) || !responses.is_valid(i) {
            out.fates.push(RowFate::NullText);
            continue;
        }
        // Arrow requires UTF-8 of string data but does not check arrays imported through the C
        // data interface (or built from raw buffers): a row that is not UTF-8 is its own fate.
        let (Ok(p), Ok(r)) =
            (simdutf8::basic::from_utf8(problems.bytes(i)), simdutf8::basic::from_utf8(responses.bytes(i)))
        else {
            out.fates.push(RowFate::InvalidUtf8);
            continue;
        };
        let fate = export_row(enc, opts, p, r, &mut sc, &mut out, &mut runs);
        out.fates.push(fate);
        if !matches!(fate, RowFate::Kept | RowFate::Truncated) {
            continue;
        }
        if keep_runs {
            runs.end_row();
        } else {
            materialize_into(&mut out, runs.current());
            runs.clear();
        }
    }
    Part { cols: out, runs }
}

/// Append the last row of `out` (its ids already there) to its other four columns.
fn materialize_into(out: &mut Columns, runs: runs::RowRuns<'_>) {
    let n = *out.lengths.last().expect("a kept row") as usize;
    let base = out.labels.len();
    debug_assert_eq!(base + n, out.input_ids.len());
    out.labels.reserve(n);
    out.segment.reserve(n);
    out.block_index.reserve(n);
    out.evict_at.reserve(n);
    let d = RowDest {
        labels: &mut out.labels.spare_capacity_mut()[..n],
        segment: &mut out.segment.spare_capacity_mut()[..n],
        block: &mut out.block_index.spare_capacity_mut()[..n],
        evict: &mut out.evict_at.spare_capacity_mut()[..n],
    };
    materialize(&out.input_ids[base..], runs, 0, d);
    // SAFETY: `materialize` wrote every slot of the four `n`-slot destinations (or panicked, and
    // the lengths stay as they were).
    unsafe {
        out.labels.set_len(base + n);
        out.segment.set_len(base + n);
        out.block_index.set_len(base + n);
        out.evict_at.set_len(base + n);
    }
}

/// The columns of every row (rows in order), computed in parallel.
pub fn export_columns(
    enc: &Encoder,
    opts: &ExportOptions,
    problems: &dyn Rows,
    responses: &dyn Rows,
) -> Result<Columns, CoreError> {
    opts.check()?;
    let mut parts = export_parts(enc, opts, problems, responses)?;
    if parts.len() == 1 {
        return Ok(parts.pop().unwrap_or_default());
    }
    install(opts.threads, || concat(parts))
}

/// The columns of consecutive chunks of rows (rows in order), computed in parallel: one part
/// per chunk (a single part on one thread or for small inputs).
pub fn export_parts(
    enc: &Encoder,
    opts: &ExportOptions,
    problems: &dyn Rows,
    responses: &dyn Rows,
) -> Result<Vec<Columns>, CoreError> {
    Ok(export_chunks(enc, opts, problems, responses, false)?.into_iter().map(|p| p.cols).collect())
}

/// [`export_parts`], each chunk's rows described as runs for packing (see [`Part`]).
pub fn export_run_parts(
    enc: &Encoder,
    opts: &ExportOptions,
    problems: &dyn Rows,
    responses: &dyn Rows,
) -> Result<Vec<Part>, CoreError> {
    export_chunks(enc, opts, problems, responses, true)
}

fn export_chunks(
    enc: &Encoder,
    opts: &ExportOptions,
    problems: &dyn Rows,
    responses: &dyn Rows,
    keep_runs: bool,
) -> Result<Vec<Part>, CoreError> {
    opts.check()?;
    if problems.len() != responses.len() {
        return Err(CoreError::InvalidArgument(format!(
            "problem and response columns differ in length ({} and {})",
            problems.len(),
            responses.len()
        )));
    }
    map_chunks(responses, opts.threads, Work::Tokenize, |r| export_chunk(enc, opts, problems, responses, r, keep_runs))
}

/// One `Columns` from the chunks' (rows in order). The token columns are copied in parallel into
/// uninitialized buffers (a zeroed one would be zeroed by the allocator on this thread), so
/// neither the copy nor the page faults of ~20 bytes per token run on one thread.
fn concat(parts: Vec<Columns>) -> Columns {
    fn join<T: Copy + Send + Sync>(parts: &[Columns], field: fn(&Columns) -> &Vec<T>) -> Vec<T> {
        join_slices(&parts.iter().map(|p| field(p).as_slice()).collect::<Vec<_>>())
    }
    let ((input_ids, labels), (segment, (block_index, evict_at))) = rayon::join(
        || rayon::join(|| join(&parts, |c| &c.input_ids), || join(&parts, |c| &c.labels)),
        || {
            rayon::join(
                || join(&parts, |c| &c.segment),
                || rayon::join(|| join(&parts, |c| &c.block_index), || join(&parts, |c| &c.evict_at)),
            )
        },
    );
    let mut lengths = Vec::with_capacity(parts.iter().map(|p| p.lengths.len()).sum());
    let mut fates = Vec::with_capacity(parts.iter().map(|p| p.fates.len()).sum());
    for p in parts {
        lengths.extend(p.lengths);
        fates.extend(p.fates);
    }
    Columns { input_ids, labels, segment, block_index, evict_at, lengths, fates }
}

/// Copy `src` into the uninitialized `dst` (of the same length): every slot of `dst` is written.
pub(crate) fn put<T: Copy>(dst: &mut [std::mem::MaybeUninit<T>], src: &[T]) {
    debug_assert_eq!(dst.len(), src.len());
    for (d, &v) in dst.iter_mut().zip(src) {
        d.write(v);
    }
}

/// `pieces` joined into one vector, each piece copied by a rayon task (on the current pool) into
/// its slice of the new vector's uninitialized capacity.
fn join_slices<T: Copy + Send + Sync>(pieces: &[&[T]]) -> Vec<T> {
    let total = pieces.iter().map(|p| p.len()).sum();
    let mut all: Vec<T> = Vec::with_capacity(total);
    let mut dests = Vec::with_capacity(pieces.len());
    let mut rest = &mut all.spare_capacity_mut()[..total];
    for &p in pieces {
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(p.len());
        dests.push((head, p));
        rest = tail;
    }
    dests.into_par_iter().for_each(|(d, s)| put(d, s));
    // SAFETY: the destinations partition `0..total` of the capacity, each as long as its piece,
    // and each was written in full above (a panicking task unwinds past this point).
    unsafe { all.set_len(total) };
    all
}

/// A per-token `LargeList` column of the output.
pub(crate) fn list_field(name: &str, t: DataType) -> Field {
    Field::new(name, DataType::LargeList(Arc::new(Field::new("item", t, true))), false)
}

/// The per-token columns every output starts with, in order (unpacked and packed).
pub(crate) fn token_fields() -> Vec<Field> {
    vec![
        list_field("input_ids", DataType::Int32),
        list_field("labels", DataType::Int32),
        list_field("segment", DataType::Int8),
        list_field("block_index", DataType::Int32),
        list_field("evict_at", DataType::Int32),
    ]
}

/// The output schema (`LargeList` columns, as the Python side writes them).
pub fn output_schema() -> Schema {
    let mut fields = token_fields();
    fields.push(Field::new("n_tokens", DataType::Int32, false));
    Schema::new(fields)
}

/// Result of [`export_arrays`]: the kept rows, and each input row's fate.
pub struct Exported {
    pub batch: RecordBatch,
    /// One per input row, true when the row is in `batch`.
    pub kept: BooleanArray,
    pub fates: Vec<RowFate>,
}

/// Arrow columns from [`Columns`].
pub fn columns_batch(c: Columns) -> Result<RecordBatch, CoreError> {
    let offsets = OffsetBuffer::<i64>::from_lengths(c.lengths.iter().map(|&l| l as usize));
    let field = |t: DataType| Arc::new(Field::new("item", t, true));
    let list = |t: DataType, values: ArrayRef| -> Result<ArrayRef, CoreError> {
        Ok(Arc::new(LargeListArray::try_new(field(t), offsets.clone(), values, None)?))
    };
    let cols: Vec<ArrayRef> = vec![
        list(DataType::Int32, Arc::new(Int32Array::new(ScalarBuffer::from(c.input_ids), None)))?,
        list(DataType::Int32, Arc::new(Int32Array::new(ScalarBuffer::from(c.labels), None)))?,
        list(DataType::Int8, Arc::new(Int8Array::new(ScalarBuffer::from(c.segment), None)))?,
        list(DataType::Int32, Arc::new(Int32Array::new(ScalarBuffer::from(c.block_index), None)))?,
        list(DataType::Int32, Arc::new(Int32Array::new(ScalarBuffer::from(c.evict_at), None)))?,
        Arc::new(Int32Array::new(ScalarBuffer::from(c.lengths), None)),
    ];
    Ok(RecordBatch::try_new(Arc::new(output_schema()), cols)?)
}

/// The tokenized export of two string columns (each possibly in several chunks).
pub fn export_arrays(
    enc: &Encoder,
    opts: &ExportOptions,
    problem: &[&dyn Array],
    response: &[&dyn Array],
) -> Result<Exported, CoreError> {
    let p = column_rows(problem)?;
    let r = column_rows(response)?;
    let mut cols = export_columns(enc, opts, p.as_ref(), r.as_ref())?;
    let fates = std::mem::take(&mut cols.fates);
    let kept =
        BooleanArray::from(fates.iter().map(|f| matches!(f, RowFate::Kept | RowFate::Truncated)).collect::<Vec<_>>());
    Ok(Exported { batch: columns_batch(cols)?, kept, fates })
}

/// [`export_arrays`] without joining the chunks: one batch per chunk of rows, rows in order (a
/// single batch on one thread or for small inputs), and each input row's fate. Joining would copy
/// every token column once more into fresh memory (page faults and a pass over ~17 bytes per
/// token); a caller that takes a chunked table (Python's `pa.Table`) needs no join.
pub fn export_batches(
    enc: &Encoder,
    opts: &ExportOptions,
    problem: &[&dyn Array],
    response: &[&dyn Array],
) -> Result<(Vec<RecordBatch>, Vec<RowFate>), CoreError> {
    let p = column_rows(problem)?;
    let r = column_rows(response)?;
    let parts = export_parts(enc, opts, p.as_ref(), r.as_ref())?;
    let mut fates = Vec::with_capacity(p.len());
    let mut batches = Vec::with_capacity(parts.len());
    for mut c in parts {
        fates.append(&mut c.fates);
        batches.push(columns_batch(c)?);
    }
    Ok((batches, fates))
}

/// The tokenized export packed into sequences of at most `capacity` tokens (rows longer than
/// `capacity` should have been truncated or dropped with `max_length == capacity`; any left get a
/// sequence of their own). `batch` holds one row per sequence; the [`Packing`]'s row indexes are
/// indexes of the kept rows.
pub fn export_packed(
    enc: &Encoder,
    opts: &ExportOptions,
    problem: &[&dyn Array],
    response: &[&dyn Array],
    capacity: u32,
) -> Result<(Exported, Packing), CoreError> {
    if capacity == 0 {
        return Err(CoreError::InvalidArgument("max_length and pack must be >= 1".into()));
    }
    let p = column_rows(problem)?;
    let r = column_rows(response)?;
    // The chunks keep their ids and each row's runs: packing writes every column of a row once,
    // straight into its sequence.
    let mut parts = export_run_parts(enc, opts, p.as_ref(), r.as_ref())?;
    let fates: Vec<RowFate> = parts.iter_mut().flat_map(|c| std::mem::take(&mut c.cols.fates)).collect();
    let kept =
        BooleanArray::from(fates.iter().map(|f| matches!(f, RowFate::Kept | RowFate::Truncated)).collect::<Vec<_>>());
    let lengths: Vec<u32> = parts.iter().flat_map(|c| c.cols.lengths.iter().map(|&l| l as u32)).collect();
    let packing = pack_ffd(&lengths, capacity);
    let batch = install(opts.threads, || pack_columns(&parts, &packing, opts.threads))??;
    Ok((Exported { batch, kept, fates }, packing))
}

#[cfg(test)]
mod tests;
