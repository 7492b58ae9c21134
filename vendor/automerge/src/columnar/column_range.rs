mod rle;
pub(crate) use rle::RleRange;
mod delta;
pub(crate) use delta::DeltaRange;
mod boolean;
pub(crate) use boolean::{BooleanRange, MaybeBooleanRange};
mod raw;
pub(crate) use raw::RawRange;
mod opid_list;
pub(crate) use opid_list::{OpIdListEncoder, OpIdListIter, OpIdListRange};
mod value;
pub(crate) use value::{ValueEncoder, ValueIter, ValueRange};
pub(crate) mod generic;
mod key;
pub(crate) use key::{Key, KeyEncoder, KeyIter, KeyRange};
mod obj_id;
pub(crate) use obj_id::{ObjIdEncoder, ObjIdIter, ObjIdRange};

/// TANDEM PATCH 9: op ids read from a change's columns whose counter or actor index does not
/// fit in a `u32` are a decode error (they panicked in `OpId::new`).
#[cfg(test)]
mod tandem_patch_9 {
    use super::*;
    use std::ops::Range;

    /// Appends an RLE column holding the single value `v` (a literal run of one) and returns
    /// its range.
    fn literal_u64(data: &mut Vec<u8>, v: u64) -> Range<usize> {
        let start = data.len();
        leb128::write::signed(data, -1).unwrap();
        leb128::write::unsigned(data, v).unwrap();
        start..data.len()
    }

    /// Appends a delta column holding the single value `v` and returns its range.
    fn delta_i64(data: &mut Vec<u8>, v: i64) -> Range<usize> {
        let start = data.len();
        leb128::write::signed(data, -1).unwrap();
        leb128::write::signed(data, v).unwrap();
        start..data.len()
    }

    const TOO_BIG: u64 = 1 << 33;

    #[test]
    fn obj_ids_past_u32_are_an_error() {
        for (actor, counter, ok) in [(1, 5, true), (0, TOO_BIG, false), (TOO_BIG, 5, false)] {
            let mut data = Vec::new();
            let a = literal_u64(&mut data, actor);
            let c = literal_u64(&mut data, counter);
            let range = ObjIdRange::new(a.into(), c.into()).unwrap();
            let first = range.iter(&data).next().expect("one obj id");
            assert_eq!(first.is_ok(), ok, "actor {actor} counter {counter}");
        }
    }

    #[test]
    fn key_elem_ids_past_u32_are_an_error() {
        for (actor, counter, ok) in [(1, 5, true), (0, TOO_BIG, false), (TOO_BIG, 5, false)] {
            let mut data = Vec::new();
            let a = literal_u64(&mut data, actor);
            let c = delta_i64(&mut data, counter as i64);
            let end = data.len();
            let range = KeyRange::new(a.into(), c.into(), (end..end).into());
            let first = range.iter(&data).next().expect("one key");
            assert_eq!(first.is_ok(), ok, "actor {actor} counter {counter}");
        }
    }

    #[test]
    fn pred_ids_past_u32_are_an_error() {
        for (actor, counter, ok) in [(1, 5, true), (0, TOO_BIG, false), (TOO_BIG, 5, false)] {
            let mut data = Vec::new();
            let n = literal_u64(&mut data, 1);
            let a = literal_u64(&mut data, actor);
            let c = delta_i64(&mut data, counter as i64);
            let range = OpIdListRange::new(n.into(), a.into(), c.into());
            let first = range.iter(&data).next().expect("one pred list");
            assert_eq!(first.is_ok(), ok, "actor {actor} counter {counter}");
        }
    }

    #[test]
    fn a_literal_run_of_i64_min_values_is_an_error_not_an_overflow() {
        let mut data = Vec::new();
        leb128::write::signed(&mut data, i64::MIN).unwrap();
        leb128::write::unsigned(&mut data, 1).unwrap();
        let range: RleRange<u64> = (0..data.len()).into();
        // (the decoder is not fused: it keeps failing after the input ends, so no `collect`)
        let mut decoder = range.decoder(&data);
        assert!(matches!(decoder.next(), Some(Ok(Some(1)))));
        assert!(matches!(decoder.next(), Some(Err(_))));
    }
}
