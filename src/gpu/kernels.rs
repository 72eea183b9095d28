//! The CUDA kernels and their launchers. For the common architectures the crate carries CUBINs
//! built ahead from [`SOURCE`] (`src/gpu/cubin/`, by `scripts/build-cubins.sh`), which load with
//! no compiler at all; for other cards NVRTC compiles them at run time for the card's own
//! architecture (a CUBIN, loaded as is), else to PTX for compute capability 8.0, which the driver
//! compiles for the card when the module loads.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, LaunchConfig, PushKernelArg};

use super::driver::{DeviceBuffer, MemoryKind, copy_h2d_on, gpu_err};
use crate::error::{Error, GpuError, Result};

/// Kernel source. Descriptors are flat arrays of u64 so that the host side is plain `Vec<u64>`.
pub const SOURCE: &str = r#"
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned char u8;

// CRC32C (Castagnoli, reflected, init and xorout 0xFFFFFFFF) tables, slicing by four.
__device__ void crc32c_tables(u32 T[4][256]) {
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
}

__device__ u32 crc32c_update(const u32 T[4][256], u32 crc, const u8* p, u64 l) {
    u64 j = 0;
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
    return crc;
}

// CRC32C of chunks[i] = base + off[i], len[i] & 0x3FFFFFFF. Where bit 31 of len[i] is set,
// the chunk is the first piece of a log record's payload, and its CRC starts over the 28 bytes
// of the frame header 32 bytes before it (the record checksum covers header then payload).
// Where bit 30 is set too, the chunk is the whole payload: its CRC is compared with the
// checksum stored in the header's last 4 bytes, and a mismatch counted in *mismatches.
extern "C" __global__ void crc32c_chunks(u64 base, const u64* off, const u32* len, u32 n, u32* out, u32* mismatches) {
    __shared__ u32 T[4][256];
    crc32c_tables(T);
    for (u32 i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const u8* p = (const u8*)(base + off[i]);
        u32 l = len[i], crc = 0xFFFFFFFFu;
        if (l & 0x80000000u) crc = crc32c_update(T, crc, p - 32, 28);
        crc = ~crc32c_update(T, crc, p, l & 0x3FFFFFFFu);
        out[i] = crc;
        if ((l & 0xC0000000u) == 0xC0000000u) {
            const u32 stored = (u32)p[-4] | ((u32)p[-3] << 8) | ((u32)p[-2] << 16) | ((u32)p[-1] << 24);
            if (crc != stored) atomicAdd(mismatches, 1u);
        }
    }
}

// Runs batches of writes planned on the host (src/gpu/plan.rs). tiles[2t] = slot << 32 | tile
// number, tiles[2t+1] = first entry | count << 32; entries[] index writes[] (4 u64 each: page
// offset, length, source, slot | kind << 32 | value-base index << 34); pages[slot] is the page's
// device address. One block runs one tile's writes in order, each clipped to the tile, so that
// the last write to a byte lands last.
#define TILE_SHIFT 16
// Threads per block of apply_tiles (THREADS in kernels.rs).
#define BLOCK 256

// Copies n bytes from sp to dp with the block's threads: single bytes up to dp's next 8-byte
// boundary and after the last whole word, 8-byte stores in between, each assembled from the two
// aligned source words it straddles. The last of those reads can pass the source's end by up to
// 7 bytes: the buffers sources live in are allocated SOURCE_PAD bytes longer.
__device__ void block_copy(u8* dp, const u8* sp, u64 n) {
    u64 head = (8 - ((u64)dp & 7)) & 7;
    if (head > n) head = n;
    for (u64 j = threadIdx.x; j < head; j += blockDim.x) dp[j] = sp[j];
    const u64 words = (n - head) >> 3;
    u64* d = (u64*)(dp + head);
    const u8* s = sp + head;
    const u32 r = (u32)((u64)s & 7);
    const u64* s64 = (const u64*)(s - r);
    if (r == 0) {
        for (u64 k = threadIdx.x; k < words; k += blockDim.x) d[k] = s64[k];
    } else {
        const u32 lo = 8 * r, hi = 64 - lo;
        for (u64 k = threadIdx.x; k < words; k += blockDim.x) d[k] = (s64[k] >> lo) | (s64[k + 1] << hi);
    }
    for (u64 j = head + (words << 3) + threadIdx.x; j < n; j += blockDim.x) dp[j] = sp[j];
}

// Sets n bytes at dp to v: 8-byte stores between single bytes at the edges.
__device__ void block_fill(u8* dp, u8 v, u64 n) {
    u64 head = (8 - ((u64)dp & 7)) & 7;
    if (head > n) head = n;
    for (u64 j = threadIdx.x; j < head; j += blockDim.x) dp[j] = v;
    const u64 words = (n - head) >> 3;
    u64* d = (u64*)(dp + head);
    const u64 pattern = 0x0101010101010101ull * v;
    for (u64 k = threadIdx.x; k < words; k += blockDim.x) d[k] = pattern;
    for (u64 j = head + (words << 3) + threadIdx.x; j < n; j += blockDim.x) dp[j] = v;
}

extern "C" __global__ void apply_tiles(const u64* tiles, u32 ntiles, const u32* entries, const u64* writes,
                                       const u64* pages, const u64* vbase, u64 log_base, u64 extra_base) {
    __shared__ u64 warp_sums[32];
    // The descriptors of the next BLOCK writes of the tile, loaded by the block at once: one
    // round trip to memory for all of them, where loading each just before its copy cost two.
    __shared__ u64 batch[4 * BLOCK];
    const u32 lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    for (u32 t = blockIdx.x; t < ntiles; t += gridDim.x) {
        const u64 key = tiles[2 * t], fc = tiles[2 * t + 1];
        const u64 tile_no = key & 0xFFFFFFFFull;
        const u64 lo = tile_no << TILE_SHIFT, hi = lo + (1ull << TILE_SHIFT);
        u8* page = (u8*)pages[key >> 32];
        const u32 first = (u32)fc, count = (u32)(fc >> 32);
        for (u32 e0 = first; e0 < first + count; e0 += BLOCK) {
            const u32 n = first + count - e0 < BLOCK ? first + count - e0 : BLOCK;
            // The batch before was last read before the __syncthreads that ends each write.
            if (threadIdx.x < n) {
                const u64* w = writes + 4ull * entries[e0 + threadIdx.x];
                for (int q = 0; q < 4; q++) batch[4 * threadIdx.x + q] = w[q];
            }
            __syncthreads();
            for (u32 e = 0; e < n; e++) {
                const u64* w = batch + 4 * e;
                const u64 off = w[0], len = w[1], src = w[2], sk = w[3];
                const u32 kind = (u32)(sk >> 32) & 3u;
                const u64 a = off > lo ? off : lo;
                const u64 z = off + len < hi ? off + len : hi;
                if (kind == 2) {
                    block_fill(page + a, (u8)src, z - a);
                } else {
                    const u8* s = (const u8*)((src >> 63) ? extra_base + (src & ~(1ull << 63)) : log_base + src);
                    if (kind == 0) {
                        block_copy(page + a, s + (a - off), z - a);
                    } else {
                        const u8* vals = s + (len + 7) / 8;
                        u64 running = vbase[(sk >> 34) + tile_no - (off >> TILE_SHIFT)];
                        const u64 b0 = a - off, b1 = z - off;
                        const u64 m0 = b0 >> 3, m1 = (b1 + 7) >> 3;
                        for (u64 t0 = m0; t0 < m1; t0 += blockDim.x) {
                            const u64 m = t0 + threadIdx.x;
                            u32 bits = 0;
                            if (m < m1) {
                                bits = s[m];
                                const u64 bit_lo = m * 8, bit_hi = bit_lo + 8;
                                if (bit_lo < b0) bits &= 0xFFu << (u32)(b0 - bit_lo);
                                if (bit_hi > b1) bits &= 0xFFu >> (u32)(bit_hi - b1);
                                bits &= 0xFFu;
                            }
                            const u64 c = __popc(bits);
                            u64 x = c;
                            for (int o = 1; o < 32; o <<= 1) {
                                u64 y = __shfl_up_sync(0xffffffffu, x, o);
                                if (lane >= (u32)o) x += y;
                            }
                            if (lane == 31) warp_sums[warp] = x;
                            __syncthreads();
                            if (warp == 0) {
                                u64 q = lane < nwarps ? warp_sums[lane] : 0;
                                for (int o = 1; o < 32; o <<= 1) {
                                    u64 y = __shfl_up_sync(0xffffffffu, q, o);
                                    if (lane >= (u32)o) q += y;
                                }
                                if (lane < nwarps) warp_sums[lane] = q;
                            }
                            __syncthreads();
                            u64 v = running + x - c + (warp > 0 ? warp_sums[warp - 1] : 0);
                            const u64 total = warp_sums[nwarps - 1];
                            while (bits) {
                                const int b = __ffs(bits) - 1;
                                page[off + m * 8 + b] = vals[v++];
                                bits &= bits - 1;
                            }
                            __syncthreads();
                            running += total;
                        }
                    }
                }
                __syncthreads();
            }
        }
    }
}

// Where pairs of buffers differ, 256-byte window by window (DIFF_WINDOW in kernels.rs). pairs[4p..]
// = old address, new address, length, and the first word of out[] for pair p (each pair's windows
// start a word; ascending). One warp makes one word: bit k of out[w] is set when window
// 32 (w - first) + k of its pair holds a differing byte. Reads stay within each buffer's length.
#define DIFF_WINDOW 256
extern "C" __global__ void diff_windows(const u64* pairs, u32 npairs, u64 nwords, u32* out) {
    const u32 lane = threadIdx.x & 31;
    const u64 warps = ((u64)gridDim.x * blockDim.x) >> 5;
    for (u64 w = ((u64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; w < nwords; w += warps) {
        u32 lo = 0, hi = npairs;
        while (hi - lo > 1) {
            const u32 mid = (lo + hi) / 2;
            if (pairs[4 * mid + 3] <= w) lo = mid; else hi = mid;
        }
        const u8* a = (const u8*)pairs[4 * lo];
        const u8* b = (const u8*)pairs[4 * lo + 1];
        const u64 len = pairs[4 * lo + 2];
        const u64 start = (w - pairs[4 * lo + 3]) * 32 * DIFF_WINDOW;
        const bool aligned = (((u64)a | (u64)b) & 15) == 0;
        u32 bits = 0;
        // Each round reads 512 bytes: lanes 0-15 window 2k, lanes 16-31 window 2k + 1.
        #pragma unroll 4
        for (u32 k = 0; k < 16; k++) {
            const u64 at = start + (u64)k * 512 + lane * 16;
            bool d = false;
            if (aligned && at + 16 <= len) {
                const uint4 x = *(const uint4*)(a + at), y = *(const uint4*)(b + at);
                d = (x.x != y.x) | (x.y != y.y) | (x.z != y.z) | (x.w != y.w);
            } else {
                for (u64 j = at; j < at + 16 && j < len; j++) d |= a[j] != b[j];
            }
            const u32 m = __ballot_sync(0xffffffffu, d);
            bits |= ((m & 0xFFFFu) != 0u ? 1u : 0u) << (2 * k);
            bits |= ((m >> 16) != 0u ? 1u : 0u) << (2 * k + 1);
        }
        if (lane == 0) out[w] = bits;
    }
}

// Copies ranges[3r] (source address) to ranges[3r + 1] (destination), ranges[3r + 2] bytes, one
// block per range. Source and destination lie at the same offset from an 8-byte boundary, so the
// copy reads nothing outside the source: single bytes to the first boundary, words, single bytes.
extern "C" __global__ void gather_ranges(const u64* ranges, u32 n) {
    for (u32 r = blockIdx.x; r < n; r += gridDim.x) {
        const u8* sp = (const u8*)ranges[3 * r];
        u8* dp = (u8*)ranges[3 * r + 1];
        const u64 len = ranges[3 * r + 2];
        u64 head = (8 - ((u64)sp & 7)) & 7;
        if (head > len) head = len;
        for (u64 j = threadIdx.x; j < head; j += blockDim.x) dp[j] = sp[j];
        const u64 words = (len - head) >> 3;
        const u64* s = (const u64*)(sp + head);
        u64* d = (u64*)(dp + head);
        for (u64 k = threadIdx.x; k < words; k += blockDim.x) d[k] = s[k];
        for (u64 j = head + (words << 3) + threadIdx.x; j < len; j += blockDim.x) dp[j] = sp[j];
    }
}
"#;

/// Bytes per window of `diff_windows`: the unit in which a device compare finds changes.
pub const DIFF_WINDOW: u64 = 256;

/// Bytes allocated past the end of every buffer that `apply_tiles` copies from (the uploaded log,
/// decompressed payloads): its 8-byte reads may pass a source's last byte by up to 7.
pub const SOURCE_PAD: usize = 16;

/// The kernels as `code` says: the built-in CUBIN, or [`SOURCE`] compiled by NVRTC (no GPU
/// needed). Without the NVRTC library, compiling is an error saying so.
///
/// Why a CUBIN: the driver keeps what it compiles from PTX in a cache, but where that cache is
/// empty or disabled (a fresh machine or container) loading the PTX costs a JIT compile of a
/// hundred milliseconds or more after the context is up, and NVRTC's own compile of a CUBIN
/// costs as much without its cache. A built-in CUBIN takes neither.
pub fn compile(code: KernelCode) -> Result<cudarc::nvrtc::Ptx> {
    match code {
        KernelCode::BuiltIn(major, minor) => built_in(major, minor)
            .map(|b| cudarc::nvrtc::Ptx::from_binary(b.to_vec()))
            .ok_or_else(|| {
                Error::Gpu(GpuError::Kernels(format!(
                    "no built-in CUBIN for sm_{major}{minor} of this kernel source"
                )))
            }),
        KernelCode::Cubin(major, minor) => compile_cubin(major, minor).map(cudarc::nvrtc::Ptx::from_binary),
        KernelCode::Ptx => {
            nvrtc_present()?;
            let opts = cudarc::nvrtc::CompileOptions {
                arch: Some("compute_80"),
                ..Default::default()
            };
            cudarc::nvrtc::compile_ptx_with_opts(SOURCE, opts)
                .map_err(|e| Error::Gpu(GpuError::Kernels(format!("NVRTC: {e}"))))
        }
    }
}

fn nvrtc_present() -> Result<()> {
    // SAFETY: only tries to dlopen the library by its usual names; no symbol is called. (Calling
    // into an absent library would panic inside cudarc.)
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(Error::Gpu(GpuError::Kernels(
            "no NVRTC library (libnvrtc.so), which compiles the kernels at run time for this card".into(),
        )))
    }
}

/// The architectures whose CUBIN the crate carries (`src/gpu/cubin/sm_XY.cubin`).
pub const BUILT_IN_ARCHS: [(i32, i32); 6] = [(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)];

/// The built-in CUBINs, in the order of [`BUILT_IN_ARCHS`].
const BUILT_IN: [&[u8]; 6] = [
    include_bytes!("cubin/sm_80.cubin"),
    include_bytes!("cubin/sm_86.cubin"),
    include_bytes!("cubin/sm_89.cubin"),
    include_bytes!("cubin/sm_90.cubin"),
    include_bytes!("cubin/sm_100.cubin"),
    include_bytes!("cubin/sm_120.cubin"),
];

/// The CRC32C (8 hex digits) of the [`SOURCE`] the built-in CUBINs were compiled from.
const BUILT_IN_SOURCE_CRC32C: &str = include_str!("cubin/source.crc32c");

/// The CRC32C of [`SOURCE`], as `src/gpu/cubin/source.crc32c` records it.
pub fn source_crc32c() -> String {
    format!("{:08x}", crate::format::crc32c(SOURCE.as_bytes()))
}

/// The built-in CUBIN for `sm_{major}{minor}`, when the crate carries one compiled from this
/// [`SOURCE`] (a stale one, after an edit of the source, is never used).
pub fn built_in(major: i32, minor: i32) -> Option<&'static [u8]> {
    if BUILT_IN_SOURCE_CRC32C.trim() != source_crc32c() {
        return None;
    }
    let i = BUILT_IN_ARCHS.iter().position(|&a| a == (major, minor))?;
    Some(BUILT_IN[i])
}

/// What the loaded kernels were compiled to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelCode {
    /// The crate's CUBIN for this compute capability (major, minor), loaded as is.
    BuiltIn(i32, i32),
    /// A CUBIN NVRTC compiled for this compute capability (major, minor), loaded as is.
    Cubin(i32, i32),
    /// PTX for compute capability 8.0, compiled for the card by the driver at load.
    Ptx,
}

impl KernelCode {
    /// The best code for a card of compute capability `cc` (`None`: the driver did not say).
    pub fn for_card(cc: Option<(i32, i32)>) -> KernelCode {
        match cc {
            Some((major, minor)) if built_in(major, minor).is_some() => KernelCode::BuiltIn(major, minor),
            Some((major, minor)) => KernelCode::Cubin(major, minor),
            None => KernelCode::Ptx,
        }
    }

    /// What to try when this code cannot be had or loaded: a built-in CUBIN the driver refuses
    /// (one newer than the driver) is compiled again by NVRTC; a CUBIN NVRTC cannot make
    /// (an architecture it does not know) falls back to PTX.
    pub fn fallback(self) -> Option<KernelCode> {
        match self {
            KernelCode::BuiltIn(major, minor) => Some(KernelCode::Cubin(major, minor)),
            KernelCode::Cubin(..) => Some(KernelCode::Ptx),
            KernelCode::Ptx => None,
        }
    }
}

/// Runs `attempt` on `code`, then on its fallbacks in turn, until one succeeds; returns its
/// result and the code that gave it. The error names why each code failed: the first reason (a
/// driver refusing the built-in CUBIN, say) is what a user needs, not only the last (no NVRTC
/// for the fallbacks).
pub fn with_fallbacks<T>(
    code: KernelCode,
    mut attempt: impl FnMut(KernelCode) -> Result<T>,
) -> Result<(T, KernelCode)> {
    let mut failures = Vec::new();
    let mut next = Some(code);
    while let Some(code) = next {
        match attempt(code) {
            Ok(t) => return Ok((t, code)),
            Err(e) => {
                let why = match e {
                    Error::Gpu(g) => g.to_string(),
                    other => other.to_string(),
                };
                failures.push(format!("{code}: {why}"));
                next = code.fallback();
            }
        }
    }
    Err(Error::Gpu(GpuError::Kernels(format!(
        "no usable kernels ({})",
        failures.join("; ")
    ))))
}

impl std::fmt::Display for KernelCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelCode::BuiltIn(major, minor) => write!(f, "cubin sm_{major}{minor} (built in)"),
            KernelCode::Cubin(major, minor) => write!(f, "cubin sm_{major}{minor}"),
            KernelCode::Ptx => write!(f, "ptx compute_80"),
        }
    }
}

/// An NVRTC program, destroyed on drop.
struct Program(cudarc::nvrtc::sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the handle came from `create_program` and is destroyed only here, once.
        let _ = unsafe { cudarc::nvrtc::result::destroy_program(self.0) };
    }
}

/// [`SOURCE`] compiled by NVRTC to a CUBIN for `sm_{major}{minor}` (cudarc's safe API returns
/// PTX only). `scripts/build-cubins.sh` makes the built-in CUBINs with it.
pub fn compile_cubin(major: i32, minor: i32) -> Result<Vec<u8>> {
    use cudarc::nvrtc::{result, sys};
    nvrtc_present()?;
    let nvrtc =
        |what: &str, e: String| Error::Gpu(GpuError::Kernels(format!("NVRTC ({what} for sm_{major}{minor}): {e}")));
    let src = std::ffi::CString::new(SOURCE).expect("the kernel source has no NUL byte");
    let prog = Program(result::create_program(&src, None).map_err(|e| nvrtc("create", format!("{e:?}")))?);
    let opts = [format!("-arch=sm_{major}{minor}")];
    // SAFETY: `prog` is a live program; the options are owned strings that outlive the call.
    unsafe { result::compile_program(prog.0, &opts) }.map_err(|e| nvrtc("compile", format!("{e:?}")))?;
    let mut len = 0usize;
    // SAFETY: `prog` was compiled; `len` is a valid place for the size.
    let rc = unsafe { sys::nvrtcGetCUBINSize(prog.0, &mut len) };
    if rc != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc("CUBIN size", format!("{rc:?}")));
    }
    let mut cubin = vec![0u8; len];
    // SAFETY: `cubin` holds the `len` bytes NVRTC said the CUBIN takes.
    let rc = unsafe { sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr().cast()) };
    if rc != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(nvrtc("CUBIN", format!("{rc:?}")));
    }
    Ok(cubin)
}

/// The loaded kernels.
pub struct Kernels {
    tiles: CudaFunction,
    crc: CudaFunction,
    diff: CudaFunction,
    gather: CudaFunction,
    blocks: u32,
}

const THREADS: u32 = 256;

/// Encodes `src` into the front of `dst`, `N` bytes per item (little-endian, as the kernels read
/// them), in parallel.
pub(crate) fn put_le<T: Sync, const N: usize>(dst: &mut [u8], src: &[T], encode: impl Fn(&T) -> [u8; N] + Sync) {
    use rayon::prelude::*;
    const ITEMS: usize = 8192;
    dst[..src.len() * N]
        .par_chunks_mut(N * ITEMS)
        .zip(src.par_chunks(ITEMS))
        .for_each(|(d, s)| {
            for (d, x) in d.chunks_exact_mut(N).zip(s) {
                d.copy_from_slice(&encode(x));
            }
        });
}

/// Bytes describing one chunk to [`Kernels::check_record_pieces`]: a u64 offset and a u32
/// length.
pub const CHUNK_DESC_LEN: usize = 12;

impl Kernels {
    /// Loads compiled PTX into the context.
    pub fn load(ctx: &Arc<CudaContext>, ptx: cudarc::nvrtc::Ptx) -> Result<Kernels> {
        let m = ctx.load_module(ptx).map_err(gpu_err)?;
        let sms = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(gpu_err)?;
        Ok(Kernels {
            tiles: m.load_function("apply_tiles").map_err(gpu_err)?,
            crc: m.load_function("crc32c_chunks").map_err(gpu_err)?,
            diff: m.load_function("diff_windows").map_err(gpu_err)?,
            gather: m.load_function("gather_ranges").map_err(gpu_err)?,
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

    /// Launches `apply_tiles` over a batch uploaded by the caller: `ntiles` tiles at `tiles`,
    /// and the device addresses of the `entries`, `writes`, `pages` (a device address per slot)
    /// and `value_base` arrays, with the sources resolved against `log_base` and `extra_base`.
    #[allow(clippy::too_many_arguments)]
    pub fn apply_tiles(
        &self,
        stream: &Arc<CudaStream>,
        tiles: u64,
        ntiles: usize,
        entries: u64,
        writes: u64,
        pages: u64,
        value_base: u64,
        log_base: u64,
        extra_base: u64,
    ) -> Result<()> {
        let n =
            u32::try_from(ntiles).map_err(|_| Error::Gpu(GpuError::Internal("too many tiles in one batch".into())))?;
        if n == 0 {
            return Ok(());
        }
        let mut b = stream.launch_builder(&self.tiles);
        b.arg(&tiles)
            .arg(&n)
            .arg(&entries)
            .arg(&writes)
            .arg(&pages)
            .arg(&value_base)
            .arg(&log_base)
            .arg(&extra_base);
        // SAFETY: the caller uploaded the batch's arrays to the addresses given, ordered before
        // this launch on `stream`, and the plan (src/gpu/plan.rs) built every index in range of
        // them: entries index writes, tile keys name slots of `pages`, masked writes name their
        // value-base entries; every write was bounds-checked against its page's length, and its
        // source against the record it came from, which lies in the uploaded log or in the extra
        // buffer (both allocated SOURCE_PAD bytes longer for the kernel's word reads).
        unsafe { b.launch(self.cfg(n)) }.map(|_| ()).map_err(gpu_err)
    }

    /// Launches `diff_windows`: marks, in the bitmap at `out` (`nwords` u32 words), each
    /// [`DIFF_WINDOW`]-byte window of `npairs` buffer pairs whose old and new bytes differ.
    /// `pairs` is the device address of the pairs' table (see the kernel).
    ///
    /// # Safety
    ///
    /// The table must hold `npairs` entries, their first words ascending from 0 and covering
    /// each pair's windows within `nwords`; each old and new address must hold the pair's length
    /// of readable device memory, and `out` `nwords` writable words, until the stream has run.
    pub unsafe fn diff_windows(
        &self,
        stream: &Arc<CudaStream>,
        pairs: u64,
        npairs: u32,
        nwords: u64,
        out: u64,
    ) -> Result<()> {
        if npairs == 0 || nwords == 0 {
            return Ok(());
        }
        let mut b = stream.launch_builder(&self.diff);
        b.arg(&pairs).arg(&npairs).arg(&nwords).arg(&out);
        let warps_per_block = u64::from(THREADS / 32);
        let blocks = u32::try_from(nwords.div_ceil(warps_per_block)).unwrap_or(u32::MAX);
        // SAFETY: the caller's contract: every address the kernel reads or writes is in range.
        unsafe { b.launch(self.cfg(blocks)) }.map(|_| ()).map_err(gpu_err)
    }

    /// Launches `gather_ranges` over `n` ranges in the table at device address `ranges` (source,
    /// destination, length; source and destination equal modulo 8).
    ///
    /// # Safety
    ///
    /// Each range's source must be readable and its destination writable device memory of its
    /// length until the stream has run, and no destination may overlap another range.
    pub unsafe fn gather_ranges(&self, stream: &Arc<CudaStream>, ranges: u64, n: u32) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let mut b = stream.launch_builder(&self.gather);
        b.arg(&ranges).arg(&n);
        // SAFETY: the caller's contract.
        unsafe { b.launch(self.cfg(n)) }.map(|_| ()).map_err(gpu_err)
    }

    /// CRC32C of each chunk `base + off[i] .. + len[i]`, returned to the host.
    pub fn crc32c_chunks(&self, stream: &Arc<CudaStream>, base: u64, off: &[u64], len: &[u32]) -> Result<Vec<u32>> {
        let mut desc = vec![0u8; off.len() * CHUNK_DESC_LEN];
        let (offs, lens) = desc.split_at_mut(off.len() * 8);
        put_le(offs, off, |x| x.to_le_bytes());
        put_le(lens, len, |x| x.to_le_bytes());
        self.check_record_pieces(stream, base, &desc, true)
            .map(|(_, crcs)| crcs)
    }

    /// CRCs of log record payload pieces (see the kernel: bit 31 of a length marks a record's
    /// first piece, bits 31 and 30 a record in one piece, checked against its stored checksum on
    /// the device). `desc` describes the pieces: their offsets from `base` (little-endian u64),
    /// then their lengths (little-endian u32), [`CHUNK_DESC_LEN`] bytes per piece; it goes up in
    /// one copy, read before this returns, so pinned memory serves. Returns the number of
    /// one-piece records whose checksum did not match, and every piece's CRC when `want_crcs`
    /// (for records in several pieces, combined by the caller).
    pub fn check_record_pieces(
        &self,
        stream: &Arc<CudaStream>,
        base: u64,
        desc: &[u8],
        want_crcs: bool,
    ) -> Result<(u32, Vec<u32>)> {
        let n = desc.len() / CHUNK_DESC_LEN;
        if n == 0 {
            return Ok((0, Vec::new()));
        }
        let n32 = u32::try_from(n).map_err(|_| Error::Gpu(GpuError::Internal("too many CRC chunks".into())))?;
        let d_desc = DeviceBuffer::alloc(stream.context(), n * CHUNK_DESC_LEN, MemoryKind::Device)?;
        let mut d_out = stream.alloc_zeros::<u32>(n).map_err(gpu_err)?;
        let mut d_bad = stream.alloc_zeros::<u32>(1).map_err(gpu_err)?;
        // SAFETY: `d_desc` holds the bytes copied. Pinned memory is read by the copy after this
        // call: every path below waits for the stream before returning.
        unsafe { copy_h2d_on(stream, d_desc.ptr(), &desc[..n * CHUNK_DESC_LEN])? };
        let (off, len) = (d_desc.ptr(), d_desc.ptr() + 8 * n as u64);
        let mut b = stream.launch_builder(&self.crc);
        b.arg(&base)
            .arg(&off)
            .arg(&len)
            .arg(&n32)
            .arg(&mut d_out)
            .arg(&mut d_bad);
        let blocks = n32.div_ceil(THREADS).clamp(1, self.blocks * 4);
        // SAFETY: each chunk lies inside a live allocation starting at `base` (built from pages,
        // or from the frames of an uploaded log, whose first pieces have their 32-byte frame
        // header right before them in the same allocation); `off` and `len` hold `n` entries.
        let launched = unsafe {
            b.launch(LaunchConfig {
                grid_dim: (blocks, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            })
        };
        if let Err(e) = launched {
            // The copy of `desc` is queued: it must be done before the caller reuses the bytes.
            let _ = stream.synchronize();
            return Err(gpu_err(e));
        }
        let bad = stream.clone_dtoh(&d_bad).map_err(gpu_err)?[0];
        let crcs = if want_crcs {
            stream.clone_dtoh(&d_out).map_err(gpu_err)?
        } else {
            Vec::new()
        };
        Ok((bad, crcs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_cubins_were_built_from_this_kernel_source() {
        assert_eq!(
            BUILT_IN_SOURCE_CRC32C.trim(),
            source_crc32c(),
            "the kernel source changed since src/gpu/cubin/ was built: run scripts/build-cubins.sh"
        );
        for (&(major, minor), cubin) in BUILT_IN_ARCHS.iter().zip(BUILT_IN) {
            assert!(cubin.starts_with(b"\x7fELF"), "sm_{major}{minor}: not an ELF file");
            assert_eq!(built_in(major, minor), Some(cubin));
        }
    }

    #[test]
    fn apply_tiles_is_launched_with_the_block_size_its_source_assumes() {
        assert!(SOURCE.contains(&format!("#define BLOCK {THREADS}\n")));
    }

    /// The CUDA source restates layouts the Rust side owns: the record frame of
    /// docs/FORMAT.md (crc32c_chunks) and the write descriptors of src/gpu/plan.rs
    /// (apply_tiles). Each restatement is pinned here, so that a change on one side without the
    /// other fails.
    #[test]
    fn kernel_source_restates_the_frame_and_descriptor_layouts_exactly() {
        use crate::format::log::FRAME_HEADER_LEN;
        use crate::gpu::plan::{EXTRA, KIND_COPY, KIND_FILL, KIND_MASKED, TILE_SHIFT};
        let has = |text: String| assert!(SOURCE.contains(&text), "the kernel source lacks `{text}`");
        // A payload's record CRC covers the frame header's bytes 0..28 (all but record_crc,
        // the header's last 4 bytes), then the payload.
        assert_eq!(FRAME_HEADER_LEN, 32);
        has(format!(
            "crc32c_update(T, crc, p - {FRAME_HEADER_LEN}, {})",
            FRAME_HEADER_LEN - 4
        ));
        has("const u32 stored = (u32)p[-4] | ((u32)p[-3] << 8) | ((u32)p[-2] << 16) | ((u32)p[-1] << 24);".into());
        // Descriptors: slot | kind << 32 | value base << 34, the source's top bit for `extra`.
        has(format!("#define TILE_SHIFT {TILE_SHIFT}\n"));
        has("const u32 kind = (u32)(sk >> 32) & 3u;".into());
        assert!(
            [KIND_COPY, KIND_MASKED, KIND_FILL].iter().all(|k| *k <= 3),
            "a kind fits the 2 bits the kernel reads"
        );
        has(format!("if (kind == {KIND_FILL})"));
        has(format!("if (kind == {KIND_COPY})"));
        has("vbase[(sk >> 34) +".into());
        assert_eq!(EXTRA, 1 << 63);
        has("(src >> 63) ? extra_base + (src & ~(1ull << 63))".into());
    }

    #[test]
    fn built_in_kernels_need_no_nvrtc() {
        // Whether or not NVRTC is installed: the built-in CUBIN is handed out as it is.
        for (major, minor) in BUILT_IN_ARCHS {
            assert!(compile(KernelCode::BuiltIn(major, minor)).is_ok(), "sm_{major}{minor}");
        }
        assert!(compile(KernelCode::BuiltIn(7, 5)).is_err(), "no sm_75 CUBIN ships");
    }

    #[test]
    fn each_card_gets_the_best_code_and_falls_back_in_order() {
        assert_eq!(KernelCode::for_card(Some((9, 0))), KernelCode::BuiltIn(9, 0));
        assert_eq!(KernelCode::for_card(Some((7, 5))), KernelCode::Cubin(7, 5));
        assert_eq!(KernelCode::for_card(None), KernelCode::Ptx);
        assert_eq!(KernelCode::BuiltIn(9, 0).fallback(), Some(KernelCode::Cubin(9, 0)));
        assert_eq!(KernelCode::Cubin(9, 0).fallback(), Some(KernelCode::Ptx));
        assert_eq!(KernelCode::Ptx.fallback(), None);
        assert_eq!(KernelCode::BuiltIn(9, 0).to_string(), "cubin sm_90 (built in)");
    }

    #[test]
    fn a_refused_built_in_cubin_falls_back_and_every_failure_is_named() {
        // A driver older than the built-in CUBIN, on a machine with NVRTC: its own compile.
        let mut tried = Vec::new();
        let (got, code) = with_fallbacks(KernelCode::BuiltIn(9, 0), |code| {
            tried.push(code);
            match code {
                KernelCode::BuiltIn(..) => Err(Error::Gpu(GpuError::Kernels("CUDA_ERROR_NO_BINARY_FOR_GPU".into()))),
                _ => Ok("compiled"),
            }
        })
        .unwrap();
        assert_eq!((got, code), ("compiled", KernelCode::Cubin(9, 0)));
        assert_eq!(tried, [KernelCode::BuiltIn(9, 0), KernelCode::Cubin(9, 0)]);

        // The same without NVRTC: nothing loads, and the error says why each code failed.
        let e = with_fallbacks(KernelCode::BuiltIn(9, 0), |code| -> Result<()> {
            Err(Error::Gpu(GpuError::Kernels(match code {
                KernelCode::BuiltIn(..) => "CUDA_ERROR_NO_BINARY_FOR_GPU".into(),
                _ => "no NVRTC library".into(),
            })))
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "GPU: no usable kernels (cubin sm_90 (built in): CUDA_ERROR_NO_BINARY_FOR_GPU; \
             cubin sm_90: no NVRTC library; ptx compute_80: no NVRTC library)"
        );
    }
}
