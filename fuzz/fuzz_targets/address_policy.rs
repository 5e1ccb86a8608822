//! Addresses and media URLs: a literal host is refused exactly when it is not public,
//! and an IPv4 address wrapped in IPv6 gets its own verdict.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 16 {
        return;
    }
    let (octets, url) = data.split_at(16);
    let octets: [u8; 16] = octets.try_into().unwrap_or_default();
    wa_gateway_core::fuzzing::address_policy(octets, &String::from_utf8_lossy(url));
});
