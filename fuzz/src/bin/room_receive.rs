//! AFL++ harness for `tandem_fuzz::room_receive` (see `fuzz/run`).

fn main() {
    afl::fuzz!(|data: &[u8]| tandem_fuzz::room_receive(data));
}
