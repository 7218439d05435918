//! `engine_sequence`: see `pinhole_fuzz::sequence`.
//!
//! With `PINHOLE_FUZZ_JSON=FILE` in the environment, each input is also written to FILE as JSON
//! before it runs: run the target on a crash artifact that way to get the readable sequence to
//! put under `fuzz/regressions/engine_sequence/`.

#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

fn json_path() -> Option<&'static PathBuf> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| std::env::var_os("PINHOLE_FUZZ_JSON").map(PathBuf::from))
        .as_ref()
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some(sequence) = pinhole_fuzz::sequence_from_bytes(data) else {
        return;
    };
    if let Some(path) = json_path()
        && let Ok(json) = serde_json::to_vec_pretty(&sequence)
    {
        let _ = std::fs::write(path, json);
    }
    pinhole_fuzz::sequence::run(&sequence);
});
