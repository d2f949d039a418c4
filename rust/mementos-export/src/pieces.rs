//! Encoding with a per-thread cache of piece -> ids, on top of `mementos-bpe`'s public API.
//!
//! `FastBpe::encode` runs BPE on every piece of the text; natural text repeats its pieces, so
//! here a text is split the way `FastBpe` (and HF) split it, and each piece's ids are cached:
//!
//! 1. added tokens first (leftmost-longest Aho-Corasick over their contents; only used when every
//!    added token is matched on the raw text, `normalized: false`);
//! 2. each gap between added tokens must be NFC already (quick check `Yes`, with mementos-bpe's
//!    `is_nfc_fast`: only runs of bytes >= 0xCC are checked) when the tokenizer normalizes with
//!    NFC, else the row is left to `FastBpe::encode`;
//! 3. the gap is cut into pieces by the same scanner (`mementos_bpe::pretok::Pieces`);
//! 4. a piece's ids are `FastBpe::encode(piece)`, which is BPE of that piece exactly when the
//!    piece is a fixed point of the pre-tokenizer and NFC-stable; both are checked on each cache
//!    miss, and a piece that fails sends the whole row back to `FastBpe::encode`.
//!
//! Anything uncertain falls back to the uncached exact path: the ids are always `FastBpe`'s.
//!
//! The cache keeps each piece's tokens as (id, byte length) pairs, checked once when the piece is
//! added, so a hit pushes ids and byte ranges without looking token lengths up. Pieces of up to
//! 16 bytes (nearly all of natural text and code) are keyed inline, as mementos-bpe's counting
//! tables are: their bytes in two `u64` plus the length, one probe of an open-addressing table and
//! no byte comparison loop; longer pieces go to a hash map.

use std::cell::RefCell;

use aho_corasick::{AhoCorasick, MatchKind};
use mementos_bpe::pretok::{Pattern, Pieces};
use mementos_bpe::{is_nfc_fast, FastBpe};
use rustc_hash::FxHashMap;
use serde_json::Value;
use thread_local::ThreadLocal;
use unicode_normalization_alignments::{is_nfc_quick, IsNormalized};

/// Pieces at least this long are not cached.
const MAX_CACHED: usize = 64;
/// A thread's cache is emptied when it holds this many pieces (bounded memory).
pub(crate) const CAPACITY: usize = 1 << 18;
/// ... or this many tokens (8 bytes each).
const ARENA_CAPACITY: usize = 4 * CAPACITY;

/// Longest piece keyed inline.
const SHORT: usize = 16;
const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

/// A cached piece of 1..=16 bytes: its bytes (`lo` the first 8, zero padded, `hi` the last 8 when
/// longer than 8, else 0: exact given the length), its length (0: empty slot), and its tokens,
/// `arena[at..at + n]`.
#[derive(Clone, Copy, Default)]
struct Slot {
    lo: u64,
    hi: u64,
    len: u8,
    n: u8,
    at: u32,
}

#[inline(always)]
fn short_key(p: &[u8]) -> (u64, u64) {
    let n = p.len();
    if n >= 8 {
        let lo = u64::from_le_bytes(p[..8].try_into().unwrap());
        let hi = u64::from_le_bytes(p[n - 8..].try_into().unwrap());
        (lo, hi)
    } else {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(p);
        (u64::from_le_bytes(b), 0)
    }
}

/// One thread's cache of piece -> tokens (id, byte length).
struct Local {
    /// Open addressing with linear probing, a power of two slots, at most half full.
    short: Vec<Slot>,
    long: FxHashMap<Box<[u8]>, (u32, u32)>,
    /// Pieces held (short and long).
    len: usize,
    arena: Vec<(u32, u32)>,
}

impl Default for Local {
    fn default() -> Self {
        Local { short: vec![Slot::default(); 1 << 12], long: FxHashMap::default(), len: 0, arena: Vec::new() }
    }
}

impl Local {
    #[inline(always)]
    fn probe(&self, lo: u64, hi: u64, len: u8) -> usize {
        let mask = self.short.len() - 1;
        let h = (lo ^ len as u64).wrapping_mul(MUL) ^ hi.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        let mut i = ((h ^ (h >> 29)) as usize) & mask;
        loop {
            let s = &self.short[i];
            if s.len == 0 || (s.len == len && s.lo == lo && s.hi == hi) {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// The tokens of a cached piece.
    #[inline(always)]
    fn get(&self, p: &[u8]) -> Option<&[(u32, u32)]> {
        let (at, n) = if p.len() <= SHORT {
            let (lo, hi) = short_key(p);
            let s = &self.short[self.probe(lo, hi, p.len() as u8)];
            if s.len == 0 {
                return None;
            }
            (s.at, s.n as u32)
        } else {
            *self.long.get(p)?
        };
        Some(&self.arena[at as usize..(at + n) as usize])
    }

    /// Remember the tokens of a piece not held (emptying the cache first when it is full).
    fn insert(&mut self, p: &[u8], tokens: &[(u32, u32)]) {
        if self.len >= CAPACITY || self.arena.len() + tokens.len() > ARENA_CAPACITY {
            self.short.fill(Slot::default());
            self.long.clear();
            self.arena.clear();
            self.len = 0;
        }
        let at = self.arena.len() as u32;
        if p.len() <= SHORT && tokens.len() <= u8::MAX as usize {
            if 2 * (self.len + 1) > self.short.len() {
                let bigger = vec![Slot::default(); 2 * self.short.len()];
                let old = std::mem::replace(&mut self.short, bigger);
                for s in old.into_iter().filter(|s| s.len != 0) {
                    let i = self.probe(s.lo, s.hi, s.len);
                    self.short[i] = s;
                }
            }
            let (lo, hi) = short_key(p);
            let i = self.probe(lo, hi, p.len() as u8);
            self.short[i] = Slot { lo, hi, len: p.len() as u8, n: tokens.len() as u8, at };
        } else {
            self.long.insert(p.into(), (at, tokens.len() as u32));
        }
        self.arena.extend_from_slice(tokens);
        self.len += 1;
    }
}

type ThreadCache = RefCell<Local>;

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
        let cache: &mut Local = &mut cache;
        let mut fresh: Vec<(u32, u32)> = Vec::new();
        let mut gap =
            |from: usize, to: usize, ids: &mut Vec<u32>, starts: &mut Vec<u32>, ends: &mut Vec<u32>| -> bool {
                let g = &text[from..to];
                if self.nfc && !is_nfc_fast(g) {
                    return false;
                }
                let base = g.as_ptr() as usize;
                for piece in Pieces::new(g, self.pattern) {
                    let mut pos = (from + (piece.as_ptr() as usize - base)) as u32;
                    let tokens = match cache.get(piece) {
                        Some(hit) => hit,
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
                            // Each token's byte length; they must add up to the piece.
                            fresh.clear();
                            let mut total = 0u64;
                            for id in fast.encode(s) {
                                let l = match token_len.get(id as usize) {
                                    Some(&l) if l != u32::MAX => l,
                                    _ => return false,
                                };
                                total += l as u64;
                                fresh.push((id, l));
                            }
                            if total != piece.len() as u64 {
                                return false;
                            }
                            if piece.len() < MAX_CACHED {
                                cache.insert(piece, &fresh);
                            }
                            &fresh[..]
                        }
                    };
                    for &(id, l) in tokens {
                        ids.push(id);
                        starts.push(pos);
                        pos += l;
                        ends.push(pos);
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
