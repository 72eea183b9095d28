//! GPU replay on CUDA, through cudarc with dynamic loading: the crate builds and its CPU parts
//! run on machines without CUDA; [`Gpu::open`] fails with one clear error where there is no
//! driver or no device.
//!
//! - [`Gpu`]: a device's context, stream and kernels (NVRTC-compiled at run time).
//! - [`store::DevicePageStore`]: pages in device memory (pooled), unified memory or host-mapped
//!   memory, with residency, eviction and safe page handles.
//! - [`loader`]: file bytes to device memory through a ring of registered staging slots.
//! - [`plan`]: the CPU half of applying a log: records checked and turned into tile-ordered
//!   batches of writes.
//! - [`apply`]: those batches run by a kernel, bit-identical to the CPU replay.

pub mod apply;
pub mod driver;
pub mod kernels;
pub mod loader;
pub mod multi;
pub mod plan;
pub mod replay;
pub mod store;

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaContext, CudaStream};

use crate::error::{Error, Result};
use driver::gpu_err;

/// An opened CUDA device: context, the stream all replay work is ordered on, and the kernels.
pub struct Gpu {
    /// The device's primary context.
    pub ctx: Arc<CudaContext>,
    /// The stream delta application, CRCs and page copies are ordered on.
    pub stream: Arc<CudaStream>,
    /// The loaded kernels.
    pub kernels: kernels::Kernels,
    /// The device ordinal.
    pub ordinal: usize,
    /// The device's name.
    pub name: String,
    /// Milliseconds from the call to a usable context (driver load, context creation).
    pub start_ms: f64,
    /// Milliseconds the NVRTC compile took (in parallel with context creation).
    pub compile_ms: f64,
    /// What the kernels were compiled to: a CUBIN for this card, or the PTX fallback.
    pub kernel_code: kernels::KernelCode,
    /// Pinned staging memory kept between loads (see [`loader::STAGING_KEEP`]).
    pub(crate) staging: std::sync::Mutex<Option<loader::Staging>>,
}

/// Number of CUDA devices, or an error saying why there are none to use.
pub fn device_count() -> Result<usize> {
    if !driver::driver_present() {
        return Err(Error::Gpu("no CUDA driver (libcuda.so) on this machine".into()));
    }
    let n = CudaContext::device_count().map_err(|e| Error::Gpu(format!("CUDA driver present but unusable: {e}")))?;
    Ok(n.max(0) as usize)
}

impl Gpu {
    /// Opens device `ordinal`: creates its context while NVRTC compiles the kernels on another
    /// thread, then loads them.
    pub fn open(ordinal: usize) -> Result<Gpu> {
        let t0 = Instant::now();
        let count = device_count()?;
        if ordinal >= count {
            return Err(Error::Gpu(format!(
                "no device cuda:{ordinal} ({count} CUDA device(s) present)"
            )));
        }
        // NVRTC compiles for this card's architecture, which the driver (started by
        // `device_count` above) tells, beside the context's creation. (Started beside `cuInit`
        // instead, a compile took 106-118 ms instead of 23-35 on the lent H200, and the kernels
        // were ready no sooner.)
        let code = driver::compute_capability(ordinal).map_or(kernels::KernelCode::Ptx, |(major, minor)| {
            kernels::KernelCode::Cubin(major, minor)
        });
        let compile = std::thread::spawn(move || {
            let t = Instant::now();
            kernels::compile(code).map(|p| (p, t.elapsed().as_secs_f64() * 1e3))
        });
        let ctx = CudaContext::new(ordinal).map_err(gpu_err)?;
        let start_ms = t0.elapsed().as_secs_f64() * 1e3;
        let compiled = compile
            .join()
            .map_err(|_| Error::Gpu("NVRTC thread panicked".into()))?
            .and_then(|(code, ms)| Ok((kernels::Kernels::load(&ctx, code)?, ms)));
        let (kernels, compile_ms, kernel_code) = match compiled {
            Ok((k, ms)) => (k, ms, code),
            // A card NVRTC cannot compile for, or a CUBIN the driver refuses: PTX, which the
            // driver compiles for the card.
            Err(_) if code != kernels::KernelCode::Ptx => {
                let t = Instant::now();
                let ptx = kernels::compile(kernels::KernelCode::Ptx)?;
                let k = kernels::Kernels::load(&ctx, ptx)?;
                (k, t.elapsed().as_secs_f64() * 1e3, kernels::KernelCode::Ptx)
            }
            Err(e) => return Err(e),
        };
        let stream = ctx.new_stream().map_err(gpu_err)?;
        let name = ctx.name().unwrap_or_else(|_| "unknown".into());
        Ok(Gpu {
            ctx,
            stream,
            kernels,
            ordinal,
            name,
            start_ms,
            compile_ms,
            kernel_code,
            staging: std::sync::Mutex::new(None),
        })
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

    #[test]
    fn device_names_parse() {
        assert_eq!(parse_device("cuda:3"), Some(3));
        assert_eq!(parse_device("cuda"), Some(0));
        assert_eq!(parse_device("cpu"), None);
        assert_eq!(parse_device("cuda:x"), None);
    }

    #[test]
    fn kernels_compile_or_nvrtc_is_absent() {
        // NVRTC is a separate library: where it is installed the kernel source must compile;
        // where it is not, compiling is an error, not a panic.
        // SAFETY: only tries to dlopen the library.
        if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            kernels::compile(kernels::KernelCode::Ptx).expect("kernel source compiles to PTX");
            // A CUBIN for the H100/H200's architecture (the lent machines').
            kernels::compile(kernels::KernelCode::Cubin(9, 0)).expect("kernel source compiles for sm_90");
            // What makes `Gpu::open` fall back to PTX: an architecture NVRTC does not know.
            assert!(kernels::compile(kernels::KernelCode::Cubin(1, 0)).is_err());
        } else {
            let e = kernels::compile(kernels::KernelCode::Ptx).expect_err("no NVRTC, no kernels");
            assert!(e.to_string().contains("no NVRTC library"), "{e}");
        }
    }
}
