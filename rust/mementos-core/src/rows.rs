//! Row access to Arrow string columns, zero-copy: `Utf8`, `LargeUtf8` and `Utf8View` arrays
//! (sliced or not, with nulls), or several chunks of one column seen as one. Every column
//! operation of every crate reads its input through [`Rows`]; [`Rows::view`] builds Arrow string
//! views into the *input's* buffers, so outputs can point into the input without copying.
//!
//! Offsets: views hold 32-bit buffer offsets, so a `LargeUtf8` values buffer over 4 GiB is
//! exposed as several zero-copy slices ("windows") of it, each starting at a row boundary.

use std::ops::Range;

use arrow_array::builder::make_view;
use arrow_array::{Array, GenericStringArray, OffsetSizeTrait, StringViewArray};
use arrow_buffer::Buffer;
use arrow_schema::DataType;

use crate::error::CoreError;

/// Row access plus zero-copy view construction, for each supported input layout.
pub trait Rows: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn is_valid(&self, i: usize) -> bool;
    fn bytes(&self, i: usize) -> &[u8];
    /// Bytes of row `i`, 0 for a null row (what chunking balances).
    fn size(&self, i: usize) -> usize {
        if self.is_valid(i) {
            self.bytes(i).len()
        } else {
            0
        }
    }
    /// A view of `bytes(i)[r]` into [`Rows::buffers`].
    fn view(&self, i: usize, r: Range<usize>) -> u128;
    fn buffers(&self) -> Vec<Buffer>;
}

struct OffsetRows<'a, O: OffsetSizeTrait> {
    array: &'a GenericStringArray<O>,
    values: &'a [u8],
    /// Window index per row (empty when everything fits one window).
    row_window: Vec<u32>,
    /// Start (in the values buffer) of each window.
    window_base: Vec<usize>,
}

impl<'a, O: OffsetSizeTrait> OffsetRows<'a, O> {
    fn new(array: &'a GenericStringArray<O>) -> Result<Self, CoreError> {
        let values = array.values().as_slice();
        let mut rows = OffsetRows { array, values, row_window: Vec::new(), window_base: vec![0] };
        if values.len() > u32::MAX as usize {
            let offsets = array.value_offsets();
            let mut base = offsets.first().map_or(0, |o| o.as_usize());
            rows.window_base = vec![base];
            for w in offsets.windows(2) {
                let (s, e) = (w[0].as_usize(), w[1].as_usize());
                if e - s > u32::MAX as usize {
                    return Err(CoreError::InvalidArgument(format!(
                        "a row of {} bytes is larger than an Arrow string view can address (4 GiB)",
                        e - s
                    )));
                }
                if e - base > u32::MAX as usize {
                    base = s;
                    rows.window_base.push(base);
                }
                rows.row_window.push((rows.window_base.len() - 1) as u32);
            }
        }
        Ok(rows)
    }
}

impl<O: OffsetSizeTrait> Rows for OffsetRows<'_, O> {
    fn len(&self) -> usize {
        self.array.len()
    }
    fn is_valid(&self, i: usize) -> bool {
        self.array.is_valid(i)
    }
    fn bytes(&self, i: usize) -> &[u8] {
        self.array.value(i).as_bytes()
    }
    fn view(&self, i: usize, r: Range<usize>) -> u128 {
        let abs = self.array.value_offsets()[i].as_usize() + r.start;
        let data = &self.values[abs..abs + r.len()];
        let w = self.row_window.get(i).copied().unwrap_or(0);
        make_view(data, w, (abs - self.window_base[w as usize]) as u32)
    }
    fn buffers(&self) -> Vec<Buffer> {
        let values = self.array.values();
        self.window_base.iter().map(|&b| values.slice(b)).collect()
    }
}

struct ViewRows<'a> {
    array: &'a StringViewArray,
}

impl Rows for ViewRows<'_> {
    fn len(&self) -> usize {
        self.array.len()
    }
    fn is_valid(&self, i: usize) -> bool {
        self.array.is_valid(i)
    }
    fn bytes(&self, i: usize) -> &[u8] {
        self.array.value(i).as_bytes()
    }
    fn view(&self, i: usize, r: Range<usize>) -> u128 {
        let data = &self.bytes(i)[r.clone()];
        if data.len() <= 12 {
            return make_view(data, 0, 0);
        }
        // A long substring implies a long (non-inline) row: point into the same buffer.
        // View layout (Arrow spec): length u32 | prefix u32 | buffer index u32 | offset u32.
        let v = self.array.views()[i];
        let (buffer_index, offset) = ((v >> 64) as u32, (v >> 96) as u32);
        make_view(data, buffer_index, offset + r.start as u32)
    }
    fn buffers(&self) -> Vec<Buffer> {
        self.array.data_buffers().to_vec()
    }
}

/// Rows of several arrays (the chunks of one column) seen as one: buffers are concatenated and
/// each chunk's buffer indexes are shifted by the number of buffers before it.
struct ConcatRows<'a> {
    parts: Vec<Box<dyn Rows + 'a>>,
    /// First global row of each part, plus the total at the end.
    row_start: Vec<usize>,
    buffer_base: Vec<u32>,
}

impl ConcatRows<'_> {
    #[inline]
    fn locate(&self, i: usize) -> (usize, usize) {
        let p = self.row_start.partition_point(|&s| s <= i) - 1;
        (p, i - self.row_start[p])
    }
}

impl Rows for ConcatRows<'_> {
    fn len(&self) -> usize {
        *self.row_start.last().unwrap_or(&0)
    }
    fn is_valid(&self, i: usize) -> bool {
        let (p, j) = self.locate(i);
        self.parts[p].is_valid(j)
    }
    fn bytes(&self, i: usize) -> &[u8] {
        let (p, j) = self.locate(i);
        self.parts[p].bytes(j)
    }
    fn view(&self, i: usize, r: Range<usize>) -> u128 {
        let (p, j) = self.locate(i);
        let v = self.parts[p].view(j, r.clone());
        if r.len() <= 12 {
            v // inline: no buffer index
        } else {
            v + ((self.buffer_base[p] as u128) << 64)
        }
    }
    fn buffers(&self) -> Vec<Buffer> {
        self.parts.iter().flat_map(|p| p.buffers()).collect()
    }
}

/// Row access to one string array of any supported layout.
pub fn rows_of(array: &dyn Array) -> Result<Box<dyn Rows + '_>, CoreError> {
    Ok(match array.data_type() {
        DataType::Utf8 => Box::new(OffsetRows::new(
            array.as_any().downcast_ref::<GenericStringArray<i32>>().expect("Utf8 is StringArray"),
        )?),
        DataType::LargeUtf8 => Box::new(OffsetRows::new(
            array.as_any().downcast_ref::<GenericStringArray<i64>>().expect("LargeUtf8 is LargeStringArray"),
        )?),
        DataType::Utf8View => Box::new(ViewRows {
            array: array.as_any().downcast_ref::<StringViewArray>().expect("Utf8View is StringViewArray"),
        }),
        other => return Err(CoreError::UnsupportedType(other.clone())),
    })
}

/// Row access to the chunks of one column seen as a single array (row `i` of the result is row
/// `i` of the concatenation).
pub fn column_rows<'a>(arrays: &[&'a dyn Array]) -> Result<Box<dyn Rows + 'a>, CoreError> {
    if let [one] = arrays {
        return rows_of(*one);
    }
    let mut rows = ConcatRows { parts: Vec::new(), row_start: vec![0], buffer_base: Vec::new() };
    let mut nbuf = 0u32;
    for a in arrays {
        let part = rows_of(*a)?;
        rows.buffer_base.push(nbuf);
        nbuf += part.buffers().len() as u32;
        rows.row_start.push(rows.row_start.last().unwrap() + part.len());
        rows.parts.push(part);
    }
    Ok(Box::new(rows))
}
