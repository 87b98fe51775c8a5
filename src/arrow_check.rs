//! Validation of output tables: untrusted Arrow IPC files written by a worker.
//!
//! [`validate_table`] checks, in order: the byte size (before reading anything), the
//! `ARROW1` magic at both ends, the footer, the schema (column count, names, types), every
//! block and message header (before arrow-ipc slices anything), the total row count, and
//! last decodes every dictionary and record batch with full validation.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use arrow_buffer::Buffer;
use arrow_data::UnsafeFlag;
use arrow_ipc::reader::{RecordBatchDecoder, read_dictionary_impl, read_footer_length};
use arrow_ipc::{Footer, Message, MessageHeader, MetadataVersion};
use arrow_schema::{ArrowError, DataType, Field, Schema};
use bytes::Bytes;

/// Leading and trailing file magic.
const MAGIC: &[u8] = b"ARROW1";
/// The leading magic padded to 8 bytes; blocks start after it.
const HEADER_LEN: usize = 8;
/// The footer length (little-endian i32) and the trailing magic.
const TRAILER_LEN: usize = 10;
/// Starts every encapsulated message; followed by a 4-byte metadata length.
const CONTINUATION: [u8; 4] = [0xff; 4];
/// Longest accepted column name.
pub const MAX_COLUMN_NAME_BYTES: usize = 1024;

/// Limits an output table must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLimits {
    pub max_rows: u64,
    pub max_columns: u64,
    pub max_table_bytes: u64,
}

/// What a valid table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSummary {
    pub rows: u64,
    pub columns: u64,
    pub bytes: u64,
}

/// The part of the file a rejection is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TablePart {
    Footer,
    Schema,
    /// Index into the footer's dictionary blocks.
    Dictionary(usize),
    /// Index into the footer's record batch blocks.
    Batch(usize),
}

impl fmt::Display for TablePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Footer => f.write_str("footer"),
            Self::Schema => f.write_str("schema"),
            Self::Dictionary(index) => write!(f, "dictionary batch {index}"),
            Self::Batch(index) => write!(f, "record batch {index}"),
        }
    }
}

/// Why a table was rejected; the text is shown to the caller.
#[derive(Debug, thiserror::Error)]
pub enum TableRejection {
    #[error("table is {bytes} bytes, over the limit of {limit} bytes")]
    TooLarge { bytes: u64, limit: u64 },
    #[error("not an arrow ipc file: no ARROW1 magic at both ends (the stream format is not accepted)")]
    NotArrowFile,
    #[error("malformed {part}: {detail}")]
    Malformed { part: TablePart, detail: String },
    /// Not a `#[source]`: callers show only the display text, which must say what is wrong.
    #[error("invalid {part}: {error}")]
    Invalid { part: TablePart, error: ArrowError },
    #[error("{part} is compressed; compressed ipc bodies are not supported")]
    Compressed { part: TablePart },
    #[error("{part} updates dictionary {id}; dictionary deltas and replacements are not supported")]
    DictionaryUpdate { part: TablePart, id: i64 },
    #[error("table has {rows} rows, over the limit of {limit}")]
    TooManyRows { rows: u64, limit: u64 },
    #[error("table has {columns} columns, over the limit of {limit}")]
    TooManyColumns { columns: u64, limit: u64 },
    #[error("column {index} has an empty name")]
    EmptyColumnName { index: usize },
    #[error("name of column {index} is {bytes} bytes, over the limit of {limit} bytes")]
    ColumnNameTooLong { index: usize, bytes: usize, limit: usize },
    #[error("name of column {index} contains a control character")]
    ControlCharacterInName { index: usize },
    #[error("column name {name:?} appears more than once")]
    DuplicateColumnName { name: String },
    #[error("column {column:?} uses unsupported type {data_type}")]
    UnsupportedType { column: String, data_type: DataType },
}

fn malformed(part: TablePart, detail: impl Into<String>) -> TableRejection {
    TableRejection::Malformed { part, detail: detail.into() }
}

/// Validates `file`, the whole bytes of an Arrow IPC file.
///
/// Takes [`Bytes`] so that arrow buffers can share it without a copy: for a read-only mmap
/// pass `Bytes::from_owner(mmap)`, which keeps the mapping alive as long as any buffer points
/// into it; the mapped file must not change while this runs. No buffer is copied unless it is
/// misaligned for its type (e.g. a 16-byte decimal at an 8-byte offset); arrow then copies that
/// buffer alone.
///
/// Structural validation is arrow-ipc's own. Its decoders get `UnsafeFlag::new()`, so
/// validation stays on (only `unsafe` code can turn it off) and every array goes through
/// `ArrayDataBuilder::build`, which runs `ArrayData::validate_data`: buffer sizes, offsets,
/// UTF-8, dictionary key bounds, null counts. Children are built first and validated the same
/// way, structs go through `StructArray::try_new`, so the result equals `validate_full`, and
/// this module does not repeat it (the tests pin it).
///
/// What this adds: the limits and column rules; rejection of compressed bodies, dictionary
/// deltas and unsupported types; and checks for input that arrow-ipc 60 would answer with a
/// panic or with work out of proportion to the file: blocks inside the file and disjoint;
/// buffers inside their body, disjoint and a whole number of elements long; no negative
/// lengths, no fixed-size list whose length overflows. Decoding then takes time linear in the
/// file size.
pub fn validate_table(file: Bytes, limits: &TableLimits) -> Result<TableSummary, TableRejection> {
    let bytes = file.len() as u64;
    if bytes > limits.max_table_bytes {
        return Err(TableRejection::TooLarge { bytes, limit: limits.max_table_bytes });
    }
    if file.len() < HEADER_LEN + TRAILER_LEN || !file.starts_with(MAGIC) || !file.ends_with(MAGIC) {
        return Err(TableRejection::NotArrowFile);
    }
    let file = Buffer::from(file);
    let (footer, data_end) = read_footer(&file)?;
    let version = footer.version();
    if !matches!(version, MetadataVersion::V4 | MetadataVersion::V5) {
        return Err(malformed(TablePart::Footer, format!("unsupported metadata version {version:?}")));
    }
    let schema = Arc::new(read_schema(&footer, limits)?);
    let blocks = locate_blocks(&footer, data_end)?;
    let (messages, rows) = check_messages(&file, &blocks, &schema, version)?;
    if rows > limits.max_rows {
        return Err(TableRejection::TooManyRows { rows, limit: limits.max_rows });
    }

    let mut dictionaries = HashMap::new();
    for message in messages {
        let body = file.slice_with_length(message.body.start, message.body.len());
        let decoded = match message.header {
            // Given only the dictionary's field, arrow-ipc's search for that field is cheap;
            // given the schema it would scan the whole schema once per dictionary batch.
            Header::Dictionary(dictionary, field) => {
                let field = Schema::new(vec![field.clone()]);
                let validate = UnsafeFlag::new();
                read_dictionary_impl(&body, dictionary, &field, &mut dictionaries, &version, false, validate)
            }
            Header::Batch(batch) => {
                RecordBatchDecoder::try_new(&body, batch, Arc::clone(&schema), &dictionaries, &version)
                    .and_then(|decoder| decoder.read_record_batch())
                    .map(drop)
            }
        };
        decoded.map_err(|error| TableRejection::Invalid { part: message.part, error })?;
    }
    Ok(TableSummary { rows, columns: schema.fields().len() as u64, bytes })
}

/// Parses the footer; returns it with the end of the data region (the footer's start).
fn read_footer(file: &[u8]) -> Result<(Footer<'_>, usize), TableRejection> {
    let Some(trailer) = file.last_chunk::<TRAILER_LEN>() else {
        return Err(TableRejection::NotArrowFile);
    };
    let trailer_start = file.len() - TRAILER_LEN;
    let footer_len = read_footer_length(*trailer).map_err(|error| malformed(TablePart::Footer, error.to_string()))?;
    let footer_start = trailer_start
        .checked_sub(footer_len)
        .filter(|start| *start >= HEADER_LEN)
        .ok_or_else(|| malformed(TablePart::Footer, format!("footer length {footer_len} exceeds the file")))?;
    let footer = arrow_ipc::root_as_footer(&file[footer_start..trailer_start])
        .map_err(|error| malformed(TablePart::Footer, error.to_string()))?;
    Ok((footer, footer_start))
}

/// Converts the footer's schema and applies the column rules.
fn read_schema(footer: &Footer<'_>, limits: &TableLimits) -> Result<Schema, TableRejection> {
    let ipc_schema = footer.schema().ok_or_else(|| malformed(TablePart::Footer, "no schema"))?;
    let columns = ipc_schema.fields().map_or(0, |fields| fields.len()) as u64;
    if columns > limits.max_columns {
        return Err(TableRejection::TooManyColumns { columns, limit: limits.max_columns });
    }
    if !ipc_schema.endianness().equals_to_target_endianness() {
        return Err(malformed(TablePart::Schema, "byte order differs from this host"));
    }
    let schema = arrow_ipc::convert::try_fb_to_schema(ipc_schema)
        .map_err(|error| TableRejection::Invalid { part: TablePart::Schema, error })?;

    let mut names = HashSet::with_capacity(schema.fields().len());
    for (index, field) in schema.fields().iter().enumerate() {
        let name = field.name();
        if name.is_empty() {
            return Err(TableRejection::EmptyColumnName { index });
        }
        if name.len() > MAX_COLUMN_NAME_BYTES {
            let (bytes, limit) = (name.len(), MAX_COLUMN_NAME_BYTES);
            return Err(TableRejection::ColumnNameTooLong { index, bytes, limit });
        }
        if name.chars().any(char::is_control) {
            return Err(TableRejection::ControlCharacterInName { index });
        }
        if !names.insert(name.as_str()) {
            return Err(TableRejection::DuplicateColumnName { name: name.clone() });
        }
        check_type(name, field.data_type())?;
    }
    Ok(schema)
}

/// Rejects types within column `column` that arrow-ipc 60 cannot decode safely or cheaply.
/// Unions: a short type-id buffer panics. Utf8 views: validation re-reads the string of every
/// view, so views sharing one long string cost quadratic time. Nested dictionary values: each
/// batch deep-copies the value type. Negative fixed sizes: arrow-data panics.
fn check_type(column: &str, data_type: &DataType) -> Result<(), TableRejection> {
    let unsupported = || TableRejection::UnsupportedType { column: column.to_owned(), data_type: data_type.clone() };
    match data_type {
        DataType::Union(..) | DataType::Utf8View => return Err(unsupported()),
        DataType::Dictionary(_, values)
            if matches!(**values, DataType::Dictionary(..)) || !children(values).is_empty() =>
        {
            return Err(unsupported());
        }
        DataType::Dictionary(_, values) => check_type(column, values)?,
        DataType::FixedSizeBinary(size) | DataType::FixedSizeList(_, size) if *size < 0 => {
            let detail = format!("column {column:?} has negative fixed size {size}");
            return Err(malformed(TablePart::Schema, detail));
        }
        _ => {}
    }
    children(data_type).into_iter().try_for_each(|child| check_type(column, child.data_type()))
}

/// The child fields arrow-ipc decodes within a batch after `data_type`'s own buffers.
fn children(data_type: &DataType) -> Vec<&Field> {
    match data_type {
        DataType::List(child)
        | DataType::LargeList(child)
        | DataType::ListView(child)
        | DataType::LargeListView(child)
        | DataType::FixedSizeList(child, _)
        | DataType::Map(child, _) => vec![child],
        DataType::Struct(fields) => fields.iter().map(AsRef::as_ref).collect(),
        DataType::Union(fields, _) => fields.iter().map(|(_, field)| field.as_ref()).collect(),
        DataType::RunEndEncoded(run_ends, values) => vec![run_ends, values],
        _ => Vec::new(),
    }
}

/// Records the dictionary fields within `field` by id, unless an earlier field has the id:
/// arrow-ipc gives a dictionary batch to the first field with its id, in this order.
fn find_dictionaries<'a>(field: &'a Field, found: &mut HashMap<i64, (&'a Field, &'a DataType)>) {
    #[expect(deprecated)] // arrow-ipc 60 still matches dictionary batches to fields by id
    let id = field.dict_id();
    if let (Some(id), DataType::Dictionary(_, values)) = (id, field.data_type()) {
        found.entry(id).or_insert((field, values));
    }
    for child in children(field.data_type()) {
        find_dictionaries(child, found);
    }
}

/// A footer block known to lie inside the data region of the file.
struct Located {
    part: TablePart,
    /// The whole block: message metadata, then body.
    range: Range<usize>,
    body_start: usize,
}

/// A message that passed the checks, ready to decode.
struct Checked<'a> {
    part: TablePart,
    body: Range<usize>,
    header: Header<'a>,
}

/// What a checked message decodes.
enum Header<'a> {
    /// A dictionary batch and the field it belongs to.
    Dictionary(arrow_ipc::DictionaryBatch<'a>, &'a Field),
    Batch(arrow_ipc::RecordBatch<'a>),
}

/// Locates the dictionary blocks, then the record batch blocks (decoding order), and checks
/// that each lies between the leading magic and the footer and that no two overlap.
fn locate_blocks(footer: &Footer<'_>, data_end: usize) -> Result<Vec<Located>, TableRejection> {
    let batches = footer.recordBatches().ok_or_else(|| malformed(TablePart::Footer, "no record batch list"))?;
    let dictionaries = footer.dictionaries().into_iter().flatten().enumerate();
    let parts = dictionaries
        .map(|(index, block)| (TablePart::Dictionary(index), *block))
        .chain(batches.iter().enumerate().map(|(index, block)| (TablePart::Batch(index), *block)));

    let mut blocks = Vec::new();
    for (part, block) in parts {
        let start = usize::try_from(block.offset()).ok();
        let metadata_len = usize::try_from(block.metaDataLength()).ok();
        let body_len = usize::try_from(block.bodyLength()).ok();
        let body_start = start.zip(metadata_len).and_then(|(s, m)| s.checked_add(m));
        let end = body_start.zip(body_len).and_then(|(b, l)| b.checked_add(l));
        match (start, body_start, end) {
            (Some(start), Some(body_start), Some(end)) if start >= HEADER_LEN && end <= data_end => {
                blocks.push(Located { part, range: start..end, body_start });
            }
            _ => {
                let detail = format!(
                    "block at offset {} with {} metadata and {} body bytes is outside bytes {HEADER_LEN}..{data_end}",
                    block.offset(),
                    block.metaDataLength(),
                    block.bodyLength()
                );
                return Err(malformed(part, detail));
            }
        }
    }

    let mut by_start: Vec<&Located> = blocks.iter().collect();
    by_start.sort_unstable_by_key(|located| located.range.start);
    for pair in by_start.windows(2) {
        if let [first, second] = pair
            && second.range.start < first.range.end
        {
            return Err(malformed(second.part, format!("block overlaps {}", first.part)));
        }
    }
    Ok(blocks)
}

/// Checks each block's message against its body; returns the messages and the total rows.
fn check_messages<'a>(
    file: &'a [u8],
    blocks: &[Located],
    schema: &'a Schema,
    version: MetadataVersion,
) -> Result<(Vec<Checked<'a>>, u64), TableRejection> {
    let columns: Vec<&DataType> = schema.fields().iter().map(|field| field.data_type()).collect();
    let mut dictionary_fields = HashMap::new();
    for field in schema.fields() {
        find_dictionaries(field, &mut dictionary_fields);
    }
    let mut seen_ids = HashSet::new();
    let mut messages = Vec::with_capacity(blocks.len());
    let mut rows = 0u64;
    for located in blocks {
        let part = located.part;
        let message = read_message(&file[located.range.start..located.body_start], part)?;
        if message.version() != version {
            return Err(malformed(part, "message version differs from the footer's"));
        }
        let body_len = located.range.end - located.body_start;
        let header = match (part, message.header_type()) {
            (TablePart::Dictionary(_), MessageHeader::DictionaryBatch) => {
                let dictionary =
                    message.header_as_dictionary_batch().ok_or_else(|| malformed(part, "no dictionary header"))?;
                let id = dictionary.id();
                if dictionary.isDelta() || !seen_ids.insert(id) {
                    return Err(TableRejection::DictionaryUpdate { part, id });
                }
                let Some(&(field, values)) = dictionary_fields.get(&id) else {
                    return Err(malformed(part, format!("dictionary {id} is not in the schema")));
                };
                let data = dictionary.data().ok_or_else(|| malformed(part, "no data"))?;
                check_body(part, &data, body_len, &[values])?;
                Header::Dictionary(dictionary, field)
            }
            (TablePart::Batch(_), MessageHeader::RecordBatch) => {
                let batch = message.header_as_record_batch().ok_or_else(|| malformed(part, "no batch header"))?;
                rows = rows.saturating_add(check_body(part, &batch, body_len, &columns)?);
                Header::Batch(batch)
            }
            (_, header) => return Err(malformed(part, format!("unexpected {header:?} message"))),
        };
        messages.push(Checked { part, body: located.body_start..located.range.end, header });
    }
    Ok((messages, rows))
}

/// Parses an encapsulated message: continuation marker, metadata length, flatbuffer.
fn read_message(metadata: &[u8], part: TablePart) -> Result<Message<'_>, TableRejection> {
    let Some(flatbuffer) = metadata.strip_prefix(&CONTINUATION).and_then(|rest| rest.get(4..)) else {
        return Err(malformed(part, "message does not start with a continuation marker"));
    };
    arrow_ipc::root_as_message(flatbuffer).map_err(|error| malformed(part, error.to_string()))
}

/// Checks a batch of `columns` against its body and returns its row count: no compression,
/// no negative lengths, buffers inside the body, disjoint, and a whole number of elements
/// long (arrow-data panics on a partial trailing element).
fn check_body(
    part: TablePart,
    batch: &arrow_ipc::RecordBatch<'_>,
    body_len: usize,
    columns: &[&DataType],
) -> Result<u64, TableRejection> {
    if batch.compression().is_some() {
        return Err(TableRejection::Compressed { part });
    }
    let rows =
        u64::try_from(batch.length()).map_err(|_| malformed(part, format!("negative row count {}", batch.length())))?;
    let nodes = batch.nodes().ok_or_else(|| malformed(part, "no field nodes"))?;
    let mut node_lengths = Vec::with_capacity(nodes.len());
    for node in nodes.iter() {
        let (length, null_count) = (node.length(), node.null_count());
        match usize::try_from(length) {
            Ok(length) if (0..=node.length()).contains(&null_count) => node_lengths.push(length),
            _ => return Err(malformed(part, format!("field node with length {length} and null count {null_count}"))),
        }
    }
    let buffers = batch.buffers().ok_or_else(|| malformed(part, "no buffer list"))?;
    let mut layout = Layout {
        node_lengths: node_lengths.into_iter(),
        buffers: buffers.len(),
        variadic_counts: batch.variadicBufferCounts().into_iter().flatten().collect::<Vec<_>>().into_iter(),
        widths: Vec::new(),
    };
    for column in columns {
        layout.walk(column).map_err(|detail| malformed(part, detail))?;
    }

    let mut ranges = Vec::with_capacity(buffers.len());
    for (index, buffer) in buffers.iter().enumerate() {
        let start = usize::try_from(buffer.offset()).ok();
        let len = usize::try_from(buffer.length()).ok();
        let end = start.zip(len).and_then(|(s, l)| s.checked_add(l));
        let (Some(start), Some(len), Some(end)) = (start, len, end) else {
            let (offset, len) = (buffer.offset(), buffer.length());
            return Err(malformed(part, format!("buffer {index} has offset {offset} and length {len}")));
        };
        if end > body_len {
            let detail = format!("buffer {index} ends at {end}, past the {body_len}-byte body");
            return Err(malformed(part, detail));
        }
        if let Some(width) = layout.widths.get(index)
            && len % width != 0
        {
            let detail = format!("buffer {index} is {len} bytes, not a multiple of {width}");
            return Err(malformed(part, detail));
        }
        if len > 0 {
            ranges.push(start..end);
        }
    }
    ranges.sort_unstable_by_key(|range| range.start);
    if ranges.windows(2).any(|pair| matches!(pair, [a, b] if b.start < a.end)) {
        return Err(malformed(part, "buffers overlap"));
    }
    Ok(rows)
}

/// The buffers of one message as arrow-ipc 60 will consume them.
struct Layout {
    /// Length of each field node, in message order.
    node_lengths: std::vec::IntoIter<usize>,
    buffers: usize,
    variadic_counts: std::vec::IntoIter<i64>,
    /// Element width of each buffer, in message order.
    widths: Vec<usize>,
}

impl Layout {
    /// Records the buffers arrow-ipc reads for `data_type`: one field node, the type's own
    /// buffers (validity first), then its children. Fails when the nodes run out, as
    /// arrow-ipc would, so the walk costs no more than the message is long, and where
    /// arrow-data would overflow.
    fn walk(&mut self, data_type: &DataType) -> Result<(), &'static str> {
        let length = self.node_lengths.next().ok_or("too few field nodes")?;
        match data_type {
            DataType::Null | DataType::RunEndEncoded(..) => {}
            DataType::Utf8 | DataType::Binary => self.widths.extend([1, 4, 1]),
            DataType::LargeUtf8 | DataType::LargeBinary => self.widths.extend([1, 8, 1]),
            DataType::BinaryView | DataType::Utf8View => {
                self.widths.extend([1, 16]);
                let count = self.variadic_counts.next().and_then(|c| usize::try_from(c).ok());
                let room = self.buffers.saturating_sub(self.widths.len());
                self.widths.extend(std::iter::repeat_n(1, count.unwrap_or(0).min(room)));
            }
            DataType::List(_) | DataType::Map(..) => self.widths.extend([1, 4]),
            DataType::LargeList(_) => self.widths.extend([1, 8]),
            DataType::ListView(_) => self.widths.extend([1, 4, 4]),
            DataType::LargeListView(_) => self.widths.extend([1, 8, 8]),
            DataType::FixedSizeList(_, size) => {
                usize::try_from(*size).ok().and_then(|size| length.checked_mul(size)).ok_or("list length overflows")?;
                self.widths.push(1);
            }
            DataType::Struct(_) => self.widths.push(1),
            DataType::Dictionary(key, _) => self.widths.extend([1, key.primitive_width().unwrap_or(1)]),
            // Unions never get here: `check_type` rejects them.
            other => self.widths.extend([1, other.primitive_width().unwrap_or(1)]),
        }
        children(data_type).into_iter().try_for_each(|child| self.walk(child.data_type()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{ArrayRef, DictionaryArray, Int32Array, Int64Array, RecordBatch, StringArray, StructArray};
    use arrow_ipc::CompressionType;
    use arrow_ipc::writer::{DictionaryHandling, FileWriter, IpcWriteOptions, StreamWriter};
    use arrow_schema::{UnionFields, UnionMode};

    const LIMITS: TableLimits = TableLimits { max_rows: 1_000, max_columns: 16, max_table_bytes: 1 << 20 };

    fn table(columns: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(columns).unwrap()
    }

    fn write_with(options: IpcWriteOptions, schema: &Schema, batches: &[RecordBatch]) -> Vec<u8> {
        let mut file = Vec::new();
        let mut writer = FileWriter::try_new_with_options(&mut file, schema, options).unwrap();
        for batch in batches {
            writer.write(batch).unwrap();
        }
        writer.finish().unwrap();
        drop(writer);
        file
    }

    fn write(batches: &[RecordBatch]) -> Vec<u8> {
        write_with(IpcWriteOptions::default(), &batches[0].schema(), batches)
    }

    fn check(file: &[u8]) -> Result<TableSummary, TableRejection> {
        validate_table(Bytes::copy_from_slice(file), &LIMITS)
    }

    /// Overwrites the only occurrence of `from` in `file` with `to`.
    fn patch(file: &mut [u8], from: &[u8], to: &[u8]) {
        let hits: Vec<usize> =
            (0..=file.len().saturating_sub(from.len())).filter(|&at| file[at..].starts_with(from)).collect();
        assert_eq!(hits.len(), 1, "pattern must occur exactly once");
        file[hits[0]..hits[0] + to.len()].copy_from_slice(to);
    }

    fn le32(values: &[i32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn le64(values: &[i64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// Int64, Utf8 (offsets 0,6,11,18,18,19) and a dictionary with Int64 keys 2,0,1,2,2.
    fn sample() -> RecordBatch {
        let keys = Int64Array::from(vec![2, 0, 1, 2, 2]);
        let values = Arc::new(StringArray::from(vec!["x", "y", "z"]));
        table(vec![
            ("id", Arc::new(Int64Array::from(vec![10, 20, 30, 40, 50])) as ArrayRef),
            ("name", Arc::new(StringArray::from(vec!["needle", "hello", "goodbye", "", "z"]))),
            ("kind", Arc::new(DictionaryArray::new(keys, values))),
        ])
    }

    /// A list of strings (the one value "needle") and a struct.
    fn nested() -> RecordBatch {
        let mut tags = ListBuilder::new(StringBuilder::new());
        tags.append_value([Some("needle")]);
        tags.append_null();
        let point = StructArray::from(vec![(
            Arc::new(Field::new("x", DataType::Int32, false)),
            Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef,
        )]);
        table(vec![("tags", Arc::new(tags.finish()) as ArrayRef), ("point", Arc::new(point))])
    }

    #[test]
    fn accepts_valid_tables() {
        let file = write(&[sample(), sample()]);
        let summary = check(&file).unwrap();
        assert_eq!(summary, TableSummary { rows: 10, columns: 3, bytes: file.len() as u64 });
        assert_eq!(check(&write(&[nested()])).unwrap().rows, 2);
        let empty = write_with(IpcWriteOptions::default(), &sample().schema(), &[]);
        assert_eq!(check(&empty).unwrap().rows, 0);
    }

    #[test]
    fn checks_size_before_parsing() {
        let limit = LIMITS.max_table_bytes;
        let garbage = vec![0; limit as usize + 1];
        let rejection = check(&garbage).unwrap_err();
        assert!(matches!(rejection, TableRejection::TooLarge { bytes, limit: l } if bytes == limit + 1 && l == limit));
    }

    #[test]
    fn rejects_other_formats() {
        let batch = sample();
        let mut stream = Vec::new();
        let mut writer = StreamWriter::try_new(&mut stream, &batch.schema()).unwrap();
        writer.write(&batch).unwrap();
        writer.finish().unwrap();
        drop(writer);
        for file in [&b""[..], b"ARROW1", b"ARROW1\0\0ARROW1", b"PAR1 a parquet file PAR1", &stream] {
            assert!(matches!(check(file), Err(TableRejection::NotArrowFile)));
        }
    }

    #[test]
    fn rejects_bad_footer_length() {
        let mut file = write(&[sample()]);
        let at = file.len() - TRAILER_LEN;
        for footer_len in [i32::MAX, -1] {
            file[at..at + 4].copy_from_slice(&footer_len.to_le_bytes());
            let rejection = check(&file).unwrap_err();
            assert!(matches!(rejection, TableRejection::Malformed { part: TablePart::Footer, .. }));
        }
    }

    #[test]
    fn rejects_blocks_outside_the_file_or_overlapping() {
        let file = write(&[sample(), sample()]);
        let second = read_footer(&file).unwrap().0.recordBatches().unwrap().get(1);
        let first_offset = read_footer(&file).unwrap().0.recordBatches().unwrap().get(0).offset();
        let moved_to = |offset: i64| {
            let mut moved = file.clone();
            let block = arrow_ipc::Block::new(offset, second.metaDataLength(), second.bodyLength());
            patch(&mut moved, &second.0, &block.0);
            check(&moved).unwrap_err()
        };
        for offset in [-8, 0, file.len() as i64, i64::MAX] {
            let rejection = moved_to(offset);
            assert!(matches!(rejection, TableRejection::Malformed { part: TablePart::Batch(1), .. }));
        }
        let rejection = moved_to(first_offset);
        assert!(matches!(rejection, TableRejection::Malformed { ref detail, .. } if detail.contains("overlaps")));
    }

    #[test]
    fn rejects_bad_buffer_layout() {
        let file = write(&[sample()]);
        let (footer, _) = read_footer(&file).unwrap();
        let block = footer.recordBatches().unwrap().get(0);
        let start = block.offset() as usize;
        let message = read_message(&file[start..start + block.metaDataLength() as usize], TablePart::Batch(0)).unwrap();
        let buffers = message.header_as_record_batch().unwrap().buffers().unwrap();
        // Buffers: id validity, id values, name validity, name offsets (6 i32), name values, ...
        let (id_values, offsets) = (buffers.get(1).offset(), buffers.get(3).offset());
        for (changed, expected) in [([offsets, 25], "not a multiple of 4"), ([id_values, 24], "buffers overlap")] {
            let mut bad = file.clone();
            patch(&mut bad, &le64(&[offsets, 24]), &le64(&changed));
            let rejection = check(&bad).unwrap_err();
            assert!(matches!(
                rejection,
                TableRejection::Malformed { part: TablePart::Batch(0), ref detail } if detail.contains(expected)
            ));
        }
    }

    #[test]
    fn enforces_row_and_column_limits() {
        let file = Bytes::from(write(&[sample(), sample()]));
        let rows = TableLimits { max_rows: 9, ..LIMITS };
        let rejection = validate_table(file.clone(), &rows).unwrap_err();
        assert!(matches!(rejection, TableRejection::TooManyRows { rows: 10, limit: 9 }));
        let columns = TableLimits { max_columns: 2, ..LIMITS };
        let rejection = validate_table(file, &columns).unwrap_err();
        assert!(matches!(rejection, TableRejection::TooManyColumns { columns: 3, limit: 2 }));
    }

    #[test]
    fn rejects_bad_column_names() {
        let rejection = |names: &[&str]| {
            let one = || Arc::new(Int64Array::from(vec![1])) as ArrayRef;
            check(&write(&[table(names.iter().map(|name| (*name, one())).collect())])).unwrap_err()
        };
        let long = "x".repeat(MAX_COLUMN_NAME_BYTES + 1);
        assert!(matches!(rejection(&["a", ""]), TableRejection::EmptyColumnName { index: 1 }));
        assert!(matches!(
            rejection(&["a", &long]),
            TableRejection::ColumnNameTooLong { index: 1, bytes, limit }
                if bytes == MAX_COLUMN_NAME_BYTES + 1 && limit == MAX_COLUMN_NAME_BYTES
        ));
        assert!(matches!(rejection(&["a", "b\n"]), TableRejection::ControlCharacterInName { index: 1 }));
        assert!(matches!(
            rejection(&["a", "b", "a"]),
            TableRejection::DuplicateColumnName { ref name } if name == "a"
        ));
    }

    #[test]
    fn rejects_unsupported_types() {
        let union = UnionFields::try_new([0], [Field::new("i", DataType::Int64, false)]).unwrap();
        let union = DataType::Union(union, UnionMode::Sparse);
        let views = DataType::new_list(DataType::Utf8View, true);
        let nested_values = DataType::Dictionary(Box::new(DataType::Int32), Box::new(views.clone()));
        for (column, unsupported) in
            [(union.clone(), union), (views, DataType::Utf8View), (nested_values.clone(), nested_values)]
        {
            let schema = Schema::new(vec![Field::new("c", column, true)]);
            let rejection = check(&write_with(IpcWriteOptions::default(), &schema, &[])).unwrap_err();
            assert!(matches!(
                rejection,
                TableRejection::UnsupportedType { ref column, ref data_type } if column == "c" && *data_type == unsupported
            ));
        }
        let negative = Schema::new(vec![Field::new("c", DataType::FixedSizeBinary(-1), true)]);
        let rejection = check(&write_with(IpcWriteOptions::default(), &negative, &[])).unwrap_err();
        assert!(matches!(rejection, TableRejection::Malformed { part: TablePart::Schema, .. }));
    }

    #[test]
    fn rejects_invalid_utf8_at_any_depth() {
        for batch in [sample(), nested()] {
            let mut file = write(&[batch]);
            patch(&mut file, b"needle", b"\xffeedle");
            let rejection = check(&file).unwrap_err();
            assert!(
                matches!(
                    rejection,
                    TableRejection::Invalid { part: TablePart::Batch(0), ref error }
                        if error.to_string().contains("Invalid UTF8")
                ),
                "{rejection:?}"
            );
        }
    }

    #[test]
    fn rejects_offsets_out_of_bounds() {
        let mut file = write(&[sample()]);
        patch(&mut file, &le32(&[0, 6, 11, 18, 18, 19]), &le32(&[0, 6, 11, 18, 18, 255]));
        let rejection = check(&file).unwrap_err();
        assert!(matches!(rejection, TableRejection::Invalid { part: TablePart::Batch(0), .. }));
    }

    #[test]
    fn rejects_dictionary_key_out_of_range() {
        let mut file = write(&[sample()]);
        patch(&mut file, &le64(&[2, 0, 1, 2, 2]), &le64(&[2, 0, 1, 2, 3]));
        let rejection = check(&file).unwrap_err();
        assert!(matches!(rejection, TableRejection::Invalid { part: TablePart::Batch(0), .. }));
    }

    #[test]
    fn rejects_compressed_bodies() {
        // Empty buffers are written without calling the (absent) lz4 codec.
        let empty = table(vec![("id", Arc::new(Int64Array::from(Vec::<i64>::new())) as ArrayRef)]);
        let options = IpcWriteOptions::default().try_with_compression(Some(CompressionType::LZ4_FRAME)).unwrap();
        let file = write_with(options, &empty.schema(), &[empty]);
        let rejection = check(&file).unwrap_err();
        assert!(matches!(rejection, TableRejection::Compressed { part: TablePart::Batch(0) }));
        assert!(rejection.to_string().contains("compressed ipc bodies are not supported"));
    }

    #[test]
    fn rejects_dictionary_deltas() {
        let with_values = |values: Vec<&str>| {
            let keys = Int64Array::from(vec![0]);
            let column = DictionaryArray::new(keys, Arc::new(StringArray::from(values)));
            table(vec![("k", Arc::new(column) as ArrayRef)])
        };
        let (first, second) = (with_values(vec!["x"]), with_values(vec!["x", "y"]));
        let options = IpcWriteOptions::default().with_dictionary_handling(DictionaryHandling::Delta);
        let file = write_with(options, &first.schema(), &[first, second]);
        let rejection = check(&file).unwrap_err();
        assert!(matches!(rejection, TableRejection::DictionaryUpdate { part: TablePart::Dictionary(1), id: 0 }));
    }

    #[test]
    fn truncated_or_bit_flipped_files_never_panic() {
        for file in [write(&[sample(), sample()]), write(&[nested()])] {
            assert!(check(&file).is_ok());
            for len in 0..file.len() {
                assert!(check(&file[..len]).is_err());
            }
            let mut flipped = file.clone();
            for at in 0..file.len() {
                for bit in 0..8 {
                    flipped[at] ^= 1 << bit;
                    let _ = check(&flipped);
                    flipped[at] ^= 1 << bit;
                }
            }
        }
    }
}
