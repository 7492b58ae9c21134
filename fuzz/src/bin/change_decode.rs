//! AFL++ harness for `tandem_fuzz::change_decode` (see `fuzz/run`).

fn main() {
    afl::fuzz!(|data: &[u8]| tandem_fuzz::change_decode(data));
}
