//! Helpers for the codec tests of the subsystem crates (feature `testing`): reading
//! the captured datagrams of a fixture folder, checking they re-emit byte for byte,
//! and feeding the parser truncated, corrupted and random bytes.

use std::path::{Path, PathBuf};

use netlink_packet_core::{NetlinkDeserializable, NetlinkSerializable};

use crate::codec::{emit_datagram, parse_datagram};

/// Every `*.bin` file of `dir` as (file name, bytes), sorted by name.
///
/// # Panics
/// If the folder or a file cannot be read.
pub fn fixtures(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "bin"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

/// The datagrams of named exchanges as fixture files: `<name>.<i>.bin` for the `i`-th
/// datagram of the exchange `name` (as [`crate::NfnlSocket::capture`] returns them).
pub fn fixture_files<N: AsRef<str>>(captures: &[(N, Vec<Vec<u8>>)]) -> Vec<(String, Vec<u8>)> {
    captures
        .iter()
        .flat_map(|(name, datagrams)| {
            let name = name.as_ref();
            (0..)
                .zip(datagrams)
                .map(move |(i, d)| (format!("{name}.{i}.bin"), d.clone()))
        })
        .collect()
}

/// Writes fixture files into the folder the environment variable `var` names, if it is
/// set: how a capture test refreshes the fixtures.
///
/// # Panics
/// If a file cannot be written.
pub fn save_fixtures(files: &[(String, Vec<u8>)], var: &str) {
    let Some(dir) = std::env::var_os(var).map(PathBuf::from) else {
        return;
    };
    for (name, bytes) in files {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// Asserts that every datagram parses into at least one message and emits back to the
/// same bytes.
///
/// # Panics
/// On the first datagram that does not.
pub fn assert_re_emit_identically<M>(fixtures: &[(String, Vec<u8>)])
where
    M: NetlinkDeserializable + NetlinkSerializable + Clone,
{
    for (name, bytes) in fixtures {
        let parsed = parse_datagram::<M>(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(!parsed.is_empty(), "{name}");
        assert_eq!(
            &emit_datagram(&parsed),
            bytes,
            "{name} re-emits differently"
        );
    }
}

/// A small deterministic generator, so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Parses, and emits what parses of: every prefix of each fixture, each fixture with
/// one byte flipped in turn (the first 400) and with random bytes overwritten, and
/// random datagrams, many shaped as messages of `subsystem` so its attribute parsers
/// run. Nothing may panic; returns normally when nothing did.
///
/// # Panics
/// Where the parser or the emitter does, or if no prefix parsed (the emitter was never
/// reached).
pub fn assert_never_panic<M>(fixtures: &[(String, Vec<u8>)], subsystem: u8)
where
    M: NetlinkDeserializable + NetlinkSerializable + Clone,
{
    let parse_and_emit = |bytes: &[u8]| -> bool {
        let parsed = parse_datagram::<M>(bytes);
        if let Ok(messages) = &parsed {
            let _ = emit_datagram(messages);
        }
        parsed.is_ok()
    };
    let mut rng = XorShift(0x5eed_1234_abcd_ef01);
    let mut parsed_prefixes = 0;
    for (_, bytes) in fixtures {
        for cut in 0..bytes.len() {
            parsed_prefixes += usize::from(parse_and_emit(&bytes[..cut]));
        }
        for at in 0..bytes.len().min(400) {
            let mut corrupted = bytes.clone();
            corrupted[at] ^= 0xff;
            parse_and_emit(&corrupted);
        }
        for _ in 0..2000 {
            let mut corrupted = bytes.clone();
            for _ in 0..=(rng.next() % 4) {
                let i = (rng.next() as usize) % corrupted.len();
                corrupted[i] = rng.next() as u8;
            }
            parse_and_emit(&corrupted);
        }
    }
    // Cutting at message boundaries leaves valid prefixes (the empty one at least).
    assert!(parsed_prefixes > 0);
    for _ in 0..20_000 {
        let len = (rng.next() % 200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if bytes.len() >= 20 {
            let total = bytes.len() as u32;
            bytes[0..4].copy_from_slice(&total.to_ne_bytes());
            bytes[4] = (rng.next() % 16) as u8;
            bytes[5] = subsystem;
        }
        parse_and_emit(&bytes);
    }
}
