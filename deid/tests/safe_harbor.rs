use std::io::Read;
use fhirlake_deid::{DeidKey, Deidentifier, Disposition, Policy, PolicyEngine};

#[test]
fn explore() {
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/synthea");
    let policy = std::env::var("POL").unwrap_or("safe-harbor".into());
    let engine = PolicyEngine::new(Policy::builtin(&policy).unwrap(), DeidKey::from_bytes(&[7u8; 32], "test").unwrap())
        .with_today(chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap());
    let t0 = std::time::Instant::now();
    let mut parse = std::time::Duration::ZERO;
    let mut total = 0usize;
    for exp in std::fs::read_dir(base).unwrap() {
        let exp = exp.unwrap().path();
        let outdir = format!("/tmp/shx/out-{policy}/{}", exp.file_name().unwrap().to_str().unwrap());
        std::fs::create_dir_all(&outdir).unwrap();
        for f in std::fs::read_dir(&exp).unwrap() {
            let f = f.unwrap().path();
            let name = f.file_name().unwrap().to_str().unwrap().to_string();
            if !name.contains(".ndjson") { continue; }
            let mut text = String::new();
            let raw = std::fs::read(&f).unwrap();
            if name.ends_with(".gz") { flate2::read::GzDecoder::new(&raw[..]).read_to_string(&mut text).unwrap(); } else { text = String::from_utf8(raw).unwrap(); }
            total += text.len();
            let mut out = String::new();
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                let t = std::time::Instant::now();
                let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
                parse += t.elapsed();
                match engine.deidentify(&mut v).unwrap() {
                    Disposition::Keep => { out.push_str(&serde_json::to_string(&v).unwrap()); out.push('\n'); }
                    Disposition::Drop { reason } => eprintln!("drop {reason}"),
                }
            }
            std::fs::write(format!("{outdir}/{}", name.trim_end_matches(".gz")), out).unwrap();
        }
    }
    eprintln!("total {} bytes in {:?} (parse {:?}) {:?}", total, t0.elapsed(), parse, engine.stats());
}
