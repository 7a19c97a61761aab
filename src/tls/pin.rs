//! Certificate pins: parsing every format an operator may paste, and matching a
//! presented leaf certificate against them.
//!
//! Accepted (case-insensitive; spaces and colons between hex digits ignored):
//! - 40 hex digits: SHA-1 of the DER certificate (Gaia's `api fingerprint`), optionally
//!   `sha1:`/`SHA1:` prefixed, or OpenSSL's `SHA1 Fingerprint=…` line;
//! - 64 hex digits: SHA-256 of the DER certificate, optionally `sha256:` prefixed;
//! - `Using English words: …` or the bare 12 words: RFC 1751 of the first 128 bits of the SHA-1;
//! - `sha256//BASE64`: curl's pin of the certificate's SubjectPublicKeyInfo;
//! - the whole `api fingerprint` output pasted as one multi-line string.

use std::fmt;

use base64::Engine;
use sha1::Digest;

use crate::tls::rfc1751;

/// One configured pin. Any one matching pin accepts the certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertPin {
    /// SHA-1 of the DER leaf certificate.
    Sha1([u8; 20]),
    /// The first 128 bits of the SHA-1, as given by the RFC 1751 words.
    Sha1Words([u8; 16]),
    /// SHA-256 of the DER leaf certificate.
    Sha256([u8; 32]),
    /// SHA-256 of the leaf's SubjectPublicKeyInfo (curl's `sha256//` form).
    SpkiSha256([u8; 32]),
}

/// Why a pin string was rejected. The text says what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinError {
    /// Nothing but white space.
    #[error("the pin is empty; paste the SHA1 line printed by `api fingerprint` on the server")]
    Empty,
    /// A character that is neither a hex digit nor a separator.
    #[error("bad character {ch:?} at position {pos}: a hex pin may contain only 0-9, A-F, colons and spaces")]
    BadChar {
        /// The offending character.
        ch: char,
        /// 1-based character position in the pin as written.
        pos: usize,
    },
    /// Wrong number of hex digits.
    #[error("{digits} hex digits: a SHA-1 pin has 40 and a SHA-256 pin has 64 (was part of it cut off?)")]
    Length {
        /// How many hex digits were found.
        digits: usize,
    },
    /// A `sha1:` prefix on 64 digits or `sha256:` on 40.
    #[error(
        "the prefix says {prefix} but the pin has {digits} hex digits ({prefix} needs {expected})"
    )]
    PrefixLength {
        /// `sha1` or `sha256`.
        prefix: &'static str,
        /// How many hex digits were found.
        digits: usize,
        /// How many that prefix needs.
        expected: usize,
    },
    /// The English words did not decode.
    #[error("{0}")]
    Words(String),
    /// The curl SPKI form did not decode to 32 bytes.
    #[error(
        "SPKI pin `sha256//…` must be the base64 of 32 bytes (44 characters ending in '='): {0}"
    )]
    Spki(String),
    /// A pasted `api fingerprint` block whose SHA1 line and words disagree.
    #[error("the SHA1 line and the English words describe different certificates; paste them again from one `api fingerprint` run")]
    Inconsistent,
    /// A command's output (`--expect-from`) with neither line of `api fingerprint`.
    #[error("the output has no `SHA1:` line and no `Using English words:` line; is the command `api fingerprint` on the management server?")]
    NotInOutput,
    /// A command's output with two different `SHA1:` lines or words lines.
    #[error("the output names two different certificates ({first} and {second}); run the command on one server")]
    Ambiguous {
        /// The first fingerprint found.
        first: String,
        /// A later one that differs.
        second: String,
    },
    /// A multi-line paste with a line that is not part of `api fingerprint` output.
    #[error("line {line} of the pasted text is not part of `api fingerprint` output: {text:?}")]
    StrayLine {
        /// 1-based line within the pin string.
        line: usize,
        /// The line.
        text: String,
    },
}

impl CertPin {
    /// Parses one pin in any supported format.
    pub fn parse(input: &str) -> Result<CertPin, PinError> {
        let text = input.trim();
        if text.is_empty() {
            return Err(PinError::Empty);
        }
        if text.contains('\n') {
            return parse_block(text);
        }
        // Base64 is case-sensitive, so only the prefix is compared without case.
        if let Some(b64) = strip_prefix_ci(text, "sha256//") {
            return parse_spki(b64.trim());
        }
        if let Some(rest) = strip_prefix_ci(text, "using english words:") {
            return parse_words(rest);
        }
        for (prefix, kind) in PREFIXES {
            if let Some(rest) = strip_prefix_ci(text, prefix) {
                let offset = text.len() - rest.len();
                return parse_hex(rest, offset, Some(*kind));
            }
        }
        // Several purely alphabetic tokens are English words, however many
        // (so 11 of them say "11 words, 12 needed"), unless every one is a pair
        // of hex letters: "AB CD EF …" is hex with spaces.
        let tokens: Vec<&str> = text.split_whitespace().collect();
        let hex_pair = |t: &&str| t.len() == 2 && t.chars().all(|c| c.is_ascii_hexdigit());
        if tokens.len() >= 2
            && tokens
                .iter()
                .all(|t| t.chars().all(|c| c.is_ascii_alphabetic()))
            && !tokens.iter().all(hex_pair)
        {
            return parse_words(text);
        }
        parse_hex(text, 0, None)
    }

    /// True when the certificate with these fingerprints satisfies this pin.
    pub fn matches(&self, fp: &Fingerprints) -> bool {
        match self {
            CertPin::Sha1(want) => fp.sha1 == *want,
            CertPin::Sha1Words(want) => fp.sha1[..16] == want[..],
            CertPin::Sha256(want) => fp.sha256 == *want,
            CertPin::SpkiSha256(want) => fp.spki_sha256 == Some(*want),
        }
    }
}

impl fmt::Display for CertPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertPin::Sha1(d) => write!(f, "SHA1: {}", colon_hex(d)),
            CertPin::Sha1Words(d) => write!(f, "Using English words: {}", rfc1751::encode(d)),
            CertPin::Sha256(d) => write!(f, "SHA256: {}", colon_hex(d)),
            CertPin::SpkiSha256(d) => write!(f, "sha256//{}", base64_std(d)),
        }
    }
}

#[derive(Clone, Copy)]
enum HexKind {
    Sha1,
    Sha256,
}

// Longest first so that "sha1 fingerprint=" wins over "sha1".
const PREFIXES: &[(&str, HexKind)] = &[
    ("sha1 fingerprint=", HexKind::Sha1),
    ("sha256 fingerprint=", HexKind::Sha256),
    ("sha-256:", HexKind::Sha256),
    ("sha256:", HexKind::Sha256),
    ("sha-1:", HexKind::Sha1),
    ("sha1:", HexKind::Sha1),
];

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

fn parse_hex(text: &str, offset: usize, kind: Option<HexKind>) -> Result<CertPin, PinError> {
    let mut bytes = Vec::with_capacity(32);
    let mut high: Option<u8> = None;
    for (i, ch) in text.chars().enumerate() {
        if ch == ':' || ch.is_whitespace() {
            continue;
        }
        let Some(nibble) = ch.to_digit(16) else {
            return Err(PinError::BadChar {
                ch,
                pos: offset + i + 1,
            });
        };
        match high.take() {
            None => high = Some(nibble as u8),
            Some(h) => bytes.push((h << 4) | nibble as u8),
        }
    }
    let digits = bytes.len() * 2 + usize::from(high.is_some());
    let expected = match kind {
        Some(HexKind::Sha1) => Some(("sha1", 40)),
        Some(HexKind::Sha256) => Some(("sha256", 64)),
        None => None,
    };
    if let Some((prefix, want)) = expected {
        if digits != want && (digits == 40 || digits == 64) {
            return Err(PinError::PrefixLength {
                prefix,
                digits,
                expected: want,
            });
        }
    }
    match (digits, bytes.as_slice()) {
        (0, _) => Err(PinError::Empty),
        (40, b) => Ok(CertPin::Sha1(b.try_into().expect("40 digits"))),
        (64, b) => Ok(CertPin::Sha256(b.try_into().expect("64 digits"))),
        _ => Err(PinError::Length { digits }),
    }
}

fn parse_words(text: &str) -> Result<CertPin, PinError> {
    rfc1751::decode(text)
        .map(CertPin::Sha1Words)
        .map_err(|e| PinError::Words(e.to_string()))
}

fn parse_spki(b64: &str) -> Result<CertPin, PinError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| PinError::Spki(e.to_string()))?;
    let digest: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| PinError::Spki(format!("it decodes to {} bytes", bytes.len())))?;
    Ok(CertPin::SpkiSha256(digest))
}

/// The whole `api fingerprint` output: `Fingerprint:`, the SHA1 line, the words line.
fn parse_block(text: &str) -> Result<CertPin, PinError> {
    let mut sha1 = None;
    let mut words = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.eq_ignore_ascii_case("fingerprint:") {
            continue;
        }
        if strip_prefix_ci(line, "sha1:").is_some() {
            sha1 = Some(CertPin::parse(line)?);
        } else if strip_prefix_ci(line, "using english words:").is_some() {
            words = Some(CertPin::parse(line)?);
        } else {
            return Err(PinError::StrayLine {
                line: n + 1,
                text: line.to_string(),
            });
        }
    }
    match (sha1, words) {
        (Some(CertPin::Sha1(full)), Some(CertPin::Sha1Words(prefix)))
            if full[..16] != prefix[..] =>
        {
            Err(PinError::Inconsistent)
        }
        (Some(pin), _) | (None, Some(pin)) => Ok(pin),
        (None, None) => Err(PinError::Empty),
    }
}

/// The pin in the output of a command that ran `api fingerprint` (over SSH, in
/// a script, with banners and prompts around it): Gaia's `SHA1:` line or its
/// `Using English words:` line, found anywhere in the text. When both are
/// there they must name one certificate; the SHA-1 wins, being the longer.
pub fn parse_fingerprint_output(output: &str) -> Result<CertPin, PinError> {
    let mut sha1: Option<CertPin> = None;
    let mut words: Option<CertPin> = None;
    for line in output.lines() {
        let lower = line.to_ascii_lowercase();
        for (marker, slot) in [("sha1:", &mut sha1), ("using english words:", &mut words)] {
            let Some(at) = lower.find(marker) else {
                continue;
            };
            let pin = CertPin::parse(line[at..].trim_end_matches(['\r', '\n']))?;
            match slot {
                Some(seen) if *seen != pin => {
                    return Err(PinError::Ambiguous {
                        first: seen.to_string(),
                        second: pin.to_string(),
                    })
                }
                _ => *slot = Some(pin),
            }
        }
    }
    match (sha1, words) {
        (Some(CertPin::Sha1(full)), Some(CertPin::Sha1Words(prefix)))
            if full[..16] != prefix[..] =>
        {
            Err(PinError::Inconsistent)
        }
        (Some(pin), _) | (None, Some(pin)) => Ok(pin),
        (None, None) => Err(PinError::NotInOutput),
    }
}

/// The digests of one certificate that pins are compared with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprints {
    /// SHA-1 of the DER certificate.
    pub sha1: [u8; 20],
    /// SHA-256 of the DER certificate.
    pub sha256: [u8; 32],
    /// SHA-256 of the SubjectPublicKeyInfo; `None` when the certificate does not parse.
    pub spki_sha256: Option<[u8; 32]>,
}

impl Fingerprints {
    /// Computes the digests of a DER-encoded certificate.
    pub fn of(der: &[u8]) -> Fingerprints {
        let spki_sha256 = x509_parser::parse_x509_certificate(der)
            .ok()
            .map(|(_, cert)| sha2::Sha256::digest(cert.tbs_certificate.subject_pki.raw).into());
        Fingerprints {
            sha1: sha1::Sha1::digest(der).into(),
            sha256: sha2::Sha256::digest(der).into(),
            spki_sha256,
        }
    }

    /// `SHA1: 7D:FE:…`, exactly as Gaia's `api fingerprint` prints it.
    pub fn sha1_line(&self) -> String {
        format!("SHA1: {}", colon_hex(&self.sha1))
    }

    /// `Using English words: …` (RFC 1751 of the first 128 bits of the SHA-1).
    pub fn words_line(&self) -> String {
        let mut head = [0u8; 16];
        head.copy_from_slice(&self.sha1[..16]);
        format!("Using English words: {}", rfc1751::encode(&head))
    }

    /// `SHA256: AB:CD:…`.
    pub fn sha256_line(&self) -> String {
        format!("SHA256: {}", colon_hex(&self.sha256))
    }

    /// curl's `sha256//BASE64` public-key pin, when the certificate parses.
    pub fn spki_pin(&self) -> Option<String> {
        self.spki_sha256
            .map(|d| format!("sha256//{}", base64_std(&d)))
    }
}

/// Upper-case hex pairs joined by colons: Gaia's and OpenSSL's fingerprint form.
pub fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02X}"));
    }
    out
}

fn base64_std(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_fingerprint_is_found_in_a_command_s_output() {
        let sha1 = "SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D";
        let words = CertPin::parse(sha1)
            .map(|p| match p {
                CertPin::Sha1(d) => format!(
                    "Using English words: {}",
                    rfc1751::encode(d[..16].try_into().unwrap())
                ),
                _ => unreachable!(),
            })
            .unwrap();
        let ssh = format!(
            "This system is for authorized use only.\r\n[Expert@mgmt:0]# api fingerprint\r\nFingerprint:\r\n{sha1}\r\n{words}\r\n"
        );
        assert_eq!(
            parse_fingerprint_output(&ssh).unwrap(),
            CertPin::parse(sha1).unwrap()
        );
        // Only the words line: the 128-bit pin.
        assert!(matches!(
            parse_fingerprint_output(&format!("banner\n{words}\n")).unwrap(),
            CertPin::Sha1Words(_)
        ));
        assert_eq!(
            parse_fingerprint_output("Welcome\nlogin failed\n"),
            Err(PinError::NotInOutput)
        );
        let other = "SHA1: 00:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D";
        assert!(matches!(
            parse_fingerprint_output(&format!("{sha1}\n{other}\n")),
            Err(PinError::Ambiguous { .. })
        ));
        assert_eq!(
            parse_fingerprint_output(&format!("{other}\n{words}\n")),
            Err(PinError::Inconsistent)
        );
        assert!(matches!(
            parse_fingerprint_output("SHA1: 7D:FE:DE\n"),
            Err(PinError::Length { digits: 6 })
        ));
    }

    use super::*;

    const GAIA_SHA1: &str = "SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D";
    const GAIA_WORDS: &str =
        "Using English words: FARM WAND MIMI GOWN HURD PHI QUO LOY BAH SEES JADE GAUL";

    fn sha1_bytes() -> [u8; 20] {
        match CertPin::parse("7DFEDEEEC7B9D06735E4C416EC7A031348CDCA8D").unwrap() {
            CertPin::Sha1(b) => b,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn sha1_forms_all_parse_to_the_same_pin() {
        let want = CertPin::Sha1(sha1_bytes());
        for text in [
            GAIA_SHA1,
            "7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D",
            "7dfedeeec7b9d06735e4c416ec7a031348cdca8d",
            "  sha1:7d fe de ee c7 b9 d0 67 35 e4 c4 16 ec 7a 03 13 48 cd ca 8d  ",
            "SHA1 Fingerprint=7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D",
            "sha-1: 7DFEDEEEC7B9D06735E4C416EC7A031348CDCA8D",
        ] {
            assert_eq!(CertPin::parse(text), Ok(want.clone()), "{text}");
        }
    }

    #[test]
    fn english_words_parse_with_or_without_the_label() {
        let mut head = [0u8; 16];
        head.copy_from_slice(&sha1_bytes()[..16]);
        let want = CertPin::Sha1Words(head);
        assert_eq!(CertPin::parse(GAIA_WORDS), Ok(want.clone()));
        assert_eq!(
            CertPin::parse("farm wand mimi gown hurd phi quo loy bah sees jade gaul"),
            Ok(want)
        );
    }

    #[test]
    fn whole_api_fingerprint_output_parses_and_is_cross_checked() {
        let block = format!("Fingerprint:\n{GAIA_SHA1}\n{GAIA_WORDS}\n");
        assert_eq!(CertPin::parse(&block), Ok(CertPin::Sha1(sha1_bytes())));
        let wrong = format!(
            "Fingerprint:\n{GAIA_SHA1}\nUsing English words: RASH BUSH MILK LOOK BAD BRIM AVID GAFF BAIT ROT POD LOVE"
        );
        assert_eq!(CertPin::parse(&wrong), Err(PinError::Inconsistent));
        assert!(matches!(
            CertPin::parse("Fingerprint:\nhello"),
            Err(PinError::StrayLine { line: 2, .. })
        ));
    }

    #[test]
    fn sha256_and_spki_forms() {
        let hex = "ab".repeat(32);
        assert_eq!(CertPin::parse(&hex), Ok(CertPin::Sha256([0xab; 32])));
        assert_eq!(
            CertPin::parse(&format!("SHA256:{}", hex.to_uppercase())),
            Ok(CertPin::Sha256([0xab; 32]))
        );
        let spki = format!("sha256//{}", base64_std(&[7u8; 32]));
        assert_eq!(CertPin::parse(&spki), Ok(CertPin::SpkiSha256([7; 32])));
        // Display gives back a form that parses to the same pin.
        for pin in [
            CertPin::Sha1(sha1_bytes()),
            CertPin::Sha256([1; 32]),
            CertPin::SpkiSha256([2; 32]),
            CertPin::Sha1Words([3; 16]),
        ] {
            assert_eq!(CertPin::parse(&pin.to_string()), Ok(pin));
        }
    }

    #[test]
    fn bad_pins_say_what_is_wrong() {
        assert_eq!(CertPin::parse("   "), Err(PinError::Empty));
        assert_eq!(
            CertPin::parse("7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA"),
            Err(PinError::Length { digits: 38 })
        );
        assert_eq!(
            CertPin::parse("7D:FE:XE"),
            Err(PinError::BadChar { ch: 'X', pos: 7 })
        );
        // The position counts from the start of what was written, prefix included.
        assert_eq!(
            CertPin::parse("SHA1: 7G"),
            Err(PinError::BadChar { ch: 'G', pos: 8 })
        );
        assert_eq!(
            CertPin::parse(&format!("sha1:{}", "a".repeat(64))),
            Err(PinError::PrefixLength {
                prefix: "sha1",
                digits: 64,
                expected: 40
            })
        );
        let err = CertPin::parse("FARM WAND MIMI GOWN HURD PHI QUO LOY BAH SEES JADE GAULL")
            .unwrap_err()
            .to_string();
        assert!(err.contains("word 12") && err.contains("GAULL"), "{err}");
        // Eleven words (the last one lost in copying) is a count, not a bad hex digit.
        let eleven = "FARM WAND MIMI GOWN HURD PHI QUO LOY BAH SEES JADE";
        let err = CertPin::parse(eleven).unwrap_err().to_string();
        assert!(err.contains("11 words, 12 needed"), "{err}");
        let err = CertPin::parse(&format!("Using English words: {eleven}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("11 words, 12 needed"), "{err}");
        let err = CertPin::parse(&format!(
            "FARM WAND MIMI GOWN HURD PHI QUO LOY BAH SEES JADE {}",
            "GAUR"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("parity"), "{err}");
        let err = CertPin::parse("sha256//AAAA").unwrap_err().to_string();
        assert!(err.contains("3 bytes"), "{err}");
    }

    #[test]
    fn matching_uses_the_right_digest() {
        let der = b"not really a certificate";
        let fp = Fingerprints::of(der);
        assert!(CertPin::Sha1(fp.sha1).matches(&fp));
        assert!(CertPin::Sha256(fp.sha256).matches(&fp));
        let mut head = [0u8; 16];
        head.copy_from_slice(&fp.sha1[..16]);
        assert!(CertPin::Sha1Words(head).matches(&fp));
        assert!(!CertPin::Sha1([0; 20]).matches(&fp));
        // An unparseable certificate has no SPKI, so no SPKI pin can match it.
        assert_eq!(fp.spki_sha256, None);
        assert!(!CertPin::SpkiSha256([0; 32]).matches(&fp));
    }
}
