//! A string that never shows in logs or `Debug` output: the health-check password and the
//! control and admin tokens. Configuration loading wraps them at once; only the one place that
//! must send a secret calls [`Secret::expose`].

use std::fmt;

use serde::Deserialize;

/// A string that never shows in logs or `Debug` output.
#[derive(Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub(crate) fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself, for the one place that must send it.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` is this secret, compared in time that depends only on `given` (not on
    /// where the first difference is, nor on the secret's length). An empty secret matches
    /// nothing.
    pub(crate) fn matches(&self, given: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        if secret.is_empty() {
            return false;
        }
        let mut difference = u8::from(given.len() != secret.len());
        for (i, byte) in given.iter().enumerate() {
            difference |= byte ^ secret[i % secret.len()];
        }
        std::hint::black_box(difference) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"****\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole() {
        let secret = Secret::new("abc".into());
        assert!(secret.matches(b"abc"));
        for wrong in [&b""[..], b"ab", b"abd", b"abcabc", b"Abc", b"abc "] {
            assert!(!secret.matches(wrong), "{wrong:?}");
        }
        assert!(
            !Secret::default().matches(b""),
            "an empty secret matches nothing"
        );
    }
}
