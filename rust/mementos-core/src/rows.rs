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

/// One string array read row by row: length, validity and text are the array's own; how a view
/// into its buffers is made depends on the layout ([`Layout`]).
struct ArrayRows<'a, A: Layout> {
    array: &'a A,
    windows: A::Windows,
}

/// How views are made into the buffers of one string layout.
trait Layout: Array {
    /// What the views need besides the array (the windows of a large offsets buffer).
    type Windows: Sync;
    fn text(&self, i: usize) -> &str;
    fn view(&self, windows: &Self::Windows, i: usize, r: Range<usize>) -> u128;
    fn buffers(&self, windows: &Self::Windows) -> Vec<Buffer>;
}

impl<A: Layout> Rows for ArrayRows<'_, A> {
    fn len(&self) -> usize {
        self.array.len()
    }
    fn is_valid(&self, i: usize) -> bool {
        self.array.is_valid(i)
    }
    fn bytes(&self, i: usize) -> &[u8] {
        self.array.text(i).as_bytes()
    }
    fn view(&self, i: usize, r: Range<usize>) -> u128 {
        self.array.view(&self.windows, i, r)
    }
    fn buffers(&self) -> Vec<Buffer> {
        self.array.buffers(&self.windows)
    }
}

/// The zero-copy windows of an offsets array's values buffer (one unless it exceeds 4 GiB).
struct Windows {
    /// Window index per row (empty when everything fits one window).
    row_window: Vec<u32>,
    /// Start (in the values buffer) of each window.
    window_base: Vec<usize>,
}

impl Windows {
    fn of<O: OffsetSizeTrait>(array: &GenericStringArray<O>) -> Result<Windows, CoreError> {
        let mut rows = Windows { row_window: Vec::new(), window_base: vec![0] };
        if array.values().len() > u32::MAX as usize {
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

impl<O: OffsetSizeTrait> Layout for GenericStringArray<O> {
    type Windows = Windows;
    fn text(&self, i: usize) -> &str {
        self.value(i)
    }
    fn view(&self, windows: &Windows, i: usize, r: Range<usize>) -> u128 {
        let abs = self.value_offsets()[i].as_usize() + r.start;
        let data = &self.values().as_slice()[abs..abs + r.len()];
        let w = windows.row_window.get(i).copied().unwrap_or(0);
        make_view(data, w, (abs - windows.window_base[w as usize]) as u32)
    }
    fn buffers(&self, windows: &Windows) -> Vec<Buffer> {
        let values = self.values();
        windows.window_base.iter().map(|&b| values.slice(b)).collect()
    }
}

impl Layout for StringViewArray {
    type Windows = ();
    fn text(&self, i: usize) -> &str {
        self.value(i)
    }
    fn view(&self, _: &(), i: usize, r: Range<usize>) -> u128 {
        let data = &self.value(i).as_bytes()[r.clone()];
        if data.len() <= 12 {
            return make_view(data, 0, 0);
        }
        // A long substring implies a long (non-inline) row: point into the same buffer.
        // View layout (Arrow spec): length u32 | prefix u32 | buffer index u32 | offset u32.
        let v = self.views()[i];
        let (buffer_index, offset) = ((v >> 64) as u32, (v >> 96) as u32);
        make_view(data, buffer_index, offset + r.start as u32)
    }
    fn buffers(&self, _: &()) -> Vec<Buffer> {
        self.data_buffers().to_vec()
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

fn offsets_rows<O: OffsetSizeTrait>(array: &GenericStringArray<O>) -> Result<Box<dyn Rows + '_>, CoreError> {
    Ok(Box::new(ArrayRows { array, windows: Windows::of(array)? }))
}

/// Row access to one string array of any supported layout.
pub fn rows_of(array: &dyn Array) -> Result<Box<dyn Rows + '_>, CoreError> {
    Ok(match array.data_type() {
        DataType::Utf8 => offsets_rows(array.as_any().downcast_ref::<GenericStringArray<i32>>().expect("Utf8"))?,
        DataType::LargeUtf8 => {
            offsets_rows(array.as_any().downcast_ref::<GenericStringArray<i64>>().expect("LargeUtf8"))?
        }
        DataType::Utf8View => Box::new(ArrayRows {
            array: array.as_any().downcast_ref::<StringViewArray>().expect("Utf8View is StringViewArray"),
            windows: (),
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
