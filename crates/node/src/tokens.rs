//! The `--in-memory` token high-water mark: nothing of the table survives a restart, but fencing
//! tokens must never go backwards. A small file holds a ceiling above every token issued; it is
//! raised a block at a time (one fsync per block), always before a token near it is seen, and a
//! restart starts issuing at the old ceiling.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::storage::files;
use crate::storage::log::LogError;

const MAGIC: &[u8; 8] = b"LKTOKENS";
/// Tokens reserved per write of the file.
pub const BLOCK: u64 = 1 << 20;

#[derive(Debug)]
pub struct TokenReserve {
    path: PathBuf,
    /// Every token issued so far is below this, durably.
    ceiling: Mutex<u64>,
}

impl TokenReserve {
    /// Reads the previous run's ceiling (the floor for this run) and reserves the first block.
    pub fn open(data_dir: &Path) -> Result<(TokenReserve, u64), LogError> {
        let path = data_dir.join("tokens");
        let floor = match files::read_framed(&path, MAGIC)? {
            Some(body) => {
                let bytes: [u8; 8] = body.as_slice().try_into().map_err(|_| LogError::Corrupt {
                    path: path.clone(),
                    offset: 0,
                    what: "token high-water file is not 8 bytes".into(),
                })?;
                u64::from_le_bytes(bytes)
            }
            None => 1,
        };
        let reserve = TokenReserve { path, ceiling: Mutex::new(floor) };
        reserve.cover(floor)?;
        Ok((reserve, floor))
    }

    /// Makes sure the durable ceiling is comfortably above `next_token` (the next token the
    /// table will issue; every issued one is below it).
    pub fn cover(&self, next_token: u64) -> Result<(), LogError> {
        let mut ceiling = self.ceiling.lock().unwrap_or_else(|poison| poison.into_inner());
        if next_token.saturating_add(BLOCK / 2) <= *ceiling {
            return Ok(());
        }
        let raised = next_token.saturating_add(BLOCK);
        files::write_atomic(&self.path, &files::frame(MAGIC, &raised.to_le_bytes()))?;
        *ceiling = raised;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_starts_above_every_token_issued() {
        let dir = tempfile::tempdir().unwrap();
        let (reserve, floor) = TokenReserve::open(dir.path()).unwrap();
        assert_eq!(floor, 1);
        reserve.cover(10).unwrap();
        reserve.cover(BLOCK).unwrap(); // crosses the half-block mark: a new block
        drop(reserve);
        let (_, floor) = TokenReserve::open(dir.path()).unwrap();
        assert!(floor > BLOCK, "floor {floor} must be above the last covered token");
        let (_, again) = TokenReserve::open(dir.path()).unwrap();
        assert!(again > floor, "each start reserves past the previous floor");
    }
}
