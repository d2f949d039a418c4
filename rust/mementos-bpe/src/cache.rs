//! Piece -> token count tables for pieces of 2 to 16 bytes (nearly every piece of natural text
//! and code), keyed inline: no allocation per entry and no byte comparison loop.
//!
//! Pieces of 2 to 7 bytes live in one `u64` each: their bytes (little-endian), the length in bits
//! 56-58 and the count in bits 59-61 (a count never exceeds the length). Pieces of 8 to 16 bytes are
//! keyed by their first and last 8 bytes (overlapping loads: given the length, the bytes are
//! recovered exactly) plus the length. Both are open-addressing tables with linear probing over a
//! power of two slots, at most half full; a table that reaches its entry limit is emptied (bounded
//! memory, the allocation is kept). Used twice: a read-only table of every vocabulary entry shared
//! by all threads, built at load time, and a per-thread cache of the other pieces seen.

/// Longest piece kept here (longer ones go to a general map).
pub const MAX_SHORT: usize = 16;

const MUL: u64 = 0x9E37_79B9_7F4A_7C15;

#[inline(always)]
fn u64_at(p: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(p[i..i + 8].try_into().unwrap())
}

#[inline(always)]
fn u32_at(p: &[u8], i: usize) -> u64 {
    u32::from_le_bytes(p[i..i + 4].try_into().unwrap()) as u64
}

/// A piece of 2..=7 bytes as its little-endian bytes with the length in bits 56-58 (never 0;
/// no copy through memory: overlapping loads). Also keys mementos-export's piece cache.
#[inline(always)]
pub fn key7(p: &[u8]) -> u64 {
    let n = p.len();
    let bytes = if n >= 4 {
        // Overlapping loads: the shared bytes are the same, so OR gives the exact value.
        u32_at(p, 0) | (u32_at(p, n - 4) << (8 * (n - 4)))
    } else {
        let two = u16::from_le_bytes([p[0], p[1]]) as u64;
        if n == 3 {
            two | (p[2] as u64) << 16
        } else {
            two
        }
    };
    bytes | (n as u64) << 56
}

const KEY7_MASK: u64 = (1 << 59) - 1;

#[derive(Clone, Copy, Default)]
struct Entry16 {
    lo: u64,
    hi: u64,
    /// Piece length (0: empty slot) and count << 8.
    meta: u32,
}

/// Open addressing bookkeeping shared by both tables.
#[derive(Clone, Copy)]
struct Room {
    len: usize,
    max_len: usize,
}

pub struct PieceTable {
    t7: Vec<u64>,
    t16: Vec<Entry16>,
    room7: Room,
    room16: Room,
}

#[inline(always)]
fn slot_of(h: u64, size: usize) -> usize {
    (h >> (64 - size.trailing_zeros())) as usize
}

impl PieceTable {
    /// A growing table holding at most `max_len` pieces of each kind.
    pub fn new(max_len: usize) -> PieceTable {
        PieceTable {
            t7: vec![0; 1 << 10],
            t16: vec![Entry16::default(); 1 << 8],
            room7: Room { len: 0, max_len },
            room16: Room { len: 0, max_len },
        }
    }

    /// A table sized for `n7` pieces of 2..=7 bytes and `n16` of 8..=16 without growing.
    pub fn with_room_for(n7: usize, n16: usize) -> PieceTable {
        PieceTable {
            t7: vec![0; (2 * n7 + 2).next_power_of_two()],
            t16: vec![Entry16::default(); (2 * n16 + 2).next_power_of_two()],
            room7: Room { len: 0, max_len: n7.max(1) },
            room16: Room { len: 0, max_len: n16.max(1) },
        }
    }

    #[inline(always)]
    fn slot7(&self, key: u64) -> usize {
        let mask = self.t7.len() - 1;
        let mut i = slot_of(key.wrapping_mul(MUL), self.t7.len());
        loop {
            let e = self.t7[i];
            if e == 0 || e & KEY7_MASK == key {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline(always)]
    fn slot16(&self, lo: u64, hi: u64, n: u32) -> usize {
        let mask = self.t16.len() - 1;
        let h = (lo ^ (n as u64)).wrapping_mul(MUL) ^ hi.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
        let mut i = slot_of(h ^ (h >> 32), self.t16.len());
        loop {
            let e = &self.t16[i];
            if e.meta == 0 || (e.meta & 0xFF == n && e.lo == lo && e.hi == hi) {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// The count of a piece of 2..=16 bytes, if held.
    #[inline(always)]
    pub fn get(&self, p: &[u8]) -> Option<u32> {
        debug_assert!((2..=MAX_SHORT).contains(&p.len()));
        if p.len() < 8 {
            let e = self.t7[self.slot7(key7(p))];
            if e == 0 {
                None
            } else {
                Some((e >> 59) as u32)
            }
        } else {
            let (lo, hi, n) = (u64_at(p, 0), u64_at(p, p.len() - 8), p.len() as u32);
            let e = &self.t16[self.slot16(lo, hi, n)];
            if e.meta == 0 {
                None
            } else {
                Some(e.meta >> 8)
            }
        }
    }

    /// Every entry, sorted (for comparing tables in tests).
    #[cfg(test)]
    pub fn entries(&self) -> (Vec<u64>, Vec<(u64, u64, u32)>) {
        let mut a: Vec<u64> = self.t7.iter().copied().filter(|&e| e != 0).collect();
        let mut b: Vec<(u64, u64, u32)> =
            self.t16.iter().filter(|e| e.meta != 0).map(|e| (e.lo, e.hi, e.meta)).collect();
        a.sort_unstable();
        b.sort_unstable();
        (a, b)
    }

    /// Remember the count of a piece of 2..=16 bytes that is not held yet.
    pub fn insert(&mut self, p: &[u8], count: u32) {
        debug_assert!((2..=MAX_SHORT).contains(&p.len()) && count as usize <= p.len());
        if p.len() < 8 {
            if self.room7.len >= self.room7.max_len {
                self.t7.fill(0);
                self.room7.len = 0;
            }
            if 2 * (self.room7.len + 1) > self.t7.len() {
                let bigger = vec![0; 2 * self.t7.len()];
                let old = std::mem::replace(&mut self.t7, bigger);
                for e in old.into_iter().filter(|&e| e != 0) {
                    let i = self.slot7(e & KEY7_MASK);
                    self.t7[i] = e;
                }
            }
            let key = key7(p);
            let i = self.slot7(key);
            self.t7[i] = key | (count as u64) << 59;
            self.room7.len += 1;
        } else {
            if self.room16.len >= self.room16.max_len {
                self.t16.fill(Entry16::default());
                self.room16.len = 0;
            }
            if 2 * (self.room16.len + 1) > self.t16.len() {
                let bigger = vec![Entry16::default(); 2 * self.t16.len()];
                let old = std::mem::replace(&mut self.t16, bigger);
                for e in old.into_iter().filter(|e| e.meta != 0) {
                    let i = self.slot16(e.lo, e.hi, e.meta & 0xFF);
                    self.t16[i] = e;
                }
            }
            let (lo, hi, n) = (u64_at(p, 0), u64_at(p, p.len() - 8), p.len() as u32);
            let i = self.slot16(lo, hi, n);
            self.t16[i] = Entry16 { lo, hi, meta: n | count << 8 };
            self.room16.len += 1;
        }
    }
}

/// Merge table: pair of ids -> (rank, new id), one probe of 16 bytes per lookup (key and value
/// side by side; open addressing with linear probing, at most 60% full).
pub struct MergeTable {
    slots: Vec<(u64, u32, u32)>,
    len: usize,
}

const EMPTY_PAIR: u64 = u64::MAX;

#[inline(always)]
fn pair_key(a: u32, b: u32) -> u64 {
    ((a as u64) << 32) | b as u64
}

impl MergeTable {
    /// An empty table with room for `n` pairs before it grows.
    pub fn with_capacity(n: usize) -> MergeTable {
        let size = (n * 5 / 3 + 2).next_power_of_two();
        MergeTable { slots: vec![(EMPTY_PAIR, 0, 0); size], len: 0 }
    }

    /// The table of `merges` (pair key `a << 32 | b` -> (rank, new id)).
    #[cfg(test)]
    pub fn new(merges: &rustc_hash::FxHashMap<u64, (u32, u32)>) -> MergeTable {
        let mut t = MergeTable::with_capacity(merges.len());
        for (&k, &(rank, new)) in merges {
            t.insert((k >> 32) as u32, k as u32, rank, new);
        }
        t
    }

    /// Set the merge of `a` and `b` (a pair already present is overwritten: a later duplicate
    /// merge keeps its later rank, as in HF's map).
    pub fn insert(&mut self, a: u32, b: u32, rank: u32, new: u32) {
        let k = pair_key(a, b);
        debug_assert_ne!(k, EMPTY_PAIR);
        let mut i = self.slot(k);
        if self.slots[i].0 == EMPTY_PAIR {
            if 5 * (self.len + 1) > 3 * self.slots.len() {
                let bigger = vec![(EMPTY_PAIR, 0, 0); 2 * self.slots.len()];
                let old = std::mem::replace(&mut self.slots, bigger);
                for s in old.into_iter().filter(|s| s.0 != EMPTY_PAIR) {
                    let j = self.slot(s.0);
                    self.slots[j] = s;
                }
                i = self.slot(k);
            }
            self.len += 1;
        }
        self.slots[i] = (k, rank, new);
    }

    #[inline(always)]
    fn slot(&self, k: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut i = slot_of(k.wrapping_mul(MUL), self.slots.len());
        loop {
            let s = self.slots[i].0;
            if s == k || s == EMPTY_PAIR {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// Every (pair key, rank, new id), sorted (for comparing tables in tests).
    #[cfg(test)]
    pub fn entries(&self) -> Vec<(u64, u32, u32)> {
        let mut v: Vec<_> = self.slots.iter().copied().filter(|s| s.0 != EMPTY_PAIR).collect();
        v.sort_unstable();
        v
    }

    /// (rank, new id) of merging `a` and `b`, or (`u32::MAX`, `u32::MAX`) when they do not merge.
    #[inline(always)]
    pub fn get(&self, a: u32, b: u32) -> (u32, u32) {
        let k = pair_key(a, b);
        let s = self.slots[self.slot(k)];
        if s.0 == k {
            (s.1, s.2)
        } else {
            (u32::MAX, u32::MAX)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn pieces(seed: u64, count: usize) -> Vec<Vec<u8>> {
        // Pieces of every length over a small alphabet: many share prefixes and suffixes.
        let alphabet = [b'a', b'b', 0xC3, 0xFF];
        let mut x = seed;
        (0..count)
            .map(|k| {
                let n = 2 + k % (MAX_SHORT - 1);
                (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        alphabet[(x % 4) as usize]
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn table_is_a_map_of_pieces() {
        let mut want: HashMap<Vec<u8>, u32> = HashMap::new();
        let mut t = PieceTable::new(1 << 20);
        for p in pieces(0x9E37_79B9_7F4A_7C15, 60_000) {
            let count = (p.iter().map(|&b| b as u32).sum::<u32>() % p.len() as u32) + 1;
            match want.get(&p) {
                Some(&c) => assert_eq!(t.get(&p), Some(c), "{p:?}"),
                None => {
                    assert_eq!(t.get(&p), None, "{p:?}");
                    t.insert(&p, count);
                    want.insert(p, count);
                }
            }
        }
        for (p, c) in &want {
            assert_eq!(t.get(p), Some(*c), "{p:?}");
        }
    }

    #[test]
    fn merge_table_agrees_with_its_map() {
        let mut m = rustc_hash::FxHashMap::default();
        for i in 0..50_000u32 {
            m.insert(pair_key(i % 700, i.wrapping_mul(2_654_435_761) % 90_000), (i, i + 7));
        }
        let t = MergeTable::new(&m);
        for a in 0..700u32 {
            for b in (0..90_000u32).step_by(97) {
                let want = m.get(&pair_key(a, b)).copied().unwrap_or((u32::MAX, u32::MAX));
                assert_eq!(t.get(a, b), want);
            }
        }
        for (&k, &v) in &m {
            assert_eq!(t.get((k >> 32) as u32, k as u32), v);
        }
    }

    #[test]
    fn table_empties_at_its_limit() {
        let mut t = PieceTable::new(100);
        let piece = |i: u32| format!("w{i:06}").into_bytes(); // 7 bytes
        for i in 0..100 {
            t.insert(&piece(i), 1);
        }
        assert_eq!(t.get(&piece(99)), Some(1));
        t.insert(&piece(100), 2);
        assert_eq!(t.get(&piece(100)), Some(2));
        assert_eq!(t.get(&piece(0)), None);
        assert_eq!(t.room7.len, 1);
    }
}
