//! The server's TLS identity: a key pair and certificate, generated on first start into an
//! identity file (PEM: the private key, then the certificate), or a certificate and key the
//! operator already has. Clients trust it by its fingerprint ([`Fingerprint`]), as SSH clients
//! trust host keys, or by a certificate authority when the certificate comes from one.
//!
//! The identity file holds a private key, so it is created with mode 0600 in one step (written
//! to a temporary name beside it, then renamed), and an existing one that anyone but its owner
//! may read or write is refused, as OpenSSH refuses an unprotected private key.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::files::private::{ReadError, read_private, write_private};
use crate::fingerprint::Fingerprint;

/// Where the server's TLS identity comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// An identity file: read if it exists, else generated (self-signed) and written there.
    File(PathBuf),
    /// A certificate chain and its private key, in PEM files (for a CA-issued certificate).
    Pem { cert: PathBuf, key: PathBuf },
}

/// Why the TLS identity could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "permissions {mode:04o} for {} are too open: it holds a private key, so no one else may read it; \
         run chmod 600 on it",
        path.display()
    )]
    TooOpen { path: PathBuf, mode: u32 },
    #[error("refusing {}: {why} (as OpenSSH's StrictModes refuses such a key)", path.display())]
    Unsafe { path: PathBuf, why: String },
    #[error("{} holds no usable {what}", path.display())]
    Missing { path: PathBuf, what: &'static str },
    #[error("cannot generate a key pair: {0}")]
    Generate(String),
    #[error("the TLS identity is not usable: {0}")]
    Tls(#[from] rustls::Error),
}

/// A loaded identity: what the TLS layer serves and how clients will know it.
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub fingerprint: Fingerprint,
    /// Whether the identity file was generated just now.
    pub created: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").field("fingerprint", &self.fingerprint).finish()
    }
}

impl ServerTls {
    /// Loads (or, for a missing identity file, creates) the identity and builds the TLS
    /// configuration: TLS 1.3 only, no client certificates.
    pub fn load(identity: &Identity) -> Result<ServerTls, IdentityError> {
        let (certs, key, created) = match identity {
            Identity::File(path) => load_or_create(path)?,
            Identity::Pem { cert, key } => {
                let certs = read_certs(cert, &read_pem(cert, false)?)?;
                let key = read_key(key, &read_pem(key, true)?)?;
                (certs, key, false)
            }
        };
        let fingerprint = Fingerprint::of_cert(&certs[0])
            .ok_or_else(|| IdentityError::Tls(rustls::Error::General("the certificate cannot be parsed".into())))?;
        let config = rustls::ServerConfig::builder_with_provider(crate::transport::tls_provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        Ok(ServerTls { config: Arc::new(config), fingerprint, created })
    }
}

/// Reads the identity file at `path`, or generates one there if there is none.
fn load_or_create(path: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>, bool), IdentityError> {
    match read_pem(path, true) {
        Ok(pem) => Ok((read_certs(path, &pem)?, read_key(path, &pem)?, false)),
        Err(IdentityError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            let pem = generate()?;
            write_private(path, pem.as_bytes(), false)
                .map_err(|source| IdentityError::Write { path: path.to_path_buf(), source })?;
            let pem = pem.into_bytes();
            Ok((read_certs(path, &pem)?, read_key(path, &pem)?, true))
        }
        Err(e) => Err(e),
    }
}

/// A new key pair and a self-signed certificate for it, as PEM (key first).
fn generate() -> Result<String, IdentityError> {
    let generated = rcgen::generate_simple_self_signed(vec!["ft".to_string()])
        .map_err(|e| IdentityError::Generate(e.to_string()))?;
    Ok(format!("{}{}", generated.signing_key.serialize_pem(), generated.cert.pem()))
}

/// Reads a PEM file; with `secret`, refuses it if anyone but its owner may read or write it.
fn read_pem(path: &Path, secret: bool) -> Result<Vec<u8>, IdentityError> {
    match read_private(path, secret, 1 << 20) {
        Ok((_, bytes)) => Ok(bytes),
        Err(ReadError::Io(source)) => Err(IdentityError::Read { path: path.to_path_buf(), source }),
        Err(ReadError::TooOpen(mode)) => Err(IdentityError::TooOpen { path: path.to_path_buf(), mode }),
        Err(ReadError::Unsafe(why)) => Err(IdentityError::Unsafe { path: path.to_path_buf(), why }),
    }
}

fn read_certs(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(IdentityError::Missing { path: path.to_path_buf(), what: "certificate" });
    }
    Ok(certs)
}

fn read_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, IdentityError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|_| IdentityError::Missing { path: path.to_path_buf(), what: "private key" })
}

/// The identity file used when none is given: `server_identity.pem` in ft's folder of the
/// user's configuration ([`crate::config_folder`]), so it lives outside any folder that is served
/// and survives a new working folder.
pub fn default_identity_path() -> PathBuf {
    crate::config_folder().join("server_identity.pem")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_identity_is_made_once_kept_private_and_known_by_its_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity.pem");
        let made = ServerTls::load(&Identity::File(path.clone())).unwrap();
        assert!(made.created);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        let again = ServerTls::load(&Identity::File(path.clone())).unwrap();
        assert!(!again.created);
        assert_eq!(again.fingerprint, made.fingerprint, "the same key on the next start");
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file left");

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        match ServerTls::load(&Identity::File(path.clone())) {
            Err(IdentityError::TooOpen { mode: 0o644, .. }) => {}
            other => panic!("{other:?}"),
        }
        // A certificate and key given as files: the same key, the same fingerprint.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let pem = Identity::Pem { cert: path.clone(), key: path.clone() };
        assert_eq!(ServerTls::load(&pem).unwrap().fingerprint, made.fingerprint);

        fs::write(dir.path().join("empty.pem"), b"").unwrap();
        fs::set_permissions(dir.path().join("empty.pem"), fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            ServerTls::load(&Identity::File(dir.path().join("empty.pem"))),
            Err(IdentityError::Missing { .. })
        ));
    }
}
