//! SHA-256, from ring (already the TLS provider's crypto): file names of the store, log
//! fingerprints, the PKCE challenge, JWT thumbprints and ledger names.

/// The SHA-256 digest of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_fips_180_2_vector() {
        let hex: String = super::sha256(b"abc")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
