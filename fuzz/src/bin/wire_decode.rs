//! AFL++ harness for `tandem_fuzz::wire_decode` (see `fuzz/run`).

fn main() {
    afl::fuzz!(|data: &[u8]| tandem_fuzz::wire_decode(data));
}
