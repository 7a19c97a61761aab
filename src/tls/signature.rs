//! How a handshake signature is checked: with rustls' (webpki's) modern
//! algorithms, or, for old appliances (`legacy_crypto`), with ring's legacy RSA
//! algorithms on a key read by x509-parser. Either way it is checked: a server
//! that shows a pinned certificate without its private key fails.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

/// The signature checks of one verifier.
#[derive(Debug)]
pub(crate) struct Signatures {
    legacy: bool,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Signatures {
    /// rustls' algorithms, TLS 1.2 and 1.3.
    pub(crate) fn modern() -> Signatures {
        Signatures {
            legacy: false,
            algorithms: provider().signature_verification_algorithms,
        }
    }

    /// [`LEGACY_SCHEMES`] over TLS 1.2, checked by [`legacy_signature_valid`].
    pub(crate) fn legacy() -> Signatures {
        Signatures {
            legacy: true,
            ..Signatures::modern()
        }
    }

    pub(crate) fn tls12(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        if self.legacy {
            return legacy_signature(message, cert, dss);
        }
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    pub(crate) fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    pub(crate) fn schemes(&self) -> Vec<SignatureScheme> {
        if self.legacy {
            return LEGACY_SCHEMES.to_vec();
        }
        self.algorithms.supported_schemes()
    }
}

/// What a `legacy_crypto` upstream may sign its TLS 1.2 handshake with. No
/// RSA-PSS: ring verifies PSS only for keys of 2048 bits and more, and a server
/// offered PSS prefers it, so leaving it out makes an RSA-1024 appliance use
/// PKCS#1 v1.5, which ring still verifies for 1024-bit keys.
pub const LEGACY_SCHEMES: [SignatureScheme; 7] = [
    SignatureScheme::RSA_PKCS1_SHA256,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA1,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::ED25519,
];

/// Checks a handshake signature the way old appliances need: the key is taken
/// from the certificate with x509-parser (which reads X.509 v1, unlike webpki)
/// and checked with ring, including its RSA algorithms for 1024-bit keys and
/// SHA-1. The signature is still checked: a server without the private key of
/// its pinned certificate still fails.
pub fn legacy_signature_valid(
    message: &[u8],
    cert: &[u8],
    scheme: SignatureScheme,
    signature: &[u8],
) -> bool {
    use ring::signature as alg;
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
        return false;
    };
    let key = &parsed.public_key().subject_public_key.data;
    let algorithm: &dyn alg::VerificationAlgorithm = match scheme {
        SignatureScheme::RSA_PKCS1_SHA1 => &alg::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
        SignatureScheme::RSA_PKCS1_SHA256 => &alg::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
        SignatureScheme::RSA_PKCS1_SHA384 => &alg::RSA_PKCS1_2048_8192_SHA384,
        SignatureScheme::RSA_PKCS1_SHA512 => &alg::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
        SignatureScheme::ECDSA_NISTP256_SHA256 => &alg::ECDSA_P256_SHA256_ASN1,
        SignatureScheme::ECDSA_NISTP384_SHA384 => &alg::ECDSA_P384_SHA384_ASN1,
        SignatureScheme::ED25519 => &alg::ED25519,
        _ => return false,
    };
    alg::UnparsedPublicKey::new(algorithm, key)
        .verify(message, signature)
        .is_ok()
}

/// [`legacy_signature_valid`] as rustls' verifier interface wants it.
fn legacy_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if legacy_signature_valid(message, cert.as_ref(), dss.scheme, dss.signature()) {
        Ok(HandshakeSignatureValid::assertion())
    } else {
        Err(rustls::Error::InvalidCertificate(
            CertificateError::BadSignature,
        ))
    }
}

/// The crypto provider for every upstream connection: ring, default suites
/// (TLS 1.3, and TLS 1.2 with ECDHE and AES-GCM or ChaCha20-Poly1305).
pub fn provider() -> rustls::crypto::CryptoProvider {
    rustls::crypto::ring::default_provider()
}
