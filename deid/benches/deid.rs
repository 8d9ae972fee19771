//! Safe Harbor throughput (placeholder, being written).
fn main() {}
