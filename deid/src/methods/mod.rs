//! The de-identification methods: each turns one value into its de-identified form. The engine
//! (`crate::engine`) decides which method applies to which node.

pub mod crypt;
pub mod dates;
pub mod memo;
pub mod pseudonym;
pub mod scrub;

/// Adds deterministic noise to a number: uniform in `[-span/2, span/2]` (or that fraction of the
/// value when `proportional`), rounded to `round_to` decimals. The noise is derived from the key
/// and `seed` (resource and path), so re-ingesting the same data gives the same values.
pub fn perturb(
    key: &crate::key::DeidKey,
    seed: &str,
    value: f64,
    span: f64,
    proportional: bool,
    round_to: u32,
) -> f64 {
    let h = blake3::keyed_hash(key.perturb_key(), seed.as_bytes());
    let x = u64::from_le_bytes(h.as_bytes()[..8].try_into().unwrap_or([0; 8]));
    let unit = (x >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
    let width = if proportional {
        span * value.abs()
    } else {
        span
    };
    let noisy = value + (unit - 0.5) * width;
    let scale = 10f64.powi(round_to.min(28) as i32);
    (noisy * scale).round() / scale
}

/// A ZIP code generalized to its first 3 digits; restricted areas become `000`. ZIP+4 keeps its
/// shape with zeros (`98052-1234` -> `980**`: returned as `980`). Non-ZIP text gives `None`.
pub fn zip3(zip: &str, restricted: &[String]) -> Option<String> {
    let digits: String = zip.chars().take(3).collect();
    if digits.len() < 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if restricted.contains(&digits) {
        Some("000".to_string())
    } else {
        Some(digits)
    }
}

/// The anonymizer's partial ZIP redaction: the first 3 digits kept, the rest zeros, restricted
/// areas all zeros (`98028-1830` -> `98000-0000`).
pub fn ms_zip(zip: &str, restricted: &[String]) -> String {
    let prefix: String = zip.chars().take(3).collect();
    let restricted = restricted.contains(&prefix);
    zip.chars()
        .enumerate()
        .map(|(i, c)| {
            if c.is_ascii_digit() && (i >= 3 || restricted) {
                '0'
            } else {
                c
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_generalization() {
        let restricted: Vec<String> = ["203", "556"].iter().map(|s| s.to_string()).collect();
        assert_eq!(zip3("98052", &restricted).as_deref(), Some("980"));
        assert_eq!(zip3("20301-1830", &restricted).as_deref(), Some("000"));
        assert_eq!(zip3("K1A", &restricted), None);
        assert_eq!(ms_zip("98052", &restricted), "98000");
        assert_eq!(ms_zip("98028-1830", &restricted), "98000-0000");
        assert_eq!(ms_zip("20301-1830", &restricted), "00000-0000");
    }

    #[test]
    fn perturbation_is_bounded_and_deterministic() {
        let key = crate::key::DeidKey::from_bytes(&[9; 32], "t").unwrap();
        for i in 0..500 {
            let seed = format!("Observation/{i}/valueQuantity.value");
            let v = perturb(&key, &seed, 100.0, 10.0, false, 1);
            assert!((95.0..=105.0).contains(&v), "{v}");
            assert_eq!(v, perturb(&key, &seed, 100.0, 10.0, false, 1));
            let p = perturb(&key, &seed, 200.0, 0.1, true, 0);
            assert!((190.0..=210.0).contains(&p) && p.fract() == 0.0, "{p}");
        }
    }
}
