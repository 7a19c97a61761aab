//! Old appliances: an RSA-1024, X.509 v1 self-signed certificate (made with the
//! openssl CLI at test time, served by `openssl s_server`) fails by default with
//! a message pointing at legacy_crypto, and works with it; the handshake
//! signature is still checked in legacy mode.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use pinproxy::config::Config;
use pinproxy::server::Proxy;
use pinproxy::tls::pin::CertPin;
use pinproxy::tls::signature::legacy_signature_valid;
use rustls::SignatureScheme;

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An RSA-1024 key and a self-signed X.509 v1 certificate for it, in `dir`.
fn old_appliance_cert(dir: &Path) -> (String, String) {
    let (key, csr, cert) = (
        dir.join("key.pem"),
        dir.join("req.csr"),
        dir.join("cert.pem"),
    );
    let s = |p: &Path| p.to_str().unwrap().to_string();
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "rsa:1024",
        "-nodes",
        "-subj",
        "/CN=old-appliance",
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
    ]);
    // x509 -req without extensions writes a version 1 certificate.
    openssl(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-signkey",
        &s(&key),
        "-days",
        "30",
        "-out",
        &s(&cert),
    ]);
    (s(&key), s(&cert))
}

fn der_of(pem_path: &str) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(["x509", "-in", pem_path, "-outform", "DER"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

/// `openssl s_server` with old settings (TLS 1.2, security level 0), ready to accept.
struct OldServer {
    child: Child,
    addr: std::net::SocketAddr,
}

impl OldServer {
    fn start(key: &str, cert: &str) -> OldServer {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut child = Command::new("openssl")
            .args([
                "s_server",
                "-accept",
                &addr.to_string(),
                "-key",
                key,
                "-cert",
                cert,
                "-www",
                "-tls1_2",
                "-cipher",
                "DEFAULT:@SECLEVEL=0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .stdin(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let stdout = child.stdout.take().unwrap();
        let ready = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .any(|l| l.starts_with("ACCEPT"));
        assert!(ready, "openssl s_server did not start");
        OldServer { child, addr }
    }
}

impl Drop for OldServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(target: std::net::SocketAddr, pin: CertPin, legacy: bool) -> Config {
    let mut cfg = upstream_config(target, vec![pin]);
    cfg.legacy_crypto = legacy;
    config_of(vec![cfg])
}

#[tokio::test]
async fn an_rsa_1024_v1_appliance_fails_by_default_and_works_with_legacy_crypto() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = old_appliance_cert(dir.path());
    let pin = CertPin::Sha1(pinproxy::tls::pin::Fingerprints::of(&der_of(&cert)).sha1);
    let server = tokio::task::spawn_blocking(move || OldServer::start(&key, &cert))
        .await
        .unwrap();

    let strict = Proxy::bind(&config(server.addr, pin.clone(), false))
        .await
        .unwrap();
    let a = get(&format!("http://{}/", strict.local_addrs()[0].1)).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.error_tag(), Some("handshake-failed"));
    assert!(a.text().contains("legacy_crypto = true"), "{}", a.text());
    strict.drain().await;

    let legacy = Proxy::bind(&config(server.addr, pin, true)).await.unwrap();
    let a = get(&format!("http://{}/", legacy.local_addrs()[0].1)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("s_server"), "{}", a.text());
    legacy.drain().await;
}

#[tokio::test]
async fn legacy_crypto_still_refuses_a_server_without_the_private_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_, pem) = old_appliance_cert(dir.path());
    let der = der_of(&pem);
    let pin = CertPin::Sha1(pinproxy::tls::pin::Fingerprints::of(&der).sha1);
    // The pinned certificate, but the handshake signed with some other key.
    let up = TestServer::start(server_config(vec![der.into()], cert().key(), true)).await;
    let proxy = Proxy::bind(&config(up.addr, pin, true)).await.unwrap();
    let a = get(&format!("http://{}/", proxy.local_addrs()[0].1)).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.error_tag(), Some("handshake-failed"));
    assert_eq!(up.requests(), 0);
    proxy.drain().await;
}

#[test]
fn legacy_signatures_are_verified_not_assumed() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = old_appliance_cert(dir.path());
    let der = der_of(&cert);
    let message = dir.path().join("message");
    std::fs::write(&message, b"client_random|server_random|params").unwrap();
    for (digest, scheme) in [
        ("-sha256", SignatureScheme::RSA_PKCS1_SHA256),
        ("-sha1", SignatureScheme::RSA_PKCS1_SHA1),
    ] {
        let sig = dir.path().join("sig");
        openssl(&[
            "dgst",
            digest,
            "-sign",
            &key,
            "-out",
            sig.to_str().unwrap(),
            message.to_str().unwrap(),
        ]);
        let signature = std::fs::read(&sig).unwrap();
        assert!(legacy_signature_valid(
            b"client_random|server_random|params",
            &der,
            scheme,
            &signature
        ));
        assert!(!legacy_signature_valid(
            b"client_random|server_random|paramz",
            &der,
            scheme,
            &signature
        ));
        assert!(!legacy_signature_valid(
            b"client_random|server_random|params",
            &der,
            SignatureScheme::RSA_PSS_SHA256,
            &signature
        ));
    }
}

#[tokio::test]
async fn fingerprint_and_check_read_an_old_appliance_with_legacy_crypto() {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = old_appliance_cert(dir.path());
    let sha1 = pinproxy::tls::pin::Fingerprints::of(&der_of(&cert)).sha1_line();
    let server = tokio::task::spawn_blocking(move || OldServer::start(&key, &cert))
        .await
        .unwrap();
    let bin = env!("CARGO_BIN_EXE_pinproxy");
    let addr = server.addr.to_string();
    let run = |args: Vec<String>| async move {
        tokio::process::Command::new(bin)
            .args(args)
            .output()
            .await
            .unwrap()
    };

    let out = run(vec!["fingerprint".into(), addr.clone()]).await;
    assert!(!out.status.success());
    let out = run(vec![
        "fingerprint".into(),
        "--legacy-crypto".into(),
        addr.clone(),
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(&format!("\n{sha1}\n")), "{text}");

    let config = temp_file(&format!(
        "[[upstream]]\nname = \"old\"\nlisten = \"127.0.0.1:0\"\naddress = \"{addr}\"\nfingerprints = [\"{sha1}\"]\nlegacy_crypto = true\n"
    ));
    let out = run(vec![
        "check".into(),
        "--config".into(),
        config.path().to_str().unwrap().into(),
        "--connect".into(),
    ])
    .await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("MATCH (pin 1)") && text.contains("TLSv1_2"),
        "{text}"
    );
    drop(server);
}
