//! The wire format, both directions: frame envelopes parsed and their
//! members read ([`envelope`]), JSON skimmed for depth and `op` ([`skim`]),
//! every frame encoded ([`encode`]), and the protected frames' wrappers
//! written and matched ([`protected`]).

pub(crate) mod encode;
mod envelope;
mod protected;
mod skim;

pub(crate) use envelope::{Envelope, Key, parse};
#[cfg(test)]
pub(crate) use protected::B64_ALPHABET;
pub(crate) use protected::{
    GMAC_TAG_B64_LEN, Sealed, TAG_B64_LEN, match_sealed, match_signed, tag_text, write_sealed,
    write_signed,
};
pub(crate) use skim::{depth, depth_within, has_duplicate_op};

/// The base64 of every binary member: standard alphabet, `=` padding.
pub(crate) const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Truncates a peer-supplied string for inclusion in an error.
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}
