//! Authentication: a credential (header) becomes a [`Principal`] with a name prefix and rights.
//!
//! Today there are two principals: the client secret's (every name, client rights) and the
//! admin secret's (every name, client and admin rights). Per-prefix tenant keys are one more
//! entry in [`Authenticator`], not a new code path. Secrets are compared in constant time.

use axum::http::{header, HeaderMap};
use subtle::ConstantTimeEq;

use crate::config::Secret;
use crate::error::ApiError;

/// What an authenticated caller may do.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Rights {
    /// Locks, semaphores, sessions.
    pub client: bool,
    /// `/v1/admin/*`.
    pub admin: bool,
}

/// Who is calling: the names they may touch (those starting with `prefix`) and their rights.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Principal {
    pub label: &'static str,
    pub prefix: String,
    pub rights: Rights,
}

impl Principal {
    /// Refuses a name outside the principal's prefix with `forbidden`.
    pub fn check_name(&self, name: &str) -> Result<(), ApiError> {
        if name.starts_with(&self.prefix) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this credential may only use names starting with {:?}",
                self.prefix
            )))
        }
    }
}

/// The configured credentials.
#[derive(Debug)]
pub struct Authenticator {
    client: Option<Secret>,
    admin: Option<Secret>,
}

impl Authenticator {
    pub fn new(client: Option<Secret>, admin: Option<Secret>) -> Authenticator {
        Authenticator { client, admin }
    }

    pub fn client_auth_enabled(&self) -> bool {
        self.client.is_some()
    }

    pub fn admin_enabled(&self) -> bool {
        self.admin.is_some()
    }

    /// The principal for a client route (locks, semaphores, sessions). With no client secret
    /// configured (loopback only), everyone gets the all-names client principal.
    pub fn client(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let presented = presented_secret(headers)?;
        if let Some(presented) = presented {
            if matches_secret(self.admin.as_ref(), presented) {
                return Ok(admin_principal());
            }
            if matches_secret(self.client.as_ref(), presented) {
                return Ok(client_principal());
            }
        }
        match (&self.client, presented) {
            (None, _) => Ok(client_principal()),
            (Some(_), None) => Err(ApiError::Unauthorized("missing secret".into())),
            (Some(_), Some(_)) => Err(ApiError::Unauthorized("wrong secret".into())),
        }
    }

    /// Whether `presented` (an HTTP Basic password, RDLM) is the admin secret. Constant time.
    pub fn is_admin_secret(&self, presented: &[u8]) -> bool {
        matches_secret(self.admin.as_ref(), presented)
    }

    /// Whether `presented` (an HTTP Basic password, RDLM) is the client secret. Constant time.
    pub fn is_client_secret(&self, presented: &[u8]) -> bool {
        matches_secret(self.client.as_ref(), presented)
    }

    /// The principal for an admin route: 403 without an admin secret configured or with the
    /// client secret; 401 when missing or wrong.
    pub fn admin(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if self.admin.is_none() {
            return Err(ApiError::Forbidden(
                "admin routes are disabled: no admin secret is configured".into(),
            ));
        }
        let Some(presented) = presented_secret(headers)? else {
            return Err(ApiError::Unauthorized("missing admin secret".into()));
        };
        if matches_secret(self.admin.as_ref(), presented) {
            return Ok(admin_principal());
        }
        if matches_secret(self.client.as_ref(), presented) {
            return Err(ApiError::Forbidden("the client secret has no admin rights".into()));
        }
        Err(ApiError::Unauthorized("wrong admin secret".into()))
    }
}

fn client_principal() -> Principal {
    Principal {
        label: "client",
        prefix: String::new(),
        rights: Rights { client: true, admin: false },
    }
}

fn admin_principal() -> Principal {
    Principal {
        label: "admin",
        prefix: String::new(),
        rights: Rights { client: true, admin: true },
    }
}

/// The secret from `Authorization: Bearer <s>` or `X-LOCKSERVER-SECRET: <s>`.
fn presented_secret(headers: &HeaderMap) -> Result<Option<&[u8]>, ApiError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let bytes = value.as_bytes();
        let scheme_len = "bearer ".len();
        let is_bearer =
            bytes.len() > scheme_len && bytes[..scheme_len].eq_ignore_ascii_case(b"bearer ");
        if !is_bearer {
            return Err(ApiError::Unauthorized("Authorization must be `Bearer <secret>`".into()));
        }
        return Ok(Some(trim_ascii(&bytes[scheme_len..])));
    }
    Ok(headers.get("x-lockserver-secret").map(|value| trim_ascii(value.as_bytes())))
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Constant time in the content of the secret (only its length can show).
fn matches_secret(configured: Option<&Secret>, presented: &[u8]) -> bool {
    configured.is_some_and(|secret| bool::from(secret.expose().as_bytes().ct_eq(presented)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(name: &'static str, value: &str) -> HeaderMap {
        let mut map = HeaderMap::new();
        map.insert(name, HeaderValue::from_str(value).unwrap());
        map
    }

    fn auth() -> Authenticator {
        Authenticator::new(Some(Secret::new("client-s")), Some(Secret::new("admin-s")))
    }

    #[test]
    fn client_routes_take_either_header_and_refuse_missing_or_wrong() {
        let auth = auth();
        assert_eq!(
            auth.client(&headers("authorization", "Bearer client-s")).unwrap().label,
            "client"
        );
        assert_eq!(
            auth.client(&headers("x-lockserver-secret", "client-s")).unwrap().label,
            "client"
        );
        assert_eq!(auth.client(&headers("x-lockserver-secret", "admin-s")).unwrap().label, "admin");
        assert!(matches!(auth.client(&HeaderMap::new()), Err(ApiError::Unauthorized(_))));
        assert!(matches!(
            auth.client(&headers("authorization", "Bearer nope")),
            Err(ApiError::Unauthorized(_))
        ));
        assert!(matches!(
            auth.client(&headers("authorization", "Basic client-s")),
            Err(ApiError::Unauthorized(_))
        ));
    }

    #[test]
    fn admin_routes_distinguish_401_and_403() {
        let auth = auth();
        assert!(auth.admin(&headers("authorization", "Bearer admin-s")).unwrap().rights.admin);
        assert!(matches!(
            auth.admin(&headers("authorization", "Bearer client-s")),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(auth.admin(&HeaderMap::new()), Err(ApiError::Unauthorized(_))));
        let no_admin = Authenticator::new(Some(Secret::new("client-s")), None);
        assert!(matches!(
            no_admin.admin(&headers("authorization", "Bearer client-s")),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[test]
    fn without_a_client_secret_everyone_is_the_all_names_client() {
        let open = Authenticator::new(None, None);
        let principal = open.client(&HeaderMap::new()).unwrap();
        assert_eq!(principal.prefix, "");
        assert!(principal.rights.client && !principal.rights.admin);
        assert!(principal.check_name("anything").is_ok());
        let tenant = Principal { label: "t", prefix: "team-a/".into(), rights: principal.rights };
        assert!(tenant.check_name("team-a/db").is_ok());
        assert!(matches!(tenant.check_name("team-b/db"), Err(ApiError::Forbidden(_))));
    }
}
