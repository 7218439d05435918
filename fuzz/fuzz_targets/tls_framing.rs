//! `tls_framing`: see `pinhole_fuzz::checks::tls_framing`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pinhole_fuzz::checks::tls_framing(data);
});
