//! Encoding with a per-thread cache of piece -> ids, on top of `mementos-bpe`'s public API.
//!
//! `FastBpe::encode` runs BPE on every piece of the text; natural text repeats its pieces, so
//! here a text is split the way `FastBpe` (and HF) split it, and each piece's ids are cached:
//!
//! 1. added tokens first (leftmost-longest Aho-Corasick over their contents; only used when every
//!    added token is matched on the raw text, `normalized: false`);
//! 2. each gap between added tokens must be NFC already (quick check `Yes`) when the tokenizer
//!    normalizes with NFC, else the row is left to `FastBpe::encode`;
//! 3. the gap is cut into pieces by the same scanner (`mementos_bpe::pretok::Pieces`);
//! 4. a piece's ids are `FastBpe::encode(piece)`, which is BPE of that piece exactly when the
//!    piece is a fixed point of the pre-tokenizer and NFC-stable; both are checked on each cache
//!    miss, and a piece that fails sends the whole row back to `FastBpe::encode`.
//!
//! Anything uncertain falls back to the uncached exact path: the ids are always `FastBpe`'s.

use std::cell::RefCell;

use aho_corasick::{AhoCorasick, MatchKind};
use mementos_bpe::pretok::{Pattern, Pieces};
use mementos_bpe::FastBpe;
use rustc_hash::FxHashMap;
use serde_json::Value;
use thread_local::ThreadLocal;
use unicode_normalization_alignments::{is_nfc_quick, IsNormalized};

/// Pieces at least this long are not cached.
const MAX_CACHED: usize = 64;
/// A thread's cache is emptied when it holds this many pieces (bounded memory).
const CAPACITY: usize = 1 << 18;

/// One thread's map from piece bytes to its ids.
type ThreadCache = RefCell<FxHashMap<Box<[u8]>, Box<[u32]>>>;

pub(crate) struct PieceCache {
    added: Option<(AhoCorasick, Vec<u32>)>,
    pattern: Pattern,
    nfc: bool,
    cache: ThreadLocal<ThreadCache>,
}

impl PieceCache {
    /// The cached path for this `tokenizer.json`, or None when its setup is one the cache does
    /// not reproduce (normalized added tokens, a prefix space, another normalizer).
    pub(crate) fn new(json: &Value, fast: &FastBpe) -> Option<PieceCache> {
        let nfc = match json.get("normalizer") {
            None | Some(Value::Null) => false,
            Some(n) if n.get("type").and_then(Value::as_str) == Some("NFC") => true,
            _ => return None,
        };
        let pre = json.get("pre_tokenizer")?;
        let prefix = |v: &Value| v.get("add_prefix_space").and_then(Value::as_bool).unwrap_or(true);
        match pre.get("type").and_then(Value::as_str)? {
            "ByteLevel" if prefix(pre) => return None,
            "ByteLevel" | "Sequence" => {}
            _ => return None,
        }
        let mut contents = Vec::new();
        let mut ids = Vec::new();
        for t in json.get("added_tokens").and_then(Value::as_array).into_iter().flatten() {
            let special = t.get("special").and_then(Value::as_bool).unwrap_or(false);
            if t.get("normalized").and_then(Value::as_bool).unwrap_or(!special) {
                return None;
            }
            let c = t.get("content").and_then(Value::as_str)?;
            if c.is_empty() {
                continue;
            }
            contents.push(c.to_string());
            ids.push(t.get("id").and_then(Value::as_u64)? as u32);
        }
        let added = if contents.is_empty() {
            None
        } else {
            let ac = AhoCorasick::builder().match_kind(MatchKind::LeftmostLongest).build(&contents).ok()?;
            Some((ac, ids))
        };
        Some(PieceCache { added, pattern: fast.pattern(), nfc, cache: ThreadLocal::new() })
    }

    /// Ids of `text` and each token's byte range; false when the row must take the exact
    /// uncached path (the outputs are then unspecified).
    pub(crate) fn encode(
        &self,
        fast: &FastBpe,
        token_len: &[u32],
        text: &str,
        ids: &mut Vec<u32>,
        starts: &mut Vec<u32>,
        ends: &mut Vec<u32>,
    ) -> bool {
        let mut cache = self.cache.get_or_default().borrow_mut();
        if cache.len() >= CAPACITY {
            cache.clear();
        }
        let mut gap =
            |from: usize, to: usize, ids: &mut Vec<u32>, starts: &mut Vec<u32>, ends: &mut Vec<u32>| -> bool {
                let g = &text[from..to];
                if self.nfc && !g.is_ascii() && is_nfc_quick(g.chars()) != IsNormalized::Yes {
                    return false;
                }
                let base = g.as_ptr() as usize;
                for piece in Pieces::new(g, self.pattern) {
                    let at = from + (piece.as_ptr() as usize - base);
                    let before = ids.len();
                    match cache.get(piece) {
                        Some(hit) => ids.extend_from_slice(hit),
                        None => {
                            // SAFETY of the cut: pieces are made of whole characters of `g`.
                            let Ok(s) = std::str::from_utf8(piece) else {
                                return false;
                            };
                            if Pieces::new(s, self.pattern).nth(1).is_some()
                                || (self.nfc && !s.is_ascii() && is_nfc_quick(s.chars()) != IsNormalized::Yes)
                            {
                                return false;
                            }
                            let got = fast.encode(s);
                            ids.extend_from_slice(&got);
                            if piece.len() < MAX_CACHED {
                                cache.insert(piece.into(), got.into_boxed_slice());
                            }
                        }
                    }
                    let mut pos = at as u32;
                    for &id in &ids[before..] {
                        let l = match token_len.get(id as usize) {
                            Some(&l) if l != u32::MAX => l,
                            _ => return false,
                        };
                        starts.push(pos);
                        pos += l;
                        ends.push(pos);
                    }
                    if pos as usize != at + piece.len() {
                        return false;
                    }
                }
                true
            };
        let mut pos = 0;
        if let Some((ac, added_ids)) = &self.added {
            for m in ac.find_iter(text) {
                if !gap(pos, m.start(), ids, starts, ends) {
                    return false;
                }
                ids.push(added_ids[m.pattern().as_usize()]);
                starts.push(m.start() as u32);
                ends.push(m.end() as u32);
                pos = m.end();
            }
        }
        gap(pos, text.len(), ids, starts, ends)
    }
}
