//! `ftp_command`: see `pinhole_fuzz::checks::ftp_command`.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    pinhole_fuzz::checks::ftp_command(data);
});
