//! Writes the built-in CUBINs, `src/gpu/cubin/sm_XY.cubin`: the kernel source compiled by NVRTC
//! for each architecture of `BUILT_IN_ARCHS`, exactly as the crate compiles it at run time, and
//! `source.crc32c`, which ties them to that source. Run through `scripts/build-cubins.sh`, which
//! provides NVRTC.

use std::path::Path;

use mmsb::gpu::kernels;

fn main() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gpu/cubin");
    for (major, minor) in kernels::BUILT_IN_ARCHS {
        let cubin = kernels::compile_cubin(major, minor)?;
        let path = dir.join(format!("sm_{major}{minor}.cubin"));
        mmsb::fsutil::write_atomic(&path, &cubin)?;
        println!("{}: {} bytes", path.display(), cubin.len());
    }
    mmsb::fsutil::write_atomic(
        &dir.join("source.crc32c"),
        format!("{}\n", kernels::source_crc32c()).as_bytes(),
    )?;
    Ok(())
}
