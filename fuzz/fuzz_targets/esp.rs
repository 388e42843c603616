//! ESP on arbitrary bytes: the view, AES-GCM's open with a fixed key (a
//! random packet never verifies; never a panic), and the anti-replay window
//! fed the input as sequence numbers: nothing accepted twice.
#![no_main]
use d11_wire::esp::{EspPacket, GcmSa, ReplayWindow, Spi, NEXT_IPV4};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let sa = GcmSa::new(&[7; 20]);
    let mut buf = Vec::new();
    if let Ok(p) = EspPacket::new_checked(data) {
        let _ = (p.spi(), p.seq(), p.iv(), p.to_string());
        assert!(sa.open(&p, &mut buf).is_err());
    }
    // What we seal opens to the same bytes.
    let mut out = Vec::new();
    sa.seal(Spi(0x1001), 1, [0; 8], NEXT_IPV4, data, &mut out);
    let p = EspPacket::new_checked(&out[..]).expect("ours parses");
    let o = sa.open(&p, &mut buf).expect("ours opens");
    assert_eq!(&buf[..o.len], data);
    let mut w = ReplayWindow::new();
    let mut seen = std::collections::HashSet::new();
    for c in data.chunks_exact(2) {
        let s = u32::from(u16::from_be_bytes([c[0], c[1]]));
        if w.check(s).is_ok() {
            assert!(seen.insert(s));
            w.accept(s);
        }
    }
});
