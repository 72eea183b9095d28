//! Replay: a checkpoint plus a log, on the CPU, one GPU or several.

pub mod gpu;
pub mod multi;
pub mod state;

pub use state::{ApplyError, Page, PageCheck, ReplayLimit, ReplaySummary, State};
