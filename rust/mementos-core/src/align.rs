//! Alignment of the `full` config's fields with `response`.
//!
//! A `full` row carries `sentences` (list of str), `blocks` (list of inclusive `[first, last]`
//! sentence indices) and `block_summaries` (list of str) beside `response`. Per row this checks,
//! in this order (the first failure names the row's status):
//!
//! 1. `null_field`: a field is null;
//! 2. `bad_range`: a block is not a pair `[a, b]` with `0 <= a <= b < len(sentences)`;
//! 3. `not_contiguous`: block i does not start right after block i - 1 (or block 0 at 0);
//! 4. `not_covering`: the blocks do not reach the last sentence;
//! 5. `field_count_mismatch`: `len(blocks)`, `len(block_summaries)` and the response's blocks
//!    and summaries (the tutorial's parse) do not all agree (not parse's `count_mismatch`, which
//!    compares the response's blocks with its own summaries);
//! 6. `summary_mismatch`: `block_summaries[i].strip()` differs from the i-th response summary;
//! 7. `block_text_differs`: a response block differs from its sentences even after normalising
//!    whitespace (sentences are stripped and single newlines became spaces in the pipeline, so
//!    whitespace-only differences are not problems).
//!
//! Each compared block is `exact` (equal to its sentences joined by one space), `whitespace`
//! (equal once every whitespace run is one space and the ends are stripped: the same
//! `str.split()` words) or `different`, with a similarity: the Dice coefficient of the two word
//! multisets (1.0 for the same words in any order). Everything is linear in the row's size.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float32Type, Float64Type, Int32Type, Int64Type};
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, Schema};

use crate::compact::TutorialItems;
use crate::error::CoreError;
use crate::output::{self, dictionary_type, list_type, Column, PerRow};
use crate::par::{map_chunks, Work};
use crate::rows::{rows_of, Rows};
use crate::scan::{scan_into, Token};
use crate::text::{space_len_at, strip_range};

/// Row status of the alignment, in the order of the checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AlignStatus {
    Ok = 0,
    NullField,
    BadRange,
    NotContiguous,
    NotCovering,
    FieldCountMismatch,
    SummaryMismatch,
    BlockTextDiffers,
}

impl AlignStatus {
    pub const ALL: [AlignStatus; 8] = [
        AlignStatus::Ok,
        AlignStatus::NullField,
        AlignStatus::BadRange,
        AlignStatus::NotContiguous,
        AlignStatus::NotCovering,
        AlignStatus::FieldCountMismatch,
        AlignStatus::SummaryMismatch,
        AlignStatus::BlockTextDiffers,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            AlignStatus::Ok => "ok",
            AlignStatus::NullField => "null_field",
            AlignStatus::BadRange => "bad_range",
            AlignStatus::NotContiguous => "not_contiguous",
            AlignStatus::NotCovering => "not_covering",
            AlignStatus::FieldCountMismatch => "field_count_mismatch",
            AlignStatus::SummaryMismatch => "summary_mismatch",
            AlignStatus::BlockTextDiffers => "block_text_differs",
        }
    }

    /// What the status means (`mementos_fast.ALIGN_STATUSES`).
    pub const fn description(self) -> &'static str {
        match self {
            AlignStatus::Ok => "every check passed",
            AlignStatus::NullField => "sentences, blocks or block_summaries is null",
            AlignStatus::BadRange => "a block is not [a, b] with 0 <= a <= b < len(sentences)",
            AlignStatus::NotContiguous => "a block does not start right after the previous one (block 0 at sentence 0)",
            AlignStatus::NotCovering => "the blocks do not reach the last sentence",
            AlignStatus::FieldCountMismatch => {
                "len(blocks), len(block_summaries) and the response's blocks and summaries differ"
            }
            AlignStatus::SummaryMismatch => "block_summaries[i].strip() differs from the i-th response summary",
            AlignStatus::BlockTextDiffers => {
                "a response block differs from its sentences even after normalising whitespace"
            }
        }
    }
}

/// How a response block compares with its sentences.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockMatch {
    Exact = 0,
    Whitespace,
    Different,
}

impl BlockMatch {
    pub const ALL: [BlockMatch; 3] = [BlockMatch::Exact, BlockMatch::Whitespace, BlockMatch::Different];

    pub const fn name(self) -> &'static str {
        match self {
            BlockMatch::Exact => "exact",
            BlockMatch::Whitespace => "whitespace",
            BlockMatch::Different => "different",
        }
    }
}

/// The offsets, validity and values of a `List` / `LargeList` / `FixedSizeList` array.
struct ListParts {
    offsets: Vec<usize>,
    nulls: Option<NullBuffer>,
    values: ArrayRef,
}

impl ListParts {
    fn of(a: &dyn Array, what: &str) -> Result<ListParts, CoreError> {
        let (offsets, values): (Vec<usize>, ArrayRef) = if let Some(l) = a.as_list_opt::<i32>() {
            (l.value_offsets().iter().map(|&o| o as usize).collect(), l.values().clone())
        } else if let Some(l) = a.as_list_opt::<i64>() {
            (l.value_offsets().iter().map(|&o| o as usize).collect(), l.values().clone())
        } else if let Some(l) = a.as_fixed_size_list_opt() {
            let n = l.value_length() as usize;
            ((0..=l.len()).map(|i| i * n).collect(), l.values().slice(l.offset() * n, l.len() * n))
        } else {
            return Err(CoreError::InvalidArgument(format!("{what}: expected a list array, got {}", a.data_type())));
        };
        Ok(ListParts { offsets, nulls: a.logical_nulls(), values })
    }

    #[inline]
    fn range(&self, i: usize) -> Range<usize> {
        self.offsets[i]..self.offsets[i + 1]
    }

    #[inline]
    fn is_valid(&self, i: usize) -> bool {
        self.nulls.as_ref().is_none_or(|n| n.is_valid(i))
    }
}

/// Integer values of a block-index array as i64.
fn ints(a: &ArrayRef) -> Result<Vec<Option<i64>>, CoreError> {
    if let Some(p) = a.as_primitive_opt::<Int64Type>() {
        Ok(p.iter().collect())
    } else if let Some(p) = a.as_primitive_opt::<Int32Type>() {
        Ok(p.iter().map(|v| v.map(i64::from)).collect())
    } else {
        Err(CoreError::InvalidArgument(format!("blocks: expected integer sentence indices, got {}", a.data_type())))
    }
}

/// Python `str.split()` words of `b`.
fn words(b: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            let n = space_len_at(b, i);
            if n == 0 {
                break;
            }
            i += n;
        }
        if i >= b.len() {
            return None;
        }
        let start = i;
        while i < b.len() && space_len_at(b, i) == 0 {
            i += 1;
        }
        Some(&b[start..i])
    })
}

/// Per-row result.
#[derive(Clone, Debug, Default)]
struct RowAlign {
    status: u8,
    problem_block: Option<i32>,
    n_sentences: i32,
    n_blocks: i32,
    n_block_summaries: i32,
    n_response_blocks: i32,
    n_response_summaries: i32,
    matches: Vec<u8>,
    similarity: Vec<f32>,
    summaries_equal: i32,
}

impl RowAlign {
    /// Blocks that compare as `m`.
    fn count(&self, m: BlockMatch) -> i32 {
        self.matches.iter().filter(|&&x| x == m as u8).count() as i32
    }
}

struct Inputs<'a> {
    response: Box<dyn Rows + 'a>,
    sentences: ListParts,
    sentence_rows: Box<dyn Rows + 'a>,
    blocks: ListParts,
    pairs: ListParts,
    pair_values: Vec<Option<i64>>,
    summaries: ListParts,
    summary_rows: Box<dyn Rows + 'a>,
}

fn align_row(
    inp: &Inputs<'_>,
    i: usize,
    tokens: &mut Vec<Token>,
    items: &mut TutorialItems,
    bag: &mut HashMap<Vec<u8>, i32>,
) -> Option<RowAlign> {
    let mut r = RowAlign::default();
    let all_valid =
        inp.response.is_valid(i) && inp.sentences.is_valid(i) && inp.blocks.is_valid(i) && inp.summaries.is_valid(i);
    let flag = |r: &mut RowAlign, s: AlignStatus, block: Option<usize>| {
        if r.status == 0 {
            r.status = s as u8;
            r.problem_block = block.map(|b| b as i32);
        }
    };
    if !all_valid {
        if !inp.response.is_valid(i) {
            return None;
        }
        flag(&mut r, AlignStatus::NullField, None);
        return Some(r);
    }
    let sent = inp.sentences.range(i);
    let n_sent = sent.len();
    let blocks = inp.blocks.range(i);
    let summaries = inp.summaries.range(i);
    r.n_sentences = n_sent as i32;
    r.n_blocks = blocks.len() as i32;
    r.n_block_summaries = summaries.len() as i32;

    // 2-4: ranges.
    let mut ranges: Vec<Option<(usize, usize)>> = Vec::with_capacity(blocks.len());
    let mut expect = 0usize;
    for (bi, b) in blocks.enumerate() {
        let pr = inp.pairs.range(b);
        let pair = if pr.len() == 2 && inp.pairs.is_valid(b) {
            (inp.pair_values[pr.start], inp.pair_values[pr.start + 1])
        } else {
            (None, None)
        };
        match pair {
            (Some(a), Some(z)) if 0 <= a && a <= z && (z as usize) < n_sent => {
                let (a, z) = (a as usize, z as usize);
                if a != expect {
                    flag(&mut r, AlignStatus::NotContiguous, Some(bi));
                }
                expect = z + 1;
                ranges.push(Some((a, z)));
            }
            _ => {
                flag(&mut r, AlignStatus::BadRange, Some(bi));
                ranges.push(None);
            }
        }
    }
    if expect != n_sent {
        flag(&mut r, AlignStatus::NotCovering, None);
    }

    // 5: counts against the response.
    let text = inp.response.bytes(i);
    scan_into(text, tokens);
    items.fill_stripped(text, tokens);
    r.n_response_blocks = items.blocks.len() as i32;
    r.n_response_summaries = items.summaries.len() as i32;
    if !(r.n_blocks == r.n_block_summaries && r.n_blocks == r.n_response_blocks && r.n_blocks == r.n_response_summaries)
    {
        flag(&mut r, AlignStatus::FieldCountMismatch, None);
    }

    // 6: summaries.
    for (k, si) in summaries.enumerate() {
        let Some(resp) = items.summaries.get(k) else { break };
        let s = if inp.summary_rows.is_valid(si) { inp.summary_rows.bytes(si) } else { b"" };
        if s[strip_range(s, 0..s.len())] == text[resp.clone()] {
            r.summaries_equal += 1;
        } else {
            flag(&mut r, AlignStatus::SummaryMismatch, Some(k));
        }
    }

    // 7: block texts.
    for (k, range) in ranges.iter().enumerate() {
        let (Some((a, z)), Some(resp)) = (range, items.blocks.get(k)) else { continue };
        let block = &text[resp.clone()];
        let sentence = |j: usize| -> &[u8] {
            let row = sent.start + j;
            if inp.sentence_rows.is_valid(row) {
                inp.sentence_rows.bytes(row)
            } else {
                b""
            }
        };
        // Exact: block == " ".join(sentences[a..=z]).
        let joined_len: usize = (*a..=*z).map(|j| sentence(j).len()).sum::<usize>() + (z - a);
        let exact = joined_len == block.len() && {
            let mut pos = 0;
            (*a..=*z).all(|j| {
                let s = sentence(j);
                let ok = (j == *a || block[pos] == b' ') && {
                    pos += (j != *a) as usize;
                    &block[pos..pos + s.len()] == s
                };
                pos += s.len();
                ok
            })
        };
        let (m, sim) = if exact {
            (BlockMatch::Exact, 1.0)
        } else {
            let mut bw = words(block);
            let same_words = {
                let mut sw = (*a..=*z).flat_map(|j| words(sentence(j)));
                loop {
                    match (bw.next(), sw.next()) {
                        (None, None) => break true,
                        (Some(x), Some(y)) if x == y => continue,
                        _ => break false,
                    }
                }
            };
            if same_words {
                (BlockMatch::Whitespace, 1.0)
            } else {
                bag.clear();
                let mut nb = 0i64;
                for w in words(block) {
                    *bag.entry(w.to_vec()).or_insert(0) += 1;
                    nb += 1;
                }
                let (mut ns, mut common) = (0i64, 0i64);
                for j in *a..=*z {
                    for w in words(sentence(j)) {
                        ns += 1;
                        if let Some(c) = bag.get_mut(w) {
                            if *c > 0 {
                                *c -= 1;
                                common += 1;
                            }
                        }
                    }
                }
                let sim = if nb + ns == 0 { 1.0 } else { 2.0 * common as f32 / (nb + ns) as f32 };
                flag(&mut r, AlignStatus::BlockTextDiffers, Some(k));
                (BlockMatch::Different, sim)
            }
        };
        r.matches.push(m as u8);
        r.similarity.push(sim);
    }
    Some(r)
}

/// Every output column of [`align_full`], in order.
const OUTPUT: [Column<PerRow<RowAlign>>; 14] = [
    Column::new("status", dictionary_type, |r| r.names(|a| a.status as i8, &AlignStatus::ALL.map(AlignStatus::name))),
    Column::new("problem_block", || DataType::Int32, |r| r.options::<Int32Type>(|a| a.problem_block)),
    Column::new("n_sentences", || DataType::Int32, |r| r.values::<Int32Type>(|a| a.n_sentences)),
    Column::new("n_blocks", || DataType::Int32, |r| r.values::<Int32Type>(|a| a.n_blocks)),
    Column::new("n_block_summaries", || DataType::Int32, |r| r.values::<Int32Type>(|a| a.n_block_summaries)),
    Column::new("n_response_blocks", || DataType::Int32, |r| r.values::<Int32Type>(|a| a.n_response_blocks)),
    Column::new("n_response_summaries", || DataType::Int32, |r| r.values::<Int32Type>(|a| a.n_response_summaries)),
    Column::new("blocks_exact", || DataType::Int32, |r| r.values::<Int32Type>(|a| a.count(BlockMatch::Exact))),
    Column::new(
        "blocks_whitespace",
        || DataType::Int32,
        |r| r.values::<Int32Type>(|a| a.count(BlockMatch::Whitespace)),
    ),
    Column::new("blocks_different", || DataType::Int32, |r| r.values::<Int32Type>(|a| a.count(BlockMatch::Different))),
    Column::new("summaries_equal", || DataType::Int32, |r| r.values::<Int32Type>(|a| a.summaries_equal)),
    Column::new(
        "min_similarity",
        || DataType::Float64,
        |r| r.options::<Float64Type>(|a| a.similarity.iter().copied().reduce(f32::min).map(f64::from)),
    ),
    Column::new("block_match", || list_type(DataType::Utf8, false), block_match),
    Column::new(
        "block_similarity",
        || list_type(DataType::Float32, false),
        |r| r.list_of::<Float32Type>(|a| &a.similarity),
    ),
];

fn block_match(r: &mut PerRow<RowAlign>) -> ArrayRef {
    let matches = r.rows.iter().flatten().flat_map(|a| &a.matches);
    let names = StringArray::from(matches.map(|&m| BlockMatch::ALL[m as usize].name()).collect::<Vec<_>>());
    r.list(Arc::new(names), r.rows.iter().map(|a| a.as_ref().map_or(0, |a| a.matches.len())))
}

/// Output schema of [`align_full`].
pub fn align_schema() -> Schema {
    output::schema(&OUTPUT, false)
}

/// Align every `full` row. Arrays: `response` (strings), `sentences` (list of strings),
/// `blocks` (list of `[a, b]` integer lists), `block_summaries` (list of strings), all of one
/// length. A null response gives a null row; another null field gives `null_field`.
pub fn align_full(
    response: &dyn Array,
    sentences: &dyn Array,
    blocks: &dyn Array,
    block_summaries: &dyn Array,
    threads: Option<usize>,
) -> Result<RecordBatch, CoreError> {
    let n = response.len();
    for (name, a) in [("sentences", sentences), ("blocks", blocks), ("block_summaries", block_summaries)] {
        if a.len() != n {
            return Err(CoreError::InvalidArgument(format!("{name} has {} rows, response has {n}", a.len())));
        }
    }
    let sentences = ListParts::of(sentences, "sentences")?;
    let blocks_parts = ListParts::of(blocks, "blocks")?;
    let pairs = ListParts::of(blocks_parts.values.as_ref(), "blocks (inner)")?;
    let pair_values = ints(&pairs.values)?;
    let summaries = ListParts::of(block_summaries, "block_summaries")?;
    let sent_values = sentences.values.clone();
    let sum_values = summaries.values.clone();
    let inp = Inputs {
        response: rows_of(response)?,
        sentence_rows: rows_of(sent_values.as_ref())?,
        summary_rows: rows_of(sum_values.as_ref())?,
        sentences,
        blocks: blocks_parts,
        pairs,
        pair_values,
        summaries,
    };
    let inp_ref = &inp;
    let parts = map_chunks(inp.response.as_ref(), threads, Work::Scan, |range| {
        let mut tokens = Vec::new();
        let mut items = TutorialItems::default();
        let mut bag = HashMap::new();
        range.map(|i| align_row(inp_ref, i, &mut tokens, &mut items, &mut bag)).collect::<Vec<_>>()
    })?;
    let mut rows = PerRow::new(parts.into_iter().flatten().collect());
    Ok(output::record_batch(&OUTPUT, false, &mut rows, HashMap::new())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{Int64Builder, ListBuilder, StringBuilder};

    fn row(sents: &[&str], blocks: &[(i64, i64)], sums: &[&str], response: &str) -> Vec<ArrayRef> {
        let mut sb = ListBuilder::new(StringBuilder::new());
        for s in sents {
            sb.values().append_value(s);
        }
        sb.append(true);
        let mut bb = ListBuilder::new(ListBuilder::new(Int64Builder::new()));
        for &(a, z) in blocks {
            bb.values().values().append_value(a);
            bb.values().values().append_value(z);
            bb.values().append(true);
        }
        bb.append(true);
        let mut mb = ListBuilder::new(StringBuilder::new());
        for s in sums {
            mb.values().append_value(s);
        }
        mb.append(true);
        vec![
            Arc::new(StringArray::from(vec![response])),
            Arc::new(sb.finish()),
            Arc::new(bb.finish()),
            Arc::new(mb.finish()),
        ]
    }

    fn status(cols: &[ArrayRef]) -> (String, Option<i32>, String) {
        let b = align_full(cols[0].as_ref(), cols[1].as_ref(), cols[2].as_ref(), cols[3].as_ref(), Some(1)).unwrap();
        let col = |name: &str| b.column_by_name(name).unwrap_or_else(|| panic!("no column {name}"));
        let status = col("status").as_dictionary::<arrow_array::types::Int8Type>();
        let s = status.values().as_string::<i32>().value(status.keys().value(0) as usize).to_string();
        let p = col("problem_block").as_primitive::<Int32Type>();
        let m = col("block_match").as_list::<i32>().value(0);
        let m: Vec<&str> = m.as_string::<i32>().iter().map(|x| x.unwrap()).collect();
        (s, if p.is_null(0) { None } else { Some(p.value(0)) }, m.join(","))
    }

    const RESP: &str = "<think>\n<|block_start|> One. Two. <|block_end|>\n<|summary_start|> s1 <|summary_end|>\n<|block_start|> Three\nfour. <|block_end|>\n<|summary_start|> s2 <|summary_end|>\n</think>\nA";

    #[test]
    fn clean_and_corrupted() {
        let sents = ["One.", "Two.", "Three four."];
        assert_eq!(
            status(&row(&sents, &[(0, 1), (2, 2)], &["s1", "s2"], RESP)),
            ("ok".into(), None, "exact,whitespace".into())
        );
        assert_eq!(status(&row(&sents, &[(0, 1), (1, 2)], &["s1", "s2"], RESP)).0, "not_contiguous");
        assert_eq!(status(&row(&sents, &[(0, 0), (2, 2)], &["s1", "s2"], RESP)).0, "not_contiguous");
        assert_eq!(status(&row(&sents, &[(0, 1), (2, 3)], &["s1", "s2"], RESP)).0, "bad_range");
        assert_eq!(status(&row(&sents, &[(1, 0), (2, 2)], &["s1", "s2"], RESP)).0, "bad_range");
        assert_eq!(status(&row(&sents, &[(0, 1)], &["s1"], RESP)).0, "not_covering");
        assert_eq!(status(&row(&sents, &[(0, 1), (2, 2)], &["s1"], RESP)).0, "field_count_mismatch");
        assert_eq!(
            status(&row(&sents, &[(0, 1), (2, 2)], &["s1", "other"], RESP)),
            ("summary_mismatch".into(), Some(1), "exact,whitespace".into())
        );
        let (s, b, m) = status(&row(&["One.", "Two.", "Five six."], &[(0, 1), (2, 2)], &["s1", "s2"], RESP));
        assert_eq!((s.as_str(), b, m.as_str()), ("block_text_differs", Some(1), "exact,different"));
    }

    #[test]
    fn words_are_python_split() {
        let w: Vec<&[u8]> = words("  a\u{3000}b\n\nc \u{a0}".as_bytes()).collect();
        assert_eq!(w, vec![b"a" as &[u8], b"b", b"c"]);
    }
}
