//! Packing tokenized rows into training sequences of at most `L` tokens.
//!
//! [`pack_ffd`]: first-fit decreasing (rows by length, longest first, each into the first
//! sequence with room), `O(n log n)` with a max segment tree over the sequences' free room.
//! [`pack_columns`] lays the rows out: each sequence holds its rows in input order, `seq_lens`
//! (row lengths), `position_ids` restarting at 0 per row, and `evict_at` shifted into the
//! sequence's coordinates ([`crate::NEVER`] stays). It copies each row's ids from its chunk and
//! materializes its other columns from the chunk's runs (module `runs`) straight into the
//! sequence: they are written once, never built per chunk and copied. A row never sees another:
//! the trainer's mask adds the document mask (`doc(q) == doc(t)`) to `t <= q < evict_at[t]`.

use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::Arc;

use arrow_array::{ArrayRef, Int32Array, Int8Array, LargeListArray, RecordBatch};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema};
use mementos_core::CoreError;

use rayon::prelude::*;

use crate::runs::{materialize, RowDest};
use crate::{list_field, put, token_fields, Part};

/// Rows grouped into sequences: `rows[offsets[s]..offsets[s + 1]]` are sequence `s`'s rows, in
/// input order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packing {
    pub rows: Vec<u32>,
    pub offsets: Vec<u32>,
    /// Tokens of each sequence.
    pub tokens: Vec<u64>,
}

impl Packing {
    pub fn sequences(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }
}

/// First-fit decreasing of `lengths` into bins of `capacity` (every length must be at most
/// `capacity`; longer ones get a sequence of their own).
pub fn pack_ffd(lengths: &[u32], capacity: u32) -> Packing {
    let n = lengths.len();
    let mut order: Vec<u32> = (0..n as u32).collect();
    // Longest first; ties in input order (a stable sort).
    order.sort_by_key(|&i| std::cmp::Reverse(lengths[i as usize]));
    // Max segment tree over the free room of bins 0..n (unopened bins have `capacity`).
    let size = n.next_power_of_two().max(1);
    let mut tree = vec![0u64; 2 * size];
    for i in 0..n {
        tree[size + i] = capacity as u64;
    }
    for i in (1..size).rev() {
        tree[i] = tree[2 * i].max(tree[2 * i + 1]);
    }
    let mut bin_of = vec![0u32; n];
    let mut used = 0usize;
    for &r in &order {
        let len = lengths[r as usize] as u64;
        let b = if tree[1] >= len {
            let mut i = 1;
            while i < size {
                i = if tree[2 * i] >= len { 2 * i } else { 2 * i + 1 };
            }
            i - size
        } else {
            // Longer than the capacity: a bin of its own (the next unopened one).
            used
        };
        let leaf = size + b;
        tree[leaf] = tree[leaf].saturating_sub(len);
        let mut i = leaf / 2;
        while i >= 1 {
            tree[i] = tree[2 * i].max(tree[2 * i + 1]);
            i /= 2;
        }
        bin_of[r as usize] = b as u32;
        used = used.max(b + 1);
    }
    // Bins are opened left to right, so bins 0..used are exactly the used ones.
    let mut counts = vec![0u32; used + 1];
    let mut tokens = vec![0u64; used];
    for (r, &b) in bin_of.iter().enumerate() {
        counts[b as usize + 1] += 1;
        tokens[b as usize] += lengths[r] as u64;
    }
    for b in 0..used {
        counts[b + 1] += counts[b];
    }
    let offsets = counts.clone();
    let mut fill = counts;
    let mut rows = vec![0u32; n];
    for (r, &b) in bin_of.iter().enumerate() {
        rows[fill[b as usize] as usize] = r as u32;
        fill[b as usize] += 1;
    }
    Packing { rows, offsets, tokens }
}

/// The packed schema: the row columns plus `position_ids`, `seq_lens` and `n_tokens` per sequence.
pub fn packed_schema() -> Schema {
    let mut fields = token_fields();
    fields.push(list_field("position_ids", DataType::Int32));
    fields.push(list_field("seq_lens", DataType::Int32));
    fields.push(Field::new("n_tokens", DataType::Int32, false));
    Schema::new(fields)
}

/// One group of consecutive sequences and its disjoint share of every output token column.
struct Dest<'a> {
    seqs: Range<usize>,
    ids: &'a mut [MaybeUninit<i32>],
    labels: &'a mut [MaybeUninit<i32>],
    segment: &'a mut [MaybeUninit<i8>],
    block: &'a mut [MaybeUninit<i32>],
    evict: &'a mut [MaybeUninit<i32>],
    pos: &'a mut [MaybeUninit<i32>],
}

/// Tokens a group of sequences aims at: enough to make a task's overhead negligible, few enough
/// that the groups balance over the threads.
const GROUP_TOKENS: u64 = 1 << 16;

/// Lay the rows of `parts` (consecutive chunks of rows, in order, described as runs:
/// [`crate::export_run_parts`]) out as the sequences of `p` (see the module documentation). Each output column is allocated once (uninitialized) and cut
/// into one slice per group of consecutive sequences; the groups are filled in parallel
/// on the current rayon pool, so the copy and its page faults do not run on one thread, except
/// with `threads == Some(1)`, which stays on the calling thread (`mementos_core::par`'s rule).
pub fn pack_columns(parts: &[Part], p: &Packing, threads: Option<usize>) -> Result<RecordBatch, CoreError> {
    pack_grouped(parts, p, threads, GROUP_TOKENS)
}

/// [`pack_columns`] with groups of at least `group_tokens` tokens (or one sequence).
pub(crate) fn pack_grouped(
    parts: &[Part],
    p: &Packing,
    threads: Option<usize>,
    group_tokens: u64,
) -> Result<RecordBatch, CoreError> {
    mementos_core::par::check_threads(threads)?;
    // Each row: (its part, its index in that part, its token range in that part).
    let mut rows: Vec<(usize, usize, Range<usize>)> =
        Vec::with_capacity(parts.iter().map(|c| c.cols.lengths.len()).sum());
    for (k, c) in parts.iter().enumerate() {
        assert_eq!(c.runs.rows(), c.cols.lengths.len(), "a part has the runs of each of its rows");
        let mut start = 0usize;
        for (j, &l) in c.cols.lengths.iter().enumerate() {
            rows.push((k, j, start..start + l as usize));
            start += l as usize;
        }
    }
    let seq_rows = |s: usize| &p.rows[p.offsets[s] as usize..p.offsets[s + 1] as usize];
    let mut seq_lens = Vec::with_capacity(p.rows.len());
    let mut seq_tokens = Vec::with_capacity(p.sequences());
    for s in 0..p.sequences() {
        let mut n = 0i32;
        for &r in seq_rows(s) {
            let l = rows[r as usize].2.len() as i32;
            seq_lens.push(l);
            n += l;
        }
        seq_tokens.push(n);
    }
    let total: usize = seq_tokens.iter().map(|&l| l as usize).sum();
    // Uninitialized capacity, not zeroed vectors: the allocator would zero them on this thread,
    // faulting every page in serially; the parallel fill writes (and faults in) each byte once.
    let mut ids: Vec<i32> = Vec::with_capacity(total);
    let mut labels: Vec<i32> = Vec::with_capacity(total);
    let mut segment: Vec<i8> = Vec::with_capacity(total);
    let mut block: Vec<i32> = Vec::with_capacity(total);
    let mut evict: Vec<i32> = Vec::with_capacity(total);
    let mut pos: Vec<i32> = Vec::with_capacity(total);
    {
        let (mut i, mut l, mut sg, mut b, mut e, mut ps) = (
            &mut ids.spare_capacity_mut()[..total],
            &mut labels.spare_capacity_mut()[..total],
            &mut segment.spare_capacity_mut()[..total],
            &mut block.spare_capacity_mut()[..total],
            &mut evict.spare_capacity_mut()[..total],
            &mut pos.spare_capacity_mut()[..total],
        );
        fn cut<'a, T>(rest: &mut &'a mut [T], n: usize) -> &'a mut [T] {
            let (head, tail) = std::mem::take(rest).split_at_mut(n);
            *rest = tail;
            head
        }
        let mut dests = Vec::new();
        let mut s0 = 0;
        while s0 < p.sequences() {
            let (mut s1, mut n) = (s0, 0usize);
            while s1 < p.sequences() && (s1 == s0 || (n as u64) < group_tokens) {
                n += seq_tokens[s1] as usize;
                s1 += 1;
            }
            dests.push(Dest {
                seqs: s0..s1,
                ids: cut(&mut i, n),
                labels: cut(&mut l, n),
                segment: cut(&mut sg, n),
                block: cut(&mut b, n),
                evict: cut(&mut e, n),
                pos: cut(&mut ps, n),
            });
            s0 = s1;
        }
        let fill = |d: Dest| {
            let mut at = 0usize;
            for s in d.seqs {
                let seq_start = at;
                for &r in seq_rows(s) {
                    let (k, j, range) = &rows[r as usize];
                    let (c, range) = (&parts[*k], range.clone());
                    let to = at..at + range.len();
                    let ids = &c.cols.input_ids[range.clone()];
                    put(&mut d.ids[to.clone()], ids);
                    let row = RowDest {
                        labels: &mut d.labels[to.clone()],
                        segment: &mut d.segment[to.clone()],
                        block: &mut d.block[to.clone()],
                        evict: &mut d.evict[to.clone()],
                    };
                    materialize(ids, c.runs.row(*j), (at - seq_start) as i32, row);
                    for (o, v) in d.pos[to].iter_mut().zip(0..) {
                        o.write(v);
                    }
                    at += range.len();
                }
            }
            // Every slot of the group's slices is written (the set_len below relies on it).
            assert_eq!(at, d.ids.len(), "a group's rows fill its slices");
        };
        if threads == Some(1) {
            dests.into_iter().for_each(fill);
        } else {
            dests.into_par_iter().for_each(fill);
        }
    }
    // SAFETY: the groups' slices partition `0..total` of each vector's capacity and each group
    // wrote every slot of its slices (asserted above: a group's rows add up to its length, and
    // each row's token range is written in full in every column: copied for the ids and
    // positions, by `materialize`, which writes all of it or panics, for the others); a panic
    // in a group unwinds past this point, leaving the vectors empty.
    unsafe {
        ids.set_len(total);
        labels.set_len(total);
        segment.set_len(total);
        block.set_len(total);
        evict.set_len(total);
        pos.set_len(total);
    }
    let tok_offsets = OffsetBuffer::<i64>::from_lengths(seq_tokens.iter().map(|&l| l as usize));
    let row_offsets =
        OffsetBuffer::<i64>::from_lengths((0..p.sequences()).map(|s| (p.offsets[s + 1] - p.offsets[s]) as usize));
    let field = |t: DataType| Arc::new(Field::new("item", t, true));
    let list = |t: DataType, offsets: &OffsetBuffer<i64>, values: ArrayRef| -> Result<ArrayRef, CoreError> {
        Ok(Arc::new(LargeListArray::try_new(field(t), offsets.clone(), values, None)?))
    };
    let i32s = |v: Vec<i32>| -> ArrayRef { Arc::new(Int32Array::new(ScalarBuffer::from(v), None)) };
    let cols: Vec<ArrayRef> = vec![
        list(DataType::Int32, &tok_offsets, i32s(ids))?,
        list(DataType::Int32, &tok_offsets, i32s(labels))?,
        list(DataType::Int8, &tok_offsets, Arc::new(Int8Array::new(ScalarBuffer::from(segment), None)))?,
        list(DataType::Int32, &tok_offsets, i32s(block))?,
        list(DataType::Int32, &tok_offsets, i32s(evict))?,
        list(DataType::Int32, &tok_offsets, i32s(pos))?,
        list(DataType::Int32, &row_offsets, i32s(seq_lens))?,
        i32s(seq_tokens),
    ];
    Ok(RecordBatch::try_new(Arc::new(packed_schema()), cols)?)
}
