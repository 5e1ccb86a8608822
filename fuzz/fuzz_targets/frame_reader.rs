//! Raw WebSocket bytes from a client, split into reads anywhere, under any limit: the
//! frame reader never panics.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let limit = u16::from_be_bytes([data[0], data[1]]);
    let cuts = usize::from(data[2] % 8).min(data.len() - 3);
    let (cuts, bytes) = data[3..].split_at(cuts);
    wa_gateway_core::fuzzing::frame_reader(limit, cuts, bytes);
});
