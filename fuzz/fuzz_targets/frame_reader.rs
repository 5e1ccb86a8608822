//! Raw WebSocket bytes from a client, split into reads anywhere, under any limit: the
//! frame reader never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wa_gateway_core::fuzzing::frame_reader(data));
