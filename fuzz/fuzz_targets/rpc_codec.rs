//! The RPC framing (crates/apps/src/rpc/codec.rs) on arbitrary bytes cut
//! into arbitrary chunks, as a connection delivers them: never a panic; the
//! frames and refusals do not depend on how the bytes were cut; a frame
//! re-emits to a frame that decodes the same; request and response bodies
//! that decode re-encode to bodies that decode to the same encoding.
#![no_main]
use d11_apps::rpc::codec::{
    decode_response, encode_response, CodecError, Decoder, Frame, Header, Request, HEADER_LEN,
};
use libfuzzer_sys::fuzz_target;

/// What the decoder said, comparable across cuttings: a bad magic's
/// `found` depends on how many of its bytes had arrived, so it is left out.
#[derive(Debug, PartialEq)]
enum Said {
    Frame(Frame),
    Refused(Option<Header>, bool),
}

fn decode(bytes: &[u8], step: usize, max_body: u32) -> Vec<Said> {
    let mut d = Decoder::new(max_body);
    let mut said = vec![];
    for chunk in bytes.chunks(step) {
        d.push(chunk);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => said.push(Said::Frame(f)),
                Ok(None) => break,
                Err(e) => {
                    let _ = e.to_string();
                    said.push(Said::Refused(e.header().copied(), e.is_fatal()));
                    if e.is_fatal() {
                        assert_eq!(d.next_frame(), Ok(None), "nothing after a fatal error");
                    }
                }
            }
        }
    }
    said
}

fn check_frame(f: &Frame) {
    let h = f.header;
    let _ = h.to_string();
    assert_eq!(Header::parse(&h.emit()), Ok(h));
    let mut d = Decoder::new(u32::MAX);
    d.push(&f.to_bytes());
    assert_eq!(d.next_frame(), Ok(Some(f.clone())));
    if h.event {
        return;
    }
    if h.request {
        if let Ok(r) = Request::decode(&f.body) {
            let body = r.encode();
            let again = Request::decode(&body).expect("what we encode decodes");
            assert_eq!(again.encode(), body);
            let _ = (r.idempotent(), Frame::request(h.request_id, &r).to_bytes());
        }
    } else if let Ok(result) = decode_response(h.status, &f.body) {
        let (status, body) = encode_response(&result);
        let again = decode_response(status, &body).expect("what we encode decodes");
        assert_eq!(encode_response(&again), (status, body));
        let _ = Frame::response(h.request_id, &result).to_bytes();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else { return };
    // A small limit half the time, so refused bodies are skipped too.
    let max_body = if cut & 0x80 != 0 { 64 } else { 1 << 20 };
    let step = usize::from(cut & 0x7f) + 1;
    let whole = decode(bytes, bytes.len().max(1), max_body);
    let cut_up = decode(bytes, step, max_body);
    assert_eq!(whole, cut_up, "cut every {step} bytes");
    for s in &whole {
        if let Said::Frame(f) = s {
            check_frame(f);
        }
    }
    if let Ok(h) = <&[u8; HEADER_LEN]>::try_from(bytes.get(..HEADER_LEN).unwrap_or_default()) {
        if let Ok(h) = Header::parse(h) {
            assert_eq!(Header::parse(&h.emit()), Ok(h));
        }
    }
    let _ = CodecError::BadMagic { found: 0 }.is_fatal();
});
