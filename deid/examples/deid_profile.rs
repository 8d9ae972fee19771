//! Profiling aid: de-identifies NDJSON from stdin once with `safe-harbor` (or only parses it with
//! `parse`), so `valgrind --tool=callgrind` can count instructions per stage on a busy machine:
//!
//! ```sh
//! zcat ../shared/data/synthea/bulk-data-server-100-patients/*.gz | head -20000 > /tmp/sample.ndjson
//! cargo build --release -p fhirlake-deid --example deid_profile
//! valgrind --tool=callgrind target/release/examples/deid_profile deid < /tmp/sample.ndjson
//! ```

use std::io::BufRead as _;

use fhirlake_deid::{DeidKey, Deidentifier, Policy, PolicyEngine};

fn main() {
    let mode = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "deid".to_string());
    let engine = PolicyEngine::new(
        Policy::builtin("safe-harbor").expect("built-in profile"),
        DeidKey::from_bytes(&[7u8; 32], "profile").expect("32-byte key"),
    );
    let mut values = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("readable stdin");
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) {
            values.push(value);
        }
    }
    let mut kept = 0usize;
    if mode == "deid" {
        for value in &mut values {
            if engine.deidentify(value).is_ok() {
                kept += 1;
            }
        }
    }
    eprintln!("{mode}: {} resources, {kept} de-identified", values.len());
}
