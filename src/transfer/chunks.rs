//! Resume support: a file is cut into at most [`MAX_CHUNKS`] chunks of at least 1 MiB, each
//! summarised by its BLAKE3 hash truncated to [`CHUNK_HASH_LEN`] bytes. The receiver reports
//! the hashes of what it already has (`FileHave`); the sender re-sends only chunks that differ.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::protocol::{CHECKSUM_LEN, CHUNK_HASH_LEN, MAX_CHUNKS};

/// Smallest chunk.
pub const MIN_CHUNK: u64 = 1024 * 1024;
/// Read size while hashing.
const READ_SIZE: usize = 1024 * 1024;

/// Chunk size for a file of `size` bytes: a multiple of [`MIN_CHUNK`] such that the file has at
/// most [`MAX_CHUNKS`] chunks.
pub fn chunk_size_for(size: u64) -> u64 {
    let per = size.div_ceil(MAX_CHUNKS as u64).max(1);
    per.div_ceil(MIN_CHUNK)
        .saturating_mul(MIN_CHUNK)
        .max(MIN_CHUNK)
}

/// Number of chunks of `chunk_size` covering `len` bytes.
pub fn chunk_count(len: u64, chunk_size: u64) -> u64 {
    if chunk_size == 0 {
        0
    } else {
        len.div_ceil(chunk_size)
    }
}

/// Truncated BLAKE3 of one chunk's bytes.
pub fn chunk_hash(data: &[u8]) -> [u8; CHUNK_HASH_LEN] {
    let mut out = [0u8; CHUNK_HASH_LEN];
    out.copy_from_slice(&blake3::hash(data).as_bytes()[..CHUNK_HASH_LEN]);
    out
}

/// Hashes of the first `len` bytes of `file` in chunks of `chunk_size` (the last chunk may be
/// short), and the BLAKE3 of those `len` bytes as a whole. Reads the file once, 1 MiB at a time,
/// calling `tick` after each read (to keep the control channel alive on huge files).
pub fn hash_file(
    file: &File,
    len: u64,
    chunk_size: u64,
    tick: &mut dyn FnMut(),
) -> io::Result<(Vec<[u8; CHUNK_HASH_LEN]>, [u8; CHECKSUM_LEN])> {
    let chunk_size = chunk_size.max(1);
    let mut whole = blake3::Hasher::new();
    let mut hashes = Vec::new();
    let mut buf = vec![0u8; READ_SIZE];
    let mut offset = 0u64;
    while offset < len {
        let chunk_end = (offset + chunk_size).min(len);
        let mut chunk = blake3::Hasher::new();
        while offset < chunk_end {
            let n = ((chunk_end - offset) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], offset)?;
            chunk.update(&buf[..n]);
            whole.update(&buf[..n]);
            offset += n as u64;
            tick();
        }
        let mut h = [0u8; CHUNK_HASH_LEN];
        h.copy_from_slice(&chunk.finalize().as_bytes()[..CHUNK_HASH_LEN]);
        hashes.push(h);
    }
    Ok((hashes, *whole.finalize().as_bytes()))
}

/// BLAKE3 of `file`'s bytes from `from` to `to`, continuing `hasher`; `tick` as in [`hash_file`].
pub fn hash_range(
    file: &File,
    hasher: &mut blake3::Hasher,
    from: u64,
    to: u64,
    tick: &mut dyn FnMut(),
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_SIZE.min(to.saturating_sub(from) as usize)];
    hash_range_with(file, hasher, from, to, &mut buf, tick)
}

/// [`hash_range`] reading through the caller's `buf` (so repeated calls allocate nothing).
pub fn hash_range_with(
    file: &File,
    hasher: &mut blake3::Hasher,
    from: u64,
    to: u64,
    buf: &mut [u8],
    tick: &mut dyn FnMut(),
) -> io::Result<()> {
    if buf.is_empty() && from < to {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty read buffer",
        ));
    }
    let mut offset = from;
    while offset < to {
        let n = ((to - offset) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], offset)?;
        hasher.update(&buf[..n]);
        offset += n as u64;
        tick();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_math_bounds() {
        const GIB: u64 = 1 << 30;
        assert_eq!(chunk_size_for(0), MIN_CHUNK);
        assert_eq!(chunk_size_for(1), MIN_CHUNK);
        assert_eq!(chunk_size_for(2 * GIB), MIN_CHUNK);
        assert_eq!(chunk_size_for(2 * GIB + 1), 2 * MIN_CHUNK);
        assert_eq!(chunk_size_for(4 * GIB), 2 * MIN_CHUNK);
        for size in [
            0,
            1,
            MIN_CHUNK,
            3 * GIB + 7,
            4 * GIB,
            100 * GIB + 12345,
            (1 << 50) + 3,
            u64::MAX / 2,
            u64::MAX,
        ] {
            let cs = chunk_size_for(size);
            assert!(cs >= MIN_CHUNK);
            assert_eq!(cs % MIN_CHUNK, 0);
            assert!(chunk_count(size, cs) <= MAX_CHUNKS as u64, "size {size}");
        }
    }

    #[test]
    fn hashes_cover_file() {
        use std::io::Write;
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(2 * MIN_CHUNK + 10)).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let (hashes, whole) = hash_file(&f, data.len() as u64, MIN_CHUNK, &mut || {}).unwrap();
        assert_eq!(hashes.len(), 3);
        assert_eq!(hashes[0], chunk_hash(&data[..MIN_CHUNK as usize]));
        assert_eq!(hashes[2], chunk_hash(&data[2 * MIN_CHUNK as usize..]));
        assert_eq!(whole, *blake3::hash(&data).as_bytes());
        let (none, empty) = hash_file(&f, 0, MIN_CHUNK, &mut || {}).unwrap();
        assert!(none.is_empty());
        assert_eq!(empty, *blake3::hash(b"").as_bytes());
    }
}
