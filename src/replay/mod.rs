//! Replay: a checkpoint plus a log, on the CPU, one GPU or several, through one front door.
//!
//! [`run`] takes the files and [`ReplayOptions`] (the device among them) and returns one
//! [`ReplayReport`]; no caller chooses an engine. Beneath it: [`state`] is the CPU engine (a
//! state in memory and the deltas applied to it, which the GPU layer's plan also builds on),
//! `cpu`, [`gpu`] and [`multi`] run a whole replay on their device and time its phases.
//!
//! ```
//! use mmsb::replay::{Device, ReplayOptions};
//!
//! let opts = ReplayOptions { device: Device::Cpu, ..Default::default() };
//! let replayed = mmsb::replay::run("testdata/small.ckpt".as_ref(), &["testdata/small.log".into()], &opts)?;
//! assert!(replayed.report.state_hash().is_some());
//! assert!(replayed.report.summary().records > 0);
//! # Ok::<(), mmsb::Error>(())
//! ```

mod cpu;
pub mod gpu;
pub mod multi;
pub mod state;

use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gpu::driver::MemoryKind;
use crate::gpu::loader::ReadMode;
use crate::gpu::store::DevicePageStore;
use crate::page::StateHash;
use crate::progress::Progress;
use crate::select::PageSelector;

pub use cpu::{CpuReplayReport, CpuTimings};
pub use multi::Placement;
pub use state::{ApplyError, Page, PageCheck, ReplayLimit, ReplaySummary, State};

/// Where a replay runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// `cuda:0` when a CUDA device is there, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// One CUDA device, by ordinal.
    Cuda(usize),
    /// Several CUDA devices (an ordinal may repeat: several contexts of one device), with
    /// [`ReplayOptions::placement`] spreading the pages.
    Several(Vec<usize>),
}

impl FromStr for Device {
    type Err = String;

    /// `auto`, `cpu`, `cuda` (device 0), `cuda:N`, or a list `cuda:N,cuda:M,...`.
    fn from_str(s: &str) -> Result<Device, String> {
        match s {
            "auto" => return Ok(Device::Auto),
            "cpu" => return Ok(Device::Cpu),
            _ => {}
        }
        if let Some(n) = crate::gpu::parse_device(s) {
            return Ok(Device::Cuda(n));
        }
        if s.contains(',') {
            return s
                .split(',')
                .map(|x| crate::gpu::parse_device(x.trim()))
                .collect::<Option<Vec<usize>>>()
                .map(Device::Several)
                .ok_or_else(|| format!("{s}: expected cuda:N,cuda:M,..."));
        }
        Err(format!("{s}: expected auto, cpu, cuda:N or a list cuda:N,cuda:M"))
    }
}

/// How to replay. `Default` is a whole replay on `auto`, checked, with nothing written.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Where.
    pub device: Device,
    /// With several devices: how the pages are spread.
    pub placement: Placement,
    /// GPU memory for the pages.
    pub memory: MemoryKind,
    /// GPU: how to read the checkpoint (`None`: by page-cache residency).
    pub read_mode: Option<ReadMode>,
    /// GPU: check the bytes on the device against the checkpoint's CRC32C and compute the
    /// state hash there (the CPU always checks and always hashes).
    pub verify: bool,
    /// The pages the report, the hash and the output cover. A GPU loads only them and applies
    /// only their deltas; the CPU replays everything (every record is still checked) and keeps
    /// them. One device only.
    pub pages: PageSelector,
    /// Where to stop in the log.
    pub limit: ReplayLimit,
    /// Write the replayed state here as a checkpoint (atomically). One device only.
    pub output: Option<PathBuf>,
    /// Counts the bytes done, adding to its total as the work becomes known.
    pub progress: Option<Progress>,
    /// One device: a device already opened to use (it must be the device asked for). A process
    /// that replays again and again keeps one, as `bench load` does, and saves each replay
    /// the device's start: a context, a stream, the kernels' module, pinned staging memory.
    pub opened: Option<std::sync::Arc<crate::gpu::Gpu>>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            device: Device::Auto,
            placement: Placement::Shard,
            memory: MemoryKind::Device,
            read_mode: None,
            verify: false,
            pages: PageSelector::default(),
            limit: ReplayLimit::default(),
            output: None,
            progress: None,
            opened: None,
        }
    }
}

/// What a replay did, by the engine that did it. Serialized as that engine's report.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
// One report per replay: its size does not matter, and boxing would show in every match.
#[allow(clippy::large_enum_variant)]
pub enum ReplayReport {
    /// On the CPU.
    Cpu(CpuReplayReport),
    /// On one GPU.
    Gpu(gpu::GpuReplayReport),
    /// On several GPUs.
    Several(multi::MultiReplayReport),
}

impl ReplayReport {
    /// The replayed state's hash; `None` for a GPU replay without
    /// [`ReplayOptions::verify`].
    pub fn state_hash(&self) -> Option<StateHash> {
        match self {
            ReplayReport::Cpu(r) => Some(r.state_hash),
            ReplayReport::Gpu(r) => r.state_hash,
            ReplayReport::Several(r) => r.state_hash,
        }
    }

    /// The log records applied, and a torn tail left unread.
    pub fn summary(&self) -> &ReplaySummary {
        match self {
            ReplayReport::Cpu(r) => &r.summary,
            ReplayReport::Gpu(r) => &r.summary,
            ReplayReport::Several(r) => &r.summary,
        }
    }
}

/// A finished replay: its report and, for a GPU replay, the pages still on the device(s).
pub struct Replayed {
    /// What was done.
    pub report: ReplayReport,
    /// The device page stores (one per device; none for the CPU).
    pub device_pages: Vec<DevicePageStore>,
}

impl Replayed {
    /// The report, leaving the device pages to the end of the process: the driver reclaims the
    /// device memory, the pinned registrations and the contexts at exit, while releasing them
    /// one by one first adds tens of milliseconds. For a process that exits after the report.
    pub fn into_report_leaving_device_memory_to_exit(self) -> ReplayReport {
        std::mem::forget(self.device_pages);
        self.report
    }
}

/// Replays `checkpoint` plus `logs` (segments or log directories) as `o` says.
///
/// Fails before reading anything when the output names an input, or when an option does not
/// fit the device (`memory`/`read_mode` on the CPU; `pages`/`output` on several devices).
/// Replicas whose state hashes differ are reported
/// ([`multi::MultiReplayReport::replicas_agree`]), not refused.
pub fn run(checkpoint: &Path, logs: &[PathBuf], o: &ReplayOptions) -> Result<Replayed> {
    check_output(checkpoint, logs, o)?;
    // `auto` resolves to cuda:0 or the CPU, and the CPU's report says why.
    let (device, cpu_label) = match &o.device {
        Device::Auto => match crate::gpu::device_count() {
            Ok(n) if n > 0 => (Device::Cuda(0), String::new()),
            Ok(_) => (Device::Cpu, "cpu (auto: no CUDA device)".to_string()),
            Err(e) => (Device::Cpu, format!("cpu (auto: {e})")),
        },
        d => (d.clone(), "cpu".to_string()),
    };
    match device {
        Device::Cpu | Device::Auto => Ok(Replayed {
            report: ReplayReport::Cpu(cpu_run(checkpoint, logs, o, cpu_label, None)?),
            device_pages: Vec::new(),
        }),
        Device::Cuda(ordinal) => {
            let (report, store) = gpu::run(checkpoint, logs, ordinal, o)?;
            Ok(Replayed {
                report: ReplayReport::Gpu(report),
                device_pages: vec![store],
            })
        }
        Device::Several(ordinals) => {
            if !o.pages.is_all() || o.output.is_some() {
                return Err(Error::Invalid(
                    "--pages and -o work with one device; with several, the placement decides the pages".into(),
                ));
            }
            let (report, stores) = multi::run(checkpoint, logs, &ordinals, o)?;
            Ok(Replayed {
                report: ReplayReport::Several(report),
                device_pages: stores,
            })
        }
    }
}

fn cpu_run(
    checkpoint: &Path,
    logs: &[PathBuf],
    o: &ReplayOptions,
    device: String,
    visit: Option<&mut StateVisitor<'_>>,
) -> Result<CpuReplayReport> {
    if o.read_mode.is_some() || o.memory != MemoryKind::Device {
        return Err(Error::Invalid(
            "--memory and --read apply to GPU replay (--device cuda:N)".into(),
        ));
    }
    cpu::run(checkpoint, logs, o, device, visit)
}

/// Refuses an output that names an input or cannot be written, before anything is read.
fn check_output(checkpoint: &Path, logs: &[PathBuf], o: &ReplayOptions) -> Result<()> {
    if let Some(out) = &o.output {
        let inputs: Vec<&Path> = std::iter::once(checkpoint)
            .chain(logs.iter().map(PathBuf::as_path))
            .collect();
        crate::fsutil::refuse_output_naming_input(out, &inputs)?;
        crate::fsutil::resolve_output(out)?;
    }
    Ok(())
}

/// What [`run_on_cpu`] lends the replayed state to.
pub type StateVisitor<'v> = dyn FnMut(&State<'_>) -> Result<()> + 'v;

/// [`run`] on the CPU, whatever `o.device` says (`memory` and `read_mode` refused as there),
/// lending the replayed state (the pages `o.pages` selects) to `visit` before it is dropped: how
/// a caller in the same process takes the pages (the Python package's loaders). Unchanged pages
/// are the mapped checkpoint's bytes.
pub fn run_on_cpu(
    checkpoint: &Path,
    logs: &[PathBuf],
    o: &ReplayOptions,
    visit: &mut StateVisitor<'_>,
) -> Result<CpuReplayReport> {
    check_output(checkpoint, logs, o)?;
    cpu_run(checkpoint, logs, o, "cpu".into(), Some(visit))
}

/// The dependency graph where a replay stopped (`limit`; a stop by epoch is placed at the
/// last record applied, `last_seq`, since graph records change no page), for the checkpoint
/// it writes: empty when the state has none.
fn graph_at_stop(
    head: &crate::format::checkpoint::CheckpointHead,
    log: Option<&crate::format::log::Log>,
    limit: ReplayLimit,
    last_seq: Option<u64>,
) -> Result<Vec<crate::format::graph::Derivation>> {
    if !crate::graph::has_graph(head, log) {
        return Ok(Vec::new());
    }
    let stop = match limit {
        ReplayLimit { to_seq: Some(n), .. } => Some(n),
        ReplayLimit { to_epoch: Some(_), .. } => Some(last_seq.unwrap_or(0)),
        _ => None,
    };
    Ok(crate::graph::read_history(head, log, stop)?.graph.to_derivations())
}

impl crate::metrics::Measured for CpuReplayReport {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        m.records += self.summary.records;
        m.state_hash = Some(self.state_hash.to_hex());
        m.device = Some("cpu".into());
        m.pages += self.pages;
        m.phases_ms(&self.timings_ms);
    }
}

impl crate::metrics::Measured for ReplayReport {
    fn measure(&self, m: &mut crate::metrics::RunMetrics) {
        if let ReplayReport::Cpu(r) = self {
            return r.measure(m);
        }
        m.records += self.summary().records;
        m.state_hash = self.state_hash().map(|h| h.to_hex());
        match self {
            ReplayReport::Cpu(_) => {}
            ReplayReport::Gpu(r) => {
                m.device = Some(r.device.clone());
                m.pages += r.pages;
                m.phases_ms(&r.timings_ms);
            }
            ReplayReport::Several(r) => {
                m.device = Some(
                    r.devices
                        .iter()
                        .map(|d| d.device.as_str())
                        .collect::<Vec<_>>()
                        .join(","),
                );
                m.pages += r.devices.iter().map(|d| d.pages).sum::<u64>();
                m.phases_ms(&r.timings_ms);
            }
        }
    }
}
