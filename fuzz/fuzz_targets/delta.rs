//! The record decoder and the replay's applier: decode a payload of each type from arbitrary
//! bytes and apply what decodes to a small in-memory state. Must never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmsb::format::record::{Delta, Op};
use mmsb::page::PageMeta;
use mmsb::replay::State;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else {
        return;
    };
    let mut state = State::empty();
    let create = Delta {
        page_id: 1,
        epoch: 0,
        timestamp_ns: 0,
        source: "".into(),
        op: Op::Create {
            len: 64,
            meta: PageMeta::default(),
        },
    };
    state.apply(&create).unwrap();
    if let Ok(d) = Delta::decode(kind % 8, payload, 0) {
        // Created and resized pages are zero-filled memory of the length the record asks for
        // (up to 1 TiB, refused by a fallible reservation where memory lacks): legitimate, but
        // past libFuzzer's malloc limit. Skip those here.
        if matches!(d.op, Op::Create { len, .. } | Op::Resize { len } if len > 16 << 20) {
            return;
        }
        let _ = d.encode();
        let _ = state.apply(&d);
        let _ = state.state_hash();
    }
});
