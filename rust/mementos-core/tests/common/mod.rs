//! The property tests' shared generator: traces made of `mementos_core::testing::PIECES` and
//! arbitrary short strings.

use mementos_core::testing::PIECES;
use proptest::prelude::*;

/// A trace of up to `max_pieces - 1` pieces.
pub fn trace(max_pieces: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![prop::sample::select(PIECES).prop_map(String::from), ".{0,6}"], 0..max_pieces)
        .prop_map(|v| v.concat())
}
