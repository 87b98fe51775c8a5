//! Micro-benchmarks of output-table validation
//! (`pyclave::arrow_check::validate_table`) on Arrow IPC files built in memory
//! with arrow-ipc's `FileWriter`, one record batch each (as the worker's
//! `pyarrow.Table.from_pandas` + `write_table` produces). Throughput is the file
//! size in bytes.
//!
//! Cases:
//! - `validate_table/1k_rows_int64_utf8`: 1,000 rows × (int64, utf8).
//! - `validate_table/1M_rows_int64_float64_utf8`: 1,000,000 rows × (int64,
//!   float64, utf8), ~30 MB; flat sampling.
//! - `validate_table/100_cols_1k_rows`: 100 columns (int64, float64, utf8 in
//!   turn) × 1,000 rows: the per-column cost (schema, buffer checks).

mod common;

use std::hint::black_box;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_ipc::writer::FileWriter;
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use pyclave::arrow_check::{TableLimits, validate_table};

/// Generous enough for every case: the benchmark measures valid tables.
const LIMITS: TableLimits = TableLimits { max_rows: 10_000_000, max_columns: 1_000, max_table_bytes: 1 << 30 };

#[derive(Clone, Copy)]
enum Column {
    Int64,
    Float64,
    Utf8,
}

impl Column {
    fn data_type(self) -> DataType {
        match self {
            Self::Int64 => DataType::Int64,
            Self::Float64 => DataType::Float64,
            Self::Utf8 => DataType::Utf8,
        }
    }

    fn array(self, rows: usize, seed: usize) -> ArrayRef {
        match self {
            Self::Int64 => Arc::new(Int64Array::from_iter_values((0..rows).map(|i| (i * 7 + seed) as i64))),
            Self::Float64 => Arc::new(Float64Array::from_iter_values((0..rows).map(|i| (i + seed) as f64 * 0.25))),
            Self::Utf8 => Arc::new(StringArray::from_iter_values((0..rows).map(|i| format!("row-{}", i + seed)))),
        }
    }
}

/// An Arrow IPC file of one record batch with `columns` (named `c000`, ...).
fn ipc_file(rows: usize, columns: &[Column]) -> Bytes {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .enumerate()
            .map(|(index, column)| Field::new(format!("c{index:03}"), column.data_type(), true))
            .collect::<Vec<_>>(),
    ));
    let arrays = columns.iter().enumerate().map(|(index, column)| column.array(rows, index)).collect();
    let batch = RecordBatch::try_new(Arc::clone(&schema), arrays).expect("record batch");
    let mut writer = FileWriter::try_new(Vec::new(), &schema).expect("ipc writer");
    writer.write(&batch).expect("write batch");
    writer.finish().expect("finish file");
    let file = Bytes::from(writer.into_inner().expect("ipc bytes"));
    let summary = validate_table(file.clone(), &LIMITS).expect("the benchmark table is valid");
    assert_eq!((summary.rows, summary.columns), (rows as u64, columns.len() as u64));
    file
}

fn validation(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate_table");
    let mut case = |name: &str, file: Bytes, flat: bool| {
        group.sampling_mode(if flat { SamplingMode::Flat } else { SamplingMode::Auto });
        group.throughput(Throughput::Bytes(file.len() as u64));
        group.bench_function(name, |b| b.iter(|| validate_table(black_box(file.clone()), &LIMITS).expect("valid")));
    };
    case("1k_rows_int64_utf8", ipc_file(1_000, &[Column::Int64, Column::Utf8]), false);
    case("1M_rows_int64_float64_utf8", ipc_file(1_000_000, &[Column::Int64, Column::Float64, Column::Utf8]), true);
    let hundred: Vec<Column> = [Column::Int64, Column::Float64, Column::Utf8].into_iter().cycle().take(100).collect();
    case("100_cols_1k_rows", ipc_file(1_000, &hundred), false);
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::config();
    targets = validation
}
criterion_main!(benches);
