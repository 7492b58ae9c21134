//! AFL++ harness for `tandem_fuzz::sync_message` (see `fuzz/run`).

fn main() {
    afl::fuzz!(|data: &[u8]| tandem_fuzz::sync_message(data));
}
