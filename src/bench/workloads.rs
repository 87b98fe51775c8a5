//! The jobs `pyclave bench` runs and the tables it feeds them.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};

use crate::proto::api::JobKind;

/// Which input table a workload reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableSize {
    /// 1,000 rows: a string key with 10 values and an int64.
    Small,
    /// 4M rows of four 8-byte columns: 128 MiB.
    Large,
    /// 45M rows of three int64 columns: 1 GiB, for the zero-copy check.
    Huge,
}

impl TableSize {
    fn batch(self) -> RecordBatch {
        match self {
            TableSize::Small => {
                let keys = StringArray::from_iter_values((0..1000).map(|i| format!("key{}", i % 10)));
                batch(vec![("k", Arc::new(keys) as ArrayRef), ("v", Arc::new(Int64Array::from_iter_values(0..1000)))])
            }
            TableSize::Large => {
                let rows = 4_000_000i64;
                batch(vec![
                    ("a", Arc::new(Int64Array::from_iter_values(0..rows)) as ArrayRef),
                    ("b", Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i * 3)))),
                    ("v", Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i % 1000)))),
                    ("f", Arc::new(Float64Array::from_iter_values((0..rows).map(|i| i as f64 * 0.5)))),
                ])
            }
            TableSize::Huge => {
                let rows = 45_000_000i64;
                batch(vec![
                    ("a", Arc::new(Int64Array::from_iter_values(0..rows)) as ArrayRef),
                    ("b", Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i ^ 0x55)))),
                    ("v", Arc::new(Int64Array::from_iter_values((0..rows).map(|i| i % 1000)))),
                ])
            }
        }
    }

    /// Writes the table as an Arrow IPC file into a memfd named
    /// `pyclave-bench-input` (the copy check finds the mapping by that
    /// name), and into `path` for the baselines when given.
    pub fn write(self, path: Option<&Path>) -> std::io::Result<(OwnedFd, u64)> {
        let batch = self.batch();
        let memfd = nix::sys::memfd::memfd_create(c"pyclave-bench-input", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
        let mut file = std::fs::File::from(memfd);
        write_ipc(&mut file, &batch)?;
        if let Some(path) = path {
            write_ipc(&mut std::fs::File::create(path)?, &batch)?;
        }
        let bytes = file.metadata()?.len();
        Ok((OwnedFd::from(file), bytes))
    }
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
    let schema = Schema::new(
        columns.iter().map(|(name, array)| Field::new(*name, array.data_type().clone(), false)).collect::<Vec<_>>(),
    );
    debug_assert!(schema.fields().iter().all(|f| f.data_type() != &DataType::Null));
    RecordBatch::try_new(Arc::new(schema), columns.into_iter().map(|(_, array)| array).collect())
        .expect("columns of equal length")
}

fn write_ipc(file: &mut std::fs::File, batch: &RecordBatch) -> std::io::Result<()> {
    let error = |e: arrow_schema::ArrowError| std::io::Error::other(e.to_string());
    let mut writer = arrow_ipc::writer::FileWriter::try_new(&mut *file, &batch.schema()).map_err(error)?;
    writer.write(batch).map_err(error)?;
    writer.finish().map_err(error)?;
    drop(writer);
    file.flush()
}

/// One benchmarked job.
#[derive(Debug, Clone, Copy)]
pub struct Workload {
    pub name: &'static str,
    pub kind: JobKind,
    pub code: &'static str,
    pub input: Option<TableSize>,
}

pub const TRIVIAL: Workload =
    Workload { name: "trivial exec", kind: JobKind::Exec, code: "def main():\n    return 1\n", input: None };

pub const SMALL_GROUPBY: Workload = Workload {
    name: "small transform (1k rows, groupby)",
    kind: JobKind::Transform,
    code: "def transform(table, params):\n    return table.groupby('k', as_index=False)['v'].sum()\n",
    input: Some(TableSize::Small),
};

pub const LARGE_IDENTITY: Workload = Workload {
    name: "large transform (4M rows, 128 MiB, identity)",
    kind: JobKind::Transform,
    code: "def transform(table, params):\n    return table\n",
    input: Some(TableSize::Large),
};

pub const LARGE_FILTER: Workload = Workload {
    name: "large transform (4M rows, 128 MiB, filter)",
    kind: JobKind::Transform,
    code: "def transform(table, params):\n    return table[table['v'] % 10 == 0]\n",
    input: Some(TableSize::Large),
};

pub const ALL: [Workload; 4] = [TRIVIAL, SMALL_GROUPBY, LARGE_IDENTITY, LARGE_FILTER];

/// A transform that reports, on stdout as JSON, how many bytes of the
/// DataFrame's columns lie outside the input table's mapping (were copied)
/// and how many there are in all. Numeric columns only: they are what can
/// be shared with the Arrow buffers.
pub const COPY_CHECK: &str = r#"
import json

def transform(table, params):
    mapping = None
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "pyclave-bench-input" in line:
                start, end = (int(part, 16) for part in line.split()[0].split("-"))
                mapping = (start, end) if mapping is None else (min(mapping[0], start), max(mapping[1], end))
    copied = total = 0
    for name in table.columns:
        array = table[name].to_numpy(copy=False)
        address = array.__array_interface__["data"][0]
        total += array.nbytes
        if mapping is None or not (mapping[0] <= address < mapping[1]):
            copied += array.nbytes
    print(json.dumps({"copied_bytes": copied, "column_bytes": total}))
    return table.iloc[:0]
"#;
