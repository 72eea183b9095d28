//! `mmsb import` on arbitrary bytes as a safetensors file: refused with an error or imported
//! into a checkpoint that verifies. Must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.ckpt");
    std::fs::write(&input, data).unwrap();
    if mmsb::ops::safetensors_io::import(&input, &output, 0, None).is_ok() {
        let report = mmsb::ops::verify::verify(&[output], None).unwrap();
        assert!(report.ok, "an imported file must verify: {:?}", report.problems);
    }
});
