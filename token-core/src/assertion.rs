//! `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect Core §9): the client
//! proves who it is with a short-lived JWT signed by its private key instead of a shared secret.
//!
//! Keys are PEM files: PKCS#8 (`BEGIN PRIVATE KEY`) with an EC P-256 or RSA (≥ 2048 bit) key,
//! SEC1 (`BEGIN EC PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`). EC keys sign ES256, RSA keys
//! RS256. Encrypted keys are refused (the file's permissions protect it, as for a secret file).
//! Signing uses `ring`, which rustls already brings in: no new dependency.
//!
//! The assertion: header `{"alg","typ":"JWT","kid"}` with `kid` = the RFC 7638 thumbprint of the
//! public key (register the key under that kid, or without one); claims `iss` = `sub` = client id,
//! `aud` = the token endpoint URL, `jti` random, `iat`, `exp` = `iat` + 60 s.

use crate::fsutil::{self, Policy};
use crate::secret::Secret;
use crate::{Error, Result};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The `client_assertion_type` of RFC 7523.
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Lifetime of one assertion.
pub const ASSERTION_LIFETIME_SECS: i64 = 60;

/// Largest key file we read.
const MAX_KEY_BYTES: u64 = 64 * 1024;

enum Kind {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// A loaded private key that signs client assertions.
pub struct SigningKey {
    kind: Kind,
    kid: String,
    path: PathBuf,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg())
            .field("kid", &self.kid)
            .field("path", &self.path)
            .finish()
    }
}

fn key_error(path: &Path, msg: impl Into<String>) -> Error {
    Error::config(path, "client_secret (private_key_jwt)", msg)
}

/// One DER TLV.
fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .iter()
            .copied()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

/// Wraps a SEC1 `ECPrivateKey` (P-256) into PKCS#8, which is what ring reads.
fn sec1_to_pkcs8(sec1: &[u8]) -> Zeroizing<Vec<u8>> {
    // id-ecPublicKey 1.2.840.10045.2.1, prime256v1 1.2.840.10045.3.1.7
    const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let mut alg = der(0x06, EC_PUBLIC_KEY);
    alg.extend(der(0x06, P256));
    let mut body = der(0x02, &[0]);
    body.extend(der(0x30, &alg));
    body.extend(der(0x04, sec1));
    Zeroizing::new(der(0x30, &body))
}

/// The first PEM block of `text`: (label, DER).
fn pem_block(text: &str) -> Option<(String, Zeroizing<Vec<u8>>)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_owned();
    let body_and_end = &rest[label_end + 5..];
    let end = body_and_end.find(&format!("-----END {label}-----"))?;
    let b64: Zeroizing<String> = Zeroizing::new(
        body_and_end[..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    );
    let bytes = STANDARD.decode(b64.as_bytes()).ok()?;
    Some((label, Zeroizing::new(bytes)))
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    /// Loads a PEM key file: private to the effective user (0600, theirs), as secret files are.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fsutil::read_file_following(path, Policy::PRIVATE, MAX_KEY_BYTES)?.ok_or_else(
            || {
                key_error(
                    path,
                    format!("the key file {} does not exist", path.display()),
                )
            },
        )?;
        let bytes = Zeroizing::new(bytes);
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| key_error(path, "the key file is not PEM text"))?;
        Self::from_pem(text, path)
    }

    /// Parses a PEM private key; `path` is for messages.
    pub fn from_pem(text: &str, path: &Path) -> Result<Self> {
        let (label, der_bytes) = pem_block(text).ok_or_else(|| {
            key_error(path, "no PEM block (-----BEGIN ... -----) in the key file")
        })?;
        let rng = SystemRandom::new();
        let ec = |pkcs8: &[u8]| {
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
        };
        let kind = match label.as_str() {
            "PRIVATE KEY" => match ec(&der_bytes) {
                Ok(k) => Kind::Es256(k),
                Err(_) => Kind::Rs256(RsaKeyPair::from_pkcs8(&der_bytes).map_err(|e| {
                    key_error(path, format!("not an EC P-256 or RSA (2048 bit or more) PKCS#8 key ({e})"))
                })?),
            },
            "EC PRIVATE KEY" => Kind::Es256(ec(&sec1_to_pkcs8(&der_bytes)).map_err(|e| {
                key_error(path, format!("not an EC P-256 key with its public part ({e}); convert with `openssl pkcs8 -topk8 -nocrypt`"))
            })?),
            "RSA PRIVATE KEY" => Kind::Rs256(RsaKeyPair::from_der(&der_bytes).map_err(|e| {
                key_error(path, format!("not a usable RSA key, 2048 bit or more ({e})"))
            })?),
            "ENCRYPTED PRIVATE KEY" => {
                return Err(key_error(
                    path,
                    "the key is encrypted; store it unencrypted with mode 0600 \
                     (`openssl pkcs8 -topk8 -nocrypt -in KEY -out KEY.pem`)",
                ));
            }
            other => {
                return Err(key_error(
                    path,
                    format!("a '{other}' PEM block is not a private key"),
                ));
            }
        };
        let kid = thumbprint(&jwk_members(&kind));
        Ok(SigningKey {
            kind,
            kid,
            path: path.to_owned(),
        })
    }

    /// `ES256` or `RS256`.
    pub fn alg(&self) -> &'static str {
        match self.kind {
            Kind::Es256(_) => "ES256",
            Kind::Rs256(_) => "RS256",
        }
    }

    /// The key id: the RFC 7638 JWK thumbprint of the public key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (to register at the IdP): `qlam-auth` never prints the private part.
    pub fn public_jwk(&self) -> serde_json::Value {
        let mut v = serde_json::Map::new();
        for (k, val) in jwk_members(&self.kind) {
            v.insert(k.to_owned(), serde_json::Value::String(val));
        }
        v.insert("kid".into(), self.kid.clone().into());
        v.insert("alg".into(), self.alg().into());
        v.insert("use".into(), "sig".into());
        serde_json::Value::Object(v)
    }

    /// A signed client assertion for `client_id` at `audience` (the token endpoint), issued at
    /// `now` (Unix seconds).
    pub fn assertion(&self, client_id: &str, audience: &str, now: i64) -> Result<Secret> {
        let header = serde_json::json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid});
        let claims = serde_json::json!({
            "iss": client_id,
            "sub": client_id,
            "aud": audience,
            "jti": format!("{}{}", fsutil::random_suffix(), fsutil::random_suffix()),
            "iat": now,
            "nbf": now - 5,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let rng = SystemRandom::new();
        let fail = |e: ring::error::Unspecified| {
            key_error(
                &self.path,
                format!("signing the client assertion failed ({e})"),
            )
        };
        let sig = match &self.kind {
            Kind::Es256(k) => k
                .sign(&rng, input.as_bytes())
                .map_err(fail)?
                .as_ref()
                .to_vec(),
            Kind::Rs256(k) => {
                let mut sig = vec![0u8; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .map_err(fail)?;
                sig
            }
        };
        Ok(Secret::new(format!("{input}.{}", b64(&sig))))
    }
}

/// The required JWK members of the public key, in RFC 7638 (lexicographic) order.
fn jwk_members(kind: &Kind) -> Vec<(&'static str, String)> {
    match kind {
        Kind::Es256(k) => {
            // Uncompressed point: 0x04 || x (32) || y (32).
            let p = k.public_key().as_ref();
            vec![
                ("crv", "P-256".to_owned()),
                ("kty", "EC".to_owned()),
                ("x", b64(&p[1..33])),
                ("y", b64(&p[33..65])),
            ]
        }
        Kind::Rs256(k) => {
            let c = signature::RsaPublicKeyComponents::<Vec<u8>>::from(k.public());
            vec![
                ("e", b64(&c.e)),
                ("kty", "RSA".to_owned()),
                ("n", b64(&c.n)),
            ]
        }
    }
}

/// RFC 7638: base64url(SHA-256(canonical JSON of the required members)).
fn thumbprint(members: &[(&str, String)]) -> String {
    let body: Vec<String> = members
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect();
    b64(&crate::digest::sha256(
        format!("{{{}}}", body.join(",")).as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests
    use super::*;

    /// A fresh P-256 key (PKCS#8), test only.
    fn generated_pkcs8() -> Vec<u8> {
        EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap()
        .as_ref()
        .to_vec()
    }

    fn pem(label: &str, der: &[u8]) -> String {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            STANDARD.encode(der)
        )
    }

    #[test]
    fn es256_assertion_verifies_and_carries_the_claims() {
        let key =
            SigningKey::from_pem(&pem("PRIVATE KEY", &generated_pkcs8()), Path::new("k")).unwrap();
        assert_eq!(key.alg(), "ES256");
        let jwt = key
            .assertion("svc", "https://idp/token", 1_800_000_000)
            .unwrap();
        let parts: Vec<&str> = jwt.expose().split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims = crate::jwt::unverified_claims(jwt.expose()).unwrap();
        assert_eq!(claims["iss"], "svc");
        assert_eq!(claims["sub"], "svc");
        assert_eq!(claims["aud"], "https://idp/token");
        assert_eq!(claims["exp"], 1_800_000_060);
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header["kid"], key.kid());
        let jwk = key.public_jwk();
        let mut point = vec![4u8];
        point.extend(URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap());
        point.extend(URL_SAFE_NO_PAD.decode(jwk["y"].as_str().unwrap()).unwrap());
        let public = signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point);
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        public
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let t = thumbprint(&[("e", "AQAB".into()), ("kty", "RSA".into()), ("n", n.into())]);
        assert_eq!(t, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn sec1_keys_are_wrapped_and_bad_keys_explained() {
        // Unwrap our PKCS#8 to its SEC1 body and back: the ECPrivateKey is the last OCTET STRING.
        let p8 = generated_pkcs8();
        let key = SigningKey::from_pem(&pem("PRIVATE KEY", &p8), Path::new("k")).unwrap();
        // PKCS#8 v1: SEQ{INT 0, SEQ{2 OIDs}, OCTET STRING{sec1}}: take the OCTET STRING.
        fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
            let (len, hdr) = if b[1] < 0x80 {
                (usize::from(b[1]), 2)
            } else {
                let n = usize::from(b[1] & 0x7f);
                (
                    b[2..2 + n]
                        .iter()
                        .fold(0usize, |a, x| a << 8 | usize::from(*x)),
                    2 + n,
                )
            };
            (b[0], &b[hdr..hdr + len], &b[hdr + len..])
        }
        let (_, body, _) = tlv(&p8);
        let (_, _, rest) = tlv(body);
        let (_, _, rest) = tlv(rest);
        let (tag, sec1, _) = tlv(rest);
        assert_eq!(tag, 0x04);
        let again = SigningKey::from_pem(&pem("EC PRIVATE KEY", sec1), Path::new("k")).unwrap();
        assert_eq!(again.kid(), key.kid());
        let e = SigningKey::from_pem(&pem("ENCRYPTED PRIVATE KEY", b"x"), Path::new("/k.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("encrypted") && e.contains("/k.pem"), "{e}");
        let e = SigningKey::from_pem("nothing", Path::new("k"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no PEM block"), "{e}");
    }
}
