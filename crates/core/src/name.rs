//! `LockName`: a validated lock name, checked once at construction.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::CoreError;

/// Longest name, in bytes of UTF-8.
pub const MAX_NAME_BYTES: usize = 255;

/// A lock or semaphore name: 1–255 bytes of UTF-8 without control characters.
///
/// Cheap to clone (an `Arc<str>`): the table keys its name map with it and every hold of the
/// name shares the same allocation.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LockName(Arc<str>);

impl LockName {
    /// Validates `name` and wraps it.
    pub fn new(name: &str) -> Result<LockName, CoreError> {
        validate_name(name)?;
        Ok(LockName(Arc::from(name)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A bound below every valid name (the empty string), for range scans.
    pub(crate) fn lowest() -> LockName {
        LockName(Arc::from(""))
    }
}

/// Checks the name rules without allocating.
pub fn validate_name(name: &str) -> Result<(), CoreError> {
    if name.is_empty() {
        return Err(CoreError::InvalidArgument("name must not be empty".into()));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(CoreError::InvalidArgument(format!(
            "name is {} bytes long; the limit is {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(CoreError::InvalidArgument("name must not contain control characters".into()));
    }
    Ok(())
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Borrow<str> for LockName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for LockName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for LockName {
    type Error = CoreError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        LockName::new(value)
    }
}

impl Serialize for LockName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for LockName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        LockName::new(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_unicode_slashes_and_percent_up_to_255_bytes() {
        for name in ["db", "a/check", "b/x", "%", "ünïcödé-ロック", &"x".repeat(255)] {
            assert_eq!(LockName::new(name).unwrap().as_str(), name);
        }
        // 85 three-byte characters = 255 bytes.
        assert!(LockName::new(&"ロ".repeat(85)).is_ok());
    }

    #[test]
    fn rejects_empty_long_and_control_characters() {
        for name in ["", "a\nb", "tab\there", "\u{7f}", "nul\0", "\u{85}next-line"] {
            let err = LockName::new(name).unwrap_err();
            assert!(matches!(err, CoreError::InvalidArgument(_)), "{name:?}: {err:?}");
        }
        assert!(LockName::new(&"x".repeat(256)).is_err());
        assert!(LockName::new(&"ロ".repeat(86)).is_err());
    }

    #[test]
    fn deserializing_validates() {
        let err = postcard::from_bytes::<LockName>(&postcard::to_allocvec("").unwrap());
        assert!(err.is_err());
        let ok: LockName = postcard::from_bytes(&postcard::to_allocvec("db").unwrap()).unwrap();
        assert_eq!(ok.as_str(), "db");
    }
}
