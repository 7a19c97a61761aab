use std::path::Path;
use std::time::Duration;

use super::*;

const PIN: &str = "SHA1: 7D:FE:DE:EE:C7:B9:D0:67:35:E4:C4:16:EC:7A:03:13:48:CD:CA:8D";

#[test]
fn a_bare_host_gets_the_default_port_and_a_url_is_explained() {
    assert_eq!(
        with_default_port("mgmt.example.com", 443),
        "mgmt.example.com:443"
    );
    assert_eq!(with_default_port("[2001:db8::1]", 443), "[2001:db8::1]:443");
    assert_eq!(with_default_port("192.0.2.10:8443", 443), "192.0.2.10:8443");
    for (url, fix) in [
        ("https://mgmt.example.com", "\"mgmt.example.com:443\""),
        ("http://user:pw@[2001:db8::1]/x", "\"[2001:db8::1]:80\""),
        (
            "HTTPS://[2001:db8::1]:8443/web_api?x",
            "\"[2001:db8::1]:8443\"",
        ),
    ] {
        let err = parse_address(url).unwrap_err();
        assert!(
            err.contains("is a URL") && err.contains(fix),
            "{url}: {err}"
        );
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("proxy.toml"))
}

fn good() -> String {
    format!(
        "shutdown_timeout = \"5s\"\n\n[[upstream]]\nname = \"gaia\"\nlisten = \"127.0.0.1:8443\"\naddress = \"192.0.2.10:443\"\nfingerprints = [\"{PIN}\"]\n"
    )
}

#[test]
fn a_minimal_file_gets_defaults() {
    let c = parse(&good()).unwrap();
    assert_eq!(c.shutdown_timeout, Duration::from_secs(5));
    let u = &c.upstreams[0];
    assert_eq!(u.name, "gaia");
    assert_eq!(u.address(), "192.0.2.10:443");
    assert_eq!(u.effective_server_name(), "192.0.2.10");
    assert_eq!(u.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(u.response_timeout, DEFAULT_RESPONSE_TIMEOUT);
    assert_eq!(u.pins.len(), 1);
}

#[test]
fn unknown_key_names_file_line_and_column() {
    let text = good().replace("address =", "adress =");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.location, "proxy.toml:6:1");
    assert!(err.message.contains("adress"), "{err}");
    assert!(err.message.contains("proxy.example.toml"), "{err}");
}

#[test]
fn bad_pin_points_at_the_pin() {
    let text = good().replace("CA:8D", "CA:8");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.location, "proxy.toml:7:17");
    assert!(err.message.contains("39 hex digits"), "{err}");
}

#[test]
fn non_loopback_listener_is_refused_unless_allowed() {
    let text = good().replace("127.0.0.1:8443", "0.0.0.0:8443");
    let err = parse(&text).unwrap_err();
    assert_eq!(err.location, "proxy.toml:5:10");
    assert!(err.message.contains("allow_non_loopback = true"), "{err}");
    let allowed = text.replace(
        "[[upstream]]\n",
        "[[upstream]]\nallow_non_loopback = true\n",
    );
    assert!(parse(&allowed).is_ok());
}

#[test]
fn duplicates_across_tables_come_with_the_other_mistakes_in_one_round() {
    // The second table repeats the name and the listen address, and its
    // address is a URL: three mistakes, one round.
    let second = good()
        .replace("shutdown_timeout = \"5s\"", "")
        .replace("\"192.0.2.10:443\"", "\"https://192.0.2.11/\"");
    let err = parse(&(good() + &second)).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("used twice"), "{text}");
    assert!(text.contains("already used by upstream \"gaia\""), "{text}");
    assert!(text.contains("is a URL"), "{text}");
    assert_eq!(err.all().count(), 3, "{text}");
}

#[test]
fn other_mistakes_are_explained() {
    let cases = [
        (
            good().replace("192.0.2.10:443", "192.0.2.10"),
            "has no port",
        ),
        (good().replace("\"gaia\"", "\"my gaia\""), "letters, digits"),
        (good().replace("\"5s\"", "\"five\""), "\"5s\""),
        (
            good().replace(&format!("[\"{PIN}\"]"), "[]"),
            "fingerprints is empty",
        ),
        (
            good().replace("fingerprints", "#"),
            "no fingerprints: add fingerprints",
        ),
        ("shutdown_timeout = \"1s\"\n".to_string(), "no [[upstream]]"),
        ("[[upstream]\n".to_string(), "proxy.toml:1:"),
        (
            good().replace("[[upstream]]", "[upstream]"),
            "write [[upstream]] (two brackets)",
        ),
        (
            good().replace(&format!("[\"{PIN}\"]"), &format!("\"{PIN}\"")),
            "fingerprints is a list: put the value in brackets",
        ),
        (
            good().replace("[[upstream]]", "[[upstream]]\nconnect_timeout = 5"),
            "connect_timeout = \"5s\"",
        ),
        (
            good().replace("[[upstream]]", "[[upstream]]\nlegacy_crypto = \"yes\""),
            "legacy_crypto is true or false, without quotes",
        ),
        (
            good().replace("shutdown_timeout", "shutdown_timout"),
            "did you mean `shutdown_timeout`?",
        ),
        (
            good().replace(&format!("[\"{PIN}\"]"), "[\"SHA1: 7D:FE:DE\n:EE\"]"),
            "use a multi-line string",
        ),
        // Not fingerprints: no word of api fingerprint, the string is just not closed.
        (
            good().replace("name = \"gaia\"", "name = \"gaia"),
            "not closed: end it with \" on the same line",
        ),
        (
            good().replace("[[upstream]]", "[[upstream]]\nsocket_mode = 0660"),
            "socket_mode = \"0660\"",
        ),
        (
            good().replace("[[upstream]]", "[[upstream]]\nsocket_mode = 660"),
            "socket_mode = \"0660\"",
        ),
    ];
    for (text, want) in cases {
        let err = parse(&text).unwrap_err();
        assert!(err.to_string().contains(want), "{want:?} not in {err}");
        // One mistake, one error: what blanking its line would make other
        // checks say is not reported (see errors.rs).
        assert!(
            err.more.is_empty(),
            "one mistake reported as several:\n{err}"
        );
    }
}

#[test]
fn every_mistake_in_the_file_is_reported_in_file_order() {
    let text = format!(
        "shutdown_timeout = 30\n\
         [admin]\n\
         listen = \"0.0.0.0:9901\"\n\
         [[upstream]]\n\
         name = \"gaia\"\n\
         listen = \"127.0.0.1:8443\"\n\
         address = \"192.0.2.10:443\"\n\
         fingerprints = [\"SHA1: 12\"]\n\
         conect_timeout = \"5s\"\n\
         [[upstream]]\n\
         name = \"backup\"\n\
         listen = \"127.0.0.1:8444\"\n\
         address = \"192.0.2.11:443\"\n\
         fingerprints = [\"{PIN}\"]\n\
         legacy_crypto = \"yes\"\n\
         idle_timeout = \"forever\"\n"
    );
    let err = parse(&text).unwrap_err();
    let found: Vec<(&str, &str)> = err
        .all()
        .map(|e| (e.location.as_str(), e.message.as_str()))
        .collect();
    let want = [
        ("proxy.toml:1:20", "shutdown_timeout is a duration"),
        ("proxy.toml:3:10", "allow_non_loopback"),
        ("proxy.toml:8:17", "bad pin"),
        ("proxy.toml:9:1", "did you mean `connect_timeout`?"),
        ("proxy.toml:15:17", "legacy_crypto is true or false"),
        ("proxy.toml:16:16", "\"forever\""),
    ];
    assert_eq!(found.len(), want.len(), "{err}");
    for ((location, message), (want_location, want_text)) in found.iter().zip(want) {
        assert_eq!(*location, want_location, "{err}");
        assert!(
            message.contains(want_text),
            "{want_text:?} not in {message:?}"
        );
    }
    // One line per mistake, as the CLI prints it.
    assert_eq!(err.to_string().lines().count(), want.len());
}

#[test]
fn past_a_syntax_error_nothing_else_is_guessed() {
    let text = good().replace("name = \"gaia\"", "name = \"gaia") + "bogus = 1\n";
    let err = parse(&text).unwrap_err();
    assert!(err.more.is_empty(), "{err}");
    assert!(err.message.contains("invalid basic string"), "{err}");
}

#[test]
fn addresses() {
    assert_eq!(parse_address("mgmt:4434"), Ok(("mgmt".into(), 4434)));
    assert_eq!(parse_address("[::1]:443"), Ok(("::1".into(), 443)));
    assert_eq!(join_host_port("::1", 443), "[::1]:443");
    assert!(parse_address("::1:443").is_err());
    assert!(parse_address("mgmt:0").is_err());
    assert!(parse_address("bad host:443").is_err());
}

#[test]
fn flags_build_one_upstream() {
    let flags = Flags {
        listen: "127.0.0.1:9000".into(),
        upstream: "mgmt.example:443".into(),
        fingerprints: vec![PIN.into()],
        server_name: None,
        allow_non_loopback: false,
        socket_mode: None,
    };
    let c = Config::from_flags(&flags).unwrap();
    assert_eq!(c.upstreams[0].effective_server_name(), "mgmt.example");
    let bad = Flags {
        fingerprints: vec!["12:34".into()],
        ..flags
    };
    let err = Config::from_flags(&bad).unwrap_err().to_string();
    assert!(
        err.starts_with("--fingerprint: pin 1: 4 hex digits"),
        "{err}"
    );
}

#[test]
fn the_documented_example_parses_and_sets_every_key() {
    let c = Config::parse(
        include_str!("../../proxy.example.toml"),
        Path::new("proxy.example.toml"),
    )
    .unwrap();
    assert_eq!(
        c.admin.as_ref().map(|a| a.listen.clone()),
        Some(Listen::Tcp("127.0.0.1:9901".parse().unwrap()))
    );
    let u = &c.upstreams[0];
    assert_eq!(u.effective_server_name(), "mgmt.example.com");
    assert_eq!(u.response_timeout, Duration::from_secs(300));
    assert_eq!(u.pins[0].to_string(), PIN);
    assert_eq!(u.hosts.len(), 2);
    assert_eq!(
        (u.http2, u.tls_resumption, u.legacy_crypto),
        (Http2::Auto, true, false)
    );
    assert_eq!((u.max_connections, u.max_idle_connections), (128, 128));
    assert_eq!(u.check_interval, Duration::from_secs(600));
    assert_eq!(c.limits, Limits::default());
    assert_eq!(u.hosts[0].to_string(), "mgmt.example.com");
}

#[test]
fn check_interval_is_a_duration_zero_turns_checks_off() {
    let with = |v: &str| parse(&format!("{}check_interval = \"{v}\"\n", good()));
    assert_eq!(
        with("30s").unwrap().upstreams[0].check_interval,
        Duration::from_secs(30)
    );
    assert!(with("0s").unwrap().upstreams[0].check_interval.is_zero());
    let err = with("200ms").unwrap_err();
    assert_eq!(err.location, "proxy.toml:8:18");
    assert!(err.message.contains("at least \"1s\""), "{err}");
    assert!(with("often")
        .unwrap_err()
        .message
        .contains("\"0s\" for no checks"));
}

#[test]
fn failover_addresses_and_targets_with_their_own_pins() {
    let list = parse(&good().replace(
        "address = \"192.0.2.10:443\"",
        "address = [\"mgmt-a:443\", \"mgmt-b:4434\"]\nfailback_after = \"2m\"",
    ))
    .unwrap();
    let u = &list.upstreams[0];
    let addrs: Vec<String> = u.targets().iter().map(Target::address).collect();
    assert_eq!(addrs, ["mgmt-a:443", "mgmt-b:4434"]);
    assert_eq!(
        u.targets()[1].pins,
        u.pins,
        "a plain list shares the upstream's pins"
    );
    assert_eq!(u.failback_after, Duration::from_secs(120));

    const OTHER: &str = "SHA256:0000000000000000000000000000000000000000000000000000000000000000";
    let tables = parse(&format!(
        "[[upstream]]\nname = \"ha\"\nlisten = \"127.0.0.1:8443\"\n\
         [[upstream.target]]\naddress = \"mgmt-a:443\"\nfingerprints = [\"{PIN}\"]\n\
         [[upstream.target]]\naddress = \"mgmt-b:443\"\nfingerprints = [\"{OTHER}\"]\n"
    ))
    .unwrap();
    let t = tables.upstreams[0].targets();
    assert_eq!(
        (t[0].host.as_str(), t[1].host.as_str()),
        ("mgmt-a", "mgmt-b")
    );
    assert_ne!(t[0].pins, t[1].pins);

    let both = good().replace("fingerprints", "[[upstream.target]]\naddress = \"x:1\"\n#");
    assert!(parse(&both).unwrap_err().to_string().contains("not both"));
    let unpinned = "[[upstream]]\nname = \"ha\"\nlisten = \"127.0.0.1:8443\"\n[[upstream.target]]\naddress = \"mgmt-a:443\"\n";
    let err = parse(unpinned).unwrap_err();
    assert_eq!(err.location, "proxy.toml:5:11");
    assert!(err.message.contains("no fingerprints"), "{err}");
    let empty = good().replace("\"192.0.2.10:443\"", "[]");
    assert!(parse(&empty).unwrap_err().to_string().contains("or a list"));
}

#[test]
fn limits_are_read_and_checked() {
    let with = |table: &str| {
        parse(&format!(
            "[limits]\n{table}\n{}",
            good().replace("shutdown_timeout = \"5s\"", "")
        ))
    };
    let c =
        with("max_client_connections = 10\nmax_request_body = 1000\nheader_read_timeout = \"5s\"")
            .unwrap();
    assert_eq!(c.limits.max_client_connections, 10);
    assert_eq!(c.limits.max_request_body, Some(1000));
    assert_eq!(c.limits.header_read_timeout, Duration::from_secs(5));
    let err = with("max_header_bytes = 100").unwrap_err();
    assert_eq!(err.location, "proxy.toml:2:20");
    assert!(err.message.contains("from 8192"), "{err}");
    assert!(with("max_client_connections = 0").is_err());
    let c = with("max_concurrent_streams = 8\nmax_requests_in_flight = 20").unwrap();
    assert_eq!(
        (
            c.limits.max_concurrent_streams,
            c.limits.max_requests_in_flight
        ),
        (8, 20)
    );
    assert!(with("max_requests_in_flight = 0").is_err());
    assert_eq!(
        parse(&good()).unwrap().limits.release_idle_buffers_after,
        Duration::from_millis(250)
    );
    for (text, want) in [("0s", Duration::ZERO), ("2s", Duration::from_secs(2))] {
        let c = with(&format!("release_idle_buffers_after = \"{text}\"")).unwrap();
        assert_eq!(c.limits.release_idle_buffers_after, want);
    }
    let err = with("release_idle_buffers_after = \"soon\"").unwrap_err();
    assert_eq!(err.location, "proxy.toml:2:30");
    let err = with("header_read_timeout = \"1000years\"").unwrap_err();
    assert!(err.message.contains("at most \"24h\""), "{err}");
    assert!(with("max_clients = 5")
        .unwrap_err()
        .message
        .contains("unknown field"));
}

#[cfg(unix)] // user names and Unix sockets
#[test]
fn listener_access_keys_are_read_and_checked() {
    let with =
        |keys: &str| parse(&good().replace("fingerprints", &format!("{keys}\nfingerprints")));
    let c = with(
        "allowed_hosts = [\"Gaia-Proxy.internal\", \"jump:8443\"]\n\
         allowed_origins = [\"https://Dash.example.com:8080\"]\nallowed_users = [\"root\", 1001]",
    )
    .unwrap();
    let a = &c.upstreams[0].access;
    assert_eq!(a.allowed_hosts[0].to_string(), "gaia-proxy.internal");
    assert_eq!(a.allowed_hosts[1].port, Some(8443));
    assert_eq!(a.allowed_origins, ["https://dash.example.com:8080"]);
    assert_eq!(a.allowed_users, Some(vec![0, 1001]));
    assert_eq!(
        parse(&good()).unwrap().upstreams[0].access,
        Access::default()
    );

    for (keys, want) in [
        ("allowed_origins = [\"*\"]", "every web page"),
        ("allowed_origins = [\"null\"]", "sandboxed frames"),
        (
            "allowed_origins = [\"https://dash.example.com/app\"]",
            "nothing after it",
        ),
        ("allowed_origins = [\"dash.example.com\"]", "not an origin"),
        ("allowed_hosts = [\"*.example.com\"]", "allowed_hosts entry"),
        (
            "allowed_users = [\"no-such-user-pinproxy\"]",
            "no such user",
        ),
        ("allowed_users = []", "refuse everyone"),
        ("socket_mode = \"0600\"", "unix:/path listener only"),
    ] {
        let err = with(keys).unwrap_err();
        assert!(err.location.starts_with("proxy.toml:7:"), "{keys}: {err}");
        assert!(err.message.contains(want), "{keys}: {err}");
    }
}

#[cfg(unix)] // user names and Unix sockets
#[test]
fn unix_listeners_are_read_and_checked() {
    let unix = |extra: &str| {
        parse(&good().replace(
            "\"127.0.0.1:8443\"",
            &format!("\"unix:/run/pinproxy/gaia.sock\"\n{extra}"),
        ))
    };
    let c = unix("socket_mode = \"0660\"\nsocket_group = \"root\"").unwrap();
    let Listen::Unix(s) = &c.upstreams[0].listen else {
        panic!("not a unix listener");
    };
    assert_eq!(
        (s.path.to_str(), s.mode, s.group),
        (Some("/run/pinproxy/gaia.sock"), 0o660, Some(0))
    );
    assert_eq!(
        c.upstreams[0].listen.to_string(),
        "unix:/run/pinproxy/gaia.sock"
    );
    let Listen::Unix(d) = &unix("").unwrap().upstreams[0].listen else {
        panic!("not a unix listener");
    };
    assert_eq!((d.mode, d.group), (0o600, None));
    for (extra, want) in [
        ("socket_mode = \"rw\"", "not a file mode"),
        ("socket_mode = \"4755\"", "not a file mode"),
        ("socket_group = \"no-such-group-pinproxy\"", "no such group"),
    ] {
        let err = unix(extra).unwrap_err().to_string();
        assert!(err.contains(want), "{extra}: {err}");
    }
    // socket_mode is for socket files pinproxy makes: not TCP, not systemd's.
    for (listen, want) in [
        ("127.0.0.1:8443", "applies to a unix:/path listener only"),
        (
            "systemd:gaia",
            "the .socket unit sets the file's SocketMode=",
        ),
    ] {
        let text = good()
            .replace("\"127.0.0.1:8443\"", &format!("\"{listen}\""))
            .replace("[[upstream]]\n", "[[upstream]]\nsocket_mode = \"0660\"\n");
        let err = parse(&text).unwrap_err().message;
        assert!(err.contains(want), "{listen}: {err}");
    }
    let relative = parse(&good().replace("\"127.0.0.1:8443\"", "\"unix:gaia.sock\""));
    assert!(relative.unwrap_err().message.contains("absolute file path"));
    let twice = good()
        + &good()
            .replace("shutdown_timeout = \"5s\"", "")
            .replace("\"gaia\"", "\"lab\"");
    let twice = twice.replace("\"127.0.0.1:8443\"", "\"unix:/run/p.sock\"");
    assert!(parse(&twice)
        .unwrap_err()
        .message
        .contains("already used by upstream"));
    let proxy = parse(&format!(
        "[proxy]\nlisten = \"unix:/run/p.sock\"\nallowed_hosts = [\"x\"]\n{}",
        good().replace("shutdown_timeout = \"5s\"", "")
    ));
    assert!(proxy
        .unwrap_err()
        .message
        .contains("does not apply to [proxy]"));
}

#[test]
fn proxy_mode_hosts_are_checked() {
    let with = |hosts: &str| {
        parse(&good().replace("fingerprints", &format!("hosts = [{hosts}]\nfingerprints")))
    };
    let c = with("\"MGMT.example:8443\", \"[2001:db8::1]\"").unwrap();
    assert_eq!(c.upstreams[0].hosts[0].to_string(), "mgmt.example:8443");
    assert_eq!(c.upstreams[0].hosts[1].host, "2001:db8::1");
    let err = with("\"bad host\"").unwrap_err().to_string();
    assert!(err.contains("not a host name or IP"), "{err}");
    let twice = good()
        + &good()
            .replace("shutdown_timeout = \"5s\"", "")
            .replace("\"gaia\"", "\"lab\"")
            .replace("8443", "8444");
    let twice = twice.replacen("fingerprints", "hosts = [\"lab\"]\nfingerprints", 1);
    let err = parse(&twice).unwrap_err().to_string();
    assert!(
        err.contains("would select both upstream \"gaia\" and \"lab\""),
        "{err}"
    );
    let proxy = parse(&format!(
        "[proxy]\nlisten = \"127.0.0.1:3128\"\n{}",
        good().replace("shutdown_timeout = \"5s\"", "")
    ))
    .unwrap();
    assert_eq!(
        proxy.proxy.and_then(|p| p.listen.tcp()).map(|a| a.port()),
        Some(3128)
    );
    let clash = parse(&format!(
        "[proxy]\nlisten = \"127.0.0.1:8443\"\n{}",
        good().replace("shutdown_timeout = \"5s\"", "")
    ))
    .unwrap_err();
    assert!(
        clash
            .to_string()
            .contains("already used by upstream \"gaia\""),
        "{clash}"
    );
}

#[test]
fn missing_files_come_with_the_table_s_other_mistakes_and_say_they_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let text = good().replace("\"192.0.2.10:443\"", "\"https://192.0.2.10/\"")
        + "client_certificate = \"missing.pem\"\nclient_key = \"missing.key\"\n";
    let err = Config::parse(&text, &dir.path().join("proxy.toml")).unwrap_err();
    let all = err.to_string();
    assert_eq!(err.all().count(), 2, "{all}");
    assert!(all.contains("is a URL"), "{all}");
    assert!(
        all.contains("missing.pem and client_key") && all.contains("missing.key do not exist"),
        "{all}"
    );
    assert!(
        !all.contains("BEGIN CERTIFICATE"),
        "no PEM hint for a file that is not there: {all}"
    );
}

/// Windows (run under Wine in CI): the Unix-only keys are errors that name the
/// platform and the way out, at the line of the key.
#[cfg(not(unix))]
#[test]
fn unix_only_keys_are_errors_naming_the_platform() {
    for (from, to, want) in [
        (
            "\"127.0.0.1:8443\"",
            "\"unix:C:/pinproxy/gaia.sock\"",
            "Unix sockets exist only on Unix, and this is windows",
        ),
        (
            "\"127.0.0.1:8443\"",
            "\"systemd:gaia\"",
            "systemd's socket activation exists only on Unix, and this is windows",
        ),
        (
            "listen = \"127.0.0.1:8443\"",
            "listen = \"127.0.0.1:8443\"\nsocket_mode = \"0600\"",
            "socket_mode is for a Unix socket file, and there are none on windows",
        ),
    ] {
        let err = parse(&good().replace(from, to)).unwrap_err().to_string();
        assert!(err.contains(want), "{to}: {err}");
        assert!(
            err.contains("proxy.toml:"),
            "names the file and line: {err}"
        );
    }
}

/// Windows (under Wine in CI): `allowed_users` on a TCP listener names
/// accounts, by name or SID; a number is not an account there.
#[cfg(windows)]
#[test]
fn allowed_users_names_windows_accounts() {
    let with =
        |keys: &str| parse(&good().replace("fingerprints", &format!("{keys}\nfingerprints")));
    // S-1-5-18 is LocalSystem on every Windows.
    let c = with("allowed_users = [\"S-1-5-18\"]").unwrap();
    let users = c.upstreams[0].access.allowed_users.clone().unwrap();
    assert_eq!(users.len(), 1);
    assert!(crate::platform::users::name(users[0]).is_some());
    for (keys, want) in [
        ("allowed_users = [1001]", "Windows accounts have no uid"),
        (
            "allowed_users = [\"no-such-account-pinproxy\"]",
            "no such account on this system",
        ),
        ("allowed_users = [\"S-1-nonsense\"]", "not a SID"),
    ] {
        let err = with(keys).unwrap_err();
        assert!(err.location.starts_with("proxy.toml:7:"), "{keys}: {err}");
        assert!(err.message.contains(want), "{keys}: {err}");
    }
}

#[test]
fn a_windows_path_in_a_basic_string_is_explained() {
    let text = good().replace(
        "shutdown_timeout = \"5s\"",
        "shutdown_timeout = \"5s\"\naudit_log = \"C:\\Users\\pinproxy\\audit.log\"",
    );
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("proxy.toml:2:") && err.contains("audit_log = 'C:\\ProgramData"),
        "{err}"
    );
}
