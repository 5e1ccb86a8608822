//! Raw WebSocket bytes before auth, split into reads anywhere: the meter never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wa_gateway_core::fuzzing::frame_meter(data));
