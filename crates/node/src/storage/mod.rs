//! Durable storage of our own under openraft.
//!
//! - [`log`]: the on-disk, versioned, checksummed segment log (recovery cuts a torn tail).
//! - [`group`]: one flusher thread that writes every pending append and covers them all with a
//!   single fdatasync, then acknowledges each.
//! - [`log_store`]: openraft's log storage over the two (entries, vote, purge point).
//! - [`files`]: small framed files replaced atomically (metadata, snapshot, token mark) and
//!   the data directory's format marker.

pub mod files;
pub mod group;
pub mod log;
pub mod log_store;
