//! Arrow outputs declared once. Every function that returns a `RecordBatch` lists its columns in
//! one table of [`Column`]s (name, Arrow type, how the column is built from the function's
//! results); the schema and the column order are derived from that table, so nothing has to agree
//! by hand, and tests select columns by name. The helpers build the column kinds the crates share:
//! per-row numbers under the row validity ([`PerRow`]), lists, dictionary-encoded names.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::types::Int8Type;
use arrow_array::{
    ArrayRef, ArrowPrimitiveType, DictionaryArray, Int8Array, ListArray, PrimitiveArray, RecordBatch, StringArray,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, DataType, Field, Schema};

/// Declares the accumulators of a run of rows (one `Vec` per field: per-row values, or flat list
/// values) and their in-order concatenation, so a field cannot be forgotten in one of them:
/// `extend` appends another run, `concat` joins the runs of [`crate::par::map_chunks`] in order.
#[macro_export]
macro_rules! accumulators {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($(#[$fmeta:meta])* $field:ident: $t:ty,)* }) => {
        $(#[$meta])*
        #[derive(Default)]
        $vis struct $name { $($(#[$fmeta])* $field: Vec<$t>,)* }

        impl $name {
            #[allow(dead_code)]
            fn extend(&mut self, o: $name) {
                $(self.$field.extend(o.$field);)*
            }

            #[allow(dead_code)]
            fn concat(parts: Vec<$name>) -> $name {
                let mut parts = parts.into_iter();
                let mut all = parts.next().unwrap_or_default();
                for p in parts {
                    all.extend(p);
                }
                all
            }
        }
    };
}

/// One output column: its name, its Arrow type and how it is built from the results `R`.
pub struct Column<R> {
    pub name: &'static str,
    pub data_type: fn() -> DataType,
    pub build: fn(&mut R) -> ArrayRef,
    /// Only in the function's optional output (parse: `spans`; count: the stripped counts;
    /// analyze: the prompt tokens).
    pub optional: bool,
}

impl<R> Column<R> {
    /// A column every call returns.
    pub const fn new(name: &'static str, data_type: fn() -> DataType, build: fn(&mut R) -> ArrayRef) -> Self {
        Column { name, data_type, build, optional: false }
    }

    /// A column of the optional output only.
    pub const fn optional(name: &'static str, data_type: fn() -> DataType, build: fn(&mut R) -> ArrayRef) -> Self {
        Column { name, data_type, build, optional: true }
    }
}

/// The columns of `table` returned with (`optional`) or without the optional output, in order.
pub fn selected<R>(table: &[Column<R>], optional: bool) -> impl Iterator<Item = &Column<R>> {
    table.iter().filter(move |c| optional || !c.optional)
}

/// The schema of `table`. Every column is nullable (a null input row is a null output row).
pub fn schema<R>(table: &[Column<R>], optional: bool) -> Schema {
    Schema::new(selected(table, optional).map(|c| Field::new(c.name, (c.data_type)(), true)).collect::<Vec<_>>())
}

/// The columns of `table` built from `results`, as a batch of [`schema`] with `metadata`.
pub fn record_batch<R>(
    table: &[Column<R>],
    optional: bool,
    results: &mut R,
    metadata: HashMap<String, String>,
) -> Result<RecordBatch, ArrowError> {
    let columns: Vec<ArrayRef> = selected(table, optional).map(|c| (c.build)(results)).collect();
    RecordBatch::try_new(Arc::new(schema(table, optional).with_metadata(metadata)), columns)
}

/// The validity of rows: `None` when every row is valid.
pub fn validity<I: IntoIterator<Item = bool>>(valid: I) -> Option<NullBuffer>
where
    I::IntoIter: Clone,
{
    let valid = valid.into_iter();
    if valid.clone().all(|v| v) {
        None
    } else {
        Some(NullBuffer::from_iter(valid))
    }
}

/// `List<item>`; items are non-null unless `nullable_items`.
pub fn list_type(item: DataType, nullable_items: bool) -> DataType {
    DataType::List(Arc::new(Field::new("item", item, nullable_items)))
}

/// A list array: row `i` holds the next `lengths[i]` of `values`.
pub fn list_array(
    values: ArrayRef,
    nullable_items: bool,
    lengths: impl IntoIterator<Item = usize>,
    nulls: Option<NullBuffer>,
) -> ArrayRef {
    let item = Arc::new(Field::new("item", values.data_type().clone(), nullable_items));
    Arc::new(ListArray::new(item, OffsetBuffer::from_lengths(lengths), values, nulls))
}

/// The type of dictionary-encoded names (`status`, span `kind`): int8 codes into a UTF-8
/// dictionary that lists every name in code order.
pub fn dictionary_type() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8))
}

/// Names as [`dictionary_type`]: `codes` index `names`.
pub fn dictionary(codes: Vec<i8>, nulls: Option<NullBuffer>, names: &[&'static str]) -> ArrayRef {
    let keys = Int8Array::new(ScalarBuffer::from(codes), nulls);
    let values = Arc::new(StringArray::from(names.to_vec()));
    Arc::new(DictionaryArray::<Int8Type>::try_new(keys, values).expect("codes index the names"))
}

/// Per-row results, `None` for a null input row, with their validity computed once. The column
/// helpers give null rows a null value.
pub struct PerRow<T> {
    pub rows: Vec<Option<T>>,
    pub nulls: Option<NullBuffer>,
}

impl<T> PerRow<T> {
    pub fn new(rows: Vec<Option<T>>) -> Self {
        let nulls = validity(rows.iter().map(Option::is_some));
        PerRow { rows, nulls }
    }

    /// One number per row.
    pub fn values<P: ArrowPrimitiveType>(&self, f: impl Fn(&T) -> P::Native) -> ArrayRef {
        let values: ScalarBuffer<P::Native> =
            self.rows.iter().map(|r| r.as_ref().map_or_else(Default::default, &f)).collect();
        Arc::new(PrimitiveArray::<P>::new(values, self.nulls.clone()))
    }

    /// One number per row, itself possibly null.
    pub fn options<P: ArrowPrimitiveType>(&self, f: impl Fn(&T) -> Option<P::Native>) -> ArrayRef {
        Arc::new(self.rows.iter().map(|r| r.as_ref().and_then(&f)).collect::<PrimitiveArray<P>>())
    }

    /// One name per row, as [`dictionary`].
    pub fn names(&self, f: impl Fn(&T) -> i8, names: &[&'static str]) -> ArrayRef {
        dictionary(self.rows.iter().map(|r| r.as_ref().map_or(0, &f)).collect(), self.nulls.clone(), names)
    }

    /// One list of numbers per row.
    pub fn list_of<P: ArrowPrimitiveType>(&self, f: impl Fn(&T) -> &[P::Native]) -> ArrayRef {
        let values: Vec<P::Native> = self.rows.iter().flatten().flat_map(|r| f(r).iter().copied()).collect();
        let values = Arc::new(PrimitiveArray::<P>::new(ScalarBuffer::from(values), None));
        self.list(values, self.rows.iter().map(|r| r.as_ref().map_or(0, |r| f(r).len())))
    }

    /// One list per row: row `i` holds the next `lengths[i]` of `values`.
    pub fn list(&self, values: ArrayRef, lengths: impl IntoIterator<Item = usize>) -> ArrayRef {
        list_array(values, false, lengths, self.nulls.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};
    use arrow_array::{Array, Int32Array};

    struct Results {
        rows: PerRow<(i64, Vec<i32>)>,
    }

    const TABLE: [Column<Results>; 3] = [
        Column::new("n", || DataType::Int64, |r| r.rows.values::<Int64Type>(|x| x.0)),
        Column::optional("items", || list_type(DataType::Int32, false), items),
        Column::new("kind", dictionary_type, |r| r.rows.names(|x| (x.0 % 2) as i8, &["even", "odd"])),
    ];

    fn items(r: &mut Results) -> ArrayRef {
        let flat: Vec<i32> = r.rows.rows.iter().flatten().flat_map(|x| x.1.iter().copied()).collect();
        let lengths: Vec<usize> = r.rows.rows.iter().map(|x| x.as_ref().map_or(0, |x| x.1.len())).collect();
        r.rows.list(Arc::new(Int32Array::from(flat)), lengths)
    }

    #[test]
    fn schema_order_and_nulls_come_from_the_table() {
        let mut r = Results { rows: PerRow::new(vec![Some((3, vec![1, 2])), None, Some((4, vec![]))]) };
        let meta = HashMap::from([("k".to_string(), "v".to_string())]);
        let b = record_batch(&TABLE, false, &mut r, meta.clone()).unwrap();
        assert_eq!(b.schema().fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>(), ["n", "kind"]);
        assert_eq!(b.schema().metadata(), &meta);
        let b = record_batch(&TABLE, true, &mut r, HashMap::new()).unwrap();
        assert_eq!(b.schema().as_ref(), &schema(&TABLE, true));
        assert_eq!(b.column_by_name("n").unwrap().as_primitive::<Int64Type>().value(2), 4);
        assert!(b.column_by_name("n").unwrap().is_null(1));
        let items = b.column_by_name("items").unwrap().as_list::<i32>();
        assert_eq!(items.value(0).as_primitive::<Int32Type>().values(), &[1, 2]);
        assert!(items.is_null(1));
        let kind = b.column_by_name("kind").unwrap().as_dictionary::<Int8Type>();
        assert_eq!(kind.keys().value(0), 1);
        assert!(kind.is_null(1));
    }

    #[test]
    fn all_valid_rows_have_no_null_buffer() {
        assert!(validity([true, true]).is_none());
        assert_eq!(validity([true, false]).unwrap().null_count(), 1);
        assert!(PerRow::new(vec![Some(1)]).nulls.is_none());
    }
}
