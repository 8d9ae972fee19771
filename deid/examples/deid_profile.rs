//! Profiling aid: de-identifies NDJSON from stdin with `safe-harbor`, so `valgrind --tool=callgrind`
//! can count instructions per stage on a busy machine, and `/usr/bin/time` can take CPU time
//! (steadier than wall time when another process shares the cores). Modes:
//!
//! * `parse`: parse every line (the floor of `deid`);
//! * `deid` (default): parse every line, then de-identify them all (the walk over cache-cold
//!   values; `--toggle-collect='*Deidentifier*deidentify*'` counts the walk alone);
//! * `stream-parse`, `stream`: per line, parse and serialize, without and with de-identification in
//!   between, as the ingest workers and the criterion benchmark do (the difference is the stage).
//!
//! ```sh
//! zcat ../shared/data/synthea/bulk-data-server-100-patients/*.gz | head -20000 > /tmp/sample.ndjson
//! cargo build --release -p fhirlake-deid --example deid_profile
//! valgrind --tool=callgrind target/release/examples/deid_profile deid < /tmp/sample.ndjson
//! /usr/bin/time -f %U target/release/examples/deid_profile stream < /tmp/sample.ndjson
//! ```

use std::io::BufRead as _;

use fhirlake_deid::{DeidKey, Deidentifier, Disposition, Policy, PolicyEngine};

fn main() {
    let mode = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "deid".to_string());
    let engine = PolicyEngine::new(
        Policy::builtin("safe-harbor").expect("built-in profile"),
        DeidKey::from_bytes(&[7u8; 32], "profile").expect("32-byte key"),
    );
    let lines: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map(|line| line.expect("readable stdin"))
        .collect();
    let mut kept = 0usize;
    if let Some(deid) = match mode.as_str() {
        "stream" => Some(true),
        "stream-parse" => Some(false),
        _ => None,
    } {
        let mut out = Vec::with_capacity(1 << 20);
        for line in &lines {
            let Ok(mut value) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if deid && !matches!(engine.deidentify(&mut value), Ok(Disposition::Keep)) {
                continue;
            }
            kept += 1;
            out.clear();
            serde_json::to_writer(&mut out, &value).expect("serializable");
        }
        eprintln!("{mode}: {} lines, {kept} written", lines.len());
        return;
    }
    let mut values: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    if mode == "deid" {
        for value in &mut values {
            if engine.deidentify(value).is_ok() {
                kept += 1;
            }
        }
    }
    eprintln!("{mode}: {} resources, {kept} de-identified", values.len());
}
