//! `decode`: see `pinhole_fuzz::checks::decode`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pinhole_fuzz::checks::decode(data);
});
