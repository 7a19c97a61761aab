#!/usr/bin/env bash
# CI for the Debian package: builds it (build.sh), then, as root on this machine,
# goes through its life the way an operator does and checks each step:
# dpkg -i from a clean state (no pinproxy package, user or /etc/pinproxy) → the
# system user, the conffile (root:pinproxy 0640), `systemd-analyze verify` on the
# installed units, `pinproxy check` on the installed config (as root and as the
# service user), the man page and completions → an edited config survives a
# reinstall → `dpkg -r` keeps the config → `dpkg --purge` removes it.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "deb-check: run as root (it installs the package)" >&2; exit 1; }

step() { echo "== $*"; }
fail() { echo "deb-check: $*" >&2; exit 1; }

bash deploy/debian/build.sh
deb=$(ls -t "target/debian/pinproxy_"*"_$(dpkg --print-architecture).deb" | head -n 1)

step "clean state"
if dpkg-query -W pinproxy >/dev/null 2>&1; then dpkg --purge pinproxy; fi
[ ! -e /etc/pinproxy ] || fail "/etc/pinproxy exists without the package; remove it first (this check installs into /etc)"
[ ! -e /usr/bin/pinproxy ] || fail "/usr/bin/pinproxy exists without the package"

step "dpkg -i $deb"
dpkg -i "$deb"
[ "$(dpkg-query -W -f='${Status}' pinproxy)" = "install ok installed" ] || fail "not installed"

step "system user"
getent passwd pinproxy | grep -q ':/usr/sbin/nologin$' || fail "no pinproxy system user with nologin: $(getent passwd pinproxy)"
getent group pinproxy >/dev/null || fail "no pinproxy group"

step "conffile /etc/pinproxy/proxy.toml"
dpkg-query -W -f='${Conffiles}\n' pinproxy | grep -q '^ /etc/pinproxy/proxy.toml ' || fail "not a conffile"
[ "$(stat -c '%U:%G %a' /etc/pinproxy/proxy.toml)" = "root:pinproxy 640" ] \
    || fail "config is $(stat -c '%U:%G %a' /etc/pinproxy/proxy.toml), want root:pinproxy 640"

step "systemd-analyze verify (installed units)"
grep -q '^ExecStart=/usr/bin/pinproxy run --config /etc/pinproxy/proxy.toml$' /usr/lib/systemd/system/pinproxy.service \
    || fail "the installed unit does not start /usr/bin/pinproxy"
grep -q '^User=pinproxy$' /usr/lib/systemd/system/pinproxy.service || fail "the installed unit has no User=pinproxy"
systemd-analyze verify /usr/lib/systemd/system/pinproxy.service /usr/lib/systemd/system/pinproxy.socket

step "pinproxy check on the installed config (root, then the service user)"
/usr/bin/pinproxy check --config /etc/pinproxy/proxy.toml
setpriv --reuid=pinproxy --regid=pinproxy --init-groups \
    /usr/bin/pinproxy check --config /etc/pinproxy/proxy.toml >/dev/null

step "man page and completions"
zcat /usr/share/man/man1/pinproxy.1.gz | grep -q '^\.TH pinproxy 1' || fail "no man page"
for page in man1/pinproxy-run.1.gz man1/pinproxy-pins-add.1.gz man5/pinproxy.toml.5.gz; do
    [ -f "/usr/share/man/$page" ] || fail "no $page"
done
dpkg -s pinproxy | grep -qE '^Maintainer: [^<]+ <[^@ ]+@[^> ]+>$' || fail "Maintainer is not a name and an address"
bash -c 'source /usr/share/bash-completion/completions/pinproxy && complete -p pinproxy' | grep -q pinproxy \
    || fail "bash completion does not register"
grep -q '^#compdef pinproxy' /usr/share/zsh/vendor-completions/_pinproxy || fail "no zsh completion"
grep -q '^complete -c pinproxy' /usr/share/fish/vendor_completions.d/pinproxy.fish || fail "no fish completion"
if command -v zsh >/dev/null; then zsh -n /usr/share/zsh/vendor-completions/_pinproxy; fi
if command -v fish >/dev/null; then fish -n /usr/share/fish/vendor_completions.d/pinproxy.fish; fi

step "an edited config survives a reinstall"
echo "# edited by deb-check" >> /etc/pinproxy/proxy.toml
dpkg -i "$deb"
tail -n 1 /etc/pinproxy/proxy.toml | grep -q '^# edited by deb-check$' || fail "the reinstall replaced the edited config"
[ "$(stat -c '%U:%G %a' /etc/pinproxy/proxy.toml)" = "root:pinproxy 640" ] || fail "the reinstall changed the config's owner or mode"

step "dpkg -r keeps the config, dpkg --purge removes it"
dpkg -r pinproxy
[ ! -e /usr/bin/pinproxy ] || fail "/usr/bin/pinproxy left after dpkg -r"
[ -f /etc/pinproxy/proxy.toml ] || fail "dpkg -r removed the config"
dpkg --purge pinproxy
[ ! -e /etc/pinproxy/proxy.toml ] || fail "dpkg --purge left the config"
echo "deb-check: ok ($deb, $(du -h "$deb" | cut -f1))"
