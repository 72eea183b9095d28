//! Inputs the fuzzers found (testdata/regressions/), each with what must happen to it now.

use mmsb::format::record::{Delta, Op, TYPE_FILL};
use mmsb::page::PageMeta;
use mmsb::replay::State;

fn input(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata/regressions")
            .join(name),
    )
    .unwrap()
}

/// `delta` target: a FILL record claiming about 2^61 bytes. Encoding it reserved capacity for
/// the bytes it writes instead of the bytes it carries, an allocation no machine can make. It
/// must re-encode to its 17-byte body and be refused by a 64-byte page.
#[test]
fn a_huge_fill_encodes_small_and_is_refused_by_a_small_page() {
    let data = input("delta-fill-encode-capacity.bin");
    let (kind, payload) = data.split_first().unwrap();
    assert_eq!(kind % 8, TYPE_FILL);
    let d = Delta::decode(TYPE_FILL, payload, 0).unwrap();
    let Op::Fill { len, .. } = d.op else {
        panic!("decodes as a fill: {:?}", d.op)
    };
    assert!(len > 1 << 60, "{len}");
    assert_eq!(d.encode().unwrap(), payload, "re-encodes to the same bytes");
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
    assert!(state.apply(&d).is_err());
}
