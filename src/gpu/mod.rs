//! GPU replay on CUDA, through cudarc with dynamic loading: the crate builds and its CPU parts
//! run on machines without CUDA; [`Gpu::open`] fails with one clear error where there is no
//! driver or no device.
//!
//! - [`Gpu`]: a device's context, stream and kernels (built into the crate for common cards,
//!   else compiled by NVRTC at run time).
//! - [`store::DevicePageStore`]: pages in device memory (pooled), unified memory or host-mapped
//!   memory, with residency, eviction and safe page handles.
//! - [`loader`]: file bytes to device memory through a ring of registered staging slots.
//! - [`plan`]: the CPU half of applying a log: records checked and turned into tile-ordered
//!   batches of writes.
//! - [`apply`]: those batches run by a kernel, bit-identical to the CPU replay.
//! - [`diff`]: where pairs of device buffers differ, found on the device (weight sync's
//!   trainer side).

pub mod apply;
pub mod diff;
pub mod driver;
pub mod kernels;
pub mod loader;
pub mod plan;
pub mod store;

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaStream};

use crate::error::{Error, GpuError, Result};
use driver::gpu_err;

/// An opened CUDA device: context, the stream all replay work is ordered on, and the kernels.
pub struct Gpu {
    /// The device's primary context.
    pub ctx: Arc<CudaContext>,
    /// The stream delta application, CRCs and page copies are ordered on.
    pub stream: Arc<CudaStream>,
    /// The device ordinal.
    pub ordinal: usize,
    /// The device's name.
    pub name: String,
    /// Milliseconds from the call to a usable context (driver load, context creation).
    pub start_ms: f64,
    /// The kernels' code for this card: the built-in CUBIN, else a CUBIN NVRTC compiles for
    /// its architecture, or PTX where the driver did not tell it.
    target: kernels::KernelCode,
    /// The kernels, once compiled and loaded.
    kernels: std::sync::OnceLock<LoadedKernels>,
    /// Held while the kernels are compiled on first use, so that only one thread compiles.
    compiling: std::sync::Mutex<()>,
    /// Pinned staging memory kept between loads (see [`loader::STAGING_KEEP`]).
    pub(crate) staging: std::sync::Mutex<Option<loader::Staging>>,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("ordinal", &self.ordinal)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// When [`Gpu::open`] compiles the kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelCompile {
    /// On another thread while the context is created, where a compile costs no time of its
    /// own: for work that needs them (applying deltas, checksums on the device).
    WhileStarting,
    /// When a kernel is first needed: a run that only loads pages loads no module. (On a card
    /// without a built-in CUBIN that also spares NVRTC, whose compile costs tens of
    /// milliseconds of CPU with its cache warm and hundreds without.)
    WhenNeeded,
}

impl KernelCompile {
    /// For a replay: a log to apply or a check on the device needs the kernels; a replay that
    /// only loads pages does not.
    pub fn for_replay(log: Option<&[std::path::PathBuf]>, checks_on_device: bool) -> KernelCompile {
        if log.is_some_and(|l| !l.is_empty()) || checks_on_device {
            KernelCompile::WhileStarting
        } else {
            KernelCompile::WhenNeeded
        }
    }
}

/// Kernels loaded into a context, and how they were made.
struct LoadedKernels {
    kernels: kernels::Kernels,
    code: kernels::KernelCode,
    compile_ms: f64,
}

/// Number of CUDA devices, or an error saying why there are none to use.
pub fn device_count() -> Result<usize> {
    if !driver::driver_present() {
        return Err(Error::Gpu(GpuError::NoDriver));
    }
    let n = CudaContext::device_count()
        .map_err(|e| Error::Gpu(GpuError::NoDevice(format!("CUDA driver present but unusable: {e}"))))?;
    Ok(n.max(0) as usize)
}

impl Gpu {
    /// Opens device `ordinal`: creates its context and, as `compile` says, compiles the kernels
    /// beside it or leaves them for [`Gpu::kernels`] to compile when first needed.
    pub fn open(ordinal: usize, compile: KernelCompile) -> Result<Gpu> {
        let t0 = Instant::now();
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::Gpu(GpuError::NoDevice(format!(
                "no device cuda:{ordinal} ({count} CUDA device(s) present)"
            ))));
        }
        // The code for this card's architecture, which the driver (started by `device_count`
        // above) tells; where NVRTC must compile it, that runs beside the context's creation.
        // (Started beside `cuInit` instead, the compile competes with it and takes several
        // times longer, and the kernels are ready no sooner.)
        let target = kernels::KernelCode::for_card(driver::compute_capability(ordinal).ok());
        let compiling =
            (compile == KernelCompile::WhileStarting).then(|| std::thread::spawn(move || timed_compile(target)));
        let ctx = CudaContext::new(ordinal).map_err(gpu_err)?;
        let start_ms = crate::timing::ms(t0);
        let loaded = std::sync::OnceLock::new();
        if let Some(thread) = compiling {
            let compiled = thread
                .join()
                .map_err(|_| Error::Gpu(GpuError::Internal("NVRTC thread panicked".into())))?;
            let _ = loaded.set(load_kernels(&ctx, target, compiled)?);
        }
        let stream = ctx.new_stream().map_err(gpu_err)?;
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        Ok(Gpu {
            ctx,
            stream,
            ordinal,
            name,
            start_ms,
            target,
            kernels: loaded,
            compiling: std::sync::Mutex::new(()),
            staging: std::sync::Mutex::new(None),
        })
    }

    /// The loaded kernels, compiled now if [`Gpu::open`] left them for their first use.
    pub fn kernels(&self) -> Result<&kernels::Kernels> {
        if let Some(k) = self.kernels.get() {
            return Ok(&k.kernels);
        }
        // A thread that panicked while compiling left no kernels: compiling again is safe.
        let _only_one = self.compiling.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.kernels.get().is_none() {
            let loaded = load_kernels(&self.ctx, self.target, timed_compile(self.target))?;
            let _ = self.kernels.set(loaded);
        }
        Ok(&self.kernels.get().expect("set above").kernels)
    }

    /// What the kernels were compiled to; `None` while they have not been needed.
    pub fn kernel_code(&self) -> Option<kernels::KernelCode> {
        self.kernels.get().map(|k| k.code)
    }

    /// Milliseconds getting the kernels' code took (an NVRTC compile, beside the context's
    /// creation or at first use; about 0 for a built-in CUBIN); 0 while they have not been
    /// needed.
    pub fn compile_ms(&self) -> f64 {
        self.kernels.get().map_or(0.0, |k| k.compile_ms)
    }

    /// Waits for all work queued on the replay stream.
    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(gpu_err)
    }

    /// Whether this device keeps at least `len` bytes of pinned staging memory from an
    /// earlier load.
    pub fn has_staging(&self, len: usize) -> bool {
        self.kept_staging().as_ref().is_some_and(|s| s.len() >= len)
    }

    /// Unpins and frees the staging memory kept between loads (a later load pins it again).
    pub fn release_staging(&self) {
        let mut kept = self.kept_staging();
        if kept.is_some() {
            let _ = self.ctx.bind_to_thread();
            *kept = None;
        }
    }

    /// Runs `f` on `len` bytes of host memory to upload from: the kept pinned staging when it is
    /// free, holds `len` bytes and `len` is at least `pinned_min`, else ordinary memory; `f`
    /// learns which. Pinned memory must have been read by the device before `f` returns (later
    /// loads reuse it); the kept staging is not held while `f` runs on ordinary memory.
    pub(crate) fn with_upload_memory<R>(
        &self,
        len: usize,
        pinned_min: usize,
        f: impl FnOnce(&mut [u8], bool) -> R,
    ) -> R {
        let mut kept = self.kept_staging();
        match kept.as_mut() {
            Some(s) if len >= pinned_min && s.len() >= len => f(&mut s.bytes_mut()[..len], true),
            _ => {
                drop(kept);
                f(&mut vec![0u8; len], false)
            }
        }
    }

    /// The kept staging. A thread that panicked while holding the lock left either some staging
    /// (synchronised: loads put it back only after their streams finish) or none, both usable.
    pub(crate) fn kept_staging(&self) -> std::sync::MutexGuard<'_, Option<loader::Staging>> {
        self.staging.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for Gpu {
    fn drop(&mut self) {
        // The staging is unpinned while the context is certainly alive (the fields drop after).
        self.release_staging();
    }
}

/// The kernels as `code` (built in, or compiled by NVRTC), and the milliseconds that took.
fn timed_compile(code: kernels::KernelCode) -> Result<(cudarc::nvrtc::Ptx, f64)> {
    let t = Instant::now();
    kernels::compile(code).map(|p| (p, crate::timing::ms(t)))
}

/// Loads what was `compiled` for `target`; where that fails, the code's fallbacks in turn (see
/// [`kernels::KernelCode::fallback`]).
fn load_kernels(
    ctx: &Arc<CudaContext>,
    target: kernels::KernelCode,
    compiled: Result<(cudarc::nvrtc::Ptx, f64)>,
) -> Result<LoadedKernels> {
    let mut first = Some(compiled);
    let ((kernels, compile_ms), code) = kernels::with_fallbacks(target, |code| {
        let (ptx, ms) = first.take().unwrap_or_else(|| timed_compile(code))?;
        Ok((kernels::Kernels::load(ctx, ptx)?, ms))
    })?;
    Ok(LoadedKernels {
        kernels,
        code,
        compile_ms,
    })
}

/// Parses `cuda:N` (or `cuda`, meaning `cuda:0`).
pub fn parse_device(s: &str) -> Option<usize> {
    match s {
        "cuda" => Some(0),
        _ => s.strip_prefix("cuda:")?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a driver, every way in says so by kind, which a caller can match to fall back to
    /// the CPU. (On a machine with a driver this checks the other side: an absent ordinal.)
    #[test]
    fn a_missing_driver_or_device_is_refused_by_kind() {
        if !driver::driver_present() {
            assert!(matches!(device_count(), Err(Error::Gpu(GpuError::NoDriver))));
            assert!(matches!(
                Gpu::open(0, KernelCompile::WhenNeeded),
                Err(Error::Gpu(GpuError::NoDriver))
            ));
        } else {
            eprintln!("a CUDA driver is present: checking an absent ordinal instead");
            assert!(matches!(
                Gpu::open(1 << 20, KernelCompile::WhenNeeded),
                Err(Error::Gpu(GpuError::NoDevice(_)))
            ));
        }
    }

    #[test]
    fn device_names_parse() {
        assert_eq!(parse_device("cuda:3"), Some(3));
        assert_eq!(parse_device("cuda"), Some(0));
        assert_eq!(parse_device("cpu"), None);
        assert_eq!(parse_device("cuda:x"), None);
    }

    #[test]
    fn only_a_replay_that_loads_pages_alone_leaves_the_kernels_for_later() {
        let log = [std::path::PathBuf::from("a.log")];
        assert_eq!(KernelCompile::for_replay(None, false), KernelCompile::WhenNeeded);
        assert_eq!(KernelCompile::for_replay(Some(&[]), false), KernelCompile::WhenNeeded);
        assert_eq!(
            KernelCompile::for_replay(Some(&log), false),
            KernelCompile::WhileStarting
        );
        assert_eq!(KernelCompile::for_replay(None, true), KernelCompile::WhileStarting);
    }

    #[test]
    fn kernels_compile_or_nvrtc_is_absent() {
        // NVRTC is a separate library: where it is installed the kernel source must compile;
        // where it is not, compiling is an error, not a panic.
        // SAFETY: only tries to dlopen the library.
        if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            kernels::compile(kernels::KernelCode::Ptx).expect("kernel source compiles to PTX");
            // A CUBIN for sm_90, one of the architectures the crate builds in.
            kernels::compile(kernels::KernelCode::Cubin(9, 0)).expect("kernel source compiles for sm_90");
            // What makes `Gpu::open` fall back to PTX: an architecture NVRTC does not know.
            assert!(kernels::compile(kernels::KernelCode::Cubin(1, 0)).is_err());
        } else {
            let e = kernels::compile(kernels::KernelCode::Ptx).expect_err("no NVRTC, no kernels");
            assert!(e.to_string().contains("no NVRTC library"), "{e}");
        }
    }
}
