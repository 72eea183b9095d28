//! The only place mmsb calls the CUDA driver directly. Every function here wraps one or two
//! driver calls, checks the result, and documents why the call is sound. Device memory is
//! addressed by `u64` device pointers; ownership lives in [`DeviceBuffer`] and [`Registered`].

use std::sync::Arc;

use cudarc::driver::{CudaContext, sys};

use crate::error::{Error, GpuError, Result};

/// Turns a driver result into an mmsb error naming the call.
pub(crate) fn check(rc: sys::CUresult, what: &str) -> Result<()> {
    if rc == sys::CUresult::CUDA_SUCCESS {
        Ok(())
    } else {
        Err(Error::Gpu(GpuError::Driver(format!("{what} failed: {rc:?}"))))
    }
}

/// Whether the CUDA driver library can be loaded at all (no library: no GPU path).
pub fn driver_present() -> bool {
    // SAFETY: only tries to dlopen the driver library by its usual names; no symbol is called.
    unsafe { sys::is_culib_present() }
}

/// How a buffer's memory was obtained, and so how it is freed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryKind {
    /// `cuMemAlloc`: dedicated device memory.
    Device,
    /// `cuMemAllocManaged`: unified memory, migrated on demand or by prefetch.
    Unified,
    /// `cuMemHostAlloc(DEVICEMAP)`: pinned host memory the device reads over the bus.
    HostMapped,
}

/// A device-addressable allocation, freed on drop.
pub struct DeviceBuffer {
    ctx: Arc<CudaContext>,
    ptr: u64,
    len: usize,
    kind: MemoryKind,
    host: *mut u8,
}

// SAFETY: the buffer is a plain address range owned by this value; the driver allows freeing it
// from any thread that binds the context, which `drop` does.
unsafe impl Send for DeviceBuffer {}
// SAFETY: shared access only reads the address and length.
unsafe impl Sync for DeviceBuffer {}

impl DeviceBuffer {
    /// Allocates `len` bytes (at least 1) of the given kind.
    pub fn alloc(ctx: &Arc<CudaContext>, len: usize, kind: MemoryKind) -> Result<DeviceBuffer> {
        ctx.bind_to_thread().map_err(gpu_err)?;
        let n = len.max(1);
        let mut ptr: sys::CUdeviceptr = 0;
        let mut host: *mut std::ffi::c_void = std::ptr::null_mut();
        match kind {
            MemoryKind::Device => {
                // SAFETY: writes one device pointer into `ptr`; the context is current.
                check(unsafe { sys::cuMemAlloc_v2(&mut ptr, n) }, "cuMemAlloc")?
            }
            MemoryKind::Unified => {
                let (free, _) = ctx.mem_get_info().map_err(gpu_err)?;
                if n > free {
                    return Err(Error::Gpu(GpuError::Memory(format!(
                        "unified memory: {n} bytes asked, {free} free on the device; refusing to oversubscribe"
                    ))));
                }
                // SAFETY: as above; GLOBAL makes the range accessible from any stream.
                check(
                    unsafe { sys::cuMemAllocManaged(&mut ptr, n, sys::CUmemAttach_flags::CU_MEM_ATTACH_GLOBAL as u32) },
                    "cuMemAllocManaged",
                )?
            }
            MemoryKind::HostMapped => {
                // SAFETY: allocates pinned host memory mapped into the device's address space and
                // writes its host address into `host`, then asks for its device address.
                unsafe {
                    check(
                        sys::cuMemHostAlloc(
                            &mut host,
                            n,
                            sys::CU_MEMHOSTALLOC_DEVICEMAP | sys::CU_MEMHOSTALLOC_PORTABLE,
                        ),
                        "cuMemHostAlloc",
                    )?;
                    check(
                        sys::cuMemHostGetDevicePointer_v2(&mut ptr, host, 0),
                        "cuMemHostGetDevicePointer",
                    )?;
                }
            }
        }
        Ok(DeviceBuffer {
            ctx: ctx.clone(),
            ptr,
            len,
            kind,
            host: host as *mut u8,
        })
    }

    /// The device address of the first byte.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True for a zero-length buffer.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// How it was allocated.
    pub fn kind(&self) -> MemoryKind {
        self.kind
    }
    /// For host-mapped memory, the host view of the buffer.
    pub fn host_slice_mut(&mut self) -> Option<&mut [u8]> {
        // SAFETY: `host` points to `len` bytes of pinned memory owned by this buffer for its
        // whole life; `&mut self` makes the slice unique on the host side.
        (self.kind == MemoryKind::HostMapped).then(|| unsafe { std::slice::from_raw_parts_mut(self.host, self.len) })
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: frees exactly the allocation made in `alloc`, once; errors at teardown are
        // ignored (nothing can be done about them).
        unsafe {
            match self.kind {
                MemoryKind::HostMapped => {
                    sys::cuMemFreeHost(self.host as *mut _);
                }
                _ => {
                    sys::cuMemFree_v2(self.ptr);
                }
            }
        }
    }
}

/// Compute capability (major, minor) of device `ordinal`, without creating its context (the
/// driver must be initialised: [`super::device_count`] does that).
pub(crate) fn compute_capability(ordinal: usize) -> Result<(i32, i32)> {
    use cudarc::driver::result::device;
    use sys::CUdevice_attribute::{
        CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR as MAJOR, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR as MINOR,
    };
    let ordinal =
        i32::try_from(ordinal).map_err(|_| Error::Gpu(GpuError::NoDevice(format!("no device cuda:{ordinal}"))))?;
    let dev = device::get(ordinal).map_err(gpu_err)?;
    // SAFETY: `dev` was returned by `device::get` just above.
    let attribute = |a| unsafe { device::get_attribute(dev, a) }.map_err(gpu_err);
    Ok((attribute(MAJOR)?, attribute(MINOR)?))
}

pub(crate) fn gpu_err(e: cudarc::driver::DriverError) -> Error {
    Error::Gpu(GpuError::Driver(e.to_string()))
}

/// A range of host memory pinned for DMA (`cuMemHostRegister`), unpinned on drop.
pub struct Registered {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: only the address range is shared; registration is process-wide.
unsafe impl Send for Registered {}
// SAFETY: as above.
unsafe impl Sync for Registered {}

/// What the device may do with pinned host memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAccess {
    /// Read it only.
    ReadOnly,
    /// Read and write it.
    ReadWrite,
}

impl Registered {
    /// Pins `len` bytes at `ptr`, for the device to read only or to read and write (a
    /// read-only file mapping must be [`DeviceAccess::ReadOnly`]).
    ///
    /// # Safety
    /// The range must stay mapped, and not be unmapped or freed, until the returned value drops.
    pub unsafe fn new(ptr: *const u8, len: usize, access: DeviceAccess) -> Result<Registered> {
        let flags = match access {
            DeviceAccess::ReadOnly => sys::CU_MEMHOSTREGISTER_READ_ONLY,
            DeviceAccess::ReadWrite => 0,
        };
        // SAFETY: the caller keeps the range alive for the registration's life.
        check(
            unsafe { sys::cuMemHostRegister_v2(ptr as *mut _, len, flags) },
            "cuMemHostRegister",
        )?;
        Ok(Registered {
            ptr: ptr as *mut u8,
            len,
        })
    }
    /// The pinned range's first byte.
    pub fn ptr(&self) -> *mut u8 {
        self.ptr
    }
    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        // SAFETY: unregisters exactly the range registered in `new`.
        unsafe { sys::cuMemHostUnregister(self.ptr as *mut _) };
    }
}

/// A raw stream with events, for the copy threads (one per thread).
pub struct RawStream {
    stream: sys::CUstream,
}

// SAFETY: a CUstream handle may be used from any thread that has the context bound.
unsafe impl Send for RawStream {}

impl RawStream {
    /// Creates a non-blocking stream on the current context.
    pub fn new() -> Result<RawStream> {
        let mut stream = std::ptr::null_mut();
        // SAFETY: writes a new stream handle; the caller has bound the context.
        check(
            unsafe { sys::cuStreamCreate(&mut stream, sys::CUstream_flags::CU_STREAM_NON_BLOCKING as u32) },
            "cuStreamCreate",
        )?;
        Ok(RawStream { stream })
    }

    /// Queues a host-to-device copy.
    ///
    /// # Safety
    /// `src..src+len` must stay valid and unmodified until the copy completes (an event
    /// recorded after it has fired or the stream is synchronised), and `dst..dst+len` must be
    /// inside a live device allocation.
    pub unsafe fn copy_h2d(&self, dst: u64, src: *const u8, len: usize) -> Result<()> {
        // SAFETY: per the function's contract.
        check(
            unsafe { sys::cuMemcpyHtoDAsync_v2(dst, src as *const _, len, self.stream) },
            "cuMemcpyHtoDAsync",
        )
    }

    /// Records a new event on the stream and returns it.
    pub fn record(&self) -> Result<RawEvent> {
        let mut ev = std::ptr::null_mut();
        // SAFETY: creates an event and records it on this live stream.
        unsafe {
            check(
                sys::cuEventCreate(&mut ev, sys::CUevent_flags::CU_EVENT_DISABLE_TIMING as u32),
                "cuEventCreate",
            )?;
            check(sys::cuEventRecord(ev, self.stream), "cuEventRecord")?;
        }
        Ok(RawEvent { ev })
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<()> {
        // SAFETY: the stream is live.
        check(unsafe { sys::cuStreamSynchronize(self.stream) }, "cuStreamSynchronize")
    }
}

impl Drop for RawStream {
    fn drop(&mut self) {
        // SAFETY: destroys the stream created in `new`, once.
        unsafe { sys::cuStreamDestroy_v2(self.stream) };
    }
}

/// An event recorded on a stream.
pub struct RawEvent {
    ev: sys::CUevent,
}

impl RawEvent {
    /// Blocks until the work before the event is done.
    pub fn wait(&self) -> Result<()> {
        // SAFETY: the event is live.
        check(unsafe { sys::cuEventSynchronize(self.ev) }, "cuEventSynchronize")
    }
}

impl Drop for RawEvent {
    fn drop(&mut self) {
        // SAFETY: destroys the event created in `RawStream::record`, once.
        unsafe { sys::cuEventDestroy_v2(self.ev) };
    }
}

/// Synchronous device-to-host copy of `dst.len()` bytes from device address `src`.
pub fn copy_d2h(ctx: &Arc<CudaContext>, src: u64, dst: &mut [u8]) -> Result<()> {
    ctx.bind_to_thread().map_err(gpu_err)?;
    if dst.is_empty() {
        return Ok(());
    }
    // SAFETY: `dst` is a live, writable host slice of the copied length; the caller passes a
    // device range inside a live allocation (all callers take it from a DeviceBuffer or page).
    check(
        unsafe { sys::cuMemcpyDtoH_v2(dst.as_mut_ptr() as *mut _, src, dst.len()) },
        "cuMemcpyDtoH",
    )
}

/// Host-to-device copy on `stream`, returning once it is done. It goes on the stream rather
/// than the legacy default stream: a copy there is not ordered against the non-blocking streams
/// kernels run on, and from pageable memory it may return before its data has landed.
pub fn copy_h2d_sync(stream: &cudarc::driver::CudaStream, dst: u64, src: &[u8]) -> Result<()> {
    // SAFETY: the destination is the caller's live allocation, and the copy is waited for below,
    // before `src` can change or go.
    unsafe { copy_h2d_on(stream, dst, src)? };
    stream.synchronize().map_err(gpu_err)
}

/// Host-to-device copy, ordered on `stream`.
///
/// # Safety
/// `src` must stay valid and unchanged until the copy has run when it is pinned memory (wait
/// on an event recorded after it); pageable memory is staged by the driver before this returns.
/// The destination range must lie in a live allocation.
pub(crate) unsafe fn copy_h2d_on(stream: &cudarc::driver::CudaStream, dst: u64, src: &[u8]) -> Result<()> {
    if src.is_empty() {
        return Ok(());
    }
    stream.context().bind_to_thread().map_err(gpu_err)?;
    // SAFETY: per the function's contract.
    check(
        unsafe { sys::cuMemcpyHtoDAsync_v2(dst, src.as_ptr() as *const _, src.len(), stream.cu_stream()) },
        "cuMemcpyHtoDAsync",
    )
}

/// Device-to-device copy, ordered on `stream`.
pub(crate) fn copy_d2d(stream: &cudarc::driver::CudaStream, dst: u64, src: u64, len: usize) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: both ranges lie in live device allocations (callers take them from pages).
    check(
        unsafe { sys::cuMemcpyDtoDAsync_v2(dst, src, len, stream.cu_stream()) },
        "cuMemcpyDtoDAsync",
    )
}

/// Copies `len` bytes from `src` (an allocation of `src_ctx`) to `dst` (one of `dst_ctx`),
/// ordered on `stream` (of `dst_ctx`). Between two devices the driver copies peer to peer where
/// the devices allow it, else through host memory; within one context it is a plain copy.
pub(crate) fn copy_peer(
    stream: &cudarc::driver::CudaStream,
    dst_ctx: &CudaContext,
    dst: u64,
    src_ctx: &CudaContext,
    src: u64,
    len: usize,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: both ranges lie in live allocations of the named contexts (callers take them from
    // page stores), and the stream belongs to the destination's context.
    check(
        unsafe { sys::cuMemcpyPeerAsync(dst, dst_ctx.cu_ctx(), src, src_ctx.cu_ctx(), len, stream.cu_stream()) },
        "cuMemcpyPeerAsync",
    )
}

/// Lets `ctx` access `peer`'s memory directly (NVLink or PCIe peer to peer). Returns whether
/// direct access is on; when the devices cannot, peer copies still work through the host.
pub(crate) fn enable_peer_access(ctx: &Arc<CudaContext>, peer: &CudaContext) -> Result<bool> {
    if ctx.cu_ctx() == peer.cu_ctx() {
        return Ok(true);
    }
    ctx.bind_to_thread().map_err(gpu_err)?;
    // SAFETY: two live contexts; the call only changes the current context's mappings.
    let rc = unsafe { sys::cuCtxEnablePeerAccess(peer.cu_ctx(), 0) };
    Ok(matches!(
        rc,
        sys::CUresult::CUDA_SUCCESS | sys::CUresult::CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED
    ))
}

/// Fills `len` bytes at `dst` with `value`, ordered on `stream`.
pub(crate) fn memset(stream: &cudarc::driver::CudaStream, dst: u64, value: u8, len: usize) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the range lies in a live device allocation.
    check(
        unsafe { sys::cuMemsetD8Async(dst, value, len, stream.cu_stream()) },
        "cuMemsetD8Async",
    )
}

/// Prefetches unified memory to the device (or, with `to_host`, back to the CPU).
pub(crate) fn prefetch(
    ctx: &Arc<CudaContext>,
    stream: &cudarc::driver::CudaStream,
    ptr: u64,
    len: usize,
    to_host: bool,
) -> Result<()> {
    let location = if to_host {
        sys::CUmemLocation {
            type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_HOST,
            id: 0,
        }
    } else {
        sys::CUmemLocation {
            type_: sys::CUmemLocationType::CU_MEM_LOCATION_TYPE_DEVICE,
            id: ctx.cu_device(),
        }
    };
    // SAFETY: the range is a live managed allocation; advice and prefetch only move pages.
    unsafe {
        check(
            sys::cuMemAdvise_v2(
                ptr,
                len,
                sys::CUmem_advise::CU_MEM_ADVISE_SET_PREFERRED_LOCATION,
                location,
            ),
            "cuMemAdvise",
        )?;
        check(
            sys::cuMemPrefetchAsync_v2(ptr, len, location, 0, stream.cu_stream()),
            "cuMemPrefetchAsync",
        )
    }
}
