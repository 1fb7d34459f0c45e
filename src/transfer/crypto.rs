//! Datagram protection: AES-256-GCM with the session key. The nonce is a 4-byte direction
//! prefix (`0,0,0,1` for datagrams the client sends, `0,0,0,2` for the server's) followed by the
//! datagram's `seq` (u64 big-endian); the AAD is the 32-byte clear header; the payload on the
//! wire is ciphertext ‖ 16-byte tag. Without a key (`-T`) payloads travel in clear.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::Role;
use crate::protocol::datagram::{aead_nonce, HEADER_LEN, TAG_LEN};

/// Seals what one side sends and opens what its peer sends.
pub struct DatagramCrypto {
    key: Option<LessSafeKey>,
    /// This side is the client (its datagrams use the client's nonce prefix).
    is_client: bool,
}

/// Why a payload was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

fn nonce(sent_by_client: bool, seq: u64) -> Nonce {
    Nonce::assume_unique_for_key(aead_nonce(sent_by_client, seq))
}

impl DatagramCrypto {
    /// Protection for `role`'s side of a session; `key` `None` means no encryption (`-T`).
    pub fn new(role: Role, key: Option<[u8; 32]>) -> DatagramCrypto {
        let key = key.and_then(|k| UnboundKey::new(&AES_256_GCM, &k).ok().map(LessSafeKey::new));
        DatagramCrypto {
            key,
            is_client: role == Role::Client,
        }
    }

    /// Bytes the protection adds to a payload.
    pub fn overhead(&self) -> usize {
        if self.key.is_some() {
            TAG_LEN
        } else {
            0
        }
    }

    /// Protects a datagram in place: `buf` holds the encoded header, then `plain_len` bytes of
    /// plaintext, and has room for the tag after them. Returns the datagram's total length.
    pub fn seal(&self, seq: u64, buf: &mut [u8], plain_len: usize) -> usize {
        let end = HEADER_LEN + plain_len;
        let Some(key) = &self.key else {
            return end;
        };
        let (header, rest) = buf.split_at_mut(HEADER_LEN);
        let (payload, tail) = rest.split_at_mut(plain_len);
        // Sealing only fails for payloads over GCM's 64 GiB limit, which a datagram never is.
        match key.seal_in_place_separate_tag(
            nonce(self.is_client, seq),
            Aad::from(&*header),
            payload,
        ) {
            Ok(tag) => {
                tail[..TAG_LEN].copy_from_slice(tag.as_ref());
                end + TAG_LEN
            }
            Err(_) => end,
        }
    }

    /// Encrypts `payload` in place for the datagram with `header` (already encoded, `seq` in
    /// it) and returns the tag to send after it; `None` without encryption (nothing to add).
    pub fn seal_separate(
        &self,
        seq: u64,
        header: &[u8; HEADER_LEN],
        payload: &mut [u8],
    ) -> Option<[u8; TAG_LEN]> {
        let key = self.key.as_ref()?;
        // Sealing only fails for payloads over GCM's 64 GiB limit, which a datagram never is.
        let tag = key
            .seal_in_place_separate_tag(nonce(self.is_client, seq), Aad::from(header), payload)
            .ok()?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Some(out)
    }

    /// Checks and decrypts a received payload in place; returns the plaintext.
    pub fn open<'a>(
        &self,
        seq: u64,
        header: &[u8; HEADER_LEN],
        payload: &'a mut [u8],
    ) -> Result<&'a mut [u8], AuthFailed> {
        let Some(key) = &self.key else {
            return Ok(payload);
        };
        key.open_in_place(nonce(!self.is_client, seq), Aad::from(header), payload)
            .map_err(|_| AuthFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let client = DatagramCrypto::new(Role::Client, Some([7; 32]));
        let server = DatagramCrypto::new(Role::Server, Some([7; 32]));
        let mut buf = vec![0u8; HEADER_LEN + 5 + TAG_LEN];
        buf[..HEADER_LEN].copy_from_slice(&[3; HEADER_LEN]);
        buf[HEADER_LEN..HEADER_LEN + 5].copy_from_slice(b"hello");
        let n = client.seal(9, &mut buf, 5);
        assert_eq!(n, buf.len());
        let header: [u8; HEADER_LEN] = [3; HEADER_LEN];
        let mut copy = buf.clone();
        assert_eq!(
            server.open(9, &header, &mut copy[HEADER_LEN..]).unwrap(),
            b"hello"
        );
        // Wrong seq, wrong direction, wrong key, tampered header: all rejected.
        let mut copy = buf.clone();
        assert!(server.open(10, &header, &mut copy[HEADER_LEN..]).is_err());
        let mut copy = buf.clone();
        assert!(client.open(9, &header, &mut copy[HEADER_LEN..]).is_err());
        let other = DatagramCrypto::new(Role::Server, Some([8; 32]));
        let mut copy = buf.clone();
        assert!(other.open(9, &header, &mut copy[HEADER_LEN..]).is_err());
        let mut copy = buf.clone();
        let mut bad = header;
        bad[0] ^= 1;
        assert!(server.open(9, &bad, &mut copy[HEADER_LEN..]).is_err());
    }

    #[test]
    fn separate_tag_matches_contiguous_seal() {
        let client = DatagramCrypto::new(Role::Client, Some([7; 32]));
        let server = DatagramCrypto::new(Role::Server, Some([7; 32]));
        let header = [5u8; HEADER_LEN];
        let mut payload = *b"some file bytes";
        let tag = client.seal_separate(4, &header, &mut payload).unwrap();
        let mut wire = payload.to_vec();
        wire.extend_from_slice(&tag);
        assert_eq!(
            server.open(4, &header, &mut wire).unwrap(),
            b"some file bytes"
        );
        let clear = DatagramCrypto::new(Role::Client, None);
        assert!(clear.seal_separate(4, &header, &mut payload).is_none());
    }

    #[test]
    fn clear_mode_passes_through() {
        let c = DatagramCrypto::new(Role::Client, None);
        let mut buf = vec![0u8; HEADER_LEN + 3];
        assert_eq!(c.seal(1, &mut buf, 3), HEADER_LEN + 3);
        assert_eq!(c.overhead(), 0);
    }
}
