//! The HTTP request head a client sends to the standalone port, with the client address
//! read from proxy headers: nothing panics, and without trustProxy the headers are ignored.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wa_gateway_core::fuzzing::request_head(data));
