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
        reason: Rejection,
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
    /// Pages a process holds (tensors) are not the state a sync log applies to: a tensor
    /// missing, extra, of another dtype, shape or length, or (from the log's start) of other
    /// bytes.
    #[error("{}: the tensors given are not this log's base (state {log_base}): {why}", path.display())]
    HeldPagesNotBase {
        /// The log's first segment.
        path: PathBuf,
        /// The state hash the log's header names.
        log_base: String,
        /// Which tensor, and how it differs.
        why: String,
    },
    /// Another process holds a log's write lock (docs/FORMAT.md, "The log lock").
    #[error("{}: locked by {holder}; pass --wait to wait for it", path.display())]
    Locked {
        /// The log directory.
        path: PathBuf,
        /// Who holds the lock, as far as the lock file says.
        holder: String,
    },
    /// An output path that cannot be written as asked; nothing was written.
    #[error("{}: {refusal}", path.display())]
    OutputRefused {
        /// The output path as given.
        path: PathBuf,
        /// What is wrong with it.
        refusal: OutputRefusal,
    },
    /// A log writer asked to do what it cannot; nothing was written.
    #[error("{0}")]
    LogWriter(WriterRefusal),
    /// The machine cannot give the memory a valid request needs (a page larger than memory).
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// A CUDA driver, NVRTC or device problem; [`GpuError`] says which kind.
    #[error("GPU: {0}")]
    Gpu(GpuError),
    /// A change to the dependency graph that is refused (a cycle, say); nothing was written.
    #[error("{0}")]
    Graph(GraphError),
    /// A propagation that cannot run; nothing was written.
    #[error("{0}")]
    Propagate(PropagateError),
    /// The request itself cannot be carried out (bad argument, missing page, ...).
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// True when the error says the data on disk is bad (as opposed to a usage or I/O problem).
    pub fn is_data_error(&self) -> bool {
        matches!(
            self,
            Error::Corrupt { .. }
                | Error::DeltaRejected { .. }
                | Error::WrongBase { .. }
                | Error::HeldPagesNotBase { .. }
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
    /// A log's BASE record describes pages whose state hash is not the log's `base_state`.
    #[error("the BASE record's pages hash to {record}, but the log's base_state is {log}")]
    BaseMismatch {
        /// The state hash of the record's pages.
        record: String,
        /// The segment header's `base_state`.
        log: String,
    },
}

/// Why a well-formed log record does not apply to the state it is replayed on
/// (docs/FORMAT.md, "Applying a record").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// A record other than CREATE for a page that is not there.
    #[error("page {page} does not exist")]
    NoPage {
        /// The record's page.
        page: u64,
    },
    /// A CREATE for a page that is already there.
    #[error("page {page} already exists")]
    PageExists {
        /// The record's page.
        page: u64,
    },
    /// The record's epoch is not above the page's.
    #[error("epoch {epoch} does not advance page {page} past its epoch {page_epoch}")]
    EpochNotAdvanced {
        /// The record's page.
        page: u64,
        /// The record's epoch.
        epoch: u64,
        /// The page's epoch before it.
        page_epoch: u64,
    },
    /// A FULL record whose byte count is not the page's length.
    #[error("full write of {bytes} bytes to page {page} of {page_len} bytes")]
    FullLength {
        /// The record's page.
        page: u64,
        /// The bytes it carries.
        bytes: u64,
        /// The page's length.
        page_len: u64,
    },
    /// A SPARSE range, or the MASKED or FILL range, that does not lie inside the page.
    #[error("{range} {offset}+{len} past the end of page {page}{}", page_len.map_or(String::new(), |l| format!(" ({l} bytes)")))]
    OutOfPage {
        /// Which kind of range: `range` (SPARSE), `masked range` or `fill range`.
        range: &'static str,
        /// The record's page.
        page: u64,
        /// Where the range starts.
        offset: u64,
        /// Its length.
        len: u64,
        /// The page's length, where the reader knows it.
        page_len: Option<u64>,
    },
    /// A compressed payload that declares more bytes than its record type can carry for its
    /// page: refused before it is decompressed.
    #[error(
        "its compressed payload declares {declared} bytes, but a {record} record for {} carries at most {max}",
        page_len.map_or(format!("page {page}, which does not exist"), |l| format!("page {page} of {l} bytes"))
    )]
    PayloadCannotFit {
        /// The record type's name.
        record: &'static str,
        /// The decompressed size the payload declares.
        declared: u64,
        /// The record's page.
        page: u64,
        /// The page's length, when the page exists.
        page_len: Option<u64>,
        /// The most such a record can carry for that page.
        max: u64,
    },
    /// A record a log-only compaction cannot merge in memory (it names the limit and what to
    /// do instead).
    #[error("{0}")]
    CannotMerge(String),
}

/// Why an output path is refused (before anything is written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OutputRefusal {
    /// The path is a directory.
    #[error("output is a directory; name a file")]
    IsDirectory,
    /// The path is a FIFO, device or socket.
    #[error("output is not a regular file (a FIFO, device or socket); name a file")]
    NotRegularFile,
    /// The output is one of the inputs (the same file, or inside an input log directory).
    #[error("the output names the input {}; choose another output path (nothing was written)", input.display())]
    NamesInput {
        /// The input it names.
        input: PathBuf,
    },
    /// A second output (compaction's rest log) names an input or the first output's directory.
    #[error("the rest log names an input or the output's directory; choose another path (nothing was written)")]
    RestLogCollides,
}

/// What went wrong on the GPU side, by kind (the message says the rest).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GpuError {
    /// No CUDA driver library on this machine.
    #[error("no CUDA driver (libcuda.so) on this machine")]
    NoDriver,
    /// The driver cannot be used, or the device asked for is not there.
    #[error("{0}")]
    NoDevice(String),
    /// A CUDA driver call failed (its name and result code are in the message).
    #[error("{0}")]
    Driver(String),
    /// No kernel code could be had for the card: no built-in CUBIN, no NVRTC, a failed compile.
    #[error("{0}")]
    Kernels(String),
    /// Memory the load needs could not be had (device memory to oversubscribe, host staging).
    #[error("{0}")]
    Memory(String),
    /// A worker thread panicked or an internal invariant failed: a bug in mmsb to report.
    #[error("{0}")]
    Internal(String),
}

/// Why a log writer refuses a request (nothing was written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WriterRefusal {
    /// A new log in a directory that already holds segments.
    #[error("{}: already holds log segments", dir.display())]
    HoldsSegments {
        /// The log directory.
        dir: PathBuf,
    },
    /// An append to a directory with no segment.
    #[error("{}: no segments", dir.display())]
    NoSegments {
        /// The log directory.
        dir: PathBuf,
    },
    /// An append to a segment of a newer minor version than this build writes.
    #[error(
        "{}: written in format {major}.{minor}, newer than the {major}.{writes} this build writes: appending could break what that version promises its readers",
        segment.display()
    )]
    NewerMinor {
        /// The last segment.
        segment: PathBuf,
        /// Its major version.
        major: u16,
        /// Its minor version.
        minor: u16,
        /// The minor version this build writes.
        writes: u16,
    },
    /// `begin_group` with a group open.
    #[error("a log group is already open")]
    GroupAlreadyOpen,
    /// `commit_group` or `abort_group` with no group open.
    #[error("no log group is open")]
    NoGroupOpen,
    /// An aborted group could not be cut off because a reader has the segment open: it stays
    /// as a torn tail.
    #[error("{}: a reader has the segment open, so an unfinished write was left as a torn tail (run `mmsb recover`)", segment.display())]
    ReaderHoldsSegment {
        /// The segment.
        segment: PathBuf,
    },
    /// An append after an unfinished group was left in the segment.
    #[error("{}: an unfinished group was left open; run `mmsb recover` before appending", segment.display())]
    UnfinishedGroup {
        /// The segment.
        segment: PathBuf,
    },
    /// A new segment where a file of that name exists.
    #[error("{}: segment exists already", segment.display())]
    SegmentExists {
        /// The segment's path.
        segment: PathBuf,
    },
}

/// Why a change to the graph is refused (the graph is left as it was).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// The parents given would close a cycle; the pages of the cycle, from the page being set
    /// back to itself.
    #[error("page {page}: these parents would close the cycle {}", cycle.iter().map(u64::to_string).collect::<Vec<_>>().join(" -> "))]
    Cycle {
        /// The page whose parents were being set.
        page: u64,
        /// The cycle, starting and ending at `page`.
        cycle: Vec<u64>,
    },
    /// A page named as a parent of itself.
    #[error("page {page} cannot derive from itself")]
    SelfParent {
        /// The page.
        page: u64,
    },
    /// A page that has no rule to clear.
    #[error("page {page} is not a derived page")]
    NotDerived {
        /// The page.
        page: u64,
    },
    /// A derived page with no parent.
    #[error("page {page}: a derived page needs at least one parent")]
    NoParents {
        /// The page.
        page: u64,
    },
}

/// Why an engine cannot be made, or a change cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PropagateError {
    /// A derived page whose rule, over its parents' lengths, gives another length than the
    /// page has (outputs are written over the page, so they must fit it exactly).
    #[error("page {page}: rule {rule} gives {output_len} bytes from its parents, the page has {page_len}")]
    OutputLength {
        /// The derived page's id.
        page: u64,
        /// The rule's name.
        rule: String,
        /// What the rule gives.
        output_len: u64,
        /// What the page has.
        page_len: u64,
    },
    /// A page uses a named derivation that was not registered.
    #[error("page {page}: rule {rule} is not a built-in rule and was not registered by this program")]
    UnknownRule {
        /// The derived page's id.
        page: u64,
        /// The rule's name.
        rule: String,
    },
    /// New bytes of another length than the page's.
    #[error("page {page}: {bytes} bytes submitted for a page of {page_len}")]
    SubmitLength {
        /// The page's id.
        page: u64,
        /// Bytes submitted.
        bytes: u64,
        /// The page's length.
        page_len: u64,
    },
}

impl From<GraphError> for Error {
    fn from(e: GraphError) -> Error {
        Error::Graph(e)
    }
}

impl From<PropagateError> for Error {
    fn from(e: PropagateError) -> Error {
        Error::Propagate(e)
    }
}
