//! mmsb: a checkpoint of pages plus an append-only log of byte-level deltas, in one versioned,
//! memory-mapped, checksummed on-disk format (docs/FORMAT.md).
//!
//! - [`mod@format`] reads and writes the files: [`format::checkpoint::Checkpoint`] hands out
//!   zero-copy page slices of a mapped checkpoint, [`format::log::Log`] reads a chain of log
//!   segments (telling a torn tail from corruption), [`format::log::LogWriter`] appends under a
//!   durability policy.
//! - [`replay::State`] replays a checkpoint plus a log in memory and computes the
//!   [`page::StateHash`] that names the result.
//! - [`ops::verify::verify`] runs every check and reports every problem; [`ops::inspect`],
//!   [`testing::generate`] and [`ops::safetensors_io`] back the commands of the same names.
//!
//! ```
//! use std::collections::BTreeMap;
//! use mmsb::format::checkpoint::{write_checkpoint, Checkpoint, PageSpec};
//! use mmsb::format::log::{Log, LogOptions, LogWriter};
//! use mmsb::format::record::{Delta, Op};
//! use mmsb::page::PageMeta;
//! use mmsb::replay::{PageCheck, ReplayLimit, State};
//!
//! let dir = tempfile::tempdir()?;
//! let ckpt_path = dir.path().join("state.ckpt");
//! let spec = PageSpec { id: 1, len: 4, epoch: 0, meta: PageMeta::default() };
//! write_checkpoint(&ckpt_path, BTreeMap::new(), [(spec, &b"abcd"[..])])?;
//! let ckpt = Checkpoint::open(&ckpt_path)?;
//!
//! let log_dir = dir.path().join("state.log");
//! let mut log = LogWriter::create(&log_dir, ckpt.state_hash(), 1, LogOptions::default())?;
//! log.append(&Delta { page_id: 1, epoch: 1, timestamp_ns: 0, source: "doc".into(),
//!                     op: Op::Sparse(vec![(1, &b"XY"[..])]) })?;
//! log.finish()?;
//!
//! let mut state = State::from_checkpoint(&ckpt, PageCheck::Check)?;
//! state.replay(&Log::open(&[log_dir])?, ReplayLimit::default())?;
//! assert_eq!(state.page(1).unwrap().data(), b"aXYd");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod error;
pub mod format;
pub mod fsutil;
pub mod gpu;
pub mod graph;
pub mod metrics;
pub mod mmap;
pub mod ops;
pub mod page;
pub mod progress;
pub mod propagate;
pub mod replay;
pub mod select;
pub mod testing;
pub mod timing;

pub use error::{Corruption, Error, GpuError, OutputRefusal, Rejection, Result, WriterRefusal};
