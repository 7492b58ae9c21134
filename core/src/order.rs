//! Fractional indices for sibling order (Figma-style): a sibling's place is a string key, and
//! a node goes between two siblings by getting a key between theirs, so a move is one
//! register write and concurrent inserts never renumber anyone.
//!
//! A key is an integer part and an optional fraction, in base-62 digits `0-9A-Za-z` (ASCII
//! order is numeric order). The integer part's first character encodes its length
//! (`a` = 1 digit, `b` = 2, ...; `Z`, `Y`, ... the same for the negative side), so appending
//! and prepending grow keys logarithmically, not linearly. Two replicas inserting at the same
//! spot can produce the same key; readers break such ties by node id, so order is still total
//! and identical everywhere.

const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn digit_value(c: u8) -> Option<usize> {
    match c {
        b'0'..=b'9' => Some((c - b'0') as usize),
        b'A'..=b'Z' => Some((c - b'A') as usize + 10),
        b'a'..=b'z' => Some((c - b'a') as usize + 36),
        _ => None,
    }
}

fn int_len(head: u8) -> Option<usize> {
    match head {
        b'a'..=b'z' => Some((head - b'a') as usize + 2),
        b'A'..=b'Z' => Some((b'Z' - head) as usize + 2),
        _ => None,
    }
}

/// Splits a valid key into integer part and fraction; `None` if the key is malformed.
fn split(key: &str) -> Option<(&str, &str)> {
    let bytes = key.as_bytes();
    let n = int_len(*bytes.first()?)?;
    if bytes.len() < n || !bytes[1..].iter().all(|&c| digit_value(c).is_some()) {
        return None;
    }
    let (int, frac) = key.split_at(n);
    // A fraction never ends in the zero digit (it would equal the shorter key).
    if frac.ends_with('0') {
        return None;
    }
    // The smallest integer alone is reserved so something can always go before it.
    if frac.is_empty() && int == smallest_int() {
        return None;
    }
    Some((int, frac))
}

/// Whether a string is a well-formed key.
pub fn is_valid(key: &str) -> bool {
    split(key).is_some()
}

fn smallest_int() -> &'static str {
    "A00000000000000000000000000"
}

/// Adds one to an integer part; `None` past the largest.
fn increment(int: &str) -> Option<String> {
    let bytes = int.as_bytes();
    let head = bytes[0];
    let mut digits: Vec<usize> = bytes[1..].iter().filter_map(|&c| digit_value(c)).collect();
    for i in (0..digits.len()).rev() {
        if digits[i] < 61 {
            digits[i] += 1;
            return Some(assemble(head, &digits));
        }
        digits[i] = 0;
    }
    // Overflow: move to the next length class.
    match head {
        b'Z' => Some("a0".to_owned()),
        b'z' => None,
        b'a'..=b'y' => Some(assemble(head + 1, &vec![0; digits.len() + 1])),
        _ => Some(assemble(head + 1, &vec![0; digits.len() - 1])),
    }
}

/// Subtracts one from an integer part; `None` below the smallest.
fn decrement(int: &str) -> Option<String> {
    let bytes = int.as_bytes();
    let head = bytes[0];
    let mut digits: Vec<usize> = bytes[1..].iter().filter_map(|&c| digit_value(c)).collect();
    for i in (0..digits.len()).rev() {
        if digits[i] > 0 {
            digits[i] -= 1;
            return Some(assemble(head, &digits));
        }
        digits[i] = 61;
    }
    match head {
        b'a' => Some("Zz".to_owned()),
        b'A' => None,
        b'b'..=b'z' => Some(assemble(head - 1, &vec![61; digits.len() - 1])),
        _ => Some(assemble(head - 1, &vec![61; digits.len() + 1])),
    }
}

fn assemble(head: u8, digits: &[usize]) -> String {
    let mut s = String::with_capacity(digits.len() + 1);
    s.push(head as char);
    s.extend(digits.iter().map(|&d| DIGITS[d] as char));
    s
}

/// A digit string strictly between fractions `a` and `b` (`b = None` means 1).
/// Requires `a < b`, no trailing zero digits.
fn midpoint(a: &str, b: Option<&str>) -> String {
    let (a, b) = (a.as_bytes(), b.map(str::as_bytes));
    let mut prefix = String::new();
    let mut i = 0;
    if let Some(b) = b {
        // Skip the common prefix (a padded with zeros).
        while i < b.len() && a.get(i).copied().unwrap_or(b'0') == b[i] {
            prefix.push(b[i] as char);
            i += 1;
        }
    }
    let da = a.get(i).and_then(|&c| digit_value(c)).unwrap_or(0);
    let db = b
        .and_then(|b| b.get(i))
        .and_then(|&c| digit_value(c))
        .unwrap_or(62);
    if db > da + 1 {
        prefix.push(DIGITS[(da + db) / 2] as char);
        return prefix;
    }
    // Adjacent digits.
    if let Some(b) = b.filter(|b| b.len() > i + 1) {
        prefix.push(b[i] as char);
        return prefix;
    }
    prefix.push(DIGITS[da] as char);
    let rest = std::str::from_utf8(a.get(i + 1..).unwrap_or(&[])).unwrap_or("");
    prefix.push_str(&midpoint(rest, None));
    prefix
}

/// A key strictly between `a` and `b` (either may be `None`: before the first, after the
/// last). Malformed or misordered inputs are tolerated (a document may hold anything a stock
/// client wrote): the result is then only guaranteed to be a valid key.
pub fn key_between(a: Option<&str>, b: Option<&str>) -> String {
    let a = a.and_then(|k| split(k).map(|p| (k, p)));
    let b = b.and_then(|k| split(k).map(|p| (k, p)));
    match (a, b) {
        (None, None) => "a0".to_owned(),
        (None, Some((_, (ib, fb)))) => {
            if ib == smallest_int() {
                format!("{ib}{}", midpoint("", Some(fb)))
            } else if !fb.is_empty() {
                ib.to_owned()
            } else {
                decrement(ib).unwrap_or_else(|| format!("{ib}{}", midpoint("", Some(fb))))
            }
        }
        (Some((_, (ia, fa))), None) => match increment(ia) {
            Some(i) => i,
            None => format!("{ia}{}", midpoint(fa, None)),
        },
        (Some((ka, (ia, fa))), Some((kb, (ib, fb)))) => {
            if ka >= kb {
                // Misordered siblings (possible in a merged document): go after `a`.
                return key_between(Some(ka), None);
            }
            if ia == ib {
                return format!("{ia}{}", midpoint(fa, Some(fb)));
            }
            match increment(ia) {
                Some(i) if i.as_str() < kb => i,
                _ => format!("{ia}{}", midpoint(fa, None)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn appends_stay_short() {
        let mut k = key_between(None, None);
        for _ in 0..10_000 {
            let next = key_between(Some(&k), None);
            assert!(next > k && is_valid(&next), "{k} -> {next}");
            k = next;
        }
        assert!(k.len() <= 4, "{k}");
        let mut k = "a0".to_owned();
        for _ in 0..10_000 {
            let prev = key_between(None, Some(&k));
            assert!(prev < k && is_valid(&prev), "{prev} !< {k}");
            k = prev;
        }
        assert!(k.len() <= 4, "{k}");
    }

    #[test]
    fn known_keys() {
        assert_eq!(key_between(None, None), "a0");
        assert_eq!(key_between(Some("a0"), None), "a1");
        assert_eq!(key_between(Some("az"), None), "b00");
        assert_eq!(key_between(None, Some("a0")), "Zz");
        assert_eq!(key_between(Some("a0"), Some("a1")), "a0V");
        assert_eq!(key_between(Some("a0V"), Some("a1")), "a0k");
        assert_eq!(key_between(Some("Zz"), Some("a0")), "ZzV");
    }

    proptest! {
        #[test]
        fn between_is_strictly_between(ops in proptest::collection::vec((any::<u16>(), 0u8..3), 1..200)) {
            let mut keys = vec![key_between(None, None)];
            for (pick, kind) in ops {
                let i = pick as usize % keys.len();
                let k = match kind {
                    0 => key_between(None, Some(&keys[0])),
                    1 => key_between(Some(&keys[keys.len() - 1]), None),
                    _ => {
                        let hi = keys.get(i + 1).map(String::as_str);
                        key_between(Some(&keys[i]), hi)
                    }
                };
                prop_assert!(is_valid(&k), "invalid {k}");
                let pos = keys.binary_search(&k).unwrap_err();
                keys.insert(pos, k);
            }
        }
    }

    #[test]
    fn garbage_never_panics() {
        for junk in ["", "0", "a", "a00", "é", "A", "zzzzzz", "a0\u{0}"] {
            let k = key_between(Some(junk), Some(junk));
            assert!(is_valid(&k), "{junk:?} -> {k:?}");
            assert!(is_valid(&key_between(None, Some(junk))));
            assert!(is_valid(&key_between(Some(junk), None)));
        }
    }
}
