//! TANDEM PATCH 7: the op set's derived indexes (text widths, top ops, visibility,
//! counter increments, the object index), written beside a saved document so that loading
//! it can adopt them instead of rebuilding them op by op. See `crate::load_index`.

use std::collections::HashMap;

use super::index::Indexes;
use super::{MarkIndexColumn, ObjIndex, ObjInfo, OpSet};
use crate::types::{ObjId, ObjType, OpId};

impl OpSet {
    /// Append the indexes to `out`; `false` (and nothing written) when the document holds
    /// marks, whose index also caches each mark's data and is not saved.
    pub(crate) fn save_indexes(&self, out: &mut Vec<u8>) -> bool {
        let ix = &self.cols.index;
        if !ix.mark.is_unmarked() {
            return false;
        }
        put_bytes(out, &ix.text.save());
        put_bytes(out, &ix.top.save());
        put_bytes(out, &ix.visible.save());
        put_bytes(out, &ix.inc.save());

        let mut objs: Vec<(&OpId, &ObjInfo)> = self.obj_info.0.iter().collect();
        objs.sort_unstable_by_key(|(id, _)| (id.counter(), id.actor()));
        put_uint(out, objs.len() as u64);
        let mut last = 0;
        for (id, info) in objs {
            put_uint(out, id.counter() - last);
            last = id.counter();
            put_uint(out, id.actor() as u64);
            let parent = info.parent.0;
            put_int(out, id.counter() as i64 - parent.counter() as i64);
            put_uint(out, parent.actor() as u64);
            out.push(match info.obj_type {
                ObjType::Map => 0,
                ObjType::Table => 1,
                ObjType::List => 2,
                ObjType::Text => 3,
            });
        }
        true
    }

    /// Adopt indexes written by [`Self::save_indexes`] for this very op set. Every length
    /// and actor is checked, so bytes that do not fit give an error, never a panic.
    pub(crate) fn load_indexes(&mut self, mut data: &[u8]) -> Result<(), &'static str> {
        let len = self.len();
        let text = hexane::PrefixColumn::<Option<u32>>::load(take_bytes(&mut data)?)
            .map_err(|_| "bad text index")?;
        let top =
            hexane::PrefixColumn::<bool>::load(take_bytes(&mut data)?).map_err(|_| "bad top index")?;
        let visible =
            hexane::Column::<bool>::load(take_bytes(&mut data)?).map_err(|_| "bad visible index")?;
        let inc = hexane::Column::<Option<i64>>::load(take_bytes(&mut data)?)
            .map_err(|_| "bad increment index")?;
        if text.len() != len || top.len() != len || visible.len() != len {
            return Err("an index's length differs from the op count");
        }
        if inc.len() != self.cols.sub_len() {
            return Err("the increment index's length differs from the successor count");
        }

        let actors = self.actors.len() as u64;
        let count = take_uint(&mut data)?;
        // At most one object per byte left: a lying count cannot make us over-allocate.
        if count > data.len() as u64 {
            return Err("object count exceeds the data");
        }
        let mut objs = HashMap::with_capacity(count as usize);
        let mut counter = 0u64;
        for _ in 0..count {
            counter = counter
                .checked_add(take_uint(&mut data)?)
                .ok_or("object counter overflows")?;
            let actor = take_uint(&mut data)?;
            let parent_counter = (counter as i64)
                .checked_sub(take_int(&mut data)?)
                .filter(|c| *c >= 0)
                .ok_or("bad parent counter")? as u64;
            let parent_actor = take_uint(&mut data)?;
            let obj_type = match take_byte(&mut data)? {
                0 => ObjType::Map,
                1 => ObjType::Table,
                2 => ObjType::List,
                3 => ObjType::Text,
                _ => return Err("bad object type"),
            };
            if counter == 0 || actor >= actors {
                return Err("bad object id");
            }
            let parent = if parent_counter == 0 {
                if parent_actor != 0 {
                    return Err("bad parent id");
                }
                ObjId::root()
            } else if parent_actor < actors {
                ObjId(OpId::new(parent_counter, parent_actor as usize))
            } else {
                return Err("bad parent id");
            };
            if objs
                .insert(
                    OpId::new(counter, actor as usize),
                    ObjInfo { parent, obj_type },
                )
                .is_some()
            {
                return Err("an object repeats");
            }
        }
        if !data.is_empty() {
            return Err("bytes left after the indexes");
        }
        self.set_indexes(Indexes {
            text,
            top,
            visible,
            inc,
            mark: MarkIndexColumn::unmarked(len),
            obj_info: ObjIndex(objs),
        });
        Ok(())
    }
}

pub(crate) fn put_uint(out: &mut Vec<u8>, v: u64) {
    leb128::write::unsigned(out, v).unwrap();
}

fn put_int(out: &mut Vec<u8>, v: i64) {
    leb128::write::signed(out, v).unwrap();
}

pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uint(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub(crate) fn take_uint(data: &mut &[u8]) -> Result<u64, &'static str> {
    leb128::read::unsigned(data).map_err(|_| "bad integer")
}

fn take_int(data: &mut &[u8]) -> Result<i64, &'static str> {
    leb128::read::signed(data).map_err(|_| "bad integer")
}

fn take_byte(data: &mut &[u8]) -> Result<u8, &'static str> {
    let (b, rest) = data.split_first().ok_or("truncated")?;
    *data = rest;
    Ok(*b)
}

pub(crate) fn take_bytes<'a>(data: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
    let n = take_uint(data)?;
    if n > data.len() as u64 {
        return Err("truncated");
    }
    let (b, rest) = data.split_at(n as usize);
    *data = rest;
    Ok(b)
}
