//! Every input kept in `fixtures/fuzz/<target>/` (crashers found by fuzzing, and seeds) runs
//! through its target again: a regression of a fixed crash fails here, on stable, in CI.

use std::path::Path;

#[test]
fn every_kept_input_runs_without_panicking() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fuzz");
    let mut ran = 0;
    for (name, target) in tandem_fuzz::TARGETS {
        let dir = root.join(name);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if std::env::var("TANDEM_FUZZ_ONE").is_ok_and(|one| !path.ends_with(&one)) {
                continue;
            }
            let data = std::fs::read(&path).unwrap();
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(r.is_ok(), "{name}: {} panics", path.display());
            ran += 1;
        }
    }
    assert!(
        ran >= tandem_fuzz::TARGETS.len(),
        "the kept inputs are found ({ran})"
    );
}
