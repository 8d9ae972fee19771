//! Users, passwords and bearer tokens of the Flight SQL server.
//!
//! Users live in a TOML file (`[[users]] name, role, password_hash`); passwords are stored as
//! argon2id PHC strings only. A successful login issues a token `<id>.<secret>`: the id (not
//! secret) finds the session, the 256-bit secret is compared in constant time, and the token
//! expires after a fixed lifetime. Each session keeps its caller (user, role, options) and the
//! prepared statements it made, so statements cannot be used from another session.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use datafusion::common::ScalarValue;
use subtle::ConstantTimeEq;

use crate::service::{Caller, QueryOptions, Role};
use crate::{Error, Result};

/// One user of the server.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UserEntry {
    /// Login name.
    pub name: String,
    /// What the user may read.
    pub role: Role,
    /// argon2 PHC string (`$argon2id$v=19$...`).
    pub password_hash: String,
}

/// The server's user file.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UserFile {
    /// The users, in file order.
    #[serde(default)]
    pub users: Vec<UserEntry>,
}

impl UserFile {
    /// Reads a user file; a missing file is an error naming it.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Server(format!("reading user file {}: {e}", path.display())))?;
        let file: UserFile = toml::from_str(&text)
            .map_err(|e| Error::Server(format!("user file {}: {e}", path.display())))?;
        for user in &file.users {
            PasswordHash::new(&user.password_hash).map_err(|_| {
                Error::Server(format!(
                    "user file {}: user `{}` has no valid argon2 password_hash",
                    path.display(),
                    user.name
                ))
            })?;
        }
        Ok(file)
    }

    /// Reads the file if it exists, else an empty one.
    pub fn load_or_default(path: &Path) -> Result<Self> {
        if path.exists() {
            Self::load(path)
        } else {
            Ok(Self::default())
        }
    }

    /// Adds the user or replaces its role and password.
    pub fn upsert(&mut self, name: &str, role: Role, password: &str) -> Result<()> {
        let password_hash = hash_password(password)?;
        match self.users.iter_mut().find(|u| u.name == name) {
            Some(user) => {
                user.role = role;
                user.password_hash = password_hash;
            }
            None => self.users.push(UserEntry {
                name: name.to_string(),
                role,
                password_hash,
            }),
        }
        Ok(())
    }

    /// Writes the file (owner-only permissions on Unix: it holds password hashes).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text =
            toml::to_string(self).map_err(|e| Error::Server(format!("encoding user file: {e}")))?;
        let tmp = path.with_extension("toml.tmp");
        std::fs::write(&tmp, text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(())
    }

    /// The user's role when `password` is right; `None` otherwise. Takes the same time whether
    /// or not the user exists (an unknown user is checked against a dummy hash).
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let user = self.users.iter().find(|u| u.name == name);
        let hash = match user {
            Some(user) => user.password_hash.as_str(),
            None => DUMMY.get_or_init(|| hash_password("not a password").unwrap_or_default()),
        };
        let ok = verify_password(hash, password);
        match user {
            Some(user) if ok => Some(user.role),
            _ => None,
        }
    }
}

/// argon2id hash (default parameters, random 16-byte salt) as a PHC string.
pub fn hash_password(password: &str) -> Result<String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| Error::Server(format!("no system randomness for a salt: {e}")))?;
    let salt =
        SaltString::encode_b64(&salt).map_err(|e| Error::Server(format!("encoding salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Server(format!("hashing password: {e}")))
}

/// Whether `password` matches the PHC string `hash` (argon2 compares in constant time).
pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// A prepared statement of one session.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// SQL with positional `$n` placeholders.
    pub sql: String,
    /// Bound parameter values (from DoPut), if any.
    pub params: Option<Vec<ScalarValue>>,
}

/// One logged-in session.
#[derive(Debug)]
struct Session {
    secret: [u8; 32],
    caller: Caller,
    expires: Instant,
    prepared: HashMap<String, Prepared>,
}

/// Why a token was refused (messages never echo the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// Unknown, malformed, revoked or wrong token.
    Invalid,
    /// The token's lifetime is over.
    Expired,
}

/// The live sessions, by token id.
#[derive(Debug)]
pub struct Sessions {
    ttl: Duration,
    sessions: Mutex<HashMap<String, Session>>,
}

fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Server(format!("no system randomness for a token: {e}")))?;
    Ok(bytes)
}

/// A random identifier (hex) for sessions and prepared statements.
pub fn random_id() -> Result<String> {
    Ok(random_bytes::<16>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

impl Sessions {
    /// Sessions whose tokens live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock cannot leave the map half-updated (single inserts and
        // removes), so a poisoned lock is still usable.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session for `user` and returns its bearer token.
    pub fn issue(&self, user: &str, role: Role) -> Result<String> {
        let id = random_id()?;
        let secret = random_bytes::<32>()?;
        let token = format!(
            "{id}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let now = Instant::now();
        let mut sessions = self.lock();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            id,
            Session {
                secret,
                caller: Caller {
                    user: user.to_string(),
                    role,
                    options: QueryOptions::default(),
                },
                expires: now + self.ttl,
                prepared: HashMap::new(),
            },
        );
        Ok(token)
    }

    /// The session id and caller of a bearer token.
    pub fn authenticate(&self, token: &str) -> Result<(String, Caller), TokenError> {
        let (id, secret) = token.split_once('.').ok_or(TokenError::Invalid)?;
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(secret)
            .map_err(|_| TokenError::Invalid)?;
        let mut sessions = self.lock();
        let session = sessions.get(id).ok_or(TokenError::Invalid)?;
        if !bool::from(session.secret.as_slice().ct_eq(secret.as_slice())) {
            return Err(TokenError::Invalid);
        }
        if session.expires <= Instant::now() {
            sessions.remove(id);
            return Err(TokenError::Expired);
        }
        Ok((id.to_string(), session.caller.clone()))
    }

    /// Replaces the session's options.
    pub fn set_options(&self, id: &str, options: QueryOptions) {
        if let Some(session) = self.lock().get_mut(id) {
            session.caller.options = options;
        }
    }

    /// Ends a session (its token and prepared statements stop working).
    pub fn close(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Stores a prepared statement in the session and returns its handle.
    pub fn add_prepared(&self, id: &str, prepared: Prepared) -> Result<String> {
        let handle = random_id()?;
        let mut sessions = self.lock();
        let session = sessions
            .get_mut(id)
            .ok_or_else(|| Error::Server("session closed".into()))?;
        session.prepared.insert(handle.clone(), prepared);
        Ok(handle)
    }

    /// A prepared statement of this session.
    pub fn prepared(&self, id: &str, handle: &str) -> Option<Prepared> {
        self.lock().get(id)?.prepared.get(handle).cloned()
    }

    /// Binds parameters to a prepared statement of this session; `false` if there is none.
    pub fn bind(&self, id: &str, handle: &str, params: Vec<ScalarValue>) -> bool {
        let mut sessions = self.lock();
        match sessions
            .get_mut(id)
            .and_then(|s| s.prepared.get_mut(handle))
        {
            Some(prepared) => {
                prepared.params = Some(params);
                true
            }
            None => false,
        }
    }

    /// Removes a prepared statement of this session; `false` if there is none.
    pub fn remove_prepared(&self, id: &str, handle: &str) -> bool {
        self.lock()
            .get_mut(id)
            .is_some_and(|s| s.prepared.remove(handle).is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let mut file = UserFile::default();
        file.upsert("ana", Role::Analyst, "s3cret").unwrap();
        assert!(file.users[0].password_hash.starts_with("$argon2id$"));
        assert_eq!(file.verify("ana", "s3cret"), Some(Role::Analyst));
        assert_eq!(file.verify("ana", "wrong"), None);
        assert_eq!(file.verify("bob", "s3cret"), None);
    }

    #[test]
    fn tokens_are_bound_to_their_session_and_expire() {
        let sessions = Sessions::new(Duration::from_millis(50));
        let token = sessions.issue("ana", Role::Analyst).unwrap();
        let (id, caller) = sessions.authenticate(&token).unwrap();
        assert_eq!(caller.user, "ana");
        let forged = format!("{id}.{}", "A".repeat(43));
        assert_eq!(sessions.authenticate(&forged), Err(TokenError::Invalid));
        assert_eq!(sessions.authenticate("garbage"), Err(TokenError::Invalid));
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(sessions.authenticate(&token), Err(TokenError::Expired));
    }

    #[test]
    fn prepared_statements_belong_to_their_session() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (a, _) = sessions
            .authenticate(&sessions.issue("a", Role::Analyst).unwrap())
            .unwrap();
        let (b, _) = sessions
            .authenticate(&sessions.issue("b", Role::Analyst).unwrap())
            .unwrap();
        let handle = sessions
            .add_prepared(
                &a,
                Prepared {
                    sql: "SELECT 1".into(),
                    params: None,
                },
            )
            .unwrap();
        assert!(sessions.prepared(&a, &handle).is_some());
        assert!(sessions.prepared(&b, &handle).is_none());
        assert!(!sessions.remove_prepared(&b, &handle));
        assert!(sessions.remove_prepared(&a, &handle));
    }
}
