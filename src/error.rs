//! The library's error type: one variant per way an operation fails, one [`Corruption`] variant
//! per way the bytes of a file can be wrong.

use std::path::PathBuf;

/// Everything that can go wrong in mmsb.
///
/// [`Error::is_data_error`] separates "the data is bad" (exit code 1 in the command-line tool)
/// from "the request or the environment is bad" (exit code 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O error on a named file.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// The underlying error (shown in the message, so not chained as a source).
        cause: std::io::Error,
    },
    /// The bytes of a file are not a valid mmsb file.
    #[error("{}: at byte offset {offset}: {problem}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Byte offset in the file where the problem was found.
        offset: u64,
        /// What is wrong.
        problem: Corruption,
    },
    /// A log record that is well formed but cannot be applied to the state it is replayed on.
    #[error("{}: record seq {seq} at byte offset {offset}: {reason}", path.display())]
    DeltaRejected {
        /// The log segment holding the record.
        path: PathBuf,
        /// Byte offset of the record's frame in the segment.
        offset: u64,
        /// The record's sequence number.
        seq: u64,
        /// Why it does not apply.
        reason: String,
    },
    /// A log was written against another state than the checkpoint it is replayed on.
    #[error(
        "{}: log belongs to state {log_base}, but the checkpoint has state {checkpoint_state}",
        path.display()
    )]
    WrongBase {
        /// The log segment.
        path: PathBuf,
        /// The state hash the log's header names.
        log_base: String,
        /// The checkpoint's state hash.
        checkpoint_state: String,
    },
    /// Another process holds a log's write lock (docs/FORMAT.md, "The log lock").
    #[error("{}: locked by {holder}; pass --wait to wait for it", path.display())]
    Locked {
        /// The log directory.
        path: PathBuf,
        /// Who holds the lock, as far as the lock file says.
        holder: String,
    },
    /// The machine cannot give the memory a valid request needs (a page larger than memory).
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A CUDA driver, NVRTC or device problem (no driver, no device, out of memory, ...).
    #[error("GPU: {0}")]
    Gpu(String),
    /// The request itself cannot be carried out (bad argument, missing page, ...).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// True when the error says the data on disk is bad (as opposed to a usage or I/O problem).
    pub fn is_data_error(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. } | Error::DeltaRejected { .. } | Error::WrongBase { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            cause,
        }
    }
}

/// Shorthand for results in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One variant per way the bytes of an mmsb (or safetensors) file can be wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The file is shorter than the structure being read.
    #[error("file truncated: need {needed} bytes here, {available} available")]
    Truncated {
        /// Bytes the structure needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// The magic bytes are not those of the expected file kind.
    #[error("bad magic {found:?}, expected {expected:?}")]
    BadMagic {
        /// What the file has.
        found: String,
        /// What it should have.
        expected: &'static str,
    },
    /// The major format version is not one this build reads.
    #[error("format version {major}.{minor} is not supported (this build reads major version {supported})")]
    UnsupportedVersion {
        /// Major version in the file.
        major: u16,
        /// Minor version in the file.
        minor: u16,
        /// The major version this build reads.
        supported: u16,
    },
    /// A stored CRC32C does not match the bytes it covers.
    #[error("{what} checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// What the checksum covers.
        what: String,
        /// The stored value.
        stored: u32,
        /// The value computed from the bytes.
        computed: u32,
    },
    /// A length, count or offset field holds a value the format does not allow.
    #[error("{field} = {value} is invalid: {why}")]
    BadField {
        /// The field's name as the spec gives it.
        field: &'static str,
        /// The value found.
        value: u64,
        /// The rule it breaks.
        why: String,
    },
    /// Bytes that the spec requires to be zero (padding, reserved fields) are not.
    #[error("non-zero byte {value:#04x} in {what}")]
    NonZeroPadding {
        /// Which padding or reserved area.
        what: &'static str,
        /// The first non-zero byte found.
        value: u8,
    },
    /// A required section kind that this build does not know.
    #[error("unknown required section kind {kind}")]
    UnknownRequiredSection {
        /// The section kind.
        kind: u32,
    },
    /// A string field is not valid UTF-8 (or not the expected JSON).
    #[error("{what} is not valid: {why}")]
    BadText {
        /// Which string.
        what: &'static str,
        /// Why.
        why: String,
    },
    /// Page ids in the index are not strictly increasing.
    #[error("page ids not strictly increasing: {id} follows {previous}")]
    PageOrder {
        /// The previous id.
        previous: u64,
        /// The id that should be larger.
        id: u64,
    },
    /// A log record of a type this build does not know and may not skip.
    #[error("unknown record type {kind}")]
    UnknownRecordType {
        /// The type byte.
        kind: u8,
    },
    /// Sequence numbers are not gapless and increasing.
    #[error("sequence gap: expected seq {expected}, found {found}")]
    SequenceGap {
        /// The sequence number that should come next.
        expected: u64,
        /// The one found.
        found: u64,
    },
    /// Log segments do not form one chain (numbering, base state).
    #[error("segment chain broken: {0}")]
    SegmentChain(String),
    /// A zstd-compressed payload that does not decompress to what its frame says.
    #[error("compressed payload invalid: {0}")]
    Compression(String),
    /// A damaged record that cannot be a torn tail (whole records follow it, or it is not in
    /// the last segment).
    #[error("damaged record ({why}) {context}: this is corruption, not a torn tail")]
    CorruptRecord {
        /// What is wrong with the record.
        why: String,
        /// Why it cannot be a torn tail.
        context: &'static str,
    },
    /// The last record is incomplete, as a crash in the middle of an append leaves it.
    #[error("torn tail: {len} bytes of an incomplete last record ({why})")]
    TornTail {
        /// Bytes from the start of the torn record to the end of the file.
        len: u64,
        /// What is incomplete about it.
        why: String,
    },
    /// A file of another kind where an mmsb file was expected.
    #[error("this is {what}, not {expected}: {todo}")]
    NotMmsb {
        /// What was expected.
        expected: &'static str,
        /// What the file looks like.
        what: &'static str,
        /// What to do about it.
        todo: &'static str,
    },
    /// A safetensors file that is not valid.
    #[error("invalid safetensors file: {0}")]
    Safetensors(String),
}
