//! Encoding with a per-thread cache of piece -> ids, on top of `mementos-bpe`'s public API.
//!
//! `FastBpe::encode` runs BPE on every piece of the text; natural text repeats its pieces, so
//! here a text is split the way `FastBpe` (and HF) split it, and each piece's ids are cached:
//!
//! 1. added tokens first (leftmost-longest Aho-Corasick over their contents; only used when every
//!    added token is matched on the raw text, `normalized: false`);
//! 2. each gap between added tokens must be NFC already (quick check `Yes`, with mementos-bpe's
//!    `is_nfc_fast`: only runs of bytes >= 0xCC are looked at, most by one table bit per char)
//!    when the tokenizer normalizes with NFC, else the row is left to `FastBpe::encode`;
//! 3. the gap is cut into pieces by the same scanner (`mementos_bpe::pretok::Pieces`);
//! 4. a piece's ids are `FastBpe::encode(piece)`, which is BPE of that piece exactly when the
//!    piece is a fixed point of the pre-tokenizer and NFC-stable; both are checked on each cache
//!    miss, and a piece that fails sends the whole row back to `FastBpe::encode`.
//!
//! Anything uncertain falls back to the uncached exact path: the ids are always `FastBpe`'s.
//!
//! The output is each token's id and start; the tokens tile the text (each piece's tokens add up
//! to it), so token `t` ends where `t + 1` starts and one more boundary, the text's length, ends
//! the last. A text has at most one token per byte, so both are written into capacity reserved
//! once per text, without a capacity check per token.
//!
//! The cache keeps each piece's tokens as (id, byte length) pairs, checked once when the piece is
//! added, so a hit writes ids and starts without looking token lengths up; a piece that is
//! one token (most of them) keeps its id in its slot, with no second read. Pieces of up to 16
//! bytes (nearly all of natural text and code) are keyed inline, without copying them through
//! memory: a single byte indexes a 256-entry array, 2 to 7 bytes are one `u64`
//! ([`mementos_bpe::key7`], the key of mementos-bpe's counting tables) in 16-byte slots, 8 to 16
//! bytes their first and last 8 bytes plus the length; one probe of an open-addressing table and
//! no byte comparison loop. Longer pieces go to a hash map.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use aho_corasick::{AhoCorasick, MatchKind};
use mementos_bpe::pretok::{Pattern, Pieces};
use mementos_bpe::{is_nfc_fast, key7, FastBpe};
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
/// `Hit::n` of a piece that is one token whose id is `Hit::at` (no arena read).
const ONE: u8 = 0;

/// A cached piece's tokens: `n` tokens at `arena[at..at + n]`, or the single token `at` when
/// `n == ONE` (its byte length is the piece's).
#[derive(Clone, Copy, Default)]
struct Hit {
    at: u32,
    n: u8,
}

/// A cached piece of 2..=7 bytes: `mementos_bpe::key7` of its bytes (0: empty slot). 16 bytes.
#[derive(Clone, Copy, Default)]
struct Slot7 {
    key: u64,
    hit: Hit,
}

/// A cached piece of 8..=16 bytes: its first and last 8 bytes (overlapping: exact given the
/// length) and its length (0: empty slot).
#[derive(Clone, Copy, Default)]
struct Slot16 {
    lo: u64,
    hi: u64,
    len: u8,
    hit: Hit,
}

#[inline(always)]
fn u64_at(p: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(p[i..i + 8].try_into().unwrap())
}

#[inline(always)]
fn slot_of(h: u64, size: usize) -> usize {
    (h >> (64 - size.trailing_zeros())) as usize
}

/// Open addressing with linear probing over a power of two slots, at most half full.
trait Keyed: Copy + Default {
    fn empty(&self) -> bool;
    fn hash(&self) -> u64;
}

impl Keyed for Slot7 {
    fn empty(&self) -> bool {
        self.key == 0
    }
    #[inline(always)]
    fn hash(&self) -> u64 {
        self.key.wrapping_mul(MUL)
    }
}

impl Keyed for Slot16 {
    fn empty(&self) -> bool {
        self.len == 0
    }
    #[inline(always)]
    fn hash(&self) -> u64 {
        let h = (self.lo ^ self.len as u64).wrapping_mul(MUL) ^ self.hi.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        h ^ (h >> 32)
    }
}

/// The slot holding `key` (compared by `same`) or the empty slot where it goes.
#[inline(always)]
fn probe<S: Keyed>(table: &[S], key: &S, same: impl Fn(&S) -> bool) -> usize {
    let mask = table.len() - 1;
    let mut i = slot_of(key.hash(), table.len());
    loop {
        let s = &table[i];
        if s.empty() || same(s) {
            return i;
        }
        i = (i + 1) & mask;
    }
}

/// Double `table` when one more entry would make it more than half full.
fn grow<S: Keyed>(table: &mut Vec<S>, held: usize) {
    if 2 * (held + 1) <= table.len() {
        return;
    }
    let old = std::mem::replace(table, vec![S::default(); 2 * table.len()]);
    for s in old.into_iter().filter(|s| !s.empty()) {
        let i = probe(table, &s, |_| false);
        table[i] = s;
    }
}

/// One thread's cache of piece -> tokens (id, byte length).
struct Local {
    /// Single bytes: the token id, `u32::MAX` when not seen yet.
    t1: Box<[u32; 256]>,
    t7: Vec<Slot7>,
    t16: Vec<Slot16>,
    long: FxHashMap<Box<[u8]>, Hit>,
    /// Pieces held in t7 / t16 and long.
    held7: usize,
    held16: usize,
    len: usize,
    /// Tokens of the pieces of more than one token.
    arena: Vec<(u32, u32)>,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            t1: Box::new([u32::MAX; 256]),
            t7: vec![Slot7::default(); 1 << 12],
            t16: vec![Slot16::default(); 1 << 10],
            long: FxHashMap::default(),
            held7: 0,
            held16: 0,
            len: 0,
            arena: Vec::new(),
        }
    }
}

impl Local {
    /// Where the tokens of a cached piece are.
    #[inline(always)]
    fn get(&self, p: &[u8]) -> Option<Hit> {
        let n = p.len();
        if n == 1 {
            let id = self.t1[p[0] as usize];
            return (id != u32::MAX).then_some(Hit { at: id, n: ONE });
        }
        if n <= 7 {
            let key = Slot7 { key: key7(p), hit: Hit::default() };
            let s = &self.t7[probe(&self.t7, &key, |s| s.key == key.key)];
            return (!s.empty()).then_some(s.hit);
        }
        if n <= SHORT {
            let key = Slot16 { lo: u64_at(p, 0), hi: u64_at(p, n - 8), len: n as u8, hit: Hit::default() };
            let s = &self.t16[probe(&self.t16, &key, |s| s.len == key.len && s.lo == key.lo && s.hi == key.hi)];
            return (!s.empty()).then_some(s.hit);
        }
        self.long.get(p).copied()
    }

    /// The tokens (id, byte length) of a hit.
    #[inline(always)]
    fn tokens(&self, hit: Hit) -> &[(u32, u32)] {
        &self.arena[hit.at as usize..hit.at as usize + hit.n as usize]
    }

    /// Remember the tokens of a piece not held (emptying the cache first when it is full).
    fn insert(&mut self, p: &[u8], tokens: &[(u32, u32)]) {
        if tokens.is_empty() || tokens.len() > u8::MAX as usize {
            return;
        }
        if self.len >= CAPACITY || self.arena.len() + tokens.len() > ARENA_CAPACITY {
            self.t1.fill(u32::MAX);
            self.t7.fill(Slot7::default());
            self.t16.fill(Slot16::default());
            self.long.clear();
            self.arena.clear();
            self.len = 0;
            self.held7 = 0;
            self.held16 = 0;
        }
        let hit = if let [(id, _)] = tokens {
            Hit { at: *id, n: ONE }
        } else {
            let at = self.arena.len() as u32;
            self.arena.extend_from_slice(tokens);
            Hit { at, n: tokens.len() as u8 }
        };
        let n = p.len();
        if n == 1 {
            if hit.n != ONE {
                return; // a byte is one token in byte-level BPE; anything else is not cached
            }
            self.t1[p[0] as usize] = hit.at;
        } else if n <= 7 {
            grow(&mut self.t7, self.held7);
            let key = Slot7 { key: key7(p), hit };
            let i = probe(&self.t7, &key, |s| s.key == key.key);
            self.t7[i] = key;
            self.held7 += 1;
        } else if n <= SHORT {
            grow(&mut self.t16, self.held16);
            let key = Slot16 { lo: u64_at(p, 0), hi: u64_at(p, n - 8), len: n as u8, hit };
            let i = probe(&self.t16, &key, |s| s.len == key.len && s.lo == key.lo && s.hi == key.hi);
            self.t16[i] = key;
            self.held16 += 1;
        } else {
            self.long.insert(p.into(), hit);
        }
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

    /// Ids of `text` and the boundaries of its tokens (`n + 1` of them: token `t` is
    /// `starts[t]..starts[t + 1]`, the tokens tile the text); false when the row must take the
    /// exact uncached path (the outputs are then unspecified). `ids` and `starts` must be empty.
    pub(crate) fn encode(
        &self,
        fast: &FastBpe,
        token_len: &[u32],
        text: &str,
        ids: &mut Vec<u32>,
        starts: &mut Vec<u32>,
    ) -> bool {
        debug_assert!(ids.is_empty() && starts.is_empty());
        // Every token has at least one byte (added tokens are non-empty, a piece's tokens are
        // checked to be), so a text has at most `text.len()` of them: the tokens are written
        // into spare capacity reserved once, without a capacity check and a length update per
        // push (the indexing below still checks bounds).
        ids.reserve(text.len());
        starts.reserve(text.len() + 1);
        let out = Out {
            ids: &mut ids.spare_capacity_mut()[..text.len()],
            starts: &mut starts.spare_capacity_mut()[..text.len() + 1],
            n: 0,
        };
        let Some(n) = self.fill(fast, token_len, text, out) else {
            return false;
        };
        // SAFETY: `fill` wrote slots `0..n` of `ids` and `0..=n` of `starts` (`Out::push` and
        // `Out::finish`).
        unsafe {
            ids.set_len(n);
            starts.set_len(n + 1);
        }
        true
    }

    /// [`PieceCache::encode`] into `out`: the number of tokens, or None for the uncached path.
    #[inline(always)]
    fn fill(&self, fast: &FastBpe, token_len: &[u32], text: &str, mut out: Out<'_>) -> Option<usize> {
        let mut cache = self.cache.get_or_default().borrow_mut();
        let cache: &mut Local = &mut cache;
        let mut fresh: Vec<(u32, u32)> = Vec::new();
        let mut gap = |from: usize, to: usize, out: &mut Out<'_>| -> Option<()> {
            let g = &text[from..to];
            if self.nfc && !is_nfc_fast(g) {
                return None;
            }
            let base = g.as_ptr() as usize;
            for piece in Pieces::new(g, self.pattern) {
                let mut pos = (from + (piece.as_ptr() as usize - base)) as u32;
                match cache.get(piece) {
                    Some(Hit { at: id, n: ONE }) => out.push(id, pos),
                    Some(hit) => {
                        for &(id, l) in cache.tokens(hit) {
                            out.push(id, pos);
                            pos += l;
                        }
                    }
                    None => {
                        // SAFETY of the cut: pieces are made of whole characters of `g`.
                        let s = std::str::from_utf8(piece).ok()?;
                        if Pieces::new(s, self.pattern).nth(1).is_some()
                            || (self.nfc && !s.is_ascii() && is_nfc_quick(s.chars()) != IsNormalized::Yes)
                        {
                            return None;
                        }
                        // Each token's byte length (at least one); they must add up to the piece.
                        fresh.clear();
                        let mut total = 0u64;
                        for id in fast.encode(s) {
                            let l = match token_len.get(id as usize) {
                                Some(&l) if l != u32::MAX && l != 0 => l,
                                _ => return None,
                            };
                            total += l as u64;
                            fresh.push((id, l));
                        }
                        if total != piece.len() as u64 {
                            return None;
                        }
                        if piece.len() < MAX_CACHED {
                            cache.insert(piece, &fresh);
                        }
                        for &(id, l) in &fresh {
                            out.push(id, pos);
                            pos += l;
                        }
                    }
                }
            }
            Some(())
        };
        let mut pos = 0;
        if let Some((ac, added_ids)) = &self.added {
            for m in ac.find_iter(text) {
                gap(pos, m.start(), &mut out)?;
                out.push(added_ids[m.pattern().as_usize()], m.start() as u32);
                pos = m.end();
            }
        }
        gap(pos, text.len(), &mut out)?;
        Some(out.finish(text.len() as u32))
    }
}

/// Where [`PieceCache::encode`] writes: `ids` and `starts`' spare capacity, `n` tokens written.
struct Out<'a> {
    ids: &'a mut [MaybeUninit<u32>],
    starts: &'a mut [MaybeUninit<u32>],
    n: usize,
}

impl Out<'_> {
    #[inline(always)]
    fn push(&mut self, id: u32, start: u32) {
        self.ids[self.n].write(id);
        self.starts[self.n].write(start);
        self.n += 1;
    }

    /// Write the end boundary; the number of tokens.
    #[inline(always)]
    fn finish(self, end: u32) -> usize {
        self.starts[self.n].write(end);
        self.n
    }
}
