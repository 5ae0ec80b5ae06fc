//! Who the user is. The backend asks a [`UserAuth`] for the user handle of each request; an
//! origin plugs its own authentication in here. [`TokenAuth`] is the simple one: tokens listed
//! in rp.toml, sent as a bearer token or as the `localcert_session` cookie.

use std::collections::HashMap;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use sha2::{Digest, Sha256};

use crate::config::UserToken;

/// The session cookie [`TokenAuth`] reads.
pub const SESSION_COOKIE: &str = "localcert_session";

/// Answers "who is the user" for a request.
pub trait UserAuth: Send + Sync + std::fmt::Debug {
    /// The user handle (1 to 64 bytes) of the request's session; `None` if it has none.
    fn user_handle(&self, headers: &HeaderMap) -> Option<Vec<u8>>;
}

/// Bearer tokens or session cookies mapped to user handles.
pub struct TokenAuth {
    // Keyed by SHA-256 of the token: a lookup does not compare secrets byte by byte.
    users: HashMap<[u8; 32], Vec<u8>>,
}

impl std::fmt::Debug for TokenAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAuth")
            .field("users", &self.users.len())
            .finish()
    }
}

impl TokenAuth {
    /// The users of rp.toml.
    pub fn new(users: &[UserToken]) -> Self {
        let users = users
            .iter()
            .map(|u| (Sha256::digest(u.token.as_bytes()).into(), u.handle.clone()))
            .collect();
        Self { users }
    }

    fn lookup(&self, token: &str) -> Option<Vec<u8>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.users.get(&digest).cloned()
    }
}

impl UserAuth for TokenAuth {
    fn user_handle(&self, headers: &HeaderMap) -> Option<Vec<u8>> {
        let bearer = headers
            .get_all(AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "));
        let cookies = headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value);
        bearer
            .chain(cookies)
            .find_map(|token| self.lookup(token.trim()))
    }
}
