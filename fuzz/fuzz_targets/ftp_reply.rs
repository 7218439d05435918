//! `ftp_reply`: see `pinhole_fuzz::checks::ftp_reply`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pinhole_fuzz::checks::ftp_reply(data);
});
