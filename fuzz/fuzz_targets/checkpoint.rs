//! The checkpoint reader on arbitrary bytes: parse the header and index, and when that succeeds,
//! check every page as `verify` does. Must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(head) = mmsb::format::checkpoint::CheckpointHead::parse(data, data.len() as u64) {
        let _ = head.state_hash();
        // Opening the same bytes from a file runs the page checks too.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.ckpt");
        std::fs::write(&path, data).unwrap();
        if let Ok(c) = mmsb::format::checkpoint::Checkpoint::open(&path) {
            let _ = c.check_pages(None);
        }
    }
});
