//! `mementos-core`: the pure-Rust engine of `mementos_fast`.
//!
//! It finds the six MEMENTO delimiters in one linear `memchr` pass per row, derives from that
//! pass the fields the seed tutorial computes (byte-identical to its regexes, well-formed input or
//! not), a lossless segmentation of the row and a structural status, and assembles the results
//! as Arrow arrays whose text columns are views into the input's buffers (no text is copied).
//!
//! Nothing here knows about Python: the binding crate `mementos-py` is a thin layer on top.

pub mod align;
pub mod batch;
pub mod compact;
pub mod error;
pub mod ops;
pub mod output;
pub mod par;
pub mod parse;
pub mod rows;
pub mod scan;
pub mod status;
#[doc(hidden)]
pub mod testing;
pub mod text;

pub use batch::{count_byte, output_schema, parse_array, parse_arrays, ParseOptions};
pub use error::CoreError;
pub use parse::{parse_row, Parsed, Span, SpanKind};
pub use rows::{column_rows, rows_of, Rows};
pub use scan::{scan, Delim, Token};
pub use status::Status;
