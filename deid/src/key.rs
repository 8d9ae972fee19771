//! The de-identification key: where it comes from, how it is checked, and the sub-keys derived
//! from it (one per method, so a pseudonym never reveals anything about a date offset).
//!
//! The key is read from `FHIRLAKE_DEID_KEY` (hex or base64, at least 32 bytes) or from a key file
//! that only its owner may read. It is never logged, never written to the lake and never part of
//! a policy; the lake records its id instead: the first 16 hex characters of BLAKE3(key).

use std::fmt;
use std::path::Path;

use base64::Engine as _;

pub use crate::error::KeyError;

/// Environment variable holding the key (hex or base64).
pub const KEY_ENV: &str = "FHIRLAKE_DEID_KEY";

/// Smallest accepted key, in bytes.
pub const MIN_KEY_BYTES: usize = 32;

/// The secret key of a lake, with the sub-keys each method uses.
#[derive(Clone)]
pub struct DeidKey {
    id: String,
    pseudonym: [u8; 32],
    identifier: [u8; 32],
    date_shift: [u8; 32],
    perturb: [u8; 32],
    encrypt: [u8; 32],
    encrypt_nonce: [u8; 32],
}

impl fmt::Debug for DeidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeidKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl DeidKey {
    /// A key from raw bytes (at least [`MIN_KEY_BYTES`]).
    pub fn from_bytes(bytes: &[u8], source_name: &str) -> Result<Self, KeyError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(KeyError::TooShort {
                source_name: source_name.to_string(),
                bytes: bytes.len(),
            });
        }
        let derive = |context: &str| blake3::derive_key(context, bytes);
        let id = blake3::hash(bytes).to_hex()[..16].to_string();
        Ok(Self {
            id,
            pseudonym: derive("fhirlake 2026 pseudonym v1"),
            identifier: derive("fhirlake 2026 identifier v1"),
            date_shift: derive("fhirlake 2026 date shift v1"),
            perturb: derive("fhirlake 2026 perturb v1"),
            encrypt: derive("fhirlake 2026 encrypt v1"),
            encrypt_nonce: derive("fhirlake 2026 encrypt nonce v1"),
        })
    }

    /// A key from its text form: hex (64+ digits) or base64 (standard or URL-safe, padded or not).
    pub fn parse(text: &str, source_name: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = decode_key_text(text).ok_or_else(|| KeyError::Encoding {
            source_name: source_name.to_string(),
        })?;
        Self::from_bytes(&bytes, source_name)
    }

    /// The key in `FHIRLAKE_DEID_KEY`, if set.
    pub fn from_env() -> Result<Option<Self>, KeyError> {
        match std::env::var(KEY_ENV) {
            Ok(text) if !text.trim().is_empty() => Self::parse(&text, KEY_ENV).map(Some),
            _ => Ok(None),
        }
    }

    /// The key in a key file; refused if the file is readable by group or others.
    pub fn from_file(path: &Path) -> Result<Self, KeyError> {
        let name = path.display().to_string();
        let io = |source| KeyError::Io {
            path: name.clone(),
            source,
        };
        check_private(path)?;
        let text = std::fs::read_to_string(path).map_err(io)?;
        Self::parse(&text, &name)
    }

    /// Creates a new random key file (mode 0600) and returns the key. Fails if the file exists.
    pub fn create_file(path: &Path) -> Result<Self, KeyError> {
        use std::io::Write as _;
        let name = path.display().to_string();
        let io = |source| KeyError::Io {
            path: name.clone(),
            source,
        };
        let mut bytes = [0u8; 32];
        getrandom_bytes(&mut bytes).map_err(io)?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        let mut file = options.open(path).map_err(io)?;
        let text = hex_encode(&bytes);
        file.write_all(text.as_bytes()).map_err(io)?;
        file.write_all(b"\n").map_err(io)?;
        file.sync_all().map_err(io)?;
        Self::from_bytes(&bytes, &name)
    }

    /// The key id recorded in the lake: the first 16 hex characters of BLAKE3(key).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn pseudonym_key(&self) -> &[u8; 32] {
        &self.pseudonym
    }
    pub(crate) fn identifier_key(&self) -> &[u8; 32] {
        &self.identifier
    }
    pub(crate) fn date_shift_key(&self) -> &[u8; 32] {
        &self.date_shift
    }
    pub(crate) fn perturb_key(&self) -> &[u8; 32] {
        &self.perturb
    }
    pub(crate) fn encrypt_key(&self) -> &[u8; 32] {
        &self.encrypt
    }
    pub(crate) fn encrypt_nonce_key(&self) -> &[u8; 32] {
        &self.encrypt_nonce
    }
}

fn decode_key_text(text: &str) -> Option<Vec<u8>> {
    if text.len().is_multiple_of(2)
        && text.len() >= 2
        && text.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return hex_decode(text);
    }
    let engines = [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        &base64::engine::general_purpose::URL_SAFE,
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines.iter().find_map(|engine| engine.decode(text).ok())
}

fn hex_decode(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(unix)]
fn check_private(path: &Path) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.display().to_string(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path) -> Result<(), KeyError> {
    Ok(())
}

/// Random bytes from the OS. Reads `/dev/urandom` rather than pulling in a crate for one call.
fn getrandom_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX_KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn hex_and_base64_give_the_same_key() {
        let hex = DeidKey::parse(HEX_KEY, "test").unwrap();
        let bytes: Vec<u8> = (0u8..32).collect();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let b64 = DeidKey::parse(&b64, "test").unwrap();
        assert_eq!(hex.id(), b64.id());
        assert_eq!(hex.id().len(), 16);
        assert_eq!(hex.pseudonym_key(), b64.pseudonym_key());
        assert_ne!(hex.pseudonym_key(), hex.date_shift_key());
    }

    #[test]
    fn short_and_garbled_keys_are_refused_without_echoing_them() {
        let err = DeidKey::parse("abcd", "FHIRLAKE_DEID_KEY").unwrap_err();
        assert!(err.to_string().contains("at least 32"), "{err}");
        assert!(!err.to_string().contains("abcd"));
        let err = DeidKey::parse("not a key !!", "FHIRLAKE_DEID_KEY").unwrap_err();
        assert!(!err.to_string().contains("not a key"));
        assert!(!format!("{:?}", DeidKey::parse(HEX_KEY, "t").unwrap()).contains("0001"));
    }

    #[cfg(unix)]
    #[test]
    fn key_files_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/deid.key");
        let created = DeidKey::create_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(DeidKey::from_file(&path).unwrap().id(), created.id());
        assert!(
            DeidKey::create_file(&path).is_err(),
            "never overwrites a key"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = DeidKey::from_file(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
