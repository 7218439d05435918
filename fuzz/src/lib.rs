//! Fuzz targets for pinhole: the checks they run, shared with `tests/fuzz_regressions.rs`.
//!
//! - [`checks`]: the byte-level targets (`decode`, `ftp_command`, `ftp_reply`, `tftp`) and
//!   [`checks::Tracked`], an engine whose every verdict's bookkeeping is checked;
//! - [`sequence`]: the `engine_sequence` target's structured input and its invariants.
//!
//! See the README's "Fuzzing" section for how to build and run them.

pub mod checks;
pub mod sequence;

/// Reads an `engine_sequence` input: JSON when it starts with `{` and parses (the committed
/// seeds and regressions), else the bytes through `arbitrary`.
#[cfg(not(test))] // `Sequence` derives `Arbitrary` only outside tests (see `sequence`).
pub fn sequence_from_bytes(data: &[u8]) -> Option<sequence::Sequence> {
    if data.first() == Some(&b'{')
        && let Ok(sequence) = serde_json::from_slice(data)
    {
        return Some(sequence);
    }
    let u = arbitrary::Unstructured::new(data);
    <sequence::Sequence as arbitrary::Arbitrary>::arbitrary_take_rest(u).ok()
}
