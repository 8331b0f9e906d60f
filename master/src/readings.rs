//! The Arrow form of readings, as the master data stores them.

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, DictionaryArray, Float64Array, Int8Array, RecordBatch, StringArray, TimestampMillisecondArray,
    UInt64Array,
};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{DataType, Field, Int8Type, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use auth_core::{CustomerKind, Reading, Region};

/// The log offset a reading was archived from: with it, the batch keeps the
/// first of two readings of one meter at one event time, as the stream does.
pub const COLUMN_OFFSET: &str = "log_offset";

const KINDS: [CustomerKind; 2] = [CustomerKind::Residential, CustomerKind::Business];

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let dictionary = DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::Utf8));
    Arc::new(Schema::new(vec![
        Field::new("meter_id", DataType::UInt64, false),
        Field::new("customer_id", DataType::UInt64, false),
        Field::new("region", dictionary.clone(), false),
        Field::new("customer_kind", dictionary, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("value", DataType::Float64, false),
        Field::new(COLUMN_OFFSET, DataType::UInt64, false),
    ]))
});

static REGION_CODES: LazyLock<ArrayRef> = LazyLock::new(|| Arc::new(StringArray::from_iter_values(Region::all().map(Region::code))));
static KIND_NAMES: LazyLock<ArrayRef> = LazyLock::new(|| Arc::new(StringArray::from_iter_values(KINDS.map(CustomerKind::as_str))));

/// Columns of a master data file: `meter_id`, `customer_id`, `region` (ISO
/// code), `customer_kind`, `ts` (event time, UTC ms), `value`, `log_offset`.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// Collects readings column by column.
#[derive(Default)]
pub struct ReadingsBuilder {
    meter_ids: Vec<u64>,
    customer_ids: Vec<u64>,
    regions: Vec<i8>,
    kinds: Vec<i8>,
    times: Vec<i64>,
    values: Vec<f64>,
    offsets: Vec<u64>,
}

impl ReadingsBuilder {
    pub fn push(&mut self, reading: &Reading, offset: u64) {
        self.meter_ids.push(reading.meter_id);
        self.customer_ids.push(reading.customer_id);
        self.regions.push(reading.region.index() as i8);
        self.kinds.push(i8::from(reading.customer_kind == CustomerKind::Business));
        self.times.push(reading.ts_ms);
        self.values.push(reading.value);
        self.offsets.push(offset);
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The readings so far as one batch, ordered by customer, meter, event
    /// time and offset (which groups a customer's readings in the file), and
    /// an empty builder.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        let taken = std::mem::take(self);
        let dictionary = |keys: Vec<i8>, values: &ArrayRef| -> Result<ArrayRef, ArrowError> {
            Ok(Arc::new(DictionaryArray::<Int8Type>::try_new(Int8Array::from(keys), values.clone())?))
        };
        let columns: Vec<ArrayRef> = vec![
            Arc::new(UInt64Array::from(taken.meter_ids)),
            Arc::new(UInt64Array::from(taken.customer_ids)),
            dictionary(taken.regions, &REGION_CODES)?,
            dictionary(taken.kinds, &KIND_NAMES)?,
            Arc::new(TimestampMillisecondArray::from(taken.times).with_timezone("UTC")),
            Arc::new(Float64Array::from(taken.values)),
            Arc::new(UInt64Array::from(taken.offsets)),
        ];
        let batch = RecordBatch::try_new(schema(), columns)?;
        let order: Vec<SortColumn> = [1, 0, 4, 6]
            .into_iter()
            .map(|column| SortColumn { values: batch.column(column).clone(), options: None })
            .collect();
        let indices = lexsort_to_indices(&order, None)?;
        take_record_batch(&batch, &indices)
    }
}
