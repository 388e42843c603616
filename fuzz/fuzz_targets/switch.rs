//! The switch's on_frame on arbitrary frames: never a panic.
#![no_main]
use d11_core::{Element, Instant, Outbox, PortId};
use d11_elements::switch::{Switch, SwitchConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&port, frame)) = data.split_first() else { return };
    let mut s = Switch::new(SwitchConfig::new(["a", "b", "c"]));
    let mut out = Outbox::new();
    s.on_frame(&mut (Instant::from_millis(1)).into(), PortId(u16::from(port % 4)), frame, &mut out);
    s.on_frame(&mut (Instant::from_millis(2)).into(), PortId(u16::from(port % 3)), frame, &mut out);
    s.on_timer(&mut (Instant::from_millis(1_000_000)).into(), &mut out);
});
