use std::borrow::Borrow;

use crate::storage::parse;
use crate::ChangeHash;

// These constants correspond to a 1% false positive rate. The values can be changed without
// breaking compatibility of the network protocol, since the parameters used for a particular
// Bloom filter are encoded in the wire format.
const BITS_PER_ENTRY: u32 = 10;
const NUM_PROBES: u32 = 7;

// TANDEM PATCH 9: the parameters of a received filter come from the peer. Upstream divided by
// zero on `num_bits_per_entry = 0` (an empty bit array) and built a `Vec` of `num_probes`
// entries for every hash it looked up (2^32 - 1 probes: 16 GiB). A decoded filter now has
// 1..=MAX_BITS_PER_ENTRY bits per entry, 1..=MAX_PROBES probes and exactly the bit array
// length `to_bytes` writes for its entry count; anything else is a decode error. Automerge
// itself sends 10 bits per entry and 7 probes.
/// The most probes a received Bloom filter may ask for.
pub(crate) const MAX_PROBES: u32 = 64;
/// The most bits per entry a received Bloom filter may have.
pub(crate) const MAX_BITS_PER_ENTRY: u32 = 64;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct BloomFilter {
    num_entries: u32,
    num_bits_per_entry: u32,
    num_probes: u32,
    bits: Vec<u8>,
}

impl Default for BloomFilter {
    fn default() -> Self {
        BloomFilter {
            num_entries: 0,
            num_bits_per_entry: BITS_PER_ENTRY,
            num_probes: NUM_PROBES,
            bits: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ParseError {
    #[error(transparent)]
    Leb128(#[from] parse::leb128::Error),
    #[error(
        "invalid bloom filter: {num_entries} entries, {num_bits_per_entry} bits per entry, \
         {num_probes} probes (1 to 64 bits per entry and 1 to 64 probes are allowed)"
    )]
    InvalidParameters {
        num_entries: u32,
        num_bits_per_entry: u32,
        num_probes: u32,
    },
    #[error("invalid bloom filter: {actual} bytes of bits where its parameters give {expected}")]
    WrongLength { expected: u64, actual: usize },
}

impl BloomFilter {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        if self.num_entries != 0 {
            leb128::write::unsigned(&mut buf, self.num_entries as u64).unwrap();
            leb128::write::unsigned(&mut buf, self.num_bits_per_entry as u64).unwrap();
            leb128::write::unsigned(&mut buf, self.num_probes as u64).unwrap();
            buf.extend(&self.bits);
        }
        buf
    }

    /// Parse a whole encoded filter: `input` must hold exactly one filter (the sync message
    /// length-prefixes it), so bytes after the bit array are an error.
    pub(crate) fn parse(input: parse::Input<'_>) -> parse::ParseResult<'_, Self, ParseError> {
        if input.is_empty() {
            return Ok((input, Self::default()));
        }
        let (i, num_entries) = parse::leb128_u32(input)?;
        let (i, num_bits_per_entry) = parse::leb128_u32(i)?;
        let (i, num_probes) = parse::leb128_u32(i)?;
        // An empty filter contains nothing whatever its parameters say (`to_bytes` writes it as
        // no bytes at all, and `contains_hash` never consults them), so it becomes the default.
        let expected = if num_entries == 0 {
            0
        } else if num_bits_per_entry == 0
            || num_bits_per_entry > MAX_BITS_PER_ENTRY
            || num_probes == 0
            || num_probes > MAX_PROBES
        {
            return Err(parse::ParseError::Error(ParseError::InvalidParameters {
                num_entries,
                num_bits_per_entry,
                num_probes,
            }));
        } else {
            bits_len(num_entries, num_bits_per_entry)
        };
        let actual = i.unconsumed_bytes().len();
        if u64::try_from(actual).ok() != Some(expected) {
            return Err(parse::ParseError::Error(ParseError::WrongLength {
                expected,
                actual,
            }));
        }
        if num_entries == 0 {
            return Ok((i, Self::default()));
        }
        let (i, bits) = parse::take_n(actual, i)?;
        Ok((
            i,
            Self {
                num_entries,
                num_bits_per_entry,
                num_probes,
                bits: bits.to_vec(),
            },
        ))
    }

    /// The bit positions `hash` maps to: `num_probes` of them (never more than [`MAX_PROBES`]),
    /// none if the filter has no bits. The same positions as upstream's `get_probes` (which did
    /// this in `u32` and wrapped or panicked once the filter had 2^28 bytes or more), computed
    /// in `u64` and without a `Vec`.
    fn probes(&self, hash: &ChangeHash) -> impl Iterator<Item = u64> {
        let h = &hash.0;
        let word =
            |at: usize| u64::from(u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]));
        let modulo = (self.bits.len() as u64).saturating_mul(8);
        let (count, mut x, mut y, z) = if modulo == 0 {
            (0, 0, 0, 0)
        } else {
            (
                self.num_probes.min(MAX_PROBES),
                word(0) % modulo,
                word(4) % modulo,
                word(8) % modulo,
            )
        };
        (0..count).map(move |n| {
            if n > 0 {
                x = (x + y) % modulo;
                y = (y + z) % modulo;
            }
            x
        })
    }

    fn add_hash(&mut self, hash: &ChangeHash) {
        let probes: Vec<u64> = self.probes(hash).collect();
        for probe in probes {
            self.set_bit(probe);
        }
    }

    fn set_bit(&mut self, probe: u64) {
        if let Some(byte) = usize::try_from(probe >> 3)
            .ok()
            .and_then(|at| self.bits.get_mut(at))
        {
            *byte |= 1 << (probe & 7);
        }
    }

    fn get_bit(&self, probe: u64) -> Option<u8> {
        let byte = self.bits.get(usize::try_from(probe >> 3).ok()?)?;
        Some(byte & (1 << (probe & 7)))
    }

    pub fn contains_hash(&self, hash: &ChangeHash) -> bool {
        // A filter without bits or probes claims nothing (a decoded filter always has both when
        // it has entries). Saying "not contained" is the safe answer: the change gets sent.
        if self.num_entries == 0 || self.num_probes == 0 || self.bits.is_empty() {
            return false;
        }
        // A probe is always inside the bit array; if one were not, count it as unset.
        self.probes(hash)
            .all(|probe| matches!(self.get_bit(probe), Some(bit) if bit != 0))
    }

    pub fn from_hashes<H: Borrow<ChangeHash>>(hashes: impl ExactSizeIterator<Item = H>) -> Self {
        let num_entries = hashes.len() as u32;
        let num_bits_per_entry = BITS_PER_ENTRY;
        let num_probes = NUM_PROBES;
        // At most 10 * (2^32 - 1) / 8 bytes, which fits a 64-bit usize.
        let bits = vec![0; bits_len(num_entries, num_bits_per_entry) as usize];
        let mut filter = Self {
            num_entries,
            num_bits_per_entry,
            num_probes,
            bits,
        };
        for hash in hashes {
            filter.add_hash(hash.borrow());
        }
        filter
    }
}

/// The length in bytes of the bit array of a filter with these parameters:
/// `ceil(num_entries * num_bits_per_entry / 8)`, as `to_bytes`/`from_hashes` lay it out. The
/// product of two `u32`s cannot overflow a `u64`. Upstream computed it in `f64`, which is exact
/// (and so gives the same length) whenever the product is below 2^53: always for the filters
/// `from_hashes` makes and `parse` accepts (at most 64 bits per entry, a product below 2^38).
fn bits_len(num_entries: u32, num_bits_per_entry: u32) -> u64 {
    (u64::from(num_entries) * u64::from(num_bits_per_entry)).div_ceil(8)
}

#[derive(thiserror::Error, Debug)]
#[error("{0}")]
pub struct DecodeError(String);

impl TryFrom<&[u8]> for BloomFilter {
    type Error = DecodeError;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        Self::parse(parse::Input::new(bytes))
            .map(|(_, b)| b)
            .map_err(|e| DecodeError(e.to_string()))
    }
}

/// TANDEM PATCH 9: received filters are checked when decoded; lookups cannot divide by zero or
/// run long whatever a filter holds.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::{Have, Message, State, SyncDoc};
    use crate::transaction::Transactable;

    /// The upstream (unpatched) filter, kept by the v1 compatibility tests.
    use crate::sync::v1_compat_test::BloomFilter as UpstreamFilter;

    fn leb(out: &mut Vec<u8>, n: u64) {
        leb128::write::unsigned(out, n).unwrap();
    }

    /// An encoded filter with these parameters and `bits_len` bytes of (all set) bits.
    fn filter_bytes(entries: u64, bits_per_entry: u64, probes: u64, bits_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        leb(&mut out, entries);
        leb(&mut out, bits_per_entry);
        leb(&mut out, probes);
        out.extend(std::iter::repeat_n(0xff, bits_len));
        out
    }

    /// A V1 sync message with no heads, needs or changes and one `have` holding `bloom`.
    fn message_with_filter(bloom: &[u8]) -> Vec<u8> {
        let mut out = vec![0x42, 0x00, 0x00, 0x01, 0x00];
        leb(&mut out, bloom.len() as u64);
        out.extend_from_slice(bloom);
        out.push(0x00);
        out
    }

    /// Deterministic, well spread test hashes.
    fn hash(n: u64) -> ChangeHash {
        let mut state = n.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1);
        let mut bytes = [0u8; 32];
        for chunk in bytes.chunks_mut(8) {
            state ^= state >> 30;
            state = state.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            state ^= state >> 27;
            state = state.wrapping_mul(0x94d0_49bb_1331_11eb);
            state ^= state >> 31;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        ChangeHash(bytes)
    }

    #[test]
    fn the_zero_bits_per_entry_message_is_refused() {
        // The message that crashed `generate_sync_message`: one `have` whose filter is
        // `01 00 01` (1 entry, 0 bits per entry, 1 probe), so an empty bit array.
        let crash: [u8; 10] = [0x42, 0x00, 0x00, 0x01, 0x00, 0x03, 0x01, 0x00, 0x01, 0x00];
        assert_eq!(message_with_filter(&[0x01, 0x00, 0x01]), crash);
        assert!(Message::decode(&crash).is_err());
        // The same with the flags section a current peer appends.
        let mut with_flags = crash.to_vec();
        with_flags.extend([0x02, 0x02, 0x84]);
        assert!(Message::decode(&with_flags).is_err());
        assert!(BloomFilter::try_from(&[0x01u8, 0x00, 0x01][..]).is_err());
        // With bits there still are no bits per entry.
        assert!(BloomFilter::try_from(&filter_bytes(1, 0, 1, 1)[..]).is_err());
    }

    #[test]
    fn huge_probe_counts_are_refused() {
        for probes in [1 << 24, u64::from(u32::MAX), u64::from(MAX_PROBES) + 1] {
            let bloom = filter_bytes(1, 10, probes, 2);
            assert!(
                BloomFilter::try_from(&bloom[..]).is_err(),
                "{probes} probes"
            );
            assert!(
                Message::decode(&message_with_filter(&bloom)).is_err(),
                "{probes} probes"
            );
        }
        // Too large for a u32 at all.
        let bloom = filter_bytes(1, 10, 1 << 32, 2);
        assert!(BloomFilter::try_from(&bloom[..]).is_err());
        // The limit itself is fine.
        let bloom = filter_bytes(1, 10, u64::from(MAX_PROBES), 2);
        let filter = BloomFilter::try_from(&bloom[..]).unwrap();
        assert!(filter.contains_hash(&hash(1)));
        assert!(Message::decode(&message_with_filter(&bloom)).is_ok());
    }

    #[test]
    fn parameters_out_of_range_are_refused() {
        // (entries, bits per entry, probes)
        for (entries, bits, probes) in [(1, 10, 0), (1, 0, 7), (1, 65, 7), (3, 1000, 7)] {
            let len = ((entries * bits) as usize).div_ceil(8);
            let bloom = filter_bytes(entries, bits, probes, len);
            assert!(
                BloomFilter::try_from(&bloom[..]).is_err(),
                "{entries} {bits} {probes}"
            );
        }
        for (entries, bits, probes) in [(1, 1, 1), (1, 64, 64), (5, 13, 3), (1000, 10, 7)] {
            let len = ((entries * bits) as usize).div_ceil(8);
            let bloom = filter_bytes(entries, bits, probes, len);
            let filter = BloomFilter::try_from(&bloom[..]).unwrap();
            assert_eq!(filter.to_bytes(), bloom);
        }
    }

    #[test]
    fn the_bit_array_must_have_the_encoded_length() {
        // 3 entries × 10 bits = 30 bits: 4 bytes.
        assert!(BloomFilter::try_from(&filter_bytes(3, 10, 7, 4)[..]).is_ok());
        for len in [0, 3, 5, 100] {
            let bloom = filter_bytes(3, 10, 7, len);
            assert!(BloomFilter::try_from(&bloom[..]).is_err(), "{len} bytes");
            assert!(
                Message::decode(&message_with_filter(&bloom)).is_err(),
                "{len} bytes"
            );
        }
        // u32::MAX entries × 64 bits per entry: 32 GiB of bits announced, 4 present.
        let bloom = filter_bytes(u64::from(u32::MAX), 64, 7, 4);
        assert!(BloomFilter::try_from(&bloom[..]).is_err());
        assert!(Message::decode(&message_with_filter(&bloom)).is_err());
        // A truncated header.
        assert!(BloomFilter::try_from(&[0x01u8, 0x0a][..]).is_err());
    }

    #[test]
    fn an_empty_filter_decodes_whatever_its_parameters() {
        for bloom in [vec![], vec![0x00u8, 0x00, 0x00], vec![0x00, 0x0a, 0x07]] {
            let filter = BloomFilter::try_from(&bloom[..]).unwrap();
            assert_eq!(filter, BloomFilter::default());
            assert!(!filter.contains_hash(&hash(7)));
            assert!(Message::decode(&message_with_filter(&bloom)).is_ok());
        }
        // ... but it has no bits.
        assert!(BloomFilter::try_from(&[0x00u8, 0x0a, 0x07, 0xff][..]).is_err());
    }

    #[test]
    fn filters_and_lookups_match_upstream() {
        for n in [0u64, 1, 2, 3, 7, 8, 50, 333] {
            let hashes: Vec<ChangeHash> = (0..n).map(hash).collect();
            let ours = BloomFilter::from_hashes(hashes.iter());
            let upstream = UpstreamFilter::from_hashes(hashes.iter());
            assert_eq!(ours.to_bytes(), upstream.to_bytes(), "{n} hashes");
            let decoded = BloomFilter::try_from(&upstream.to_bytes()[..]).unwrap();
            if n > 0 {
                assert_eq!(decoded, ours);
            }
            for h in hashes.iter().copied().chain((1000..1500).map(hash)) {
                assert_eq!(ours.contains_hash(&h), upstream.contains_hash(&h));
                assert_eq!(decoded.contains_hash(&h), upstream.contains_hash(&h));
            }
            assert!(hashes.iter().all(|h| ours.contains_hash(h)));
        }
        // Filters with other parameters than ours, as another implementation may send.
        for (entries, bits_per_entry, probes) in [(5u32, 13u32, 3u32), (40, 1, 1), (9, 64, 64)] {
            let len = (entries * bits_per_entry).div_ceil(8) as usize;
            let bits: Vec<u8> = (0..len).map(|i| hash(i as u64).0[0] | 0x11).collect();
            let mut bytes = filter_bytes(
                u64::from(entries),
                u64::from(bits_per_entry),
                u64::from(probes),
                0,
            );
            bytes.extend(&bits);
            let ours = BloomFilter::try_from(&bytes[..]).unwrap();
            let upstream = UpstreamFilter {
                num_entries: entries,
                num_bits_per_entry: bits_per_entry,
                num_probes: probes,
                bits,
            };
            for h in (0..500).map(hash) {
                assert_eq!(ours.contains_hash(&h), upstream.contains_hash(&h));
            }
        }
    }

    #[test]
    fn lookups_in_a_malformed_filter_cannot_panic_or_run_long() {
        // Not decodable any more, but built directly: no bits at all.
        let no_bits = BloomFilter {
            num_entries: 1,
            num_bits_per_entry: 0,
            num_probes: 1,
            bits: Vec::new(),
        };
        assert!(!no_bits.contains_hash(&hash(1)));
        // No probes: claims nothing.
        let no_probes = BloomFilter {
            num_entries: 1,
            num_bits_per_entry: 10,
            num_probes: 0,
            bits: vec![0xff, 0xff],
        };
        assert!(!no_probes.contains_hash(&hash(1)));
        // 2^32 - 1 probes: at most MAX_PROBES are looked at, and nothing is allocated for them.
        let many_probes = BloomFilter {
            num_entries: 1,
            num_bits_per_entry: 10,
            num_probes: u32::MAX,
            bits: vec![0xff, 0xff],
        };
        assert_eq!(many_probes.probes(&hash(1)).count(), MAX_PROBES as usize);
        for n in 0..1000 {
            assert!(many_probes.contains_hash(&hash(n)));
        }
    }

    #[test]
    fn generating_a_message_with_a_malformed_filter_from_the_peer_sends_the_changes() {
        let mut doc = crate::AutoCommit::new();
        doc.put(crate::ROOT, "key", "value").unwrap();
        let mut state = State::new();
        state.their_heads = Some(vec![]);
        state.their_need = Some(vec![]);
        state.their_have = Some(vec![Have {
            last_sync: vec![],
            bloom: BloomFilter {
                num_entries: 1,
                num_bits_per_entry: 0,
                num_probes: 1,
                bits: Vec::new(),
            },
        }]);
        let msg = doc
            .sync()
            .generate_sync_message(&mut state)
            .expect("a message");
        assert_eq!(msg.changes.len(), 1);
    }
}
