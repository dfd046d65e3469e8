//! Small durable files: the data directory's format marker, the raft metadata (vote, purge
//! point), snapshots and the `--in-memory` token high-water mark.
//!
//! Each file is `magic (8 bytes) · u32 format version · u32 CRC-32 of the body · body`, all
//! little-endian, and is replaced atomically: written to a temporary name, fsync'd, renamed
//! over the old one, and the directory fsync'd so the rename survives a crash.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::log::LogError;

/// Format version of every framed file this build writes and reads.
pub const VERSION: u32 = 1;
const FRAME_HEADER: usize = 16;

/// The marker that makes a directory a Lockserver data directory.
pub const FORMAT_FILE: &str = "FORMAT";
const FORMAT_TEXT: &str = "lockserver data directory\nformat 1\n";

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_path_buf(), source }
}

/// Makes sure `dir` is a Lockserver data directory of a version this build reads: creates it
/// (with its marker) when missing or empty, and refuses a directory that holds anything else.
pub fn open_data_dir(dir: &Path) -> Result<(), LogError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let marker = dir.join(FORMAT_FILE);
    match fs::read_to_string(&marker) {
        Ok(text) if text == FORMAT_TEXT => Ok(()),
        Ok(text) => match text.strip_prefix("lockserver data directory\nformat ") {
            Some(version) => Err(LogError::Version {
                path: marker,
                version: version.trim().parse().unwrap_or(u32::MAX),
            }),
            None => Err(LogError::Foreign { path: marker }),
        },
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            let mut entries = fs::read_dir(dir).map_err(io_error(dir))?;
            if let Some(entry) = entries.next() {
                let entry = entry.map_err(io_error(dir))?;
                return Err(LogError::Corrupt {
                    path: dir.to_path_buf(),
                    offset: 0,
                    what: format!(
                        "not a lockserver data directory: it holds {:?} but no {FORMAT_FILE} \
                         file; choose an empty or new directory",
                        entry.file_name()
                    ),
                });
            }
            write_atomic(&marker, FORMAT_TEXT.as_bytes())
        }
        Err(err) => Err(LogError::Io { path: marker, source: err }),
    }
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    write_atomic_parts(path, &[bytes])
}

/// Replaces `path` with `parts`, written one after the other, atomically and durably.
fn write_atomic_parts(path: &Path, parts: &[&[u8]]) -> Result<(), LogError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = tmp_path(path);
    let mut file = File::create(&tmp).map_err(io_error(&tmp))?;
    for part in parts {
        file.write_all(part).map_err(io_error(&tmp))?;
    }
    file.sync_all().map_err(io_error(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_error(path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error(dir))
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Frames `body` with `magic`, the version and a checksum.
pub fn frame(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(FRAME_HEADER + body.len());
    bytes.extend_from_slice(&frame_header(magic, &[body]));
    bytes.extend_from_slice(body);
    bytes
}

/// Replaces `path` atomically and durably with the framed body made of `body_parts`, in
/// order: the bytes of `write_atomic(path, &frame(magic, &body_parts.concat()))`, written from
/// where the parts are (a snapshot's table is never copied into one buffer with the rest).
pub fn write_framed(path: &Path, magic: &[u8; 8], body_parts: &[&[u8]]) -> Result<(), LogError> {
    let header = frame_header(magic, body_parts);
    let mut parts = Vec::with_capacity(1 + body_parts.len());
    parts.push(&header[..]);
    parts.extend_from_slice(body_parts);
    write_atomic_parts(path, &parts)
}

/// The frame's header for the body made of `body_parts`: magic, version, CRC-32 of the body.
fn frame_header(magic: &[u8; 8], body_parts: &[&[u8]]) -> [u8; FRAME_HEADER] {
    let mut crc = crc32fast::Hasher::new();
    for part in body_parts {
        crc.update(part);
    }
    let mut header = [0u8; FRAME_HEADER];
    header[..8].copy_from_slice(magic);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&crc.finalize().to_le_bytes());
    header
}

/// Reads a framed file: `Ok(None)` when it does not exist, an error when it is foreign, of
/// another version or damaged.
pub fn read_framed(path: &Path, magic: &[u8; 8]) -> Result<Option<Vec<u8>>, LogError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(LogError::Io { path: path.to_path_buf(), source: err }),
    };
    unframe(path, magic, bytes).map(Some)
}

/// Checks and strips a frame read from `path`.
pub fn unframe(path: &Path, magic: &[u8; 8], mut bytes: Vec<u8>) -> Result<Vec<u8>, LogError> {
    if bytes.len() < FRAME_HEADER || &bytes[..8] != magic {
        return Err(LogError::Foreign { path: path.to_path_buf() });
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(LogError::Version { path: path.to_path_buf(), version });
    }
    let crc = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[FRAME_HEADER..]) != crc {
        let what = "checksum mismatch".to_string();
        return Err(LogError::Corrupt { path: path.to_path_buf(), offset: 0, what });
    }
    // The body moves to the front of the same buffer: a large file is never held twice.
    bytes.drain(..FRAME_HEADER);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_files_round_trip_and_damage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        assert_eq!(read_framed(&path, b"TESTMAGC").unwrap(), None);
        write_atomic(&path, &frame(b"TESTMAGC", b"hello")).unwrap();
        assert_eq!(read_framed(&path, b"TESTMAGC").unwrap().unwrap(), b"hello");
        assert!(matches!(read_framed(&path, b"OTHERMAG"), Err(LogError::Foreign { .. })));
        let mut bytes = fs::read(&path).unwrap();
        *bytes.last_mut().unwrap() ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(read_framed(&path, b"TESTMAGC"), Err(LogError::Corrupt { .. })));
    }

    #[test]
    fn a_body_written_in_parts_is_framed_as_if_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("parts");
        write_framed(&path, b"TESTMAGC", &[b"hel", b"", b"lo world"]).unwrap();
        assert_eq!(fs::read(&path).unwrap(), frame(b"TESTMAGC", b"hello world"));
        assert_eq!(read_framed(&path, b"TESTMAGC").unwrap().unwrap(), b"hello world");
    }

    #[test]
    fn a_data_dir_with_foreign_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        open_data_dir(&dir.path().join("new")).unwrap();
        open_data_dir(&dir.path().join("new")).unwrap();
        fs::write(dir.path().join("notes.txt"), "mine").unwrap();
        let err = open_data_dir(dir.path()).unwrap_err();
        assert!(err.to_string().contains("not a lockserver data directory"), "{err}");
        fs::write(dir.path().join("new").join(FORMAT_FILE), "something else").unwrap();
        assert!(matches!(open_data_dir(&dir.path().join("new")), Err(LogError::Foreign { .. })));
    }
}
