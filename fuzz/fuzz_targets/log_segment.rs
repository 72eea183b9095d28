//! The log segment reader on arbitrary bytes: header, frame scan (torn tail or corruption),
//! decompression and record decoding. Must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if mmsb::format::log::SegmentHeader::parse(data).is_err() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000.mmsblog");
    std::fs::write(&path, data).unwrap();
    if let Ok(log) = mmsb::format::log::Log::open(&[&path]) {
        for rec in log.records() {
            let _ = rec.delta();
        }
    }
});
