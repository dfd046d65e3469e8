//! Name → advisory-lock key: the first 8 bytes of SHA-256 of the name's UTF-8 bytes, read
//! big-endian as a signed 64-bit integer. Stable across versions, platforms and languages (the
//! README shows the same mapping in SQL), and any name of any length or script maps to one key.
//!
//! A cryptographic hash, not FNV: names may come from users, and with a 64-bit FNV anyone can
//! craft a second name whose key collides with a victim's and so block it. Truncated SHA-256
//! leaves only chance collisions (about one in 2^32 among 2^32 names).

use sha2::{Digest, Sha256};

/// The advisory-lock key of a lock or reader-writer lock named `name` (both kinds share it:
/// a lock is the write side of the reader-writer lock of the same name).
pub fn lock_key(name: &str) -> i64 {
    key_of(name.as_bytes())
}

/// The key of ticket slot `slot` (0-based) of the semaphore named `name`: the key of the bytes
/// `name`, NUL, `semaphore`, NUL, `slot` in decimal. A name never contains NUL, so a slot key never
/// takes the input of a lock key.
pub fn semaphore_slot_key(name: &str, slot: u32) -> i64 {
    let mut input = Vec::with_capacity(name.len() + 24);
    input.extend_from_slice(name.as_bytes());
    input.extend_from_slice(b"\0semaphore\0");
    input.extend_from_slice(slot.to_string().as_bytes());
    key_of(&input)
}

fn key_of(bytes: &[u8]) -> i64 {
    let digest = Sha256::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pinned values (computed independently: Python's hashlib, and PostgreSQL's own sha256()
    /// in tests/backend_postgres.rs). Changing the mapping would let two versions of the client
    /// hold the "same" lock at once, so these must never change.
    #[test]
    fn keys_are_the_first_8_bytes_of_sha256_big_endian() {
        assert_eq!(key_of(b""), 0xe3b0_c442_98fc_1c14_u64 as i64);
        assert_eq!(lock_key("abc"), -5_010_229_573_455_851_542);
        assert_eq!(lock_key("invoices"), 5_268_556_066_836_248_654);
        assert_eq!(lock_key("ünïcødé-名前-🔒"), -932_080_427_120_226_115);
        assert_eq!(lock_key(&"x".repeat(300)), 958_752_878_960_037_591);
        assert_eq!(semaphore_slot_key("cache", 0), 8_024_829_477_384_915_720);
        assert_eq!(semaphore_slot_key("cache", 1), -1_460_290_136_343_271_922);
    }

    #[test]
    fn slot_keys_differ_from_each_other_and_from_the_lock_key() {
        let mut keys: Vec<i64> = (0..64).map(|slot| semaphore_slot_key("pool", slot)).collect();
        keys.push(lock_key("pool"));
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 65);
    }
}
