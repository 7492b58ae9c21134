//! AFL++ harness for `tandem_fuzz::sync_message` (see `fuzz/run`).

fn main() {
    // Without the abort-on-panic hook: a panic that escapes the target is still a crash
    // (afl catches the unwind and aborts), one contained inside it is not.
    afl::fuzz_nohook!(|data: &[u8]| tandem_fuzz::sync_message(data));
}
