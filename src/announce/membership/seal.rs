//! Sealing and opening membership datagrams with the shared key (pure: no I/O, the
//! clock and the nonces come from the caller).
//!
//! A stranger on the segment must neither join the cluster nor evict anyone, so every
//! datagram is authenticated, and a datagram recorded earlier must not be accepted
//! again (a replayed "node X left" would evict X). The envelope, version 1:
//!
//! ```text
//!  0      4    5               13                       37
//!  +------+----+---------------+------------------------+------------------------+
//!  | ipvm | 01 | sent_ms (u64) | nonce (24 random bytes) | ciphertext + tag (16)  |
//!  +------+----+---------------+------------------------+------------------------+
//!  \_______________ associated data (authenticated, clear) _/
//! ```
//!
//! - XChaCha20-Poly1305 (RFC 8439 with the 192-bit nonce): a random nonce per datagram
//!   never repeats in practice, so no counter has to survive restarts. The payload is
//!   encrypted too, which costs nothing more and hides the node list from the segment.
//! - The key is SHA-256 over a domain label and the Secret's bytes, so any length of
//!   high-entropy secret works (at least [`MIN_SECRET_LEN`] bytes are required).
//! - A [`Keyring`] seals with its first key and opens with any: a rotation adds the new
//!   key second on every node, then first, then drops the old one, without a partition.
//! - Replays: `sent_ms` (the sender's wall clock, authenticated) must be within
//!   [`ReplayGuard::window_ms`] of the receiver's clock, and a nonce already seen within
//!   that window is refused. Nodes of a cluster keep their clocks within well under a
//!   second by NTP; a node whose clock is off by more than the window (10 s by default)
//!   is refused as stale and counted, which the operator sees in the metrics.
//!
//! Overhead: [`OVERHEAD`] = 53 bytes per datagram.

use std::collections::{HashSet, VecDeque};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

/// The envelope's first bytes: tells our datagrams from anything else sent to the port.
pub const MAGIC: [u8; 4] = *b"ipvm";
/// The envelope version this code writes and reads.
pub const VERSION: u8 = 1;
/// Length of the clear header (magic, version, timestamp, nonce).
pub const HEADER_LEN: usize = 4 + 1 + 8 + NONCE_LEN;
/// Length of the random nonce.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes added to every payload by sealing.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// The shortest secret accepted: 128 bits, when the secret is random bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// Why a secret cannot make a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No secret was given.
    #[error("no membership secret given")]
    Empty,
    /// A secret shorter than [`MIN_SECRET_LEN`] bytes.
    #[error("a membership secret has {0} bytes, at least {MIN_SECRET_LEN} are required")]
    TooShort(usize),
}

/// Why a datagram was refused; each is counted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Shorter than an empty sealed payload, or not our magic and version.
    #[error("not a membership datagram")]
    Malformed,
    /// No key of the keyring authenticates it: a stranger, a wrong key or tampering.
    #[error("not authenticated by any key")]
    Unauthenticated,
    /// Authenticated, but sent (by its timestamp) outside the replay window: an old
    /// datagram replayed, or a node whose clock is off.
    #[error("outside the replay window")]
    Stale,
    /// Authenticated, in the window, but its nonce was seen already: a replay.
    #[error("replayed")]
    Replayed,
}

/// The keys this node seals with (the first) and opens with (any).
#[derive(Clone)]
pub struct Keyring {
    ciphers: Vec<XChaCha20Poly1305>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        write!(f, "Keyring({} keys)", self.ciphers.len())
    }
}

impl Keyring {
    /// Derives one key from each secret (the Secret's bytes as read); the first seals.
    pub fn new<S: AsRef<[u8]>>(secrets: &[S]) -> Result<Keyring, KeyError> {
        if secrets.is_empty() {
            return Err(KeyError::Empty);
        }
        let mut ciphers = Vec::with_capacity(secrets.len());
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.len() < MIN_SECRET_LEN {
                return Err(KeyError::TooShort(secret.len()));
            }
            let digest = Sha256::new()
                .chain_update(b"ipvs-proxy membership key v1\0")
                .chain_update(secret)
                .finalize();
            let key = Key::try_from(&digest[..]).expect("SHA-256 is 32 bytes, the key length");
            ciphers.push(XChaCha20Poly1305::new(&key));
        }
        Ok(Keyring { ciphers })
    }

    /// Seals `payload` sent at `sent_ms` (Unix milliseconds) with a fresh random `nonce`.
    pub fn seal(&self, payload: &[u8], sent_ms: u64, nonce: [u8; NONCE_LEN]) -> Vec<u8> {
        let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&sent_ms.to_be_bytes());
        out.extend_from_slice(&nonce);
        let sealed = self.ciphers[0]
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: payload,
                    aad: &out,
                },
            )
            .expect("XChaCha20-Poly1305 encrypts any payload under 256 GiB");
        out.extend_from_slice(&sealed);
        out
    }

    /// Authenticates and decrypts `datagram` without the replay checks: returns the
    /// sender's timestamp, the nonce and the payload.
    pub fn open_unchecked(
        &self,
        datagram: &[u8],
    ) -> Result<(u64, [u8; NONCE_LEN], Vec<u8>), Refused> {
        if datagram.len() < OVERHEAD || datagram[..4] != MAGIC || datagram[4] != VERSION {
            return Err(Refused::Malformed);
        }
        let (header, sealed) = datagram.split_at(HEADER_LEN);
        let sent_ms = u64::from_be_bytes(header[5..13].try_into().expect("8 bytes"));
        let nonce: [u8; NONCE_LEN] = header[13..].try_into().expect("24 bytes");
        let xnonce = XNonce::from(nonce);
        for cipher in &self.ciphers {
            if let Ok(payload) = cipher.decrypt(
                &xnonce,
                Payload {
                    msg: sealed,
                    aad: header,
                },
            ) {
                return Ok((sent_ms, nonce, payload));
            }
        }
        Err(Refused::Unauthenticated)
    }
}

/// Remembers the nonces of the datagrams accepted within the replay window.
#[derive(Debug)]
pub struct ReplayGuard {
    window_ms: u64,
    capacity: usize,
    seen: HashSet<[u8; NONCE_LEN]>,
    order: VecDeque<(u64, [u8; NONCE_LEN])>,
}

impl ReplayGuard {
    /// A guard accepting datagrams sent within `window_ms` of the receiver's clock,
    /// remembering at most `capacity` nonces (the oldest are forgotten first; at the
    /// rates of a cluster, 10 s × tens of datagrams per second, far fewer are held).
    pub fn new(window_ms: u64, capacity: usize) -> ReplayGuard {
        ReplayGuard {
            window_ms,
            capacity: capacity.max(1),
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// The accepted clock difference, in milliseconds, either way.
    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// How many nonces are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no nonce is remembered.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Checks an authenticated datagram's timestamp and nonce at `now_ms`, and
    /// remembers the nonce when it is accepted.
    pub fn check(
        &mut self,
        sent_ms: u64,
        nonce: [u8; NONCE_LEN],
        now_ms: u64,
    ) -> Result<(), Refused> {
        if sent_ms.abs_diff(now_ms) > self.window_ms {
            return Err(Refused::Stale);
        }
        // Forget what has left the window: those are refused as stale from now on.
        while let Some(&(at, old)) = self.order.front() {
            if at.saturating_add(self.window_ms) < now_ms || self.order.len() >= self.capacity {
                self.order.pop_front();
                self.seen.remove(&old);
            } else {
                break;
            }
        }
        if !self.seen.insert(nonce) {
            return Err(Refused::Replayed);
        }
        self.order.push_back((sent_ms, nonce));
        Ok(())
    }
}

/// A keyring and a replay guard: what the receiving side holds.
#[derive(Debug)]
pub struct Opener {
    keyring: Keyring,
    guard: ReplayGuard,
}

impl Opener {
    /// Opens with `keyring`, refusing datagrams sent more than `window_ms` away from
    /// the local clock and replays within it.
    pub fn new(keyring: Keyring, window_ms: u64) -> Opener {
        Opener {
            keyring,
            guard: ReplayGuard::new(window_ms, 65_536),
        }
    }

    /// The keyring (to seal with).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Authenticates, checks freshness and replay, and returns the payload. Nonces are
    /// remembered only for authenticated datagrams, so strangers cannot fill the guard.
    pub fn open(&mut self, datagram: &[u8], now_ms: u64) -> Result<Vec<u8>, Refused> {
        let (sent_ms, nonce, payload) = self.keyring.open_unchecked(datagram)?;
        self.guard.check(sent_ms, nonce, now_ms)?;
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000_000;

    fn ring(secret: &[u8]) -> Keyring {
        Keyring::new(&[secret]).unwrap()
    }

    #[test]
    fn sealed_datagram_opens_once_with_the_same_key() {
        let keys = ring(SECRET);
        let datagram = keys.seal(b"hello", NOW, [7; NONCE_LEN]);
        assert_eq!(datagram.len(), 5 + OVERHEAD);
        assert_eq!(&datagram[..5], b"ipvm\x01");
        assert_eq!(&datagram[5..13], &NOW.to_be_bytes());
        // The payload does not appear in clear.
        assert!(!datagram.windows(5).any(|w| w == b"hello"));
        let mut opener = Opener::new(keys, 10_000);
        assert_eq!(opener.open(&datagram, NOW + 3).unwrap(), b"hello");
        assert_eq!(opener.open(&datagram, NOW + 4), Err(Refused::Replayed));
    }

    #[test]
    fn wrong_key_is_unauthenticated() {
        let datagram = ring(SECRET).seal(b"hello", NOW, [1; NONCE_LEN]);
        let mut other = Opener::new(ring(b"another secret of enough bytes"), 10_000);
        assert_eq!(other.open(&datagram, NOW), Err(Refused::Unauthenticated));
        // Refused datagrams leave nothing in the guard.
        assert!(other.guard.is_empty());
    }

    #[test]
    fn keyring_opens_with_any_key_and_seals_with_the_first() {
        let old = b"the old secret, sixteen+".as_slice();
        let new = b"the new secret, sixteen+".as_slice();
        let rotating = Keyring::new(&[new, old]).unwrap();
        let from_old = ring(old).seal(b"a", NOW, [2; NONCE_LEN]);
        assert_eq!(rotating.open_unchecked(&from_old).unwrap().2, b"a");
        let from_rotating = rotating.seal(b"b", NOW, [3; NONCE_LEN]);
        assert_eq!(ring(new).open_unchecked(&from_rotating).unwrap().2, b"b");
        assert_eq!(
            ring(old).open_unchecked(&from_rotating),
            Err(Refused::Unauthenticated)
        );
    }

    #[test]
    fn old_and_future_datagrams_are_stale() {
        let keys = ring(SECRET);
        let mut opener = Opener::new(keys.clone(), 10_000);
        let old = keys.seal(b"x", NOW - 10_001, [4; NONCE_LEN]);
        assert_eq!(opener.open(&old, NOW), Err(Refused::Stale));
        let future = keys.seal(b"x", NOW + 10_001, [5; NONCE_LEN]);
        assert_eq!(opener.open(&future, NOW), Err(Refused::Stale));
        let edge = keys.seal(b"x", NOW - 10_000, [6; NONCE_LEN]);
        assert_eq!(opener.open(&edge, NOW).unwrap(), b"x");
    }

    #[test]
    fn short_and_foreign_datagrams_are_malformed() {
        let keys = ring(SECRET);
        assert_eq!(keys.open_unchecked(b""), Err(Refused::Malformed));
        let mut datagram = keys.seal(b"", NOW, [0; NONCE_LEN]);
        assert_eq!(datagram.len(), OVERHEAD);
        assert!(keys.open_unchecked(&datagram).is_ok());
        assert_eq!(
            keys.open_unchecked(&datagram[..OVERHEAD - 1]),
            Err(Refused::Malformed)
        );
        datagram[4] = 2;
        assert_eq!(keys.open_unchecked(&datagram), Err(Refused::Malformed));
    }

    #[test]
    fn secrets_must_be_given_and_long_enough() {
        assert_eq!(Keyring::new::<&[u8]>(&[]).unwrap_err(), KeyError::Empty);
        assert_eq!(
            Keyring::new(&[b"short".as_slice()]).unwrap_err(),
            KeyError::TooShort(5)
        );
    }

    #[test]
    fn guard_forgets_nonces_that_left_the_window() {
        let mut guard = ReplayGuard::new(1_000, 1_000);
        guard.check(NOW, [1; NONCE_LEN], NOW).unwrap();
        guard.check(NOW + 500, [2; NONCE_LEN], NOW + 500).unwrap();
        assert_eq!(guard.len(), 2);
        // At NOW + 1_001 the first has left the window (and would be stale anyway).
        guard
            .check(NOW + 1_001, [3; NONCE_LEN], NOW + 1_001)
            .unwrap();
        assert_eq!(guard.len(), 2);
        assert_eq!(
            guard.check(NOW + 500, [2; NONCE_LEN], NOW + 1_001),
            Err(Refused::Replayed)
        );
    }

    #[test]
    fn guard_capacity_is_bounded() {
        let mut guard = ReplayGuard::new(10_000, 3);
        for i in 0..10u8 {
            guard.check(NOW, [i; NONCE_LEN], NOW).unwrap();
        }
        assert!(guard.len() <= 3, "{}", guard.len());
    }

    proptest! {
        /// Any change of any byte (header, nonce, ciphertext or tag) is refused.
        #[test]
        fn tampered_datagrams_are_refused(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            nonce in any::<[u8; NONCE_LEN]>(),
            index in any::<proptest::sample::Index>(),
            flip in 1u8..=255,
        ) {
            let keys = ring(SECRET);
            let mut datagram = keys.seal(&payload, NOW, nonce);
            let at = index.index(datagram.len());
            datagram[at] ^= flip;
            let mut opener = Opener::new(keys, 10_000);
            prop_assert!(opener.open(&datagram, NOW).is_err());
        }

        /// Cutting or extending a datagram is refused.
        #[test]
        fn truncated_or_extended_datagrams_are_refused(
            payload in proptest::collection::vec(any::<u8>(), 0..200),
            cut in 1usize..300,
            extra in proptest::collection::vec(any::<u8>(), 1..20),
        ) {
            let keys = ring(SECRET);
            let datagram = keys.seal(&payload, NOW, [9; NONCE_LEN]);
            let cut = cut.min(datagram.len());
            prop_assert!(keys.open_unchecked(&datagram[..datagram.len() - cut]).is_err());
            let mut longer = datagram.clone();
            longer.extend_from_slice(&extra);
            prop_assert!(keys.open_unchecked(&longer).is_err());
        }

        /// Arbitrary bytes never open (and never panic).
        #[test]
        fn random_bytes_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut opener = Opener::new(ring(SECRET), 10_000);
            prop_assert!(opener.open(&bytes, NOW).is_err());
        }

        /// What is sealed opens to the same bytes.
        #[test]
        fn seal_open_round_trip(
            payload in proptest::collection::vec(any::<u8>(), 0..1400),
            nonce in any::<[u8; NONCE_LEN]>(),
            skew in -10_000i64..=10_000,
        ) {
            let keys = ring(SECRET);
            let datagram = keys.seal(&payload, NOW, nonce);
            let mut opener = Opener::new(keys, 10_000);
            prop_assert_eq!(opener.open(&datagram, NOW.saturating_add_signed(skew)).unwrap(), payload);
        }
    }
}
