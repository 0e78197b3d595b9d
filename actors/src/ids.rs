//! Identifiers: session and turn ids (UUIDv7, stable forever) and the scoped session key.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered (UUIDv7) id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The 16 raw bytes, used in store keys.
            pub fn as_bytes(&self) -> &[u8; 16] {
                self.0.as_bytes()
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// The application's id of a session. Provider-native ids never replace it.
    SessionId
);
uuid_id!(
    /// The id of one accepted user message.
    TurnId
);

/// The most bytes a session key may have.
pub const MAX_SESSION_KEY_BYTES: usize = 256;

/// A client-chosen session name within a scope: (owner, project, key).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScopedKey {
    /// Who the session belongs to; comes from authentication.
    pub owner: String,
    /// The working directory or label the session is about; `None` when not given.
    pub project: Option<String>,
    /// The client's name for the session, validated by [`validate_session_key`].
    pub key: String,
}

impl ScopedKey {
    /// The same key without a project: where a session created without one is found.
    pub fn without_project(&self) -> ScopedKey {
        ScopedKey {
            owner: self.owner.clone(),
            project: None,
            key: self.key.clone(),
        }
    }
}

/// Checks a session key: 1–256 bytes, no control characters.
pub fn validate_session_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("session key must not be empty".into());
    }
    if key.len() > MAX_SESSION_KEY_BYTES {
        return Err(format!(
            "session key is {} bytes; at most {MAX_SESSION_KEY_BYTES} are allowed",
            key.len()
        ));
    }
    if key.chars().any(char::is_control) {
        return Err("session key must not contain control characters".into());
    }
    Ok(())
}
