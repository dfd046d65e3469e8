//! Durable storage of our own: the segment log and the group committer that fsyncs it.
//!
//! - [`log`]: the on-disk, versioned, checksummed segment log (recovery cuts a torn tail).
//! - [`group`]: one flusher thread that writes every pending append and covers them all with a
//!   single fdatasync, then acknowledges each.

pub mod group;
pub mod log;
