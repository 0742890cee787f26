//! A server's identity as people compare it: the SHA-256 of its public key, written as OpenSSH
//! writes host-key fingerprints (`SHA256:` and unpadded base64). It is computed from the public
//! key alone (the certificate's SubjectPublicKeyInfo), so a certificate renewed over the same key
//! keeps its fingerprint. This module imports nothing else of the crate.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

/// The SHA-256 of a public key (its DER SubjectPublicKeyInfo).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, spki_der);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        Fingerprint(bytes)
    }

    /// The fingerprint of the public key in a DER certificate; `None` if it cannot be parsed.
    pub fn of_cert(cert_der: &[u8]) -> Option<Fingerprint> {
        let der = rustls::pki_types::CertificateDer::from(cert_der);
        let cert = webpki::EndEntityCert::try_from(&der).ok()?;
        Some(Fingerprint::of_spki(&cert.subject_public_key_info()))
    }

    /// Parses `SHA256:<43 characters of unpadded base64>`.
    pub fn parse(s: &str) -> Option<Fingerprint> {
        let encoded = s.strip_prefix("SHA256:")?;
        let bytes = STANDARD_NO_PAD.decode(encoded).ok()?;
        Some(Fingerprint(bytes.try_into().ok()?))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SHA256:{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_as_openssh_does_and_parse_back() {
        let fp = Fingerprint::of_spki(b"not really a key");
        let shown = fp.to_string();
        assert!(shown.starts_with("SHA256:") && shown.len() == 7 + 43, "{shown}");
        assert_eq!(Fingerprint::parse(&shown), Some(fp));
        for bad in ["", "SHA256:", "sha256:abc", "MD5:aa", &shown[..shown.len() - 1], &format!("{shown}=")] {
            assert_eq!(Fingerprint::parse(bad), None, "{bad:?}");
        }
        // OpenSSH's own example: the SHA-256 of nothing.
        assert_eq!(Fingerprint::of_spki(b"").to_string(), "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU");
    }

    #[test]
    fn a_certificate_is_known_by_its_key() {
        let key = rcgen::KeyPair::generate().unwrap();
        let one = rcgen::CertificateParams::new(vec!["a".to_string()]).unwrap().self_signed(&key).unwrap();
        let two = rcgen::CertificateParams::new(vec!["b".to_string()]).unwrap().self_signed(&key).unwrap();
        let fp = Fingerprint::of_cert(one.der()).unwrap();
        assert_eq!(Fingerprint::of_cert(two.der()), Some(fp), "same key, another certificate");
        assert_eq!(fp, Fingerprint::of_spki(&rcgen::PublicKeyData::subject_public_key_info(&key)));
        assert_eq!(Fingerprint::of_cert(b"garbage"), None);
    }
}
