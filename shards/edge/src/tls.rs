//! Certificates: the development certificate a node makes when none is configured, and
//! the SHA-256 fingerprints clients pin.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Names the development certificate is valid for.
pub const DEV_CERT_NAMES: &[&str] = &["localhost", "127.0.0.1", "::1"];
/// File name of the development certificate (PEM) in its directory.
pub const DEV_CERT_FILE: &str = "dev-cert.pem";
/// File name of the development key (PEM, mode 0600) in its directory.
pub const DEV_KEY_FILE: &str = "dev-key.pem";

/// A certificate or key problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{path}: no PEM certificate in the file")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The certificate could not be generated.
    #[error("generating the development certificate: {0}")]
    Generate(String),
    /// A fingerprint that is not 32 bytes of hex.
    #[error("fingerprint {text:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")]
    BadFingerprint {
        /// What was given.
        text: String,
    },
}

/// A SHA-256 certificate fingerprint.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(der).into())
    }

    /// Parses `AB:CD:...` or `abcd...` (64 hex digits, optional colons, optional
    /// `sha256:` prefix).
    pub fn parse(text: &str) -> Result<Fingerprint, TlsError> {
        let bad = || TlsError::BadFingerprint {
            text: text.to_owned(),
        };
        let body = text.trim();
        let body = body.strip_prefix("sha256:").unwrap_or(body);
        let digits: Vec<u8> = body.bytes().filter(|&b| b != b':').collect();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in digits.chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

impl std::fmt::Display for Fingerprint {
    /// `sha256:AB:CD:…`, the form the node prints and clients accept.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sha256:")?;
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The DER bytes of the first certificate in a PEM file.
pub fn first_cert_der(pem_path: &Path) -> Result<Vec<u8>, TlsError> {
    let text = std::fs::read_to_string(pem_path).map_err(|source| TlsError::Io {
        path: pem_path.to_owned(),
        source,
    })?;
    let no_cert = || TlsError::NoCertificate {
        path: pem_path.to_owned(),
    };
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = text.find(begin).ok_or_else(no_cert)? + begin.len();
    let end = text[start..]
        .find("-----END CERTIFICATE-----")
        .ok_or_else(no_cert)?;
    let b64: String = text[start..start + end]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64_decode(&b64).ok_or_else(no_cert)
}

/// The fingerprint of the first certificate in a PEM file.
pub fn fingerprint_of_pem(pem_path: &Path) -> Result<Fingerprint, TlsError> {
    first_cert_der(pem_path).map(|der| Fingerprint::of_der(&der))
}

/// Where a node keeps its development certificate when `dir` is not configured:
/// `$XDG_DATA_HOME/dataplane/tls`, else `$HOME/.local/share/dataplane/tls`, else
/// `/var/lib/dataplane/tls`.
pub fn default_dev_cert_dir() -> PathBuf {
    if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(data).join("dataplane/tls");
    }
    if let Some(home) = std::env::var_os("HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(home).join(".local/share/dataplane/tls");
    }
    PathBuf::from("/var/lib/dataplane/tls")
}

#[cfg(feature = "devcert")]
/// The development certificate and key in `dir`: loaded if both files exist, else
/// generated (self-signed, for [`DEV_CERT_NAMES`]) and written, the key with mode 0600.
/// Returns `(cert path, key path, fingerprint, generated)`.
pub fn ensure_dev_cert(dir: &Path) -> Result<(PathBuf, PathBuf, Fingerprint, bool), TlsError> {
    let cert_path = dir.join(DEV_CERT_FILE);
    let key_path = dir.join(DEV_KEY_FILE);
    if cert_path.is_file() && key_path.is_file() {
        let fingerprint = fingerprint_of_pem(&cert_path)?;
        return Ok((cert_path, key_path, fingerprint, false));
    }
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let names: Vec<String> = DEV_CERT_NAMES.iter().map(|s| (*s).to_owned()).collect();
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|error| TlsError::Generate(error.to_string()))?;
    let fingerprint = Fingerprint::of_der(certified.cert.der());
    write_private(&key_path, certified.signing_key.serialize_pem().as_bytes())
        .map_err(io(&key_path))?;
    // Written last: the pair exists only when the certificate does.
    std::fs::write(&cert_path, certified.cert.pem()).map_err(io(&cert_path))?;
    Ok((cert_path, key_path, fingerprint, true))
}

#[cfg(feature = "devcert")]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_print_and_parse() {
        let fingerprint = Fingerprint::of_der(b"certificate");
        let text = fingerprint.to_string();
        assert!(text.starts_with("sha256:"));
        assert_eq!(Fingerprint::parse(&text).expect("parse"), fingerprint);
        let bare: String = text[7..].replace(':', "").to_lowercase();
        assert_eq!(Fingerprint::parse(&bare).expect("parse"), fingerprint);
        assert!(Fingerprint::parse("abc").is_err());
        assert!(Fingerprint::parse(&"zz".repeat(32)).is_err());
    }

    #[cfg(feature = "devcert")]
    #[test]
    fn dev_cert_is_made_once_and_reloaded() {
        let dir = std::env::temp_dir().join(format!("dataplane-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (cert, _key, made, generated) = ensure_dev_cert(&dir).expect("generate");
        assert!(generated);
        let (_, _, loaded, generated) = ensure_dev_cert(&dir).expect("reload");
        assert!(!generated);
        assert_eq!(made, loaded);
        assert_eq!(fingerprint_of_pem(&cert).expect("read"), made);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
