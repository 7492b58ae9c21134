//! Startup checks: say what SQLite is about to recover, and whether the file is sound.
//!
//! SQLite's own recovery rule for the WAL is the one we want: frames after the last frame
//! whose checksum chain is valid and that commits a transaction are ignored, so a torn or
//! corrupt tail rolls back to the last good commit. SQLite does this silently, so before
//! opening we walk the WAL ourselves with the same checksum and log what will be dropped.

use std::path::Path;

use rusqlite::Connection;

const WAL_HEADER: usize = 32;
const FRAME_HEADER: usize = 24;

/// What a walk of the WAL found.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct WalReport {
    /// Frames that belong to committed transactions.
    pub(crate) committed_frames: usize,
    /// Bytes after the last committed frame.
    pub(crate) ignored_bytes: usize,
    /// Whether those bytes look like a torn or corrupted write of the current WAL
    /// generation (as opposed to stale frames of an earlier one, which are normal).
    pub(crate) torn: bool,
}

fn checksum(data: &[u8], big_endian: bool, mut s0: u32, mut s1: u32) -> (u32, u32) {
    let word = |b: &[u8]| {
        let a = [b[0], b[1], b[2], b[3]];
        if big_endian {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        }
    };
    for pair in data.chunks_exact(8) {
        s0 = s0.wrapping_add(word(&pair[0..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..8])).wrapping_add(s0);
    }
    (s0, s1)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Walk a WAL image with SQLite's checksum rule.
pub(crate) fn scan_wal(wal: &[u8]) -> Option<WalReport> {
    if wal.len() < WAL_HEADER {
        return None;
    }
    let magic = be32(wal, 0);
    if magic & !1 != 0x377f_0682 {
        return None;
    }
    let big_endian = magic & 1 == 1;
    let page_size = be32(wal, 8) as usize;
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    let (salt1, salt2) = (be32(wal, 16), be32(wal, 20));
    let (mut s0, mut s1) = checksum(&wal[..24], big_endian, 0, 0);
    if (s0, s1) != (be32(wal, 24), be32(wal, 28)) {
        return Some(WalReport {
            committed_frames: 0,
            ignored_bytes: wal.len() - WAL_HEADER,
            torn: true,
        });
    }
    let frame_len = FRAME_HEADER + page_size;
    let mut at = WAL_HEADER;
    let mut frames = 0;
    let mut committed_end = WAL_HEADER;
    let mut committed_frames = 0;
    let mut torn = false;
    while at < wal.len() {
        if at + frame_len > wal.len() {
            torn = true; // a frame cut short
            break;
        }
        let f = &wal[at..at + frame_len];
        if (be32(f, 8), be32(f, 12)) != (salt1, salt2) {
            break; // a stale frame from before the last checkpoint: normal
        }
        let (a, b) = checksum(&f[..8], big_endian, s0, s1);
        let (a, b) = checksum(&f[FRAME_HEADER..], big_endian, a, b);
        if (a, b) != (be32(f, 16), be32(f, 20)) {
            torn = true;
            break;
        }
        (s0, s1) = (a, b);
        frames += 1;
        at += frame_len;
        if be32(f, 4) != 0 {
            committed_end = at;
            committed_frames = frames;
        }
    }
    if committed_end < at {
        torn = true; // valid frames of a transaction that never committed
    }
    Some(WalReport {
        committed_frames,
        ignored_bytes: wal.len() - committed_end,
        torn,
    })
}

/// Log what SQLite's recovery will do with the WAL next to `db`.
pub(crate) fn inspect_wal(db: &Path) {
    let mut wal_path = db.as_os_str().to_owned();
    wal_path.push("-wal");
    let Ok(wal) = std::fs::read(&wal_path) else {
        return;
    };
    match scan_wal(&wal) {
        None if wal.is_empty() => {}
        None => tracing::warn!(
            bytes = wal.len(),
            "store: the WAL header is unreadable; SQLite will ignore the whole WAL"
        ),
        Some(r) if r.torn => tracing::warn!(
            committed_frames = r.committed_frames,
            ignored_bytes = r.ignored_bytes,
            "store: the WAL ends in a torn or corrupt record; recovering to the last good commit"
        ),
        Some(r) => tracing::info!(committed_frames = r.committed_frames, "store: WAL is clean"),
    }
}

/// Run SQLite's quick check and log the outcome.
pub(crate) fn check_integrity(conn: &Connection) {
    let result: Result<Vec<String>, _> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect());
    match result {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => tracing::debug!("store: quick_check ok"),
        Ok(rows) => {
            tracing::error!(problems = ?rows, "store: quick_check found damage; serving what is readable")
        }
        Err(e) => tracing::error!(error = %e, "store: quick_check failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wal_of_fresh_db() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch(
            "CREATE TABLE t(x); INSERT INTO t VALUES (1); INSERT INTO t VALUES (2);",
        )
        .unwrap();
        let wal = std::fs::read(dir.path().join("t.db-wal")).unwrap();
        drop(conn);
        wal
    }

    #[test]
    fn clean_wal_is_clean_and_a_cut_one_is_torn() {
        let wal = wal_of_fresh_db();
        let clean = scan_wal(&wal).unwrap();
        assert!(!clean.torn, "{clean:?}");
        assert!(clean.committed_frames >= 3);
        assert_eq!(clean.ignored_bytes, 0);
        let cut = scan_wal(&wal[..wal.len() - 100]).unwrap();
        assert!(cut.torn);
        assert!(cut.committed_frames < clean.committed_frames);
        let mut flipped = wal.clone();
        let n = flipped.len();
        flipped[n - 10] ^= 0xff;
        assert!(scan_wal(&flipped).unwrap().torn);
        assert_eq!(scan_wal(b"garbage"), None);
    }
}
