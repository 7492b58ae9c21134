//! Users and access tokens, in the same SQLite file as the documents.
//!
//! A token is 32 random bytes shown once (base64url, no padding) and stored only as its
//! SHA-256 hash. Looking a token up hashes it, finds the row by hash, and compares the
//! stored hash with the computed one in constant time. Each token belongs to one user and is
//! scoped to one room (or `*`), one role, and optionally an expiry.
//!
//! These tables are small and written only by the CLI, so they use their own connection
//! rather than the document writer thread; SQLite's WAL and busy timeout serialize writers.

use std::path::Path;
use std::sync::Mutex;

use base64::Engine as _;
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use tandem_core::Role;

use super::{StoreError, configure};

pub(crate) const AUTH_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users(
    name TEXT PRIMARY KEY, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS tokens(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    hash BLOB NOT NULL UNIQUE,
    user TEXT NOT NULL, room TEXT NOT NULL, role TEXT NOT NULL,
    created_ms INTEGER NOT NULL, expires_ms INTEGER,
    revoked INTEGER NOT NULL DEFAULT 0);
";

/// A user, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UserRow {
    /// Name.
    pub name: String,
    /// Milliseconds since the epoch.
    pub created_ms: u64,
    /// Tokens that are neither revoked nor expired.
    pub active_tokens: u64,
}

/// A token's metadata (never its secret).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenRow {
    /// Id, for `tandem token revoke`.
    pub id: u64,
    /// Owner.
    pub user: String,
    /// Room name or `*`.
    pub room: String,
    /// Role it grants.
    pub role: Role,
    /// Milliseconds since the epoch.
    pub created_ms: u64,
    /// Milliseconds since the epoch, if it expires.
    pub expires_ms: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The authenticated user.
    pub user: String,
    /// Their role in the room.
    pub role: Role,
}

/// Why a token was not accepted. The message is safe to show the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    /// No token given while users are configured.
    #[error("a token is required")]
    Missing,
    /// Malformed, unknown, tampered or revoked.
    #[error("invalid token")]
    Invalid,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
    /// Scoped to another room.
    #[error("token not valid for this room")]
    WrongRoom,
    /// The lookup itself failed.
    #[error("token check failed")]
    Internal,
}

/// The users and tokens of a data directory.
pub struct Auth {
    conn: Mutex<Connection>,
}

fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// User names: 1-64 characters of `A-Z a-z 0-9 . _ - @`.
pub fn valid_user_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

impl Auth {
    /// Open the users and tokens of the store in `dir` (creating the tables if needed).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let conn = Connection::open(dir.join(super::FILE_NAME))?;
        configure(&conn)?;
        conn.execute_batch(AUTH_SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn)
    }

    /// Whether any user exists (if not, the server runs in open development mode).
    pub fn has_users(&self) -> Result<bool, StoreError> {
        self.with(|c| {
            Ok(c.query_row("SELECT EXISTS(SELECT 1 FROM users)", [], |r| {
                r.get::<_, bool>(0)
            })?)
        })
    }

    /// Add a user.
    pub fn add_user(&self, name: &str) -> Result<(), StoreError> {
        if !valid_user_name(name) {
            return Err(StoreError::InvalidName(name.to_owned()));
        }
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO users(name, created_ms) VALUES (?1, ?2)",
                params![name, now_ms() as i64],
            )?;
            if n == 0 {
                return Err(StoreError::UserExists(name.to_owned()));
            }
            Ok(())
        })
    }

    /// Every user, by name.
    pub fn list_users(&self) -> Result<Vec<UserRow>, StoreError> {
        let now = now_ms() as i64;
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT u.name, u.created_ms,
                    (SELECT count(*) FROM tokens t WHERE t.user = u.name AND t.revoked = 0
                        AND (t.expires_ms IS NULL OR t.expires_ms > ?1))
                 FROM users u ORDER BY u.name",
            )?;
            let rows = stmt
                .query_map([now], |r| {
                    Ok(UserRow {
                        name: r.get(0)?,
                        created_ms: r.get::<_, i64>(1)? as u64,
                        active_tokens: r.get::<_, i64>(2)? as u64,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Create a token for `user` in `room` (or `*`) with `role`, valid for `ttl_ms` if given.
    /// Returns its metadata and the secret, which is not stored and cannot be shown again.
    pub fn create_token(
        &self,
        user: &str,
        room: &str,
        role: Role,
        ttl_ms: Option<u64>,
    ) -> Result<(TokenRow, String), StoreError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| StoreError::Random(e.to_string()))?;
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let created_ms = now_ms();
        let expires_ms = ttl_ms.map(|t| created_ms.saturating_add(t));
        self.with(|c| {
            let known: Option<String> = c
                .query_row("SELECT name FROM users WHERE name = ?1", [user], |r| {
                    r.get(0)
                })
                .optional()?;
            if known.is_none() {
                return Err(StoreError::UnknownUser(user.to_owned()));
            }
            c.execute(
                "INSERT INTO tokens(hash, user, room, role, created_ms, expires_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    hash(token.as_bytes()).as_slice(),
                    user,
                    room,
                    role.to_string(),
                    created_ms as i64,
                    expires_ms.map(|e| e as i64)
                ],
            )?;
            Ok(TokenRow {
                id: c.last_insert_rowid() as u64,
                user: user.to_owned(),
                room: room.to_owned(),
                role,
                created_ms,
                expires_ms,
                revoked: false,
            })
        })
        .map(|row| (row, token))
    }

    /// Tokens (metadata only), optionally of one user.
    pub fn list_tokens(&self, user: Option<&str>) -> Result<Vec<TokenRow>, StoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, user, room, role, created_ms, expires_ms, revoked FROM tokens
                 WHERE ?1 IS NULL OR user = ?1 ORDER BY id",
            )?;
            let rows = stmt
                .query_map(params![user], |r| {
                    let role: String = r.get(3)?;
                    Ok(TokenRow {
                        id: r.get::<_, i64>(0)? as u64,
                        user: r.get(1)?,
                        room: r.get(2)?,
                        role: role.parse().unwrap_or(Role::Viewer),
                        created_ms: r.get::<_, i64>(4)? as u64,
                        expires_ms: r.get::<_, Option<i64>>(5)?.map(|e| e as u64),
                        revoked: r.get(6)?,
                    })
                })?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
    }

    /// Revoke a token by id or by its secret. Returns whether one was revoked.
    pub fn revoke(&self, id_or_token: &str) -> Result<bool, StoreError> {
        self.with(|c| {
            let n = match id_or_token.parse::<i64>() {
                Ok(id) => c.execute(
                    "UPDATE tokens SET revoked = 1 WHERE id = ?1 AND revoked = 0",
                    [id],
                )?,
                Err(_) => c.execute(
                    "UPDATE tokens SET revoked = 1 WHERE hash = ?1 AND revoked = 0",
                    [hash(id_or_token.as_bytes()).as_slice()],
                )?,
            };
            Ok(n > 0)
        })
    }

    /// Check a token for `room`: who it speaks for, or why not.
    pub fn authenticate(&self, token: Option<&str>, room: &str) -> Result<Grant, AuthFailure> {
        self.identify(token)?.in_room(room)
    }

    /// Who a token speaks for, in which rooms and with which role (the HTTP API checks the
    /// room separately, after routing). Unknown, malformed and revoked tokens are one
    /// failure, [`AuthFailure::Invalid`], so a caller never learns which it was.
    pub fn identify(&self, token: Option<&str>) -> Result<TokenGrant, AuthFailure> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(AuthFailure::Missing);
        };
        if token.len() > 256 {
            return Err(AuthFailure::Invalid);
        }
        let want = hash(token.as_bytes());
        let row = self
            .with(|c| {
                Ok(c.query_row(
                    "SELECT t.hash, t.user, t.room, t.role, t.expires_ms, t.revoked
                     FROM tokens t JOIN users u ON u.name = t.user WHERE t.hash = ?1",
                    [want.as_slice()],
                    |r| {
                        Ok((
                            r.get::<_, Vec<u8>>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, String>(2)?,
                            r.get::<_, String>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                            r.get::<_, bool>(5)?,
                        ))
                    },
                )
                .optional()?)
            })
            .map_err(|e| {
                tracing::error!(error = %e, "token lookup failed");
                AuthFailure::Internal
            })?;
        let Some((stored, user, scope, role, expires_ms, revoked)) = row else {
            return Err(AuthFailure::Invalid);
        };
        if !constant_time_eq(&stored, &want) || revoked {
            return Err(AuthFailure::Invalid);
        }
        if expires_ms.is_some_and(|e| e <= now_ms() as i64) {
            return Err(AuthFailure::Expired);
        }
        let role = role.parse().map_err(|_| AuthFailure::Invalid)?;
        Ok(TokenGrant { user, scope, role })
    }
}

/// What a valid token grants: a user, the rooms it opens, a role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    /// The authenticated user.
    pub user: String,
    /// The one room the token opens, or `*` for every room.
    pub scope: String,
    /// The role it grants in those rooms.
    pub role: Role,
}

impl TokenGrant {
    /// Whether the token opens `room`.
    pub fn opens(&self, room: &str) -> bool {
        self.scope == "*" || self.scope == room
    }

    /// The user and role in `room`, or [`AuthFailure::WrongRoom`].
    pub fn in_room(self, room: &str) -> Result<Grant, AuthFailure> {
        if !self.opens(room) {
            return Err(AuthFailure::WrongRoom);
        }
        Ok(Grant {
            user: self.user,
            role: self.role,
        })
    }
}

impl AuthFailure {
    /// The reason class, for programs: `missing`, `invalid`, `expired`, `wrong_room`,
    /// `internal`. Unknown and revoked tokens are both `invalid`.
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Invalid => "invalid",
            AuthFailure::Expired => "expired",
            AuthFailure::WrongRoom => "wrong_room",
            AuthFailure::Internal => "internal",
        }
    }
}

/// Parse a duration like `90s`, `15m`, `12h`, `30d`, `2w` into milliseconds.
pub fn parse_ttl(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let unit_ms: u64 = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_scoped_hashed_and_revocable() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::open(dir.path()).unwrap();
        assert!(!auth.has_users().unwrap());
        auth.add_user("alice").unwrap();
        assert!(matches!(
            auth.add_user("alice"),
            Err(StoreError::UserExists(_))
        ));
        assert!(auth.has_users().unwrap());
        let (row, token) = auth
            .create_token("alice", "shot", Role::Editor, None)
            .unwrap();
        assert_eq!(token.len(), 43);
        let grant = auth.authenticate(Some(&token), "shot").unwrap();
        assert_eq!(grant.user, "alice");
        assert_eq!(grant.role, Role::Editor);
        assert_eq!(
            auth.authenticate(Some(&token), "other"),
            Err(AuthFailure::WrongRoom)
        );
        let mut tampered = token.clone().into_bytes();
        tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).unwrap();
        assert_eq!(
            auth.authenticate(Some(&tampered), "shot"),
            Err(AuthFailure::Invalid)
        );
        assert_eq!(auth.authenticate(None, "shot"), Err(AuthFailure::Missing));
        // Nothing stored reveals the secret.
        let conn = Connection::open(dir.path().join(super::super::FILE_NAME)).unwrap();
        let stored: Vec<u8> = conn
            .query_row("SELECT hash FROM tokens", [], |r| r.get(0))
            .unwrap();
        assert_eq!(stored, hash(token.as_bytes()));
        assert!(auth.revoke(&row.id.to_string()).unwrap());
        assert_eq!(
            auth.authenticate(Some(&token), "shot"),
            Err(AuthFailure::Invalid)
        );
        let (_, any) = auth
            .create_token("alice", "*", Role::Viewer, Some(0))
            .unwrap();
        assert_eq!(
            auth.authenticate(Some(&any), "shot"),
            Err(AuthFailure::Expired)
        );
        assert!(matches!(
            auth.create_token("bob", "*", Role::Viewer, None),
            Err(StoreError::UnknownUser(_))
        ));
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("30d"), Some(30 * 86_400_000));
        assert_eq!(parse_ttl("90s"), Some(90_000));
        assert_eq!(parse_ttl("d"), None);
        assert_eq!(parse_ttl("5y"), None);
        assert_eq!(parse_ttl("12"), None);
    }
}
