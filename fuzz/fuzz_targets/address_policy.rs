//! Addresses and media URLs: a literal host is refused exactly when it is not public,
//! and an IPv4 address wrapped in IPv6 gets its own verdict.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wa_gateway_core::fuzzing::address_policy(data));
