//! `mementos-bpe`: exact and fast byte-level BPE token counting.
//!
//! [`FastBpe`] loads a Hugging Face `tokenizer.json` (GPT-2, Qwen2/Qwen3 or Llama-3 style) and
//! reproduces `tokenizers`' encoding of a text, id for id, without its per-call overhead:
//!
//! 1. added tokens are split out first (HF semantics: leftmost-longest match, non-normalized
//!    tokens on the raw text, normalized ones after normalization), with `aho-corasick`;
//! 2. the normalizer (none or NFC, with the very crate HF uses, `unicode-normalization-alignments`);
//! 3. the pre-tokenizer split pattern, recognised from its exact text and run by a linear
//!    hand-written scanner ([`pretok`]) whose character classes are measured from HF ([`tables`]);
//! 4. BPE merges by rank (HF's algorithm: lowest rank first, leftmost on ties), on raw bytes.
//!
//! Counting caches piece -> count per thread ([`thread_local::ThreadLocal`]): no lock is shared
//! between threads, and most pieces of natural text repeat. Anything the crate cannot reproduce
//! exactly is refused at load time with [`BpeError::Unsupported`], never approximated.

mod cache;
mod load;
pub mod pretok;
pub mod tables;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use aho_corasick::{AhoCorasick, MatchKind};
use cache::{MergeTable, PieceTable};
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde_json::Value;
use thread_local::ThreadLocal;
use unicode_normalization_alignments::{is_nfc_quick, IsNormalized, UnicodeNormalization};

pub use cache::key7;
pub use pretok::Pattern;

/// Why a `tokenizer.json` cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    #[error("invalid tokenizer.json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid tokenizer.json: {0}")]
    Invalid(String),
    /// A feature this crate does not reproduce exactly (the caller should fall back to HF).
    #[error("unsupported tokenizer feature: {0}")]
    Unsupported(String),
}

/// Pieces at least this long are not cached (they are rare and would bloat the cache).
const MAX_CACHED_PIECE: usize = 64;
/// A thread's cache is emptied when it reaches this many pieces (bounded memory).
const CACHE_CAPACITY: usize = 1 << 18;

/// One set of added tokens, matched leftmost-longest like HF's `AddedVocabulary`.
struct Added {
    ac: AhoCorasick,
    ids: Vec<u32>,
    /// The tokens' texts (as matched: normalized for the normalized ones), in `ids` order.
    contents: Vec<String>,
}

impl Added {
    fn new(tokens: Vec<(String, u32)>) -> Result<Option<Added>, BpeError> {
        if tokens.is_empty() {
            return Ok(None);
        }
        let ac = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(tokens.iter().map(|t| t.0.as_str()))
            .map_err(|e| BpeError::Invalid(format!("added tokens: {e}")))?;
        let (contents, ids) = tokens.into_iter().unzip();
        Ok(Some(Added { ac, ids, contents }))
    }

    fn tokens(&self) -> impl Iterator<Item = (String, u32)> + '_ {
        self.contents.iter().cloned().zip(self.ids.iter().copied())
    }
}

/// Where the `ByteLevel` pre-tokenizer adds a space (`add_prefix_space`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PrefixSpace {
    No,
    /// `ByteLevel(use_regex=true, add_prefix_space=true)`: before the split, per text segment.
    BeforeSplit,
}

/// Per-thread state: piece -> count caches and BPE scratch buffers.
struct Local {
    /// Pieces of 2..=16 bytes that are not vocabulary entries, keyed inline.
    short: PieceTable,
    /// Longer pieces, under `MAX_CACHED_PIECE` bytes.
    long: FxHashMap<Box<[u8]>, u32>,
    syms: Vec<Sym>,
    heap: BinaryHeap<Reverse<(u32, u32, u32)>>,
}

impl Default for Local {
    fn default() -> Local {
        Local {
            short: PieceTable::new(CACHE_CAPACITY),
            long: FxHashMap::default(),
            syms: Vec::new(),
            heap: BinaryHeap::new(),
        }
    }
}

#[derive(Clone, Copy)]
struct Sym {
    id: u32,
    prev: u32,
    next: u32,
}

const NONE: u32 = u32::MAX;

/// An exact, fast byte-level BPE tokenizer (encode and count only).
pub struct FastBpe {
    pattern: Pattern,
    prefix: PrefixSpace,
    nfc: bool,
    raw_added: Option<Added>,
    norm_added: Option<Added>,
    /// The content of every added token of the file, as written, in file order.
    added_tokens: Vec<String>,
    byte_ids: [u32; 256],
    merges: MergeTable,
    /// (rank, new id) of the merge of two bytes, by `first << 8 | second` (rank `NONE`: no merge).
    byte_pairs: Box<[(u32, u32)]>,
    /// Token count of every vocabulary entry of 2 to 16 bytes, computed at load time by the same
    /// BPE (a read-only cache shared by all threads: most pieces of text are vocabulary entries).
    known: PieceTable,
    /// Byte string -> id; consulted only with `ignore_merges`.
    vocab: FxHashMap<Box<[u8]>, u32>,
    ignore_merges: bool,
    local: ThreadLocal<RefCell<Local>>,
}

/// GPT-2's byte <-> unicode map: printable bytes stand for themselves, the rest for 256 + n.
fn byte_level_chars() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).expect("latin-1")
        } else {
            n += 1;
            char::from_u32(255 + n).expect("BMP")
        };
    }
    out
}

fn unsupported(s: impl Into<String>) -> BpeError {
    BpeError::Unsupported(s.into())
}

fn get_str<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn get_bool(v: &Value, key: &str, default: bool) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(default)
}

fn type_of(v: &Value) -> &str {
    get_str(v, "type").unwrap_or("?")
}

/// Normalizer: `None` or NFC (possibly inside a one-element `Sequence`). Returns "is NFC".
fn parse_normalizer(v: &Value) -> Result<bool, BpeError> {
    match v {
        Value::Null => Ok(false),
        _ => match type_of(v) {
            "NFC" => Ok(true),
            "Sequence" => {
                let items = v.get("normalizers").and_then(Value::as_array).cloned().unwrap_or_default();
                match items.as_slice() {
                    [] => Ok(false),
                    [one] => parse_normalizer(one),
                    _ => Err(unsupported("a normalizer Sequence of several normalizers")),
                }
            }
            t => Err(unsupported(format!("normalizer {t}"))),
        },
    }
}

fn parse_pre_tokenizer(v: &Value) -> Result<(Pattern, PrefixSpace), BpeError> {
    let byte_level_prefix = |b: &Value| get_bool(b, "add_prefix_space", true);
    match type_of(v) {
        "ByteLevel" => {
            if !get_bool(v, "use_regex", true) {
                return Err(unsupported("ByteLevel pre-tokenizer without a split regex"));
            }
            let prefix = if byte_level_prefix(v) { PrefixSpace::BeforeSplit } else { PrefixSpace::No };
            Ok((Pattern::Gpt2, prefix))
        }
        "Sequence" => {
            let items = v.get("pretokenizers").and_then(Value::as_array).cloned().unwrap_or_default();
            let [split, bl] = items.as_slice() else {
                return Err(unsupported("a pre-tokenizer Sequence other than [Split, ByteLevel]"));
            };
            if type_of(split) != "Split" || type_of(bl) != "ByteLevel" {
                return Err(unsupported(format!("pre-tokenizer Sequence [{}, {}]", type_of(split), type_of(bl))));
            }
            if get_bool(bl, "use_regex", true) {
                return Err(unsupported("ByteLevel(use_regex=true) after a Split"));
            }
            if byte_level_prefix(bl) {
                return Err(unsupported("ByteLevel(add_prefix_space=true) after a Split"));
            }
            if get_str(split, "behavior") != Some("Isolated") || get_bool(split, "invert", false) {
                return Err(unsupported(format!(
                    "Split behavior {:?} invert {}",
                    get_str(split, "behavior"),
                    get_bool(split, "invert", false)
                )));
            }
            let Some(re) = split.get("pattern").and_then(|p| p.get("Regex")).and_then(Value::as_str) else {
                return Err(unsupported("Split with a non-regex pattern"));
            };
            let pattern = Pattern::recognise(re).ok_or_else(|| unsupported(format!("split pattern {re:?}")))?;
            Ok((pattern, PrefixSpace::No))
        }
        t => Err(unsupported(format!("pre-tokenizer {t}"))),
    }
}

/// The checks on the root object's small members (everything but the model's vocabulary and
/// merges): `truncation`, `padding`, `normalizer`, `pre_tokenizer`. Returns (is NFC, pattern,
/// prefix space). Shared by both loaders (see [`load`]), so they refuse with the same messages.
fn parse_head(root: &Value) -> Result<(bool, Pattern, PrefixSpace), BpeError> {
    for key in ["truncation", "padding"] {
        if !root.get(key).is_none_or(Value::is_null) {
            return Err(unsupported(format!("{key} (it changes what encode returns)")));
        }
    }
    let nfc = parse_normalizer(root.get("normalizer").unwrap_or(&Value::Null))?;
    let pre = root.get("pre_tokenizer").unwrap_or(&Value::Null);
    if pre.is_null() {
        return Err(unsupported("no pre-tokenizer (not a byte-level BPE)"));
    }
    let (pattern, prefix) = parse_pre_tokenizer(pre)?;
    Ok((nfc, pattern, prefix))
}

/// The checks on the model's small members; returns `ignore_merges`.
fn parse_model_head(model: &Value) -> Result<bool, BpeError> {
    if let Some(t) = get_str(model, "type") {
        if t != "BPE" {
            return Err(unsupported(format!("model {t}")));
        }
    }
    if let Some(d) = model.get("dropout").and_then(Value::as_f64) {
        if d != 0.0 {
            return Err(unsupported(format!("BPE dropout {d}")));
        }
    }
    for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
        if let Some(s) = get_str(model, key) {
            if !s.is_empty() {
                return Err(unsupported(format!("BPE {key} {s:?}")));
            }
        }
    }
    Ok(get_bool(model, "ignore_merges", false))
}

/// Added tokens of the root object: (non-normalized, normalized) lists of (content, id), the
/// normalized ones' content normalized like the text they are matched in; and the content of
/// every added token as written, in file order (see [`FastBpe::added_tokens`]).
type AddedLists = (Vec<(String, u32)>, Vec<(String, u32)>, Vec<String>);

fn parse_added(root: &Value, nfc: bool) -> Result<AddedLists, BpeError> {
    let mut raw = Vec::new();
    let mut norm = Vec::new();
    let mut all = Vec::new();
    for t in root.get("added_tokens").and_then(Value::as_array).into_iter().flatten() {
        let content = get_str(t, "content").ok_or_else(|| BpeError::Invalid("added token content".into()))?;
        let id = t
            .get("id")
            .and_then(Value::as_u64)
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| BpeError::Invalid("added token id".into()))?;
        for flag in ["lstrip", "rstrip", "single_word"] {
            if get_bool(t, flag, false) {
                return Err(unsupported(format!("added token {content:?} with {flag}")));
            }
        }
        all.push(content.to_string());
        if content.is_empty() {
            continue;
        }
        // `special` only matters with HF's `encode_special_tokens` (off by default): every
        // added token, special or not, splits the input.
        if get_bool(t, "normalized", !get_bool(t, "special", false)) {
            let c = if nfc { content.nfc().map(|(c, _)| c).collect::<String>() } else { content.to_string() };
            norm.push((c, id));
        } else {
            raw.push((content.to_string(), id));
        }
    }
    Ok((raw, norm, all))
}

/// Everything a loader extracts from a `tokenizer.json`; [`FastBpe::assemble`] builds the rest.
struct Parts<'v> {
    nfc: bool,
    pattern: Pattern,
    prefix: PrefixSpace,
    ignore_merges: bool,
    byte_ids: [u32; 256],
    merges: MergeTable,
    /// Every distinct vocabulary entry of 2..=`cache::MAX_SHORT` bytes.
    short_tokens: Vec<&'v [u8]>,
    /// Byte string -> id, kept only with `ignore_merges` (empty otherwise).
    vocab: FxHashMap<Box<[u8]>, u32>,
    added: AddedLists,
}

impl FastBpe {
    /// Load a `tokenizer.json`. Fails with [`BpeError::Unsupported`] naming the first feature
    /// that cannot be reproduced exactly.
    ///
    /// Two loaders give the same result: a fast one (`load::fast`: typed serde visitors,
    /// borrowed strings, no `serde_json::Value` of the vocabulary) that gives up on anything
    /// unusual or wrong, and the reference one (`FastBpe::from_value`) that then decides, with
    /// its error messages.
    pub fn from_json(json: &str) -> Result<FastBpe, BpeError> {
        if let Some(bpe) = load::fast(json) {
            return Ok(bpe);
        }
        Self::from_value(json)
    }

    /// The reference loader: the whole file as a `serde_json::Value`, checked member by member.
    fn from_value(json: &str) -> Result<FastBpe, BpeError> {
        let root: Value = serde_json::from_str(json)?;
        let (nfc, pattern, prefix) = parse_head(&root)?;
        let model = root.get("model").ok_or_else(|| BpeError::Invalid("no model".into()))?;
        let ignore_merges = parse_model_head(model)?;

        // Vocabulary, converted from byte-level strings to raw bytes.
        let chars = byte_level_chars();
        let mut char_byte: FxHashMap<char, u8> = FxHashMap::default();
        for (b, c) in chars.iter().enumerate() {
            char_byte.insert(*c, b as u8);
        }
        let vocab_json =
            model.get("vocab").and_then(Value::as_object).ok_or_else(|| BpeError::Invalid("model.vocab".into()))?;
        let mut str_id: FxHashMap<&str, u32> = FxHashMap::default();
        let mut vocab: FxHashMap<Box<[u8]>, u32> = FxHashMap::default();
        for (tok, id) in vocab_json {
            let id = id
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(|| BpeError::Invalid(format!("id of {tok:?}")))?;
            str_id.insert(tok.as_str(), id);
            let bytes: Option<Vec<u8>> = tok.chars().map(|c| char_byte.get(&c).copied()).collect();
            if let Some(bytes) = bytes {
                vocab.insert(bytes.into_boxed_slice(), id);
            }
        }
        let mut byte_ids = [0u32; 256];
        for (b, c) in chars.iter().enumerate() {
            byte_ids[b] = *str_id
                .get(c.to_string().as_str())
                .ok_or_else(|| unsupported(format!("byte {b:#04x} ({c:?}) missing from the vocabulary")))?;
        }

        // Merges: pair -> (rank, new id); a later duplicate overrides, as in HF.
        let merges_json =
            model.get("merges").and_then(Value::as_array).ok_or_else(|| BpeError::Invalid("model.merges".into()))?;
        let mut merges = MergeTable::with_capacity(merges_json.len());
        for (rank, m) in merges_json.iter().enumerate() {
            let (a, b) = match m {
                Value::String(s) => {
                    let parts: Vec<&str> = s.split(' ').collect();
                    match parts.as_slice() {
                        [a, b] => (*a, *b),
                        _ => return Err(BpeError::Invalid(format!("merge {s:?}"))),
                    }
                }
                Value::Array(p) => match p.as_slice() {
                    [Value::String(a), Value::String(b)] => (a.as_str(), b.as_str()),
                    _ => return Err(BpeError::Invalid(format!("merge {m}"))),
                },
                _ => return Err(BpeError::Invalid(format!("merge {m}"))),
            };
            let id = |t: &str| {
                str_id
                    .get(t)
                    .copied()
                    .ok_or_else(|| BpeError::Invalid(format!("merge token {t:?} not in the vocabulary")))
            };
            let (ia, ib) = (id(a)?, id(b)?);
            let new = id(&format!("{a}{b}"))?;
            merges.insert(ia, ib, rank as u32, new);
        }

        let added = parse_added(&root, nfc)?;
        let short_tokens: Vec<&[u8]> =
            vocab.keys().filter(|t| (2..=cache::MAX_SHORT).contains(&t.len())).map(|t| &t[..]).collect();
        let vocab = if ignore_merges { vocab.clone() } else { FxHashMap::default() };
        FastBpe::assemble(Parts { nfc, pattern, prefix, ignore_merges, byte_ids, merges, short_tokens, vocab, added })
    }

    /// The tokenizer of `parts`: byte-pair table, added-token automata, and the count of every
    /// short vocabulary entry (by the same BPE, on all threads of the current rayon pool).
    fn assemble(parts: Parts<'_>) -> Result<FastBpe, BpeError> {
        let Parts { nfc, pattern, prefix, ignore_merges, byte_ids, merges, short_tokens, vocab, added } = parts;
        let mut byte_pairs = vec![(NONE, NONE); 1 << 16].into_boxed_slice();
        for a in 0..256usize {
            for b in 0..256usize {
                byte_pairs[(a << 8) | b] = merges.get(byte_ids[a], byte_ids[b]);
            }
        }
        let (raw, norm, added_tokens) = added;
        let mut bpe = FastBpe {
            pattern,
            prefix,
            nfc,
            raw_added: Added::new(raw)?,
            norm_added: Added::new(norm)?,
            added_tokens,
            byte_ids,
            merges,
            byte_pairs,
            known: PieceTable::with_room_for(0, 0),
            vocab,
            ignore_merges,
            local: ThreadLocal::new(),
        };
        let counts: Vec<u32> = {
            let bpe = &bpe;
            short_tokens.par_iter().with_min_len(4096).map(|t| bpe.count_uncached(t) as u32).collect()
        };
        let n7 = short_tokens.iter().filter(|t| t.len() < 8).count();
        let mut known = PieceTable::with_room_for(n7, short_tokens.len() - n7);
        for (t, n) in short_tokens.iter().zip(counts) {
            if known.get(t).is_none() {
                known.insert(t, n);
            }
        }
        bpe.known = known;
        Ok(bpe)
    }

    /// Empty every thread's piece cache (frees its memory; counts are unchanged).
    pub fn clear_cache(&mut self) {
        self.local.clear();
    }

    /// The content of every added token of the `tokenizer.json`, as written (not normalized), in
    /// file order: what a caller would otherwise parse the file a second time for.
    pub fn added_tokens(&self) -> impl Iterator<Item = &str> + '_ {
        self.added_tokens.iter().map(String::as_str)
    }

    /// The split pattern in use.
    pub fn pattern(&self) -> Pattern {
        self.pattern
    }

    /// `self` with `tokens` (text, id) added as tokens matched before normalization, as
    /// `tokenizers` adds a special token that is not normalized; a text that is already an added
    /// token is left as it is.
    pub fn with_raw_added(mut self, tokens: &[(&str, u32)]) -> Result<Self, BpeError> {
        let new: Vec<(String, u32)> = tokens
            .iter()
            .filter(|(t, _)| !t.is_empty() && !self.added_tokens.iter().any(|a| a == t))
            .map(|&(t, id)| (t.to_string(), id))
            .collect();
        if !new.is_empty() {
            self.added_tokens.extend(new.iter().map(|t| t.0.clone()));
            let old = self.raw_added.take();
            let all = old.iter().flat_map(|a| a.tokens()).chain(new).collect();
            self.raw_added = Added::new(all)?;
        }
        Ok(self)
    }

    /// Number of tokens HF produces for `text` (`len(encode(text, add_special_tokens=False))`).
    pub fn count(&self, text: &str) -> usize {
        let mut local = self.local.get_or_default().borrow_mut();
        let local = &mut *local;
        let mut n = 0usize;
        self.walk(text, &mut |seg| match seg {
            Seg::Added(_) => n += 1,
            Seg::Piece(p) => n += self.count_piece(p, local),
        });
        n
    }

    /// The ids HF produces for `text` (`encode(text, add_special_tokens=False).ids`).
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut local = self.local.get_or_default().borrow_mut();
        let local = &mut *local;
        let mut out = Vec::new();
        self.walk(text, &mut |seg| match seg {
            Seg::Added(id) => out.push(id),
            Seg::Piece(p) => {
                self.bpe(p, local);
                out.extend(iter_syms(&local.syms));
            }
        });
        out
    }

    /// Split `text` into added tokens and BPE pieces, in order.
    #[inline]
    fn walk<F: FnMut(Seg<'_>)>(&self, text: &str, f: &mut F) {
        split_added(self.raw_added.as_ref(), text, &mut |seg| match seg {
            Ok(id) => f(Seg::Added(id)),
            Err(gap) => {
                let normalized;
                let gap = if self.nfc && !is_nfc_fast(gap) {
                    normalized = gap.nfc().map(|(c, _)| c).collect::<String>();
                    normalized.as_str()
                } else {
                    gap
                };
                split_added(self.norm_added.as_ref(), gap, &mut |seg| match seg {
                    Ok(id) => f(Seg::Added(id)),
                    Err(part) => self.pre_tokenize(part, f),
                });
            }
        });
    }

    #[inline]
    fn pre_tokenize<F: FnMut(Seg<'_>)>(&self, part: &str, f: &mut F) {
        if self.prefix == PrefixSpace::BeforeSplit && !part.starts_with(' ') {
            let owned = format!(" {part}");
            for p in pretok::Pieces::new(&owned, self.pattern) {
                f(Seg::Piece(p));
            }
        } else {
            for p in pretok::Pieces::new(part, self.pattern) {
                f(Seg::Piece(p));
            }
        }
    }

    #[inline]
    fn count_piece(&self, piece: &[u8], local: &mut Local) -> usize {
        let len = piece.len();
        if len == 1 {
            return 1;
        }
        if len <= cache::MAX_SHORT {
            // Most pieces are vocabulary entries (counted at load time); the others are cached.
            if let Some(n) = self.known.get(piece) {
                return n as usize;
            }
            if let Some(n) = local.short.get(piece) {
                return n as usize;
            }
            let n = self.count_uncached(piece);
            local.short.insert(piece, n as u32);
            return n;
        }
        if len < MAX_CACHED_PIECE {
            if let Some(&n) = local.long.get(piece) {
                return n as usize;
            }
            let n = self.count_uncached(piece);
            if local.long.len() >= CACHE_CAPACITY {
                local.long.clear();
            }
            local.long.insert(piece.into(), n as u32);
            return n;
        }
        if self.ignore_merges && self.vocab.contains_key(piece) {
            return 1;
        }
        self.bpe(piece, local)
    }

    /// Token count of a piece of fewer than `MAX_CACHED_PIECE` bytes, without the caches.
    #[inline(never)]
    fn count_uncached(&self, piece: &[u8]) -> usize {
        if self.ignore_merges && self.vocab.contains_key(piece) {
            return 1;
        }
        self.bpe_count_small(piece)
    }

    #[inline(always)]
    fn merge_of(&self, a: u32, b: u32) -> (u32, u32) {
        self.merges.get(a, b)
    }

    /// HF's BPE on a piece of 2 to `MAX_CACHED_PIECE - 1` bytes, counting only: symbols in stack
    /// arrays, each step merging the lowest-ranked pair, leftmost on equal rank (the same pair),
    /// which is the order `Word::merge_all`'s heap pops valid pairs in (see `bpe`).
    fn bpe_count_small(&self, p: &[u8]) -> usize {
        const N: usize = MAX_CACHED_PIECE;
        let mut len = p.len();
        debug_assert!((2..N).contains(&len));
        let mut ids = [0u32; N];
        // ranks[i], news[i]: the merge of symbols i and i + 1.
        let mut ranks = [NONE; N];
        let mut news = [NONE; N];
        for i in 0..len {
            ids[i] = self.byte_ids[p[i] as usize];
        }
        for i in 0..len - 1 {
            (ranks[i], news[i]) = self.byte_pairs[((p[i] as usize) << 8) | p[i + 1] as usize];
        }
        loop {
            let (mut best, mut at) = (NONE, 0);
            for (i, &r) in ranks[..len - 1].iter().enumerate() {
                if r < best {
                    (best, at) = (r, i);
                }
            }
            if best == NONE {
                return len;
            }
            // Symbol `at` becomes the merge, symbol `at + 1` goes; pairs after it shift left.
            ids[at] = news[at];
            ids.copy_within(at + 2..len, at + 1);
            if at + 2 < len - 1 {
                ranks.copy_within(at + 2..len - 1, at + 1);
                news.copy_within(at + 2..len - 1, at + 1);
            }
            len -= 1;
            if len == 1 {
                return 1;
            }
            if at + 1 < len {
                (ranks[at], news[at]) = self.merge_of(ids[at], ids[at + 1]);
            }
            if at > 0 {
                (ranks[at - 1], news[at - 1]) = self.merge_of(ids[at - 1], ids[at]);
            }
        }
    }

    /// HF's BPE on the bytes of one piece, leaving the symbols in `local.syms`; returns their
    /// number. Lowest rank first, leftmost on equal rank (the same pair), as `Word::merge_all`.
    fn bpe(&self, piece: &[u8], local: &mut Local) -> usize {
        let Local { syms, heap, .. } = local;
        syms.clear();
        heap.clear();
        if self.ignore_merges {
            if let Some(&id) = self.vocab.get(piece) {
                syms.push(Sym { id, prev: NONE, next: NONE });
                return 1;
            }
        }
        let n = piece.len();
        for (i, &b) in piece.iter().enumerate() {
            syms.push(Sym {
                id: self.byte_ids[b as usize],
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: if i + 1 == n { NONE } else { i as u32 + 1 },
            });
        }
        let rank = |a: u32, b: u32| Some(self.merges.get(a, b)).filter(|m| m.0 != NONE);
        for i in 0..n.saturating_sub(1) {
            if let Some((r, new)) = rank(syms[i].id, syms[i + 1].id) {
                heap.push(Reverse((r, i as u32, new)));
            }
        }
        let mut alive = n;
        while let Some(Reverse((_, pos, new))) = heap.pop() {
            let p = pos as usize;
            let s = syms[p];
            // Merged into its left neighbour (a dead symbol is unlinked: prev and next NONE
            // cannot tell it apart from a lone one, so check the neighbour relation).
            if s.id == NONE || s.next == NONE {
                continue;
            }
            let q = s.next as usize;
            match rank(s.id, syms[q].id) {
                Some((_, id)) if id == new => {}
                _ => continue,
            }
            let after = syms[q].next;
            syms[p].id = new;
            syms[p].next = after;
            syms[q].id = NONE;
            syms[q].next = NONE;
            if after != NONE {
                syms[after as usize].prev = pos;
            }
            alive -= 1;
            if s.prev != NONE {
                if let Some((r, id)) = rank(syms[s.prev as usize].id, new) {
                    heap.push(Reverse((r, s.prev, id)));
                }
            }
            if after != NONE {
                if let Some((r, id)) = rank(new, syms[after as usize].id) {
                    heap.push(Reverse((r, pos, id)));
                }
            }
        }
        alive
    }
}

fn iter_syms(syms: &[Sym]) -> impl Iterator<Item = u32> + '_ {
    let mut i = if syms.is_empty() { NONE } else { 0 };
    std::iter::from_fn(move || {
        if i == NONE {
            return None;
        }
        let s = syms[i as usize];
        i = s.next;
        Some(s.id)
    })
}

enum Seg<'a> {
    Added(u32),
    Piece(&'a [u8]),
}

/// Whether `text` is in NFC, by the quick check of the crate HF uses (`Yes` only: `Maybe` and
/// `No` are normalized).
///
/// The check walks the chars keeping one state, the combining class of the previous char; a char
/// of class 0 whose NFC_QC is Yes passes and resets it, so the text splits there into parts
/// checked independently (the whole is Yes iff every part is). Every code point below U+0300 is
/// such a char, and those are exactly the ASCII bytes and the UTF-8 sequences whose lead byte is
/// below 0xCC. So only the maximal runs of non-ASCII bytes that hold a byte >= 0xCC are checked,
/// each from that byte (always a lead byte: continuation bytes are below 0xC0) to the run's end;
/// the text between them is skipped 32 bytes at a time. A run made only of such chars of the
/// Basic Multilingual Plane (punctuation like `—` and `’`, most letters and symbols: one bit
/// each in [`bmp_starters`]) passes without the quick check.
#[inline]
pub fn is_nfc_fast(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(start) = find_from_0xcc(b, i) {
        let end = b[start..].iter().position(|&x| x < 0x80).map_or(b.len(), |k| start + k);
        if !bmp_starters_only(&b[start..end]) && is_nfc_quick(text[start..end].chars()) != IsNormalized::Yes {
            return false;
        }
        i = end;
    }
    true
}

/// Whether every char of `run` (valid UTF-8) is a BMP char of combining class 0 whose NFC_QC is
/// Yes (a bit of [`bmp_starters`]).
#[inline]
fn bmp_starters_only(run: &[u8]) -> bool {
    let table = bmp_starters();
    let mut i = 0;
    while i < run.len() {
        let b0 = run[i] as u32;
        let (c, l) = if b0 < 0xE0 {
            // ASCII does not occur in a run; 2 bytes: U+0080..U+07FF.
            (((b0 & 0x1F) << 6) | (run[i + 1] as u32 & 0x3F), 2)
        } else if b0 < 0xF0 {
            (((b0 & 0x0F) << 12) | ((run[i + 1] as u32 & 0x3F) << 6) | (run[i + 2] as u32 & 0x3F), 3)
        } else {
            return false;
        };
        if table[(c >> 6) as usize] >> (c & 63) & 1 == 0 {
            return false;
        }
        i += l;
    }
    true
}

/// One bit per code point of the Basic Multilingual Plane: set when the char has combining class
/// 0 and NFC_QC Yes (by the crate HF uses), so it passes the quick check and resets its state.
/// Built once (8 KiB).
fn bmp_starters() -> &'static [u64; 1024] {
    static TABLE: std::sync::OnceLock<Box<[u64; 1024]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0u64; 1024]);
        for c in (0..0x10000u32).filter_map(char::from_u32) {
            if unicode_normalization_alignments::char::canonical_combining_class(c) == 0
                && is_nfc_quick(std::iter::once(c)) == IsNormalized::Yes
            {
                t[(c as u32 >> 6) as usize] |= 1 << (c as u32 & 63);
            }
        }
        t
    })
}

/// The first position at or after `i` of a byte >= 0xCC: 32 bytes at a time (no early exit
/// inside a block, so it vectorises), then byte by byte.
#[inline(always)]
fn find_from_0xcc(b: &[u8], mut i: usize) -> Option<usize> {
    while i + 32 <= b.len() && !b[i..i + 32].iter().fold(false, |any, &x| any | (x >= 0xCC)) {
        i += 32;
    }
    b[i..].iter().position(|&x| x >= 0xCC).map(|j| i + j)
}

/// Split `text` on added tokens (leftmost-longest), calling `f` with `Ok(id)` for a token and
/// `Err(gap)` for each non-empty text between tokens.
#[inline]
fn split_added<F: FnMut(Result<u32, &str>)>(added: Option<&Added>, text: &str, f: &mut F) {
    if text.is_empty() {
        return;
    }
    let Some(a) = added else {
        f(Err(text));
        return;
    };
    let mut last = 0;
    for m in a.ac.find_iter(text) {
        if m.start() > last {
            f(Err(&text[last..m.start()]));
        }
        f(Ok(a.ids[m.pattern().as_usize()]));
        last = m.end();
    }
    if last < text.len() {
        f(Err(&text[last..]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn fast_bpe_is_send_and_sync() {
        assert_send_sync::<FastBpe>();
    }

    /// The counting BPE (stack arrays, linear scan for the lowest rank) and the table of
    /// vocabulary counts agree with the heap BPE of `encode` on many pieces of every length.
    #[test]
    fn small_bpe_and_known_counts_agree_with_heap_bpe() {
        for name in ["gpt2_style.json", "llama3_style.json"] {
            let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
            let bpe = FastBpe::from_json(&std::fs::read_to_string(path).unwrap()).unwrap();
            let mut local = Local::default();
            let words: [&[u8]; 12] =
                [b"the", b"ing", b" a", b"e", b"th", b"er", b"\xC3\xA9", b"0", b"  ", b"tion", b"\xF0\x9F", b"s"];
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            for _ in 0..20_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let mut piece = Vec::new();
                let target = 2 + (x % (MAX_CACHED_PIECE as u64 - 2)) as usize;
                let mut y = x;
                while piece.len() < target {
                    piece.extend_from_slice(words[(y % 12) as usize]);
                    y = y.rotate_right(5).wrapping_mul(0x2545_F491_4F6C_DD1D);
                }
                piece.truncate(target);
                let want = bpe.bpe(&piece, &mut local);
                if !bpe.ignore_merges || !bpe.vocab.contains_key(piece.as_slice()) {
                    assert_eq!(bpe.bpe_count_small(&piece), want, "{piece:?}");
                }
                assert_eq!(bpe.count_piece(&piece, &mut local), want, "{piece:?}");
            }
            for (token, _) in bpe.vocab.iter() {
                if token.len() >= 2 {
                    let want = bpe.bpe(token, &mut local);
                    assert_eq!(bpe.count_piece(token, &mut Local::default()), want);
                }
            }
        }
    }

    /// Chars of every kind the NFC quick check treats differently: ASCII, Latin below U+0300,
    /// combining marks of several classes (U+0300-U+036F, Hebrew and Arabic points, U+0F71-U+0F74
    /// whose classes are out of order), chars that are never NFC (U+0340, U+0958, CJK
    /// compatibility ideographs), Hangul syllables and conjoining jamo (NFC_QC Maybe), CJK,
    /// emoji with modifiers, ZWJ and variation selectors, and the ends of each range.
    fn nfc_probe_chars() -> Vec<char> {
        let ranges: [(u32, u32); 22] = [
            (0x20, 0x7F),
            (0xC0, 0xFF),
            (0x100, 0x2FF),
            (0x300, 0x36F),
            (0x374, 0x3CE),
            (0x591, 0x5C7),
            (0x610, 0x65F),
            (0x93C, 0x94D),
            (0x958, 0x95F),
            (0xF71, 0xF84),
            (0x1100, 0x1112),
            (0x1161, 0x1175),
            (0x11A8, 0x11C2),
            (0x1E00, 0x1E0F),
            (0x200B, 0x200F),
            (0x2126, 0x212B),
            (0x2200, 0x22FF),
            (0x3099, 0x309A),
            (0x4E00, 0x4E10),
            (0xAC00, 0xAC1F),
            (0xF900, 0xF90F),
            (0xFE00, 0xFE0F),
        ];
        let mut out: Vec<char> = ranges.iter().flat_map(|&(a, b)| (a..=b).filter_map(char::from_u32)).collect();
        out.extend(['\u{1F44D}', '\u{1F3FD}', '\u{1F600}', '\u{D7A3}', '\u{10FFFF}', '\u{1D15E}', '\u{1D165}']);
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        /// `is_nfc_fast` is the quick check's "Yes" on any mix of those chars.
        #[test]
        fn is_nfc_fast_is_the_quick_check(picks in proptest::collection::vec((0usize..10_000, 0usize..4), 0..48)) {
            let chars = nfc_probe_chars();
            let mut s = String::new();
            for (k, repeat) in picks {
                // Runs of ASCII long enough to cross the 32-byte blocks, sometimes.
                let c = chars[k % chars.len()];
                for _ in 0..if c.is_ascii() { 1 + repeat * repeat * 4 } else { 1 + repeat / 3 } {
                    s.push(c);
                }
            }
            proptest::prop_assert_eq!(is_nfc_fast(&s), is_nfc_quick(s.chars()) == IsNormalized::Yes, "{:?}", s);
        }
    }

    /// Every BMP char alone, after a mark of class 230 and after one of class 220 (the
    /// `bmp_starters` table against the quick check itself).
    #[test]
    fn is_nfc_fast_on_every_bmp_char() {
        for c in (0x80..0x10000u32).filter_map(char::from_u32) {
            for s in [format!("{c}"), format!("\u{301}{c}"), format!("\u{316}{c}x"), format!("{c}\u{2019}")] {
                assert_eq!(is_nfc_fast(&s), is_nfc_quick(s.chars()) == IsNormalized::Yes, "{s:?}");
            }
        }
    }

    /// The same on every pair and triple of a few marks and letters, at every offset from a
    /// 32-byte block boundary.
    #[test]
    fn is_nfc_fast_on_short_mixes() {
        let probe = [
            'a',
            ' ',
            '\u{E9}',
            '\u{2FF}',
            '\u{300}',
            '\u{301}',
            '\u{316}',
            '\u{340}',
            '\u{5B0}',
            '\u{F73}',
            '\u{1161}',
            '\u{AC00}',
            '\u{4E00}',
            '\u{F900}',
            '\u{2264}',
            '\u{1F44D}',
        ];
        for pad in 0..34 {
            let prefix = "x".repeat(pad);
            for &a in &probe {
                for &b in &probe {
                    for &c in &probe {
                        let s = format!("{prefix}{a}{b}{c}");
                        assert_eq!(is_nfc_fast(&s), is_nfc_quick(s.chars()) == IsNormalized::Yes, "{s:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn added_tokens_are_listed_as_written() {
        let path = format!("{}/tests/data/llama3_style.json", env!("CARGO_MANIFEST_DIR"));
        let json = std::fs::read_to_string(path).unwrap();
        let want: Vec<String> = serde_json::from_str::<Value>(&json).unwrap()["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["content"].as_str().unwrap().to_string())
            .collect();
        assert!(want.iter().any(|t| t.nfc().map(|(c, _)| c).collect::<String>() != *t), "a token NFC changes");
        for bpe in [FastBpe::from_json(&json).unwrap(), FastBpe::from_value(&json).unwrap()] {
            assert_eq!(bpe.added_tokens().collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn raw_added_tokens_split_the_text_and_keep_existing_ones() {
        let path = format!("{}/tests/data/llama3_style.json", env!("CARGO_MANIFEST_DIR"));
        let json = std::fs::read_to_string(path).unwrap();
        let bpe = FastBpe::from_json(&json).unwrap();
        let before: Vec<String> = bpe.added_tokens().map(str::to_string).collect();
        let (first, delim) = (before[0].clone(), "<|summary_end|>");
        assert!(bpe.count(delim) > 1, "the fixture does not know the delimiter yet");
        let first_ids = bpe.encode(&first);
        let (a, b) = ("Okay, so x = 3.", " then 4");
        let parts = bpe.count(a) + bpe.count(b);
        let bpe = bpe.with_raw_added(&[(delim, 9_000_000), (first.as_str(), 9_000_001)]).unwrap();
        // The new text is one token that splits the input; an existing one keeps its id.
        assert_eq!(bpe.encode(delim), vec![9_000_000]);
        assert_eq!(bpe.count(&format!("{a}{delim}{b}")), parts + 1);
        assert_eq!(bpe.encode(&first), first_ids);
        let after: Vec<String> = bpe.added_tokens().map(str::to_string).collect();
        assert_eq!(after.len(), before.len() + 1);
        assert_eq!(after.last().map(String::as_str), Some(delim));
    }

    #[test]
    fn byte_level_map_is_gpt2s() {
        let c = byte_level_chars();
        assert_eq!(c[b' ' as usize], 'Ġ');
        assert_eq!(c[b'\n' as usize], 'Ċ');
        assert_eq!(c[b'a' as usize], 'a');
        let mut all: Vec<char> = c.to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 256);
    }
}
