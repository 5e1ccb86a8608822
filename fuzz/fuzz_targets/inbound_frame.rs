//! Frames an extension sends, before and after auth: parsing never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wa_gateway_core::fuzzing::inbound_frame(data));
