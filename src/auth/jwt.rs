//! The standalone server's authenticator: JSON Web Tokens, checked with `jsonwebtoken`.
//!
//! Keys ([`KeySet`]) come from `auth.jwt_secret` (HS256/384/512) and `auth.jwt_public_key`
//! (a PEM public key — RSA for RS*/PS*, EC for ES*, Ed25519 for EdDSA — or a JWKS file).
//! They live in [`JwtKeys`], an `ArcSwap` that SIGHUP replaces as a whole ([`Reloadable`]);
//! everything else (`jwt_leeway_secs`, audience, issuer, claim names) is read from the
//! configuration at each check.
//!
//! A token's key is chosen by its header: only keys of its algorithm's family are tried (so a
//! public key is never used as an HMAC secret: jsonwebtoken 9 does not check that itself);
//! with a `kid`, the key with that id (keys without an id are the fallback); without one,
//! each key of the family in turn until one verifies. `exp` and `sub` are required, `exp` and
//! `nbf` checked with the leeway.

use std::sync::Arc;

use arc_swap::ArcSwap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use super::{AuthReject, Authenticator, Fault, Identity, MAX_PATTERNS, MAX_TOKEN_LEN};
use crate::config::{Auth, AuthMode, Config};
use crate::reload::{Commit, Reloadable};

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Hmac,
    Rsa,
    Ec,
    Ed,
}

fn family(alg: Algorithm) -> Family {
    use Algorithm::*;
    match alg {
        HS256 | HS384 | HS512 => Family::Hmac,
        RS256 | RS384 | RS512 | PS256 | PS384 | PS512 => Family::Rsa,
        ES256 | ES384 => Family::Ec,
        EdDSA => Family::Ed,
    }
}

struct Key {
    kid: Option<String>,
    family: Family,
    key: DecodingKey,
}

/// The verification keys in force.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Reads the keys `auth` names. `Err` is `(setting, problem)`.
    pub(crate) fn load(auth: &Auth) -> Result<KeySet, (&'static str, String)> {
        let mut keys = Vec::new();
        if let Some(secret) = &auth.jwt_secret {
            keys.push(Key {
                kid: None,
                family: Family::Hmac,
                key: DecodingKey::from_secret(secret.as_bytes()),
            });
        }
        if let Some(path) = &auth.jwt_public_key {
            let setting = "auth.jwt_public_key";
            let text = std::fs::read(path)
                .map_err(|e| (setting, format!("cannot read {}: {e}", path.display())))?;
            let trimmed = text.trim_ascii_start();
            if trimmed.starts_with(b"{") {
                let set: JwkSet = serde_json::from_slice(trimmed).map_err(|e| {
                    (
                        setting,
                        format!("{} is not a JWKS file: {e}", path.display()),
                    )
                })?;
                for jwk in &set.keys {
                    let family = match &jwk.algorithm {
                        AlgorithmParameters::RSA(_) => Family::Rsa,
                        AlgorithmParameters::EllipticCurve(_) => Family::Ec,
                        AlgorithmParameters::OctetKeyPair(_) => Family::Ed,
                        AlgorithmParameters::OctetKey(_) => Family::Hmac,
                    };
                    let key = DecodingKey::from_jwk(jwk).map_err(|e| {
                        let kid = jwk.common.key_id.as_deref().unwrap_or("(no kid)");
                        (setting, format!("{}: key {kid}: {e}", path.display()))
                    })?;
                    keys.push(Key {
                        kid: jwk.common.key_id.clone(),
                        family,
                        key,
                    });
                }
                if set.keys.is_empty() {
                    return Err((setting, format!("{}: the JWKS has no keys", path.display())));
                }
            } else {
                let (family, key) = DecodingKey::from_rsa_pem(&text)
                    .map(|k| (Family::Rsa, k))
                    .or_else(|_| DecodingKey::from_ec_pem(&text).map(|k| (Family::Ec, k)))
                    .or_else(|_| DecodingKey::from_ed_pem(&text).map(|k| (Family::Ed, k)))
                    .map_err(|_| {
                        (
                            setting,
                            format!(
                                "{} holds no RSA, EC or Ed25519 public key in PEM \
                                 (-----BEGIN PUBLIC KEY-----) and is not a JWKS file",
                                path.display()
                            ),
                        )
                    })?;
                keys.push(Key {
                    kid: None,
                    family,
                    key,
                });
            }
        }
        if auth.mode != AuthMode::Off && keys.is_empty() {
            return Err((
                "auth.mode",
                "authentication is on but neither auth.jwt_secret nor auth.jwt_public_key \
                 is set (--jwt-secret / --jwt-public-key)"
                    .to_owned(),
            ));
        }
        Ok(KeySet { keys })
    }

    /// Checks `token` under `auth`'s rules and returns the identity it carries.
    pub(crate) fn verify(&self, token: &str, auth: &Auth) -> Result<Identity, Fault> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Fault::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| fault(e.kind()))?;
        let fam = family(header.alg);
        let of_family = || self.keys.iter().filter(move |k| k.family == fam);
        let by_kid: Vec<&Key> = match &header.kid {
            Some(kid) => {
                let named: Vec<&Key> = of_family()
                    .filter(|k| k.kid.as_deref() == Some(kid))
                    .collect();
                if named.is_empty() {
                    of_family().filter(|k| k.kid.is_none()).collect()
                } else {
                    named
                }
            }
            None => of_family().collect(),
        };
        if by_kid.is_empty() {
            return Err(Fault::UnknownKey);
        }
        let mut v = Validation::new(header.alg);
        v.leeway = auth.jwt_leeway_secs;
        v.validate_exp = true;
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &auth.jwt_audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &auth.jwt_issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        v.set_required_spec_claims(&required);
        let mut last = Fault::BadSignature;
        for key in by_kid {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &v) {
                Ok(data) => return identity(data.claims, auth),
                Err(e) => {
                    last = fault(e.kind());
                    if last != Fault::BadSignature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }
}

fn fault(kind: &ErrorKind) -> Fault {
    match kind {
        ErrorKind::ExpiredSignature => Fault::Expired,
        ErrorKind::ImmatureSignature => Fault::NotYetValid,
        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => Fault::BadSignature,
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidAudience
        | ErrorKind::InvalidIssuer
        | ErrorKind::InvalidSubject => Fault::InvalidClaims,
        // Bad base64 / JSON / structure / algorithm name, and key errors (a key that does
        // not fit the token).
        _ => Fault::Malformed,
    }
}

/// The identity in verified claims: `sub` is the user; the rooms and publish claims (names
/// configurable) are string lists; `broadcast` / `direct` booleans.
fn identity(mut claims: Map<String, Value>, auth: &Auth) -> Result<Identity, Fault> {
    let user = match claims.remove("sub") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 256 => s,
        _ => return Err(Fault::InvalidClaims),
    };
    let mut id = Identity::user(user);
    let list = |v: Value| -> Result<Vec<Box<str>>, Fault> {
        match v {
            Value::Array(items) if items.len() <= MAX_PATTERNS => items
                .into_iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.into_boxed_str()),
                    _ => Err(Fault::InvalidClaims),
                })
                .collect(),
            Value::String(s) => Ok(vec![s.into_boxed_str()]),
            _ => Err(Fault::InvalidClaims),
        }
    };
    if let Some(v) = claims.remove(&auth.jwt_rooms_claim) {
        id.grants.rooms = Some(list(v)?);
    }
    if let Some(v) = claims.remove(&auth.jwt_publish_claim) {
        id.grants.publish = Some(list(v)?);
    }
    for (name, slot) in [
        ("broadcast", &mut id.grants.broadcast),
        ("direct", &mut id.grants.direct),
    ] {
        match claims.remove(name) {
            None => {}
            Some(Value::Bool(b)) => *slot = Some(b),
            Some(_) => return Err(Fault::InvalidClaims),
        }
    }
    Ok(id)
}

/// The key set in force, replaced as a whole on reload.
pub(crate) struct JwtKeys {
    current: Arc<ArcSwap<KeySet>>,
}

impl JwtKeys {
    /// Loads the keys `config` names.
    pub(crate) fn load(config: &Config) -> Result<JwtKeys, (&'static str, String)> {
        Ok(JwtKeys {
            current: Arc::new(ArcSwap::from_pointee(KeySet::load(&config.auth)?)),
        })
    }

    /// Checks `token` with the keys in force.
    pub(crate) fn verify(&self, token: &str, auth: &Auth) -> Result<Identity, Fault> {
        self.current.load().verify(token, auth)
    }
}

impl Reloadable for JwtKeys {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn prepare(&self, new: &Config) -> Result<Commit, String> {
        let keys = KeySet::load(&new.auth).map_err(|(setting, problem)| {
            format!("{setting}: {problem} (the old keys stay in force)")
        })?;
        let current = self.current.clone();
        Ok(Box::new(move || current.store(Arc::new(keys))))
    }
}

/// The built-in authenticator over `keys`: a token must verify; no token (only in
/// `optional` mode) is an anonymous client. Settings are read from the shard's live
/// configuration at each call.
pub(crate) fn authenticator(keys: Arc<JwtKeys>) -> Authenticator {
    Arc::new(move |ctx, token| {
        let result = match token {
            None => Ok(Identity::anonymous()),
            Some(t) => keys
                .verify(&t, &ctx.hub.config().auth)
                .map_err(AuthReject::from),
        };
        Box::pin(std::future::ready(result))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn hs(claims: Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn auth() -> Auth {
        Auth {
            mode: AuthMode::Required,
            jwt_secret: Some(SECRET.to_owned()),
            ..Auth::default()
        }
    }

    #[test]
    fn hs256_claims_and_faults() {
        let a = auth();
        let keys = KeySet::load(&a).unwrap();
        let good = hs(
            json!({"sub":"alice","exp":now()+60,"rooms":["chat:*"],"publish":"chat:1","broadcast":false}),
            SECRET,
        );
        let id = keys.verify(&good, &a).unwrap();
        assert_eq!(id.user_id(), Some("alice"));
        assert_eq!(id.grants.rooms, Some(vec!["chat:*".into()]));
        assert_eq!(id.grants.publish, Some(vec!["chat:1".into()]));
        assert_eq!(id.grants.broadcast, Some(false));
        assert_eq!(id.grants.direct, None);
        let wrong = hs(
            json!({"sub":"a","exp":now()+60}),
            "another-secret-another-secret-xx",
        );
        assert_eq!(keys.verify(&wrong, &a).unwrap_err(), Fault::BadSignature);
        let expired = hs(json!({"sub":"a","exp":now()-120}), SECRET);
        assert_eq!(keys.verify(&expired, &a).unwrap_err(), Fault::Expired);
        // Within the leeway (30 s): still good.
        let just = hs(json!({"sub":"a","exp":now()-5}), SECRET);
        assert!(keys.verify(&just, &a).is_ok());
        let early = hs(json!({"sub":"a","exp":now()+600,"nbf":now()+300}), SECRET);
        assert_eq!(keys.verify(&early, &a).unwrap_err(), Fault::NotYetValid);
        let no_sub = hs(json!({"exp":now()+60}), SECRET);
        assert_eq!(keys.verify(&no_sub, &a).unwrap_err(), Fault::InvalidClaims);
        let bad_rooms = hs(json!({"sub":"a","exp":now()+60,"rooms":[1]}), SECRET);
        assert_eq!(
            keys.verify(&bad_rooms, &a).unwrap_err(),
            Fault::InvalidClaims
        );
        assert_eq!(keys.verify("not-a-jwt", &a).unwrap_err(), Fault::Malformed);
        // Audience and issuer, when configured, are required.
        let strict = Auth {
            jwt_audience: Some("shardcast".into()),
            jwt_issuer: Some("https://id.example".into()),
            ..auth()
        };
        assert_eq!(
            keys.verify(&good, &strict).unwrap_err(),
            Fault::InvalidClaims
        );
        let ok = hs(
            json!({"sub":"a","exp":now()+60,"aud":"shardcast","iss":"https://id.example"}),
            SECRET,
        );
        assert!(keys.verify(&ok, &strict).is_ok());
    }

    #[test]
    fn an_hmac_token_is_never_checked_with_a_public_key() {
        // Only a public key configured: an HS256 token has no key of its family.
        let dir = std::env::temp_dir().join(format!("shardcast-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let jwks = dir.join("keys.jwks");
        std::fs::write(
            &jwks,
            r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1",
                "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
                "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
        )
        .unwrap();
        let a = Auth {
            mode: AuthMode::Required,
            jwt_public_key: Some(jwks.clone()),
            ..Auth::default()
        };
        let keys = KeySet::load(&a).unwrap();
        let t = hs(json!({"sub":"a","exp":now()+60}), SECRET);
        assert_eq!(keys.verify(&t, &a).unwrap_err(), Fault::UnknownKey);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reload_swaps_keys_or_keeps_the_old_ones() {
        let c = Config {
            auth: auth(),
            ..Config::default()
        };
        let keys = JwtKeys::load(&c).unwrap();
        let old = hs(json!({"sub":"a","exp":now()+60}), SECRET);
        assert!(keys.verify(&old, &c.auth).is_ok());
        // A bad new config is refused, the old keys stay.
        let mut bad = c.clone();
        bad.auth.jwt_secret = None;
        bad.auth.jwt_public_key = Some("/nonexistent/key.pem".into());
        let e = keys.prepare(&bad).err().unwrap();
        assert!(e.contains("auth.jwt_public_key"), "{e}");
        assert!(keys.verify(&old, &c.auth).is_ok());
        // A good one replaces them on commit, not before.
        let mut new = c.clone();
        let other = "fedcba9876543210fedcba9876543210";
        new.auth.jwt_secret = Some(other.to_owned());
        let commit = keys.prepare(&new).unwrap();
        assert!(keys.verify(&old, &c.auth).is_ok());
        commit();
        assert_eq!(keys.verify(&old, &c.auth).unwrap_err(), Fault::BadSignature);
        let fresh = hs(json!({"sub":"a","exp":now()+60}), other);
        assert!(keys.verify(&fresh, &new.auth).is_ok());
    }

    #[test]
    fn on_without_keys_is_refused() {
        let a = Auth {
            mode: AuthMode::Optional,
            ..Auth::default()
        };
        assert_eq!(KeySet::load(&a).err().unwrap().0, "auth.mode");
        assert!(KeySet::load(&Auth::default()).is_ok());
    }
}
