//! The CUDA kernels, compiled at run time with NVRTC (to PTX for compute capability 8.0, which
//! the driver JIT-compiles for the card at load), and their launchers.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};

use super::driver::gpu_err;
use crate::error::{Error, Result};

/// Kernel source. Descriptors are flat arrays of u64 so that the host side is plain `Vec<u64>`.
pub const SOURCE: &str = r#"
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned char u8;

// copies[3*i .. 3*i+3] = {dst, src, len}: one block per descriptor.
extern "C" __global__ void apply_copies(const u64* copies, u32 n) {
    for (u32 i = blockIdx.x; i < n; i += gridDim.x) {
        u8* dst = (u8*)copies[3 * i];
        const u8* src = (const u8*)copies[3 * i + 1];
        u64 len = copies[3 * i + 2];
        if ((((u64)dst | (u64)src) & 15) == 0) {
            u64 v = len / 16;
            for (u64 j = threadIdx.x; j < v; j += blockDim.x) ((uint4*)dst)[j] = ((const uint4*)src)[j];
            for (u64 j = v * 16 + threadIdx.x; j < len; j += blockDim.x) dst[j] = src[j];
        } else {
            for (u64 j = threadIdx.x; j < len; j += blockDim.x) dst[j] = src[j];
        }
    }
}

// masks[4*i .. 4*i+4] = {dst, mask, values, len}: byte dst[k] takes the next value where bit k
// of the mask is set. One block per descriptor; a block-wide scan of popcounts places values.
extern "C" __global__ void apply_masked(const u64* masks, u32 n) {
    __shared__ u64 warp_sums[32];
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (u32 i = blockIdx.x; i < n; i += gridDim.x) {
        u8* dst = (u8*)masks[4 * i];
        const u8* mask = (const u8*)masks[4 * i + 1];
        const u8* vals = (const u8*)masks[4 * i + 2];
        u64 nbytes = (masks[4 * i + 3] + 7) / 8;
        u64 running = 0;
        for (u64 t0 = 0; t0 < nbytes; t0 += blockDim.x) {
            u64 k = t0 + threadIdx.x;
            u32 bits = k < nbytes ? mask[k] : 0;
            u64 c = __popc(bits);
            u64 x = c;
            for (int o = 1; o < 32; o <<= 1) {
                u64 y = __shfl_up_sync(0xffffffffu, x, o);
                if (lane >= (u32)o) x += y;
            }
            if (lane == 31) warp_sums[warp] = x;
            __syncthreads();
            if (warp == 0) {
                u64 s = lane < nwarps ? warp_sums[lane] : 0;
                for (int o = 1; o < 32; o <<= 1) {
                    u64 y = __shfl_up_sync(0xffffffffu, s, o);
                    if (lane >= (u32)o) s += y;
                }
                if (lane < nwarps) warp_sums[lane] = s;
            }
            __syncthreads();
            u64 v = running + x - c + (warp > 0 ? warp_sums[warp - 1] : 0);
            u64 total = warp_sums[nwarps - 1];
            while (bits) {
                int b = __ffs(bits) - 1;
                dst[k * 8 + b] = vals[v++];
                bits &= bits - 1;
            }
            __syncthreads();
            running += total;
        }
    }
}

// CRC32C (Castagnoli, reflected, init and xorout 0xFFFFFFFF) of chunks[i] = base + off[i], len[i].
extern "C" __global__ void crc32c_chunks(u64 base, const u64* off, const u32* len, u32 n, u32* out) {
    __shared__ u32 T[4][256];
    for (u32 i = threadIdx.x; i < 256; i += blockDim.x) {
        u32 c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        T[0][i] = c;
    }
    __syncthreads();
    for (int t = 1; t < 4; t++) {
        for (u32 i = threadIdx.x; i < 256; i += blockDim.x) T[t][i] = (T[t - 1][i] >> 8) ^ T[0][T[t - 1][i] & 0xff];
        __syncthreads();
    }
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const u8* p = (const u8*)(base + off[i]);
        u32 l = len[i], j = 0, crc = 0xFFFFFFFFu;
        while (j < l && (((u64)(p + j)) & 15)) { crc = T[0][(crc ^ p[j]) & 0xff] ^ (crc >> 8); j++; }
        for (; j + 16 <= l; j += 16) {
            uint4 q = *(const uint4*)(p + j);
            u32 w[4] = {q.x, q.y, q.z, q.w};
            #pragma unroll
            for (int k = 0; k < 4; k++) {
                u32 x = w[k] ^ crc;
                crc = T[3][x & 0xff] ^ T[2][(x >> 8) & 0xff] ^ T[1][(x >> 16) & 0xff] ^ T[0][x >> 24];
            }
        }
        for (; j < l; j++) crc = T[0][(crc ^ p[j]) & 0xff] ^ (crc >> 8);
        out[i] = ~crc;
    }
}
"#;

/// Compiles [`SOURCE`] to PTX (no GPU needed; NVRTC only).
pub fn compile() -> Result<cudarc::nvrtc::Ptx> {
    let opts = cudarc::nvrtc::CompileOptions {
        arch: Some("compute_80"),
        ..Default::default()
    };
    cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts).map_err(|e| Error::Gpu(format!("NVRTC: {e}")))
}

/// The loaded kernels.
pub struct Kernels {
    copies: CudaFunction,
    masked: CudaFunction,
    crc: CudaFunction,
    blocks: u32,
}

const THREADS: u32 = 256;

impl Kernels {
    /// Loads compiled PTX into the context.
    pub fn load(ctx: &Arc<CudaContext>, ptx: cudarc::nvrtc::Ptx) -> Result<Kernels> {
        let m = ctx.load_module(ptx).map_err(gpu_err)?;
        let sms = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(gpu_err)?;
        Ok(Kernels {
            copies: m.load_function("apply_copies").map_err(gpu_err)?,
            masked: m.load_function("apply_masked").map_err(gpu_err)?,
            crc: m.load_function("crc32c_chunks").map_err(gpu_err)?,
            blocks: (sms.max(1) as u32) * 8,
        })
    }

    fn cfg(&self, n: u32) -> LaunchConfig {
        LaunchConfig {
            grid_dim: (n.clamp(1, self.blocks), 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// Launches the copy kernel over `desc` (3 u64 per copy) on `stream`.
    pub fn apply_copies(&self, stream: &Arc<CudaStream>, desc: &CudaSlice<u64>, n: u32) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let mut b = stream.launch_builder(&self.copies);
        b.arg(desc).arg(&n);
        // SAFETY: the kernel reads `n` descriptors from `desc` (3n u64, checked by the caller) and
        // each descriptor's ranges lie in live device allocations (built from the page table).
        unsafe { b.launch(self.cfg(n)) }.map(|_| ()).map_err(gpu_err)
    }

    /// Launches the masked-write kernel over `desc` (4 u64 per write).
    pub fn apply_masked(&self, stream: &Arc<CudaStream>, desc: &CudaSlice<u64>, n: u32) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let mut b = stream.launch_builder(&self.masked);
        b.arg(desc).arg(&n);
        // SAFETY: as for `apply_copies`; mask and value ranges were checked against the record.
        unsafe { b.launch(self.cfg(n)) }.map(|_| ()).map_err(gpu_err)
    }

    /// CRC32C of each chunk `base + off[i] .. + len[i]`, returned to the host.
    pub fn crc32c_chunks(&self, stream: &Arc<CudaStream>, base: u64, off: &[u64], len: &[u32]) -> Result<Vec<u32>> {
        let n = off.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let d_off = stream.clone_htod(off).map_err(gpu_err)?;
        let d_len = stream.clone_htod(len).map_err(gpu_err)?;
        let mut d_out = stream.alloc_zeros::<u32>(n).map_err(gpu_err)?;
        let n32 = u32::try_from(n).map_err(|_| Error::Gpu("too many CRC chunks".into()))?;
        let mut b = stream.launch_builder(&self.crc);
        b.arg(&base).arg(&d_off).arg(&d_len).arg(&n32).arg(&mut d_out);
        let blocks = n32.div_ceil(THREADS).clamp(1, self.blocks * 4);
        // SAFETY: each chunk lies inside a live allocation starting at `base` (built from pages).
        unsafe {
            b.launch(LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            })
        }
        .map_err(gpu_err)?;
        stream.clone_dtoh(&d_out).map_err(gpu_err)
    }
}
