//! Three-valued fields: absent, `null`, or a value (`"ttl_ms"` on acquire and renew).
//!
//! Use as `#[serde(default, with = "nullable", skip_serializing_if = "Option::is_none")]` on an
//! `Option<Option<T>>`: absent is `None`, `null` is `Some(None)`, a value is `Some(Some(v))`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub fn serialize<T: Serialize, S: Serializer>(
    value: &Option<Option<T>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        // Only reached without `skip_serializing_if`; absent and null look the same then.
        None | Some(None) => serializer.serialize_none(),
        Some(Some(inner)) => inner.serialize(serializer),
    }
}

pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    // Called only when the field is present: `null` gives `Some(None)`.
    Option::<T>::deserialize(deserializer).map(Some)
}
