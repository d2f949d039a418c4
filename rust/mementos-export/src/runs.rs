//! A row's token columns other than `input_ids`, as runs, and [`materialize`], which writes them
//! out.
//!
//! [`crate::export_row`] describes each row compactly: `labels` as runs of trained tokens (the
//! ids) and untrained ones ([`IGNORE_INDEX`]), `segment` and `block_index` together as runs of
//! equal (segment, block) pairs, and `evict_at` as the disjoint token ranges the engine's plan
//! evicts with their value ([`NEVER`] elsewhere). The unpacked export materializes each row into
//! its chunk's columns at once; the packed one keeps the chunk's ids and runs and materializes
//! each row straight into its sequence's slices ([`crate::pack`]), so the four columns are
//! written once, in place.

use std::mem::MaybeUninit;

use crate::{IGNORE_INDEX, NEVER};

/// `len` tokens whose label is their id (`trained`) or [`IGNORE_INDEX`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LabelRun {
    pub(crate) len: u32,
    pub(crate) trained: bool,
}

/// `len` tokens of segment `seg` and block index `block`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegRun {
    pub(crate) len: u32,
    pub(crate) block: i32,
    pub(crate) seg: i8,
}

/// Tokens `start..end` of a row whose `evict_at` is `at` (row coordinates).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EvictRun {
    pub(crate) start: u32,
    pub(crate) end: u32,
    pub(crate) at: i32,
}

/// The runs of consecutive rows: each row's labels and segments add up to its length, its
/// evictions are sorted, disjoint and inside it.
#[derive(Default)]
pub struct Runs {
    pub(crate) labels: Vec<LabelRun>,
    pub(crate) segs: Vec<SegRun>,
    pub(crate) evicts: Vec<EvictRun>,
    /// Where the current row's runs start in `labels`, `segs`, `evicts` (runs never merge across
    /// rows).
    row: [usize; 3],
    /// Per finished row ([`Runs::end_row`]): the end of its runs in `labels`, `segs`, `evicts`.
    ends: Vec<[usize; 3]>,
}

/// One row's runs.
#[derive(Clone, Copy)]
pub(crate) struct RowRuns<'a> {
    pub(crate) labels: &'a [LabelRun],
    pub(crate) segs: &'a [SegRun],
    pub(crate) evicts: &'a [EvictRun],
}

impl Runs {
    /// Start a row: the runs pushed from now on are its.
    pub(crate) fn begin_row(&mut self) {
        self.row = [self.labels.len(), self.segs.len(), self.evicts.len()];
    }

    /// Keep the current row's runs (as row [`Runs::rows`]` - 1`).
    pub(crate) fn end_row(&mut self) {
        self.ends.push([self.labels.len(), self.segs.len(), self.evicts.len()]);
    }

    /// Forget every row.
    pub(crate) fn clear(&mut self) {
        self.labels.clear();
        self.segs.clear();
        self.evicts.clear();
        self.ends.clear();
        self.row = [0; 3];
    }

    /// Rows kept with [`Runs::end_row`].
    pub(crate) fn rows(&self) -> usize {
        self.ends.len()
    }

    /// The runs of kept row `i`.
    pub(crate) fn row(&self, i: usize) -> RowRuns<'_> {
        let start = if i == 0 { [0; 3] } else { self.ends[i - 1] };
        let end = self.ends[i];
        RowRuns {
            labels: &self.labels[start[0]..end[0]],
            segs: &self.segs[start[1]..end[1]],
            evicts: &self.evicts[start[2]..end[2]],
        }
    }

    /// The current row's runs.
    pub(crate) fn current(&self) -> RowRuns<'_> {
        RowRuns {
            labels: &self.labels[self.row[0]..],
            segs: &self.segs[self.row[1]..],
            evicts: &self.evicts[self.row[2]..],
        }
    }

    /// Append `len` tokens of labels (merged into the row's last run when of the same kind).
    #[inline]
    pub(crate) fn label(&mut self, len: usize, trained: bool) {
        if len == 0 {
            return;
        }
        if self.labels.len() > self.row[0] {
            if let Some(last) = self.labels.last_mut().filter(|r| r.trained == trained) {
                last.len += len as u32;
                return;
            }
        }
        self.labels.push(LabelRun { len: len as u32, trained });
    }

    /// Append `len` tokens of segment `seg` in block `block` (merged like [`Runs::label`]).
    #[inline]
    pub(crate) fn seg(&mut self, len: usize, seg: i8, block: i32) {
        if len == 0 {
            return;
        }
        if self.segs.len() > self.row[1] {
            if let Some(last) = self.segs.last_mut().filter(|r| r.seg == seg && r.block == block) {
                last.len += len as u32;
                return;
            }
        }
        self.segs.push(SegRun { len: len as u32, block, seg });
    }

    /// Tokens of the current row's label or segment runs.
    pub(crate) fn current_tokens(&self) -> (usize, usize) {
        let c = self.current();
        (c.labels.iter().map(|r| r.len as usize).sum(), c.segs.iter().map(|r| r.len as usize).sum())
    }

    /// Sort the current row's evictions (disjoint ranges inside its `n` tokens, so their first
    /// tokens differ) by their first token, in `O(n)`: nothing to do when they are in order
    /// already (the usual case), a comparison sort when `R log R <= n` for `R` ranges, else one
    /// bucket per token (a contrived plan's many ranges cost no log factor).
    pub(crate) fn sort_evictions(&mut self, n: usize) {
        let ev = &mut self.evicts[self.row[2]..];
        if ev.windows(2).all(|w| w[0].start < w[1].start) {
            return;
        }
        let r = ev.len();
        if r * (usize::BITS - r.leading_zeros()) as usize <= n {
            ev.sort_unstable_by_key(|e| e.start);
            return;
        }
        let mut at = vec![u32::MAX; n];
        for (i, e) in ev.iter().enumerate() {
            at[e.start as usize] = i as u32;
        }
        let sorted: Vec<EvictRun> = at.iter().filter(|&&i| i != u32::MAX).map(|&i| ev[i as usize]).collect();
        ev.copy_from_slice(&sorted);
    }

    /// Cut the current row to its first `limit` tokens: the runs past it go, and an eviction at
    /// `limit` or later becomes [`NEVER`] (the token that would trigger it is cut).
    pub(crate) fn truncate_row(&mut self, limit: usize) {
        fn cut<R>(v: &mut Vec<R>, from: usize, limit: usize, len: fn(&mut R) -> &mut u32) {
            let mut sum = 0usize;
            for i in from..v.len() {
                let l = len(&mut v[i]);
                if sum + *l as usize >= limit {
                    *l = (limit - sum) as u32;
                    v.truncate(i + 1);
                    return;
                }
                sum += *l as usize;
            }
        }
        cut(&mut self.labels, self.row[0], limit, |r| &mut r.len);
        cut(&mut self.segs, self.row[1], limit, |r| &mut r.len);
        let mut w = self.row[2];
        for i in self.row[2]..self.evicts.len() {
            let mut r = self.evicts[i];
            r.end = r.end.min(limit as u32);
            if (r.at as usize) < limit && r.start < r.end {
                self.evicts[w] = r;
                w += 1;
            }
        }
        self.evicts.truncate(w);
    }
}

/// Write `value` to every slot of `dst`.
#[inline]
fn fill<T: Copy>(dst: &mut [MaybeUninit<T>], value: T) {
    for d in dst {
        d.write(value);
    }
}

/// One row's destination: a slice of `labels`, `segment`, `block_index` and `evict_at` each, as
/// long as the row.
pub(crate) struct RowDest<'a> {
    pub(crate) labels: &'a mut [MaybeUninit<i32>],
    pub(crate) segment: &'a mut [MaybeUninit<i8>],
    pub(crate) block: &'a mut [MaybeUninit<i32>],
    pub(crate) evict: &'a mut [MaybeUninit<i32>],
}

/// Write a row's `labels`, `segment`, `block_index` and `evict_at` (each eviction's value plus
/// `shift`: the row's first token in the packed sequence, 0 unpacked) from its `ids` and runs.
/// Every slot of the four destinations is written, or this panics: each column is written as
/// consecutive ranges from its first slot (an out-of-order range panics on slicing), and its
/// runs must reach the row's length exactly.
pub(crate) fn materialize(ids: &[i32], runs: RowRuns<'_>, shift: i32, d: RowDest<'_>) {
    let n = ids.len();
    assert!(
        d.labels.len() == n && d.segment.len() == n && d.block.len() == n && d.evict.len() == n,
        "a row's destinations are as long as the row"
    );
    let mut at = 0usize;
    for r in runs.labels {
        let to = at..at + r.len as usize;
        if r.trained {
            crate::put(&mut d.labels[to.clone()], &ids[to.clone()]);
        } else {
            fill(&mut d.labels[to.clone()], IGNORE_INDEX);
        }
        at = to.end;
    }
    assert_eq!(at, n, "a row's label runs cover it");
    at = 0;
    for r in runs.segs {
        let to = at..at + r.len as usize;
        fill(&mut d.segment[to.clone()], r.seg);
        fill(&mut d.block[to.clone()], r.block);
        at = to.end;
    }
    assert_eq!(at, n, "a row's segment runs cover it");
    at = 0;
    for r in runs.evicts {
        let (s, e) = (r.start as usize, r.end as usize);
        fill(&mut d.evict[at..s], NEVER);
        fill(&mut d.evict[s..e], r.at + shift);
        at = e;
    }
    fill(&mut d.evict[at..], NEVER);
}
