//! Client certificates (mutual TLS) to the upstream, through the binary: an
//! upstream that requires one answers with it, and without one (or with one it
//! does not trust) the client gets a 502 that says so; bad files are config
//! errors that name the file and the fix; `fingerprint` shows the certificate too.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::WebPkiClientVerifier;
use tokio::io::AsyncWriteExt;

/// A certificate authority that issues client certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A client certificate and its key, as PEM.
    fn issue(&self, name: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// An upstream that requires a client certificate issued by `ca` and answers
/// 200 with `client certificate: yes` to a request on a connection that has one.
async fn requiring_server(server: &TestCert, ca: &Ca, tls12_only: bool) -> std::net::SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(protocol_versions(tls12_only))
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![server.der.clone()],
            PrivateKeyDer::Pkcs8(server.key_der.clone().into()),
        )
        .unwrap();
    tls_server(Arc::new(config), |mut tls| async move {
        let has_client_cert = tls.get_ref().1.peer_certificates().is_some();
        if read_head(&mut tls).await.is_none() {
            return;
        }
        let body = format!(
            "client certificate: {}",
            if has_client_cert { "yes" } else { "no" }
        );
        let _ = tls
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await;
        let _ = tls.flush().await;
    })
    .await
}

/// Writes the files a config refers to into a private directory.
fn files(dir: &Path, certificate: &str, key: &str) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("client.pem"), dir.join("client.key"));
    std::fs::write(&c, certificate).unwrap();
    write_key(&k, key);
    (c, k)
}

/// A key file as people keep them: readable by its owner only.
fn write_key(path: &Path, key: &str) {
    std::fs::write(path, key).unwrap();
    #[cfg(unix)]
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
}

fn identity_lines(certificate: &Path, key: &Path) -> String {
    format!(
        "client_certificate = '{}'\nclient_key = '{}'\n",
        certificate.display(),
        key.display()
    )
}

/// Runs the binary with `config` and sends one GET through it.
async fn through_binary(config: &str) -> Answer {
    let file = temp_file(config);
    let path = file.path().to_str().unwrap().to_string();
    let mut bin = Binary::spawn(&["run", "--config", &path], &[]);
    let addr = bin.listening();
    let answer = get(&format!("http://{addr}/x")).await;
    bin.signal("TERM");
    let _ = bin.finish();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_requires_a_client_certificate_gets_it_and_without_one_says_so() {
    let ca = Ca::new("the server's client CA");
    let server_cert = cert();
    let dir = tempfile::tempdir().unwrap();
    let (certificate, key) = ca.issue("pinproxy");
    let (c, k) = files(dir.path(), &certificate, &key);
    for tls12_only in [false, true] {
        let server = requiring_server(&server_cert, &ca, tls12_only).await;
        let pin = server_cert.sha1_pin();

        let answer = through_binary(&config_text(server, &pin, &identity_lines(&c, &k))).await;
        assert_eq!(
            (answer.status.as_u16(), answer.text()),
            (200, "client certificate: yes".to_string()),
            "TLS 1.2 only: {tls12_only}"
        );

        let answer = through_binary(&config_text(server, &pin, "")).await;
        assert_eq!(
            (answer.status.as_u16(), answer.error_tag()),
            (502, Some("handshake-failed")),
            "{}",
            answer.text()
        );
        assert!(
            answer.text().contains("requires a client certificate"),
            "TLS 1.2 only: {tls12_only}: {}",
            answer.text()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_the_server_does_not_trust_is_a_502_that_says_so() {
    let (ca, stranger) = (Ca::new("the server's client CA"), Ca::new("another CA"));
    let server_cert = cert();
    let server = requiring_server(&server_cert, &ca, false).await;
    let dir = tempfile::tempdir().unwrap();
    let (certificate, key) = stranger.issue("someone else");
    let (c, k) = files(dir.path(), &certificate, &key);
    let answer = through_binary(&config_text(
        server,
        &server_cert.sha1_pin(),
        &identity_lines(&c, &k),
    ))
    .await;
    assert_eq!(
        (answer.status.as_u16(), answer.error_tag()),
        (502, Some("handshake-failed")),
        "{}",
        answer.text()
    );
    assert!(
        answer
            .text()
            .contains("refused pinproxy's client certificate"),
        "{}",
        answer.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_bad_key_keeps_serving_with_the_old_one_and_a_good_one_is_taken() {
    let ca = Ca::new("the server's client CA");
    let server_cert = cert();
    let server = requiring_server(&server_cert, &ca, false).await;
    let dir = tempfile::tempdir().unwrap();
    let (certificate, key) = ca.issue("pinproxy");
    let (c, k) = files(dir.path(), &certificate, &key);
    let pin = server_cert.sha1_pin();
    let config = dir.path().join("proxy.toml");
    std::fs::write(&config, config_text(server, &pin, &identity_lines(&c, &k))).unwrap();
    let mut bin = Binary::spawn(&["run", "--config", config.to_str().unwrap()], &[]);
    let url = format!("http://{}/x", bin.listening());
    assert_eq!(get(&url).await.status, 200);

    // The key file is replaced by one that does not belong to the certificate.
    let (_, other_key) = ca.issue("another");
    std::fs::write(&k, other_key).unwrap();
    bin.signal("HUP");
    let failed =
        bin.wait_for(|v| v["message"] == "config reload failed; still serving the previous config");
    assert!(
        failed["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not belong"),
        "{failed}"
    );
    let answer = get(&url).await;
    assert_eq!(
        (answer.status.as_u16(), answer.text()),
        (200, "client certificate: yes".into())
    );

    // Renewed properly: taken by the next reload.
    let (certificate, key) = ca.issue("pinproxy renewed");
    files(dir.path(), &certificate, &key);
    bin.signal("HUP");
    let reloaded = bin.wait_for(|v| v["message"] == "config reloaded");
    // A renewed certificate changes the upstream: a new TLS config shows it.
    assert!(
        reloaded["summary"].as_str().unwrap_or("").contains("gaia"),
        "{reloaded}"
    );
    assert_eq!(get(&url).await.status, 200);
    bin.signal("TERM");
    let _ = bin.finish();
}

#[cfg(unix)]
fn check(config: &str) -> (bool, String) {
    let file = temp_file(config);
    let out = pinproxy_command()
        .args(["check", "--config", file.path().to_str().unwrap()])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[cfg(unix)]
#[test]
fn bad_client_certificate_files_are_config_errors_with_the_fix() {
    let ca = Ca::new("the server's client CA");
    let dir = tempfile::tempdir().unwrap();
    let target = "192.0.2.10:443".parse().unwrap();
    let pin = cert().sha1_pin();
    let (certificate, key) = ca.issue("pinproxy");
    let (_, other_key) = ca.issue("another");
    let (c, k) = files(dir.path(), &certificate, &key);

    let (ok, text) = check(&config_text(target, &pin, &identity_lines(&c, &k)));
    assert!(ok, "{text}");

    // A key that belongs to another certificate.
    let mismatched = dir.path().join("other.key");
    write_key(&mismatched, &other_key);
    let (ok, text) = check(&config_text(target, &pin, &identity_lines(&c, &mismatched)));
    assert!(!ok);
    // Line 9: client_key.
    assert!(
        text.contains(":10:") && text.contains("does not belong to client_certificate"),
        "{text}"
    );

    // One without the other.
    let only = format!("client_certificate = '{}'\n", c.display());
    let (ok, text) = check(&config_text(target, &pin, &only));
    assert!(!ok);
    assert!(text.contains("needs client_key too"), "{text}");

    // Not PEM.
    let garbage = dir.path().join("garbage.key");
    write_key(&garbage, "not a key\n");
    let (ok, text) = check(&config_text(target, &pin, &identity_lines(&c, &garbage)));
    assert!(!ok);
    assert!(text.contains("expected a PEM private key"), "{text}");

    // A key that lost its line breaks (a paste through a one-line field): the
    // parser's complaint would quote the key; ours never does.
    let flat = dir.path().join("flat.key");
    write_key(&flat, &key.replace('\n', ""));
    let (ok, text) = check(&config_text(target, &pin, &identity_lines(&c, &flat)));
    assert!(
        !ok && text.contains("not a well-formed PEM private key"),
        "{text}"
    );
    let body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for chunk in body.as_bytes().chunks(16) {
        let chunk = std::str::from_utf8(chunk).unwrap();
        assert!(!text.contains(chunk), "key material {chunk:?} in: {text}");
    }
    // Nor as the bytes the parser would print ("[77, 73, 71, …]").
    for chunk in body.as_bytes().chunks(8) {
        let decimal: Vec<String> = chunk.iter().map(u8::to_string).collect();
        assert!(!text.contains(&decimal.join(", ")), "key bytes in: {text}");
    }

    // A key every user can read is no longer private.
    std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (ok, text) = check(&config_text(target, &pin, &identity_lines(&c, &k)));
    assert!(
        !ok && text.contains(&format!("chmod o-r {}", k.display())),
        "{text}"
    );
    std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o640)).unwrap();
    let (ok, text) = check(&config_text(target, &pin, &identity_lines(&c, &k)));
    assert!(
        ok,
        "group read (root:pinproxy 0640) is how the service reads it: {text}"
    );

    // A key in a world-writable directory: anyone could swap it.
    let open = dir.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let (_, exposed) = files(&open, &certificate, &key);
    let (ok, text) = check(&config_text(target, &pin, &identity_lines(&c, &exposed)));
    assert!(!ok);
    assert!(
        text.contains("client_key") && text.contains("chmod o-w"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fingerprint_and_check_connect_show_the_client_certificate() {
    let ca = Ca::new("the server's client CA");
    let server_cert = cert();
    // TLS 1.2: the server refuses inside the handshake, so without the
    // certificate `fingerprint` sees nothing.
    let server = requiring_server(&server_cert, &ca, true).await;
    let dir = tempfile::tempdir().unwrap();
    let (certificate, key) = ca.issue("pinproxy");
    let (c, k) = files(dir.path(), &certificate, &key);
    let run = |extra: &[&str]| {
        let mut args = vec!["fingerprint".to_string(), server.to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        pinproxy_command().args(&args).output().unwrap()
    };
    let without = run(&[]);
    assert!(!without.status.success());
    let with = run(&[
        "--client-certificate",
        c.to_str().unwrap(),
        "--client-key",
        k.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&with.stdout);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let sha1 = server_cert.fingerprints().sha1_line();
    assert!(stdout.contains(&sha1), "{stdout}");

    // check --connect takes the configured files.
    let pin = server_cert.sha1_pin();
    for (extra, passes) in [(identity_lines(&c, &k), true), (String::new(), false)] {
        let file = temp_file(&config_text(server, &pin, &extra));
        let out = check_connect(file.path());
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.success(), passes, "{text}");
        if !passes {
            assert!(text.contains("client certificate"), "{text}");
        }
    }
}
