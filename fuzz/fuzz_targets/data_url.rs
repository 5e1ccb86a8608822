//! The data URL of a send: accepted only unchanged, with a plain MIME type, and the
//! command carrying it is exactly valid JSON.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wa_gateway_core::fuzzing::data_url(data));
