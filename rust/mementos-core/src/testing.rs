//! Test inputs shared by the unit tests and the property tests (`tests/*.rs`), so there is one
//! list of the pieces random traces are made of and one generator. Not part of the API.

/// What random traces are made of: every delimiter, prefixes of them and near-misses, the
/// whitespace Python treats specially (non-ASCII spaces, `\x1c`, `\u{85}`), multi-byte text.
pub const PIECES: &[&str] = &[
    "<think>",
    "</think>",
    "<|block_start|>",
    "<|block_end|>",
    "<|summary_start|>",
    "<|summary_end|>",
    "<",
    "<|",
    "<|block_",
    "<thi",
    "</think",
    "<|summary",
    "|>",
    " ",
    "\n",
    "\t",
    "\u{a0}",
    "\u{3000}",
    "\u{2028}",
    "\u{85}",
    "\u{1c}",
    "x",
    "word",
    "π≤θ",
    "🎉",
    "[Missing summary]",
    "\u{200b}",
];

/// xorshift64: deterministic pseudo-random numbers without a dependency.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Up to `max_pieces - 1` pieces drawn from `pieces`, joined.
    pub fn text(&mut self, pieces: &[&str], max_pieces: usize) -> String {
        let n = self.below(max_pieces);
        (0..n).map(|_| pieces[self.below(pieces.len())]).collect()
    }
}
