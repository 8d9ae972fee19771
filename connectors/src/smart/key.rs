//! The client's private key for SMART Backend Services, read from a JWKS file (a private JWK, as
//! bulk-data tools register) or a PEM file (PKCS#8, PKCS#1 RSA, or SEC1 EC), and the JWS it signs:
//! RS384 (RSASSA-PKCS1-v1_5 with SHA-384) or ES384 (ECDSA P-384, JOSE `r || s` form).
//!
//! The JWS compact serialization is written here (a few lines over the `rsa` / `p384` signers) rather
//! than pulling a JWT crate with a second crypto stack into the build.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::BigUint;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha384};

use crate::error::Error;

/// The JOSE algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Rs384,
    Es384,
}

impl Algorithm {
    /// `RS384` / `ES384`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Rs384 => "RS384",
            Algorithm::Es384 => "ES384",
        }
    }
}

enum Signing {
    Rsa(Box<rsa::pkcs1v15::SigningKey<Sha384>>),
    Ec(p384::ecdsa::SigningKey),
}

/// A private signing key with its `kid`.
pub struct ClientKey {
    kid: String,
    signing: Signing,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl ClientKey {
    /// Reads a key file: a JWKS (`{"keys": [...]}`) or a single JWK, or a PEM file. `kid` picks a key
    /// of a JWKS (default: the only private key) and names a PEM key (default: its RFC 7638 thumbprint).
    pub fn from_file(path: &Path, kid: Option<&str>) -> Result<Self, Error> {
        let location = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(&location, e))?;
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') {
            Self::from_jwks(&text, kid, &location)
        } else if trimmed.starts_with("-----BEGIN") {
            Self::from_pem(&text, kid, &location)
        } else {
            Err(key_error(
                &location,
                "not a JWKS / JWK (JSON) nor a PEM file",
            ))
        }
    }

    /// Reads a private key from a JWKS or JWK text.
    pub fn from_jwks(text: &str, kid: Option<&str>, location: &str) -> Result<Self, Error> {
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| key_error(location, format!("invalid JSON at line {}", e.line())))?;
        let keys: Vec<&Value> = match doc.get("keys").and_then(Value::as_array) {
            Some(keys) => keys.iter().collect(),
            None => vec![&doc],
        };
        let private: Vec<&Value> = keys
            .into_iter()
            .filter(|k| k.get("d").is_some())
            .filter(|k| kid.is_none_or(|kid| k.get("kid").and_then(Value::as_str) == Some(kid)))
            .filter(|k| {
                matches!(
                    (
                        k.get("kty").and_then(Value::as_str),
                        k.get("alg").and_then(Value::as_str)
                    ),
                    (Some("RSA"), None | Some("RS384")) | (Some("EC"), None | Some("ES384"))
                )
            })
            .collect();
        let jwk = match private.as_slice() {
            [one] => *one,
            [] => {
                return Err(key_error(
                    location,
                    match kid {
                        Some(kid) => format!("no private RS384/ES384 key with kid `{kid}`"),
                        None => "no private RS384/ES384 key (a JWK with `d`)".into(),
                    },
                ));
            }
            _ => {
                return Err(key_error(
                    location,
                    "several private keys: choose one with the key id option",
                ));
            }
        };
        let field = |name: &str| -> Result<Vec<u8>, Error> {
            let text = jwk
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| key_error(location, format!("JWK member `{name}` missing")))?;
            URL_SAFE_NO_PAD
                .decode(text.trim_end_matches('='))
                .map_err(|_| key_error(location, format!("JWK member `{name}` is not base64url")))
        };
        let signing = match jwk.get("kty").and_then(Value::as_str) {
            Some("EC") => {
                if jwk.get("crv").and_then(Value::as_str) != Some("P-384") {
                    return Err(key_error(
                        location,
                        "EC keys must be on curve P-384 (ES384)",
                    ));
                }
                let secret = p384::SecretKey::from_slice(&field("d")?)
                    .map_err(|_| key_error(location, "invalid P-384 private key"))?;
                Signing::Ec(p384::ecdsa::SigningKey::from(secret))
            }
            _ => {
                let big = |name: &str| field(name).map(|b| BigUint::from_bytes_be(&b));
                let key = rsa::RsaPrivateKey::from_components(
                    big("n")?,
                    big("e")?,
                    big("d")?,
                    vec![big("p")?, big("q")?],
                )
                .map_err(|e| key_error(location, format!("invalid RSA private key: {e}")))?;
                Signing::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
            }
        };
        let mut key = ClientKey {
            kid: String::new(),
            signing,
        };
        key.kid = match jwk.get("kid").and_then(Value::as_str) {
            Some(kid) => kid.to_string(),
            None => key.thumbprint(),
        };
        Ok(key)
    }

    /// Reads a private key from PEM text.
    pub fn from_pem(text: &str, kid: Option<&str>, location: &str) -> Result<Self, Error> {
        let signing = if text.contains("BEGIN RSA PRIVATE KEY") {
            let key = rsa::RsaPrivateKey::from_pkcs1_pem(text)
                .map_err(|e| key_error(location, format!("invalid RSA key: {e}")))?;
            Signing::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
        } else if text.contains("BEGIN EC PRIVATE KEY") {
            let key = p384::SecretKey::from_sec1_pem(text)
                .map_err(|_| key_error(location, "invalid EC key (ES384 needs curve P-384)"))?;
            Signing::Ec(p384::ecdsa::SigningKey::from(key))
        } else if let Ok(key) = rsa::RsaPrivateKey::from_pkcs8_pem(text) {
            Signing::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(key)))
        } else if let Ok(key) = p384::SecretKey::from_pkcs8_pem(text) {
            Signing::Ec(p384::ecdsa::SigningKey::from(key))
        } else {
            return Err(key_error(
                location,
                "not an RSA or P-384 EC private key in PEM (PKCS#8, PKCS#1 or SEC1)",
            ));
        };
        let mut key = ClientKey {
            kid: String::new(),
            signing,
        };
        key.kid = kid.map_or_else(|| key.thumbprint(), str::to_owned);
        Ok(key)
    }

    /// The key id put in the JWS header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// RS384 or ES384.
    pub fn algorithm(&self) -> Algorithm {
        match self.signing {
            Signing::Rsa(_) => Algorithm::Rs384,
            Signing::Ec(_) => Algorithm::Es384,
        }
    }

    /// The public key as a JWK (what the server registers), with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> Value {
        let mut jwk = self.public_members();
        jwk["kid"] = json!(self.kid);
        jwk["alg"] = json!(self.algorithm().as_str());
        jwk["use"] = json!("sig");
        jwk["key_ops"] = json!(["verify"]);
        jwk
    }

    /// The required public members only (RFC 7638 order).
    fn public_members(&self) -> Value {
        match &self.signing {
            Signing::Rsa(key) => {
                use rsa::traits::PublicKeyParts;
                let public = key.as_ref().as_ref().to_public_key();
                json!({
                    "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
                    "kty": "RSA",
                    "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
                })
            }
            Signing::Ec(key) => {
                let point = key.verifying_key().to_encoded_point(false);
                json!({
                    "crv": "P-384",
                    "kty": "EC",
                    "x": URL_SAFE_NO_PAD.encode(point.x().map(|x| x.to_vec()).unwrap_or_default()),
                    "y": URL_SAFE_NO_PAD.encode(point.y().map(|y| y.to_vec()).unwrap_or_default()),
                })
            }
        }
    }

    /// RFC 7638 JWK thumbprint (SHA-256, base64url): the default `kid`.
    pub fn thumbprint(&self) -> String {
        // serde_json's map is sorted, which is the member order RFC 7638 asks for.
        let canonical = self.public_members().to_string();
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }

    /// Signs `claims` as a compact JWS with this key's algorithm and `kid`.
    pub fn sign_jwt(&self, claims: &Value) -> Result<String, Error> {
        let header = json!({"alg": self.algorithm().as_str(), "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = match &self.signing {
            Signing::Rsa(key) => key
                .try_sign(input.as_bytes())
                .map_err(|e| key_error(&self.kid, format!("RS384 signing failed: {e}")))?
                .to_vec(),
            Signing::Ec(key) => {
                let signature: p384::ecdsa::Signature = key
                    .try_sign(input.as_bytes())
                    .map_err(|e| key_error(&self.kid, format!("ES384 signing failed: {e}")))?;
                signature.to_bytes().to_vec()
            }
        };
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

fn key_error(location: &str, reason: impl Into<String>) -> Error {
    Error::Auth {
        location: location.to_string(),
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::ecdsa::signature::Verifier;
    use p384::elliptic_curve::JwkEcKey;

    fn ec_jwks() -> String {
        let secret = p384::SecretKey::from_slice(&[7u8; 48]).unwrap();
        let mut jwk: Value = serde_json::from_str(&secret.to_jwk_string()).unwrap();
        jwk["kid"] = json!("k1");
        jwk["alg"] = json!("ES384");
        json!({"keys": [jwk]}).to_string()
    }

    #[test]
    fn es384_from_jwks_signs_verifiable_jwts() {
        let key = ClientKey::from_jwks(&ec_jwks(), None, "test").unwrap();
        assert_eq!((key.kid(), key.algorithm()), ("k1", Algorithm::Es384));
        let jwt = key.sign_jwt(&json!({"iss": "c"})).unwrap();
        let (input, sig) = jwt.rsplit_once('.').unwrap();
        let jwk = key.public_jwk();
        let members = json!({"kty": "EC", "crv": "P-384", "x": jwk["x"], "y": jwk["y"]});
        let public: JwkEcKey = serde_json::from_value(members).unwrap();
        let verifying =
            p384::ecdsa::VerifyingKey::from(p384::PublicKey::from_jwk(&public).unwrap());
        let sig =
            p384::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
        verifying.verify(input.as_bytes(), &sig).unwrap();
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jwt.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(header["alg"], "ES384");
        assert_eq!(header["kid"], "k1");
    }

    #[test]
    fn pem_keys_get_a_thumbprint_kid_and_bad_files_are_errors() {
        use p384::pkcs8::EncodePrivateKey;
        let secret = p384::SecretKey::from_slice(&[9u8; 48]).unwrap();
        let pem = secret.to_pkcs8_pem(Default::default()).unwrap();
        let key = ClientKey::from_pem(&pem, None, "test").unwrap();
        assert_eq!(key.algorithm(), Algorithm::Es384);
        assert_eq!(key.kid().len(), 43);
        assert!(
            ClientKey::from_pem(
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
                None,
                "t"
            )
            .is_err()
        );
        assert!(ClientKey::from_jwks(&ec_jwks(), Some("other"), "t").is_err());
    }
}
