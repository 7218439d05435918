//! `tftp`: see `pinhole_fuzz::checks::tftp`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pinhole_fuzz::checks::tftp(data);
});
