//! `encrypt`: deterministic authenticated encryption (AES-256-GCM-SIV with a synthetic nonce
//! derived from the key and the plaintext), base64url output, reversible only with the key by
//! `fhirlake deid reidentify`. Equal plaintexts give equal ciphertexts, so encrypted columns join.

use aes_gcm_siv::aead::{Aead, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce};
use base64::Engine as _;

use crate::key::DeidKey;

const NONCE_BYTES: usize = 12;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Encrypts a value: `base64url(nonce || ciphertext || tag)`.
pub fn encrypt(key: &DeidKey, plaintext: &str) -> String {
    let nonce_hash = blake3::keyed_hash(key.encrypt_nonce_key(), plaintext.as_bytes());
    let nonce = Nonce::from_slice(&nonce_hash.as_bytes()[..NONCE_BYTES]);
    let cipher = Aes256GcmSiv::new(key.encrypt_key().into());
    // Encryption with a valid key and nonce cannot fail for inputs under 64 GiB.
    let sealed = cipher
        .encrypt(nonce, plaintext.as_bytes())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(NONCE_BYTES + sealed.len());
    out.extend_from_slice(nonce);
    out.extend_from_slice(&sealed);
    B64.encode(out)
}

/// Reverses [`encrypt`]; `None` if the text was not produced with this key.
pub fn decrypt(key: &DeidKey, token: &str) -> Option<String> {
    let bytes = B64.decode(token.trim()).ok()?;
    if bytes.len() < NONCE_BYTES + 16 {
        return None;
    }
    let (nonce, sealed) = bytes.split_at(NONCE_BYTES);
    let cipher = Aes256GcmSiv::new(key.encrypt_key().into());
    let plain = cipher.decrypt(Nonce::from_slice(nonce), sealed).ok()?;
    String::from_utf8(plain).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_deterministic_and_keyed() {
        let k1 = DeidKey::from_bytes(&[1; 32], "t").unwrap();
        let k2 = DeidKey::from_bytes(&[2; 32], "t").unwrap();
        let c = encrypt(&k1, "Jane Doe ÆŊ");
        assert_eq!(c, encrypt(&k1, "Jane Doe ÆŊ"));
        assert_ne!(c, encrypt(&k1, "Jane Doe"));
        assert!(
            c.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(decrypt(&k1, &c).as_deref(), Some("Jane Doe ÆŊ"));
        assert_eq!(decrypt(&k2, &c), None);
        assert_eq!(decrypt(&k1, "garbage"), None);
    }
}
