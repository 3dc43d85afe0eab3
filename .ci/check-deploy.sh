#!/usr/bin/env bash
# Static checks of the deployment files under deploy/ (no Docker engine, no running
# services needed). Runs as root on a fresh Debian bookworm machine (CI=true); installs what
# it needs with apt-get. Prints one "ok: ..." / "FAIL: ..." (or "skip: ...") line per check
# and exits non-zero if any check failed. Idempotent: everything it writes is in a temp dir.
#
#   bash .ci/check-deploy.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPLOY="$ROOT/deploy"
TMP="$(mktemp -d -t dingbot-deploy-check.XXXXXX)"
trap 'rm -rf "$TMP"' EXIT
export DEBIAN_FRONTEND=noninteractive

FAILS=0
ok()   { echo "ok: $*"; }
fail() { echo "FAIL: $*"; FAILS=$((FAILS + 1)); }
skip() { echo "skip: $*"; }
# Runs a Python check script (stdin) that prints ok:/FAIL: lines; counts its FAIL lines.
pycheck() {
  local out rc=0
  out="$("$PY" - "$@" 2>&1)" || rc=$?
  [[ -n "$out" ]] && echo "$out"
  local n
  n="$(grep -c '^FAIL: ' <<<"$out" || true)"
  FAILS=$((FAILS + n))
  if [[ $rc -ne 0 && $n -eq 0 ]]; then fail "python check crashed (exit $rc)"; fi
  return 0
}

# ---------------------------------------------------------------- tools
need=()
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
[[ -x /usr/bin/systemd-analyze ]] || need+=(systemd)
if [[ -x /usr/bin/python3 ]]; then
  /usr/bin/python3 -c 'import yaml, tomllib' 2>/dev/null || need+=(python3-yaml)
else
  need+=(python3 python3-yaml)
fi
CADDY_FROM_APT=1
command -v caddy >/dev/null 2>&1 || need+=(caddy)
if ((${#need[@]})); then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
    timeout 150 apt-get update -qq >"$TMP/apt.log" 2>&1 || true
    # caddy only if this Debian release has it.
    # (capture first: `apt-cache ... | grep -q` can SIGPIPE apt-cache under pipefail)
    caddy_policy="$(apt-cache policy caddy 2>/dev/null || true)"
    if [[ " ${need[*]} " == *" caddy "* && ! $caddy_policy =~ Candidate:\ [0-9] ]]; then
      CADDY_FROM_APT=0
      keep=()
      for p in "${need[@]}"; do [[ $p == caddy ]] || keep+=("$p"); done
      need=("${keep[@]}")
    fi
    # policy-rc.d-less containers would start nginx/caddy on install; prevent that.
    rcd_created=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
      rcd_created=1
    fi
    if ((${#need[@]} == 0)); then
      :
    elif timeout 240 apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$TMP/apt.log" 2>&1; then
      ok "installed: ${need[*]}"
    else
      fail "apt-get install ${need[*]} (log follows)"
      tail -n 20 "$TMP/apt.log" | sed 's/^/    /'
    fi
    if [[ $rcd_created -eq 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
  else
    fail "missing packages ${need[*]} and cannot apt-get install them (not root / no apt)"
  fi
fi
PY=/usr/bin/python3
[[ -x $PY ]] || PY="$(command -v python3)"
export PY

# ---------------------------------------------------------------- required files
for f in Dockerfile Dockerfile.dockerignore dingbot.example.toml systemd/dingbot.service \
  nginx/dingbot.conf caddy/Caddyfile k8s/kustomization.yaml k8s/namespace.yaml \
  k8s/secret.example.yaml k8s/configmap.yaml k8s/deployment.yaml k8s/service.yaml \
  k8s/ingress.yaml k8s/networkpolicy.yaml stream/dingbot.toml; do
  [[ -f "$DEPLOY/$f" ]] || fail "missing deploy/$f"
done

# ---------------------------------------------------------------- Stream-mode example
pycheck "$DEPLOY/stream/dingbot.toml" <<'PY'
import sys, tomllib
def check(cond, msg): print(("ok: " if cond else "FAIL: ") + msg)
try:
    doc = tomllib.load(open(sys.argv[1], "rb"))
except Exception as e:
    check(False, f"stream/dingbot.toml does not parse: {e}")
    sys.exit(0)
check(doc.get("dingtalk", {}).get("mode") == "stream", "stream/dingbot.toml sets dingtalk.mode = \"stream\"")
check(doc.get("dingtalk", {}).get("app_secret", "") == "", "stream/dingbot.toml holds no secret")
st = doc.get("stream", {})
check(st.get("ping_interval_ms", 0) < st.get("idle_timeout_ms", 0), "stream/dingbot.toml: ping_interval_ms < idle_timeout_ms")
PY

# ---------------------------------------------------------------- dingbot's built-in defaults
# The proxies' body limits must equal dingbot's own default server.body_limit_bytes, read from
# the `section!` in src/config.rs (the source of truth), not from a copy of it here.
BODY_LIMIT="$("$PY" - "$ROOT/src/config.rs" <<'PY'
import re, sys
src = open(sys.argv[1], encoding="utf-8").read()
v = re.search(r"\bbody_limit_bytes:\s*usize\s*=\s*([0-9_]+)", src)
print(int(v.group(1).replace("_", "")) if v else "")
PY
)" || BODY_LIMIT=""
if [[ $BODY_LIMIT =~ ^[0-9]+$ ]]; then
  ok "src/config.rs: default server.body_limit_bytes is $BODY_LIMIT"
else
  fail "src/config.rs: cannot read the default server.body_limit_bytes (body_limit_bytes: usize = N)"
  BODY_LIMIT=65536
fi
export BODY_LIMIT

# ---------------------------------------------------------------- example TOML
pycheck "$DEPLOY/dingbot.example.toml" <<'PY'
import sys, os, tomllib, re, ipaddress
path = sys.argv[1]
def check(cond, msg): print(("ok: " if cond else "FAIL: ") + msg)
try:
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    check(True, "dingbot.example.toml parses (tomllib)")
except Exception as e:
    check(False, f"dingbot.example.toml does not parse: {e}")
    sys.exit(0)
# The contract: every key, with its default (None = no default to compare).
# server.listen is the one deliberate exception: the example binds to loopback (the
# built-in default is 0.0.0.0:8080), checked on its own below.
contract = {
    "server": {"listen": None, "callback_path": "/dingtalk/callback",
               "body_limit_bytes": int(os.environ["BODY_LIMIT"]), "max_in_flight": 1024,
               "shutdown_grace_secs": 10},
    "dingtalk": {"app_key": None, "app_secret": None, "oapi_base": "https://oapi.dingtalk.com",
                 "api_base": "https://api.dingtalk.com", "max_clock_skew_secs": 3600,
                 "extra_webhook_hosts": [], "request_timeout_ms": 5000},
    "rate_limit": {"per_group_per_minute": 20},
    "bot": {"language": "zh", "templates_dir": ""},
    "log": {"format": "text"},
}
missing, wrong = [], []
for sec, keys in contract.items():
    for k, default in keys.items():
        if sec not in doc or k not in doc[sec]:
            missing.append(f"{sec}.{k}")
        elif default is not None and doc[sec][k] != default:
            wrong.append(f"{sec}.{k}={doc[sec][k]!r} (default {default!r})")
groups = doc.get("groups")
if not (isinstance(groups, list) and groups and all(isinstance(g, dict) for g in groups)):
    missing.append("[[groups]]")
else:
    for k in ("chatid", "open_conversation_id"):
        if not all(k in g for g in groups):
            missing.append(f"groups[].{k}")
check(not missing, "example TOML has every contract key" + (f" (missing: {', '.join(missing)})" if missing else ""))
check(not wrong, "example TOML shows the default values" + (f" (differs: {'; '.join(wrong)})" if wrong else ""))
def loopback(addr):
    host = str(addr).rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
listen = doc.get("server", {}).get("listen", "")
check(loopback(listen), f"example TOML listens on loopback only, behind the proxy ({listen!r})")
secret = doc.get("dingtalk", {}).get("app_secret", "x")
check(isinstance(secret, str) and (secret == "" or "REPLACE" in secret.upper()),
      "example TOML app_secret is an empty placeholder")
text = open(path, encoding="utf-8").read()
check("DINGBOT_DINGTALK__APP_SECRET" in text, "example TOML tells to set DINGBOT_DINGTALK__APP_SECRET")
# Every `key = value` line is commented (a comment line right above it, or an inline one).
lines = text.splitlines()
uncommented = []
for i, line in enumerate(lines):
    m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=", line)
    if m and not ("#" in line.split("=", 1)[1] or (i > 0 and lines[i - 1].lstrip().startswith("#"))):
        uncommented.append(m.group(1))
check(not uncommented, "example TOML has a comment for every key" + (f" (none for: {', '.join(uncommented)})" if uncommented else ""))
PY

# ---------------------------------------------------------------- Dockerfile (static)
pycheck "$DEPLOY/Dockerfile" "$DEPLOY/Dockerfile.dockerignore" <<'PY'
import sys, re, json
df, ign = sys.argv[1], sys.argv[2]
def check(cond, msg): print(("ok: " if cond else "FAIL: ") + msg)
raw = open(df, encoding="utf-8").read()
# Join continuation lines, drop comments/blank lines -> (INSTRUCTION, args)
instrs, buf = [], ""
for line in raw.splitlines():
    s = line.strip()
    if not buf and (not s or s.startswith("#")):
        continue
    if s.startswith("#"):
        continue
    if s.endswith("\\"):
        buf += s[:-1] + " "
        continue
    buf += s
    op, _, args = buf.partition(" ")
    instrs.append((op.upper(), args.strip()))
    buf = ""
args_ = {a.split("=", 1)[0].split()[0]: a.split("=", 1)[1] for op, a in instrs if op == "ARG" and "=" in a}
def expand(v): return re.sub(r"\$\{?(\w+)\}?", lambda m: args_.get(m.group(1), m.group(0)), v)
froms = [i for i, (op, _) in enumerate(instrs) if op == "FROM"]
check(len(froms) >= 2, f"Dockerfile is multi-stage ({len(froms)} FROM)")
first = expand(instrs[froms[0]][1]) if froms else ""
check(bool(re.match(r"(docker\.io/(library/)?)?rust:1\.95", first)), f"builder stage is rust:1.95* ({first.split()[0] if first else '-'})")
check(any(op == "RUN" and "cargo build" in a and "--release" in a and "--locked" in a for op, a in instrs),
      "Dockerfile runs cargo build --release --locked")
dep_layer = False
seen_manifest_copy = False
for op, a in instrs:
    if op == "COPY" and "Cargo.toml" in a and "Cargo.lock" in a and " . " not in f" {a} ":
        seen_manifest_copy = True
    if seen_manifest_copy and op == "RUN" and "cargo build" in a:
        dep_layer = True
        break
    if op == "COPY" and re.search(r"(^|\s)\.\s", a + " ") and "--from" not in a:
        break
check(dep_layer, "Dockerfile builds dependencies from Cargo.toml+Cargo.lock before copying sources")
final = instrs[froms[-1]:] if froms else []
final_base = expand(final[0][1]).split()[0] if final else ""
check(final_base.startswith(("gcr.io/distroless/", "debian:bookworm-slim", "debian:12-slim")), f"final stage is small ({final_base})")
users = [a for op, a in final if op == "USER"]
u = users[-1].split(":")[0] if users else ""
check(bool(users) and u not in ("root", "0", ""), f"final stage sets a non-root USER ({users[-1] if users else 'none'})")
check(u == "10001", "final stage USER is uid 10001 (matches k8s runAsUser)")
check(any(op == "EXPOSE" and "8080" in a.split() for op, a in final), "final stage EXPOSEs 8080")
# Inside a container 127.0.0.1 is the container's own: published ports and probes arrive on
# its interface. The image sets a non-loopback listen (winning over the mounted TOML, whose
# example binds to loopback for hosts with the proxy alongside).
envs = {}
for op, a in final:
    if op == "ENV":
        for kv in re.findall(r'(\w+)=("[^"]*"|\S+)', a):
            envs[kv[0]] = kv[1].strip('"')
il = envs.get("DINGBOT_SERVER__LISTEN", "")
ih, _, ip = il.rpartition(":")
check(ih.strip("[]") in ("0.0.0.0", "::") and any(op == "EXPOSE" and ip in a.split() for op, a in final),
      f"final stage sets ENV DINGBOT_SERVER__LISTEN to all interfaces on the EXPOSEd port ({il!r})")
ep = [a for op, a in final if op == "ENTRYPOINT"]
try:
    epv = json.loads(ep[-1]) if ep else None
except ValueError:
    epv = None
check(epv is not None and epv[-3:] == ["serve", "--config", "/etc/dingbot/dingbot.toml"] and epv[0].endswith("/dingbot"),
      "ENTRYPOINT is exec-form dingbot serve --config /etc/dingbot/dingbot.toml")
check(any(op == "COPY" and "--from=" in a for op, a in final), "final stage copies the binary from the builder")
has_hc = any(op == "HEALTHCHECK" for op, _ in final)
check(has_hc or ("distroless" in final_base and re.search(r"#.*HEALTHCHECK", raw)),
      "HEALTHCHECK present, or omitted with an explanation (distroless has no shell)")
check(not re.search(r"(?i)app_secret\s*=|DINGBOT_DINGTALK__APP_SECRET=\S", "\n".join(a for _, a in instrs)),
      "Dockerfile bakes no secret")
ignores = [l.strip() for l in open(ign, encoding="utf-8") if l.strip() and not l.startswith("#")]
need = {"target": ("target", "/target", "**/target", "target/"), ".git": (".git", "/.git", ".git/"),
        "fuzz/target": ("fuzz/target", "**/target", "fuzz/target/")}
miss = [k for k, alts in need.items() if not any(a in ignores for a in alts)]
check(not miss, "Dockerfile.dockerignore excludes target/, .git, fuzz/target" + (f" (missing {miss})" if miss else ""))
PY

# ---------------------------------------------------------------- nginx
NGX="$TMP/nginx"
mkdir -p "$NGX"
if command -v nginx >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1; then
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bot.example.com" \
    -keyout "$NGX/test.key" -out "$NGX/test.crt" >/dev/null 2>&1 ||
    fail "openssl could not generate the self-signed test certificate"
  # Same file, only the certificate and log paths pointed into the temp dir.
  sed -E \
    -e "s#^([[:space:]]*ssl_certificate)[[:space:]]+/etc/ssl/[^;]+;#\1 $NGX/test.crt;#" \
    -e "s#^([[:space:]]*ssl_certificate_key)[[:space:]]+/etc/ssl/[^;]+;#\1 $NGX/test.key;#" \
    -e "s#/var/log/nginx/#$NGX/#g" \
    "$DEPLOY/nginx/dingbot.conf" >"$NGX/dingbot.conf"
  cat >"$NGX/nginx.conf" <<EOF
pid $NGX/nginx.pid;
error_log $NGX/error.log;
events { worker_connections 64; }
http {
    client_body_temp_path $NGX/body;
    proxy_temp_path $NGX/proxy;
    fastcgi_temp_path $NGX/fastcgi;
    uwsgi_temp_path $NGX/uwsgi;
    scgi_temp_path $NGX/scgi;
    access_log off;
    include $NGX/dingbot.conf;
}
EOF
  if [[ $(grep -c "$NGX/test\.\(crt\|key\)" "$NGX/dingbot.conf") -ne 2 ]]; then
    fail "nginx: expected one ssl_certificate and one ssl_certificate_key under /etc/ssl/ to rewrite"
  elif timeout 30 nginx -t -q -p "$NGX" -c "$NGX/nginx.conf" -e "$NGX/error.log" >"$NGX/t.out" 2>&1; then
    ok "nginx -t accepts deploy/nginx/dingbot.conf ($(nginx -v 2>&1 | sed 's/.*version: //'))"
  else
    fail "nginx -t rejects deploy/nginx/dingbot.conf:"
    sed 's/^/    /' "$NGX/t.out"
  fi
else
  fail "nginx/openssl not available"
fi
pycheck "$DEPLOY/nginx/dingbot.conf" "$DEPLOY/dingbot.example.toml" <<'PY'
import sys, os, re, tomllib
conf, toml = sys.argv[1], sys.argv[2]
def check(cond, msg): print(("ok: " if cond else "FAIL: ") + msg)
cfg = tomllib.load(open(toml, "rb"))
cb = cfg["server"]["callback_path"]
listen = cfg["server"]["listen"]
limit = int(os.environ["BODY_LIMIT"])
def size(v):
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", v or "")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()] if m else None
def secs(v):
    m = re.fullmatch(r"(\d+)(ms|s|m)?", v or "")
    return int(m.group(1)) / {"ms": 1000, "s": 1, None: 1, "m": 1 / 60}[m.group(2)] if m else None
text = "\n".join(l.split("#", 1)[0] for l in open(conf, encoding="utf-8").read().splitlines())
# Tiny block parser: tokens are '{', '}', and ';'-terminated statements.
tokens = re.findall(r"[{};]|[^{};]+", text)
def parse(it):
    items, stmt = [], ""
    for t in it:
        if t == "{":
            items.append((stmt.split(), parse(it))); stmt = ""
        elif t == "}":
            return items
        elif t == ";":
            items.append((stmt.split(), None)); stmt = ""
        else:
            stmt += " " + t.strip()
    return items
tree = parse(iter(tokens))
def find(items, name):
    return [(h, b) for h, b in items if h and h[0] == name]
servers = find(tree, "server")
tls = [b for h, b in servers if any(d[0] == "listen" and "ssl" in d for d, _ in b if d)]
plain = [b for h, b in servers if b not in tls]
check(len(tls) == 1, "nginx: one TLS server block")
def directives(items):
    for h, b in items:
        if h: yield h
        if b: yield from directives(b)
check(len(plain) >= 1 and all(any(d[0] == "return" and len(d) >= 3 and d[1] in ("301", "302", "307", "308")
      and d[2].startswith("https://") for d in directives(b)) for b in plain),
      "nginx: plain-HTTP server redirects to https")
proxied = []
def walk(items, loc):
    for h, b in items:
        if not h: continue
        if h[0] == "location" and b is not None:
            walk(b, h[1:])
        elif b is not None:
            walk(b, loc)
        elif h[0] == "proxy_pass":
            proxied.append((tuple(loc), h[1]))
walk(tree, None)
check(len(proxied) == 1 and proxied[0][0] == ("=", cb),
      f"nginx: proxy_pass only in 'location = {cb}' (found {[' '.join(l) if l else 'server' for l, _ in proxied]})")
srv = tls[0] if tls else []
ups = {h[1]: b for h, b in find(tree, "upstream")}
target = proxied[0][1] if proxied else ""
up_servers = [d[1] for d, _ in (ups.get(target.replace("http://", ""), []) or []) if d and d[0] == "server"]
check((up_servers or [target.replace("http://", "")]) == [listen],
      f"nginx: upstream is the example config's loopback listen {listen} ({up_servers})")
locs = {tuple(h[1:]): b for h, b in find(srv, "location")}
cbloc = locs.get(("=", cb), [])
flat = lambda b: [d for d, _ in b if d] + [d for _, sub in b if sub for d, __ in sub if d]
cbdirs = flat(cbloc)
check(any(d[0] == "if" for d in cbdirs) and "POST" in str(cbloc) and any(d[:2] == ["return", "405"] for d in cbdirs),
      "nginx: callback location allows POST only (405 otherwise)")
hdrs = {d[1].lower(): d[2] for d in cbdirs if d[0] == "proxy_set_header" and len(d) >= 3}
check("x-forwarded-for" in hdrs and "x-real-ip" in hdrs, "nginx: sets X-Forwarded-For and X-Real-IP")
check(not any(d[0] == "proxy_set_header" and d[1].lower() in ("timestamp", "sign") for d in cbdirs)
      and not any(d[0] in ("proxy_pass_request_headers",) and d[1] == "off" for d in cbdirs),
      "nginx: DingTalk timestamp/sign headers passed through untouched")
check(any(d[0] == "proxy_read_timeout" for d in cbdirs) and any(d[0] == "proxy_connect_timeout" for d in cbdirs),
      "nginx: proxy timeouts set")
sdirs = [d for d, _ in srv if d]
body = [d[1] for d in sdirs + cbdirs if d[0] == "client_max_body_size"]
check(body and all(size(b) == limit for b in body),
      f"nginx: client_max_body_size equals dingbot's default body_limit_bytes {limit} ({body})")
buf = [d[1] for d in sdirs + cbdirs if d[0] == "client_body_buffer_size"]
check(buf and all((size(b) or 0) >= limit for b in buf),
      f"nginx: client_body_buffer_size >= {limit}: callback bodies stay in memory ({buf})")
for t in ("client_header_timeout", "client_body_timeout"):
    v = [d[1] for d in sdirs + cbdirs if d[0] == t]
    check(v and all(0 < (secs(x) or 0) <= 60 for x in v), f"nginx: {t} set, at most 60 s ({v})")
rb = [d[1] for d in directives(tree) if d[0] == "proxy_request_buffering"]
check(any(d[:2] == ["proxy_request_buffering", "on"] for d in cbdirs) and rb and all(x == "on" for x in rb),
      f"nginx: proxy_request_buffering on in the callback location, off nowhere ({rb})")
protos = [d[1:] for d in sdirs if d[0] == "ssl_protocols"]
check(bool(protos) and all(set(p) <= {"TLSv1.2", "TLSv1.3"} for p in protos), "nginx: ssl_protocols TLSv1.2/1.3 only")
certs = [d[1] for d in sdirs if d[0] in ("ssl_certificate", "ssl_certificate_key")]
check(len(certs) == 2 and all(c.startswith("/etc/ssl/") for c in certs), "nginx: certificates under /etc/ssl/")
root = locs.get(("/",), [])
check(any(d[:2] == ["return", "404"] for d in flat(root)) and len(locs) == 2,
      "nginx: everything except the callback returns 404")
check("metrics" not in text and "healthz" not in text and "readyz" not in text,
      "nginx: /metrics, /healthz, /readyz not mentioned (not exposed)")
PY

# ---------------------------------------------------------------- systemd
UNIT="$DEPLOY/systemd/dingbot.service"
SD="$TMP/systemd"
mkdir -p "$SD"
if [[ -x /usr/bin/systemd-analyze ]]; then
  # `verify` refuses a unit whose ExecStart binary does not exist, and the real binary is
  # not installed here. Check a copy whose ExecStart program is /bin/true (same arguments);
  # every other line is unchanged.
  sed -E 's#^ExecStart=/usr/local/bin/dingbot #ExecStart=/bin/true #' "$UNIT" >"$SD/dingbot.service"
  if ! grep -q '^ExecStart=/bin/true serve --config /etc/dingbot/dingbot.toml$' "$SD/dingbot.service"; then
    fail "systemd: ExecStart is not '/usr/local/bin/dingbot serve --config /etc/dingbot/dingbot.toml'"
  fi
  rc=0
  (cd "$SD" && timeout 60 /usr/bin/systemd-analyze verify "$SD/dingbot.service") >"$SD/verify.out" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]] && ! grep -q 'dingbot' "$SD/verify.out"; then
    ok "systemd-analyze verify dingbot.service (ExecStart stubbed with /bin/true)"
  else
    fail "systemd-analyze verify dingbot.service (exit $rc):"
    sed 's/^/    /' "$SD/verify.out"
  fi
  rc=0
  timeout 60 /usr/bin/systemd-analyze security --offline=yes --threshold=20 --no-pager "$UNIT" \
    >"$SD/security.out" 2>&1 || rc=$?
  score="$(grep -o 'Overall exposure level for [^:]*: [0-9.]* [A-Z]*' "$SD/security.out" | sed 's/.*: //' || true)"
  if [[ $rc -eq 0 && -n $score ]]; then
    ok "systemd-analyze security: exposure $score (threshold 2.0)"
  else
    fail "systemd-analyze security: exposure '${score:-?}' above 2.0 or error (exit $rc)"
    grep -E 'Overall|[Ff]ailed|rror' "$SD/security.out" | sed 's/^/    /' || true
  fi
else
  fail "systemd-analyze not found at /usr/bin/systemd-analyze"
fi
pycheck "$UNIT" "$DEPLOY/dingbot.example.toml" <<'PY'
import sys, re, tomllib, ipaddress
unit, toml = sys.argv[1], sys.argv[2]
def check(cond, msg): print(("ok: " if cond else "FAIL: ") + msg)
kv = {}
for line in open(unit, encoding="utf-8"):
    line = line.strip()
    if not line or line.startswith(("#", ";", "[")) or "=" not in line: continue
    k, v = line.split("=", 1)
    kv.setdefault(k.strip(), []).append(v.strip())
want = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "MemoryDenyWriteExecute": "yes",
    "LockPersonality": "yes", "RestrictNamespaces": "yes", "StateDirectory": "dingbot",
    "Restart": "on-failure", "KillSignal": "SIGTERM", "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "EnvironmentFile": "-/etc/dingbot/dingbot.env",
    "ExecStart": "/usr/local/bin/dingbot serve --config /etc/dingbot/dingbot.toml",
}
bad = [f"{k}={want[k]!r}" for k in want if want[k] not in kv.get(k, [])]
check(not bad, "systemd: hardening/runtime directives present" + (f" (missing {', '.join(bad)})" if bad else ""))
check("@system-service" in " ".join(kv.get("SystemCallFilter", [])), "systemd: SystemCallFilter=@system-service")
check(kv.get("DynamicUser") == ["yes"] or bool(kv.get("User")), "systemd: runs as DynamicUser or a dedicated User")
def secs(v):
    m = re.fullmatch(r"(\d+)\s*(s|sec|min|m)?", v)
    return int(m.group(1)) * (60 if m.group(2) in ("min", "m") else 1) if m else None
grace = tomllib.load(open(toml, "rb"))["server"]["shutdown_grace_secs"]
ts = secs(kv.get("TimeoutStopSec", ["0"])[-1])
check(ts is not None and ts > grace, f"systemd: TimeoutStopSec ({ts}s) > shutdown_grace_secs ({grace}s)")
check(not any("SECRET" in v.upper() for v in kv.get("Environment", [])), "systemd: no secret in Environment=")
envs = dict(e.split("=", 1) for v in kv.get("Environment", []) for e in v.split() if "=" in e)
sl = envs.get("DINGBOT_SERVER__LISTEN", "")
want_listen = tomllib.load(open(toml, "rb"))["server"]["listen"]
host = sl.rsplit(":", 1)[0].strip("[]")
try:
    lo = ipaddress.ip_address(host).is_loopback
except ValueError:
    lo = False
check(lo and sl == want_listen,
      f"systemd: Environment=DINGBOT_SERVER__LISTEN is loopback and equals the example config's listen ({sl!r} vs {want_listen!r})")
text = open(unit, encoding="utf-8").read()
check(bool(re.search(r"systemd-analyze security.*\n.*measured \d+\.\d+", text)), "systemd: measured security score noted in a comment")
PY

# ---------------------------------------------------------------- Caddy
CADDY="$TMP/caddy"
mkdir -p "$CADDY/xdg"
if command -v caddy >/dev/null 2>&1; then
  cv="$(caddy version 2>/dev/null | awk '{print $1}' || true)"
  rc=0
  (cd "$CADDY" && XDG_DATA_HOME="$CADDY/xdg" XDG_CONFIG_HOME="$CADDY/xdg" HOME="$CADDY" \
    timeout 60 caddy validate --adapter caddyfile --config "$DEPLOY/caddy/Caddyfile") >"$CADDY/validate.out" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then
    ok "caddy validate --adapter caddyfile deploy/caddy/Caddyfile (caddy $cv)"
  else
    fail "caddy validate deploy/caddy/Caddyfile (exit $rc):"
    grep -v '"level":"info"' "$CADDY/validate.out" | tail -n 15 | sed 's/^/    /'
  fi
  if caddy fmt "$DEPLOY/caddy/Caddyfile" 2>/dev/null | diff -q - "$DEPLOY/caddy/Caddyfile" >/dev/null; then
    ok "caddy fmt: Caddyfile is formatted"
  else
    fail "caddy fmt: Caddyfile is not formatted (run: caddy fmt --overwrite deploy/caddy/Caddyfile)"
  fi
  if (cd "$CADDY" && HOME="$CADDY" timeout 30 caddy adapt --adapter caddyfile \
    --config "$DEPLOY/caddy/Caddyfile") >"$CADDY/caddy.json" 2>"$CADDY/adapt.err"; then
    pycheck "$CADDY/caddy.json" "$DEPLOY/dingbot.example.toml" <<'PY'
import sys, os, re, json, tomllib
cfg = json.load(open(sys.argv[1]))
toml = tomllib.load(open(sys.argv[2], "rb"))
cb = toml["server"]["callback_path"]
listen = toml["server"]["listen"]
limit = int(os.environ["BODY_LIMIT"])
def check(cond, msg): print(("ok: " if cond else "FAIL: ") + msg)
servers = cfg.get("apps", {}).get("http", {}).get("servers", {})
# proxies: (paths, methods, handler, request_body max_sizes applied before it on its route)
proxies, bodies, responds, too_large = [], [], [], []
def walk(routes, paths, methods, limits):
    for r in routes or []:
        p, m, lim = list(paths), list(methods), list(limits)
        for mt in r.get("match", []):
            if "path" in mt: p.append(tuple(mt["path"]))
            if "method" in mt: m.append(tuple(mt["method"]))
        for h in r.get("handle", []):
            kind = h.get("handler")
            if kind == "subroute": walk(h.get("routes"), p, m, lim)
            elif kind == "reverse_proxy": proxies.append((p, m, h, list(lim)))
            elif kind == "request_body": bodies.append(h.get("max_size")); lim.append(h.get("max_size"))
            elif kind == "static_response":
                responds.append((p, m, h.get("status_code")))
        if any("header_regexp" in mt for mt in r.get("match", [])):
            for mt in r["match"]:
                pat = mt.get("header_regexp", {}).get("Content-Length", {}).get("pattern")
                codes = [x.get("status_code") for h in r.get("handle", []) for x in
                         ([h] + [y for sr in h.get("routes", []) for y in sr.get("handle", [])])]
                if pat and 413 in [int(c) for c in codes if c is not None]:
                    too_large.append((tuple(mt.get("path", [])), pat))
for s in servers.values():
    walk(s.get("routes"), [], [], [])
check(len(proxies) == 1, f"caddy: exactly one reverse_proxy ({len(proxies)})")
ok_paths = all(p and all(x == (cb,) for x in p) for p, _, _, _ in proxies)
check(ok_paths, f"caddy: reverse_proxy only under path {cb}")
check(all(m and all(x == ("POST",) for x in m) for _, m, _, _ in proxies), "caddy: reverse_proxy only for POST")
ups = [u.get("dial") for _, _, h, _ in proxies for u in h.get("upstreams", [])]
check(ups == [listen], f"caddy: upstream is the example config's loopback listen {listen} ({ups})")
lims = [l for _, _, _, l in proxies]
check(bool(lims) and all(l and l[-1] == limit for l in lims),
      f"caddy: request_body max_size on the callback route equals dingbot's default body_limit_bytes {limit} ({lims})")
# A declared Content-Length above the limit gets 413 before the proxy (Caddy 2.6 would
# answer the cut-off body with 502). Test the matcher's pattern at the boundary.
probes_ok = [str(limit + 1), str(limit + 463), str(10 * limit), "99999999"]
probes_no = ["0", "1", str(limit - 1), str(limit), str(limit // 10)]
good = [pat for path, pat in too_large if path == (cb,)
        and all(re.search(pat, x) for x in probes_ok) and not any(re.search(pat, x) for x in probes_no)]
check(len(good) == 1 and len(too_large) == 1,
      f"caddy: 413 for a Content-Length above {limit} on {cb}, not at or below it ({len(too_large)} matcher(s), {len(good)} right)")
buffered = [h.get("buffer_requests") is True or (h.get("request_buffers") or 0) > 0 for _, _, h, _ in proxies]
check(bool(buffered) and all(buffered),
      "caddy: reverse_proxy buffers the request body before it reaches dingbot (buffer_requests / request_buffers)")
for name, sv in servers.items():
    rt, rht = sv.get("read_timeout", 0), sv.get("read_header_timeout", 0)
    check(0 < rt <= 60e9 and 0 < rht <= 60e9,
          f"caddy: server {name} has timeouts read_body ({rt / 1e9:g} s) and read_header ({rht / 1e9:g} s), each at most 60 s")
check(any(not p and not m and str(c) == "404" for p, m, c in responds), "caddy: everything else responds 404")
raw = json.dumps(cfg)
check("metrics" not in raw and "healthz" not in raw and "readyz" not in raw, "caddy: /metrics, /healthz, /readyz not exposed")
hdr = [h.get("headers", {}).get("request", {}) for _, _, h, _ in proxies]
check(all("X-Real-Ip" in x.get("set", {}) for x in hdr), "caddy: sets X-Real-IP (X-Forwarded-For is set by Caddy itself)")
check(not any(k.lower() in ("timestamp", "sign") for x in hdr for op in x.values() if isinstance(op, (dict, list)) for k in op),
      "caddy: DingTalk timestamp/sign headers passed through untouched")
PY
  else
    fail "caddy adapt failed: $(head -c 300 "$CADDY/adapt.err")"
  fi
elif [[ $CADDY_FROM_APT -eq 0 ]]; then
  skip "caddy is not packaged for this Debian release (apt-cache policy caddy: no candidate); Caddyfile not validated"
else
  fail "caddy not available after install"
fi

# ---------------------------------------------------------------- Kubernetes
pycheck "$DEPLOY/k8s" <<'PY'
import sys, os, glob, tomllib, yaml
d = sys.argv[1]
def check(cond, msg): print(("ok: " if cond else "FAIL: ") + msg)
docs = {}
for f in sorted(glob.glob(os.path.join(d, "*.yaml"))):
    name = os.path.basename(f)
    try:
        ds = [x for x in yaml.safe_load_all(open(f, encoding="utf-8")) if x is not None]
        good = bool(ds) and all(isinstance(x, dict) and x.get("apiVersion") and x.get("kind") for x in ds)
        good = good and all(x.get("metadata", {}).get("name") or x["kind"] == "Kustomization" for x in ds)
        check(good, f"k8s/{name} parses (PyYAML) with apiVersion/kind/metadata.name")
        docs[name] = ds
    except yaml.YAMLError as e:
        check(False, f"k8s/{name} does not parse: {e}")
by_kind = {}
for name, ds in docs.items():
    for x in ds:
        by_kind.setdefault(x["kind"], []).append(x)
def one(kind):
    xs = by_kind.get(kind, [])
    check(len(xs) == 1, f"k8s: exactly one {kind} ({len(xs)})")
    return xs[0] if xs else {}

kz = one("Kustomization")
res = kz.get("resources", [])
check(all(os.path.isfile(os.path.join(d, r)) for r in res), f"k8s: kustomization resources exist ({', '.join(res)})")
check("secret.example.yaml" not in res, "k8s: kustomization does not apply the example Secret")
need = {"configmap.yaml", "deployment.yaml", "service.yaml", "ingress.yaml"}
check(need <= set(res), "k8s: kustomization lists configmap, deployment, service, ingress")

cm = one("ConfigMap")
try:
    conf = tomllib.loads(cm.get("data", {}).get("dingbot.toml", ""))
    check(True, "k8s: ConfigMap dingbot.toml parses (tomllib)")
except Exception as e:
    conf = {}
    check(False, f"k8s: ConfigMap dingbot.toml does not parse: {e}")
srv = conf.get("server", {})
cb = srv.get("callback_path", "/dingtalk/callback")
grace = srv.get("shutdown_grace_secs", 10)
# The pod's listen address: the Deployment's DINGBOT_SERVER__LISTEN wins over the ConfigMap.
dep_env = {e.get("name"): e.get("value") for x in by_kind.get("Deployment", [])
           for c in x.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
           for e in c.get("env", [])}
env_listen = dep_env.get("DINGBOT_SERVER__LISTEN")
listen = env_listen or srv.get("listen", "0.0.0.0:8080")
lhost, _, lport = str(listen).rpartition(":")
port = int(lport)
check(env_listen is not None and lhost.strip("[]") in ("0.0.0.0", "::"),
      f"k8s: Deployment sets DINGBOT_SERVER__LISTEN to all interfaces: probes and the Service reach the pod IP ({env_listen!r})")
check(srv.get("listen") in (None, env_listen),
      f"k8s: ConfigMap [server].listen agrees with the Deployment's DINGBOT_SERVER__LISTEN ({srv.get('listen')!r})")
check("app_secret" not in conf.get("dingtalk", {}), "k8s: ConfigMap holds no app_secret")
check(bool(conf.get("dingtalk", {}).get("app_key")), "k8s: ConfigMap sets dingtalk.app_key")

sec = one("Secret")
check("stringData" in sec and all("REPLACE" in str(v).upper() for v in sec.get("stringData", {}).values()),
      "k8s: example Secret uses stringData with a placeholder")
sec_text = open(os.path.join(d, "secret.example.yaml"), encoding="utf-8").read()
check("kubectl" in sec_text and "create secret" in sec_text, "k8s: example Secret says to create it with kubectl")

dep = one("Deployment")
spec = dep.get("spec", {})
pod = spec.get("template", {}).get("spec", {})
cs = pod.get("containers", [])
check(len(cs) == 1, "k8s: Deployment has one container")
c = cs[0] if cs else {}
check(spec.get("replicas") == 1, f"k8s: replicas is 1 (in-memory dedupe/rate limit) ({spec.get('replicas')})")
st = spec.get("strategy", {})
check(st.get("type") == "Recreate" or (st.get("type") == "RollingUpdate" and str(st.get("rollingUpdate", {}).get("maxSurge")) == "0"),
      "k8s: strategy Recreate (or maxSurge 0): never two pods at once")
ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
check(port in ports.values(), f"k8s: containerPort {port}")
def probe(name, path):
    p = c.get(name, {}).get("httpGet", {})
    pp = p.get("port")
    check(p.get("path") == path and (pp == port or ports.get(pp) == port), f"k8s: {name} GET {path} on port {port}")
probe("livenessProbe", "/healthz"); probe("readinessProbe", "/readyz")
check(c.get("startupProbe", {}).get("httpGet", {}).get("path") in ("/healthz", "/readyz"), "k8s: startupProbe set")
r = c.get("resources", {})
check(all(r.get(k, {}).get(x) for k in ("requests", "limits") for x in ("cpu", "memory")), "k8s: resources requests and limits (cpu, memory)")
psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
eff = lambda k: csc.get(k, psc.get(k))
check(eff("runAsNonRoot") is True, "k8s: runAsNonRoot")
check(eff("runAsUser") == 10001, "k8s: runAsUser 10001")
check(csc.get("readOnlyRootFilesystem") is True, "k8s: readOnlyRootFilesystem")
check(csc.get("allowPrivilegeEscalation") is False, "k8s: allowPrivilegeEscalation false")
check(csc.get("capabilities", {}).get("drop") in (["ALL"], ["all"]), "k8s: capabilities drop ALL")
check((eff("seccompProfile") or {}).get("type") == "RuntimeDefault", "k8s: seccompProfile RuntimeDefault")
env = {e.get("name"): e for e in c.get("env", [])}
se = env.get("DINGBOT_DINGTALK__APP_SECRET", {})
ref = se.get("valueFrom", {}).get("secretKeyRef", {})
check(bool(ref) and "value" not in se and ref.get("name") == sec.get("metadata", {}).get("name")
      and ref.get("key") in sec.get("stringData", {}),
      "k8s: DINGBOT_DINGTALK__APP_SECRET comes from the Secret (matching name/key)")
tg = pod.get("terminationGracePeriodSeconds", 30)
check(tg > grace, f"k8s: terminationGracePeriodSeconds ({tg}) > shutdown_grace_secs ({grace})")
ann = spec.get("template", {}).get("metadata", {}).get("annotations", {})
check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/path") == "/metrics"
      and str(ann.get("prometheus.io/port")) == str(port), "k8s: prometheus scrape annotations (port, /metrics)")
vols = {v["name"]: v for v in pod.get("volumes", [])}
mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
cfgm = mounts.get("/etc/dingbot", {})
check(cfgm.get("readOnly") is True and vols.get(cfgm.get("name"), {}).get("configMap", {}).get("name") == cm.get("metadata", {}).get("name"),
      "k8s: ConfigMap mounted read-only at /etc/dingbot")
args = c.get("command", []) + c.get("args", [])
check(not args or (args[-2:] == ["--config", "/etc/dingbot/dingbot.toml"] and "serve" in args), "k8s: runs dingbot serve --config /etc/dingbot/dingbot.toml")
check(pod.get("automountServiceAccountToken") is False, "k8s: no service account token mounted")

svc = one("Service")
sspec = svc.get("spec", {})
check(sspec.get("type", "ClusterIP") == "ClusterIP", "k8s: Service is ClusterIP")
labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
check(bool(sspec.get("selector")) and all(labels.get(k) == v for k, v in sspec.get("selector", {}).items()),
      "k8s: Service selector matches the pod labels")
sp = sspec.get("ports", [{}])
check(any(p.get("targetPort") in (port, *[n for n, v in ports.items() if v == port]) for p in sp), "k8s: Service targets the container port")

ing = one("Ingress")
ispec = ing.get("spec", {})
check(ispec.get("ingressClassName") == "nginx", "k8s: Ingress class nginx")
check(bool(ispec.get("tls")) and all(t.get("secretName") for t in ispec.get("tls", [])), "k8s: Ingress has TLS with a secret")
paths = [p for rule in ispec.get("rules", []) for p in rule.get("http", {}).get("paths", [])]
check(bool(paths) and all(p.get("path") == cb and p.get("pathType") == "Exact" for p in paths) and "defaultBackend" not in ispec,
      f"k8s: Ingress exposes only {cb} (Exact), no default backend")
backs = [p.get("backend", {}).get("service", {}) for p in paths]
sname, sports = svc.get("metadata", {}).get("name"), sspec.get("ports", [])
check(all(b.get("name") == sname and (b.get("port", {}).get("name") in [p.get("name") for p in sports]
      or b.get("port", {}).get("number") in [p.get("port") for p in sports]) for b in backs), "k8s: Ingress backend is the Service")
itext = yaml.safe_dump(ing)
check(all(s not in itext for s in ("metrics", "healthz", "readyz")), "k8s: Ingress does not expose /metrics, /healthz, /readyz")
limit = int(os.environ["BODY_LIMIT"])
pbs = str(ing.get("metadata", {}).get("annotations", {}).get("nginx.ingress.kubernetes.io/proxy-body-size")).lower()
check(pbs in (str(limit), f"{limit // 1024}k" if limit % 1024 == 0 else str(limit)),
      f"k8s: Ingress proxy-body-size equals dingbot's default body_limit_bytes {limit} ({pbs})")

ns = by_kind.get("Namespace", [])
names = {x.get("metadata", {}).get("namespace") for xs in by_kind.values() for x in xs if x["kind"] not in ("Namespace", "Kustomization")}
check(len(names) == 1 and (not ns or ns[0]["metadata"]["name"] in names), f"k8s: all objects in one namespace ({names})")
for npol in by_kind.get("NetworkPolicy", []):
    ok_in = any(p.get("port") == port for r in npol.get("spec", {}).get("ingress", []) for p in r.get("ports", []))
    check(ok_in, f"k8s: NetworkPolicy admits port {port}")
PY

# ---------------------------------------------------------------- several replicas (Redis)
# deploy/compose.yaml, deploy/compose/ and deploy/k8s-replicas/: real parsers and the
# invariants of shared state (.ci/check-replicas.py); the compose Caddyfile validated and
# adapted by Caddy itself.
REPLICAS_CADDY_JSON=""
if command -v caddy >/dev/null 2>&1; then
  rc=0
  (cd "$CADDY" && XDG_DATA_HOME="$CADDY/xdg" XDG_CONFIG_HOME="$CADDY/xdg" HOME="$CADDY" \
    timeout 60 caddy validate --adapter caddyfile --config "$DEPLOY/compose/Caddyfile") >"$CADDY/replicas.out" 2>&1 || rc=$?
  if [[ $rc -eq 0 ]]; then ok "caddy validate deploy/compose/Caddyfile"; else
    fail "caddy validate deploy/compose/Caddyfile (exit $rc):"; tail -n 15 "$CADDY/replicas.out" | sed 's/^/    /'; fi
  if caddy fmt "$DEPLOY/compose/Caddyfile" 2>/dev/null | diff -q - "$DEPLOY/compose/Caddyfile" >/dev/null; then
    ok "caddy fmt: compose/Caddyfile is formatted"
  else
    fail "caddy fmt: compose/Caddyfile is not formatted (run: caddy fmt --overwrite deploy/compose/Caddyfile)"
  fi
  if (cd "$CADDY" && HOME="$CADDY" timeout 30 caddy adapt --adapter caddyfile \
    --config "$DEPLOY/compose/Caddyfile") >"$CADDY/replicas.json" 2>/dev/null; then
    REPLICAS_CADDY_JSON="$CADDY/replicas.json"
  else
    fail "caddy adapt deploy/compose/Caddyfile failed"
  fi
fi
pycheck "$DEPLOY" ${REPLICAS_CADDY_JSON:+"$REPLICAS_CADDY_JSON"} <"$ROOT/.ci/check-replicas.py"

# ---------------------------------------------------------------- cross-file consistency
pycheck "$DEPLOY" <<'PY'
import sys, tomllib, re, os
d = sys.argv[1]
def check(cond, msg): print(("ok: " if cond else "FAIL: ") + msg)
cb = tomllib.load(open(os.path.join(d, "dingbot.example.toml"), "rb"))["server"]["callback_path"]
found = {f: cb in open(os.path.join(d, f), encoding="utf-8").read()
         for f in ("nginx/dingbot.conf", "caddy/Caddyfile", "k8s/ingress.yaml", "k8s/configmap.yaml")}
check(all(found.values()), f"callback path {cb} is the same in nginx, Caddy, Ingress and ConfigMap" +
      ("" if all(found.values()) else f" (missing in {[f for f, v in found.items() if not v]})"))
PY

# ---------------------------------------------------------------- Kubernetes Secret: README vs manifests
# The Secret the README tells to create (its `kubectl create secret generic` commands, also the
# one in secret.example.yaml's comment and the example's own name/keys) must have the name,
# namespace and keys that the manifests' secretKeyRefs read: a mismatch leaves the pod in
# CreateContainerConfigError forever.
pycheck "$ROOT/README.md" "$DEPLOY/k8s" <<'PY'
import sys, os, re, glob, shlex, yaml
readme, d = sys.argv[1], sys.argv[2]
def check(cond, msg): print(("ok: " if cond else "FAIL: ") + msg)
def commands(text):
    """Every `kubectl ... create secret generic ...` command in text, continuation lines
    joined, leading comment marks dropped, cut at the end of the command."""
    text = re.sub(r"\\\n\s*#?\s*", " ", text)
    out = []
    for m in re.finditer(r"kubectl\b[^\n`]*?\bcreate\s+secret\s+generic\b[^\n`]*", text):
        cmd = m.group(0).split(" && ")[0].split(";")[0].split("|")[0]
        try:
            argv = shlex.split(cmd)
        except ValueError:
            argv = cmd.split()
        ns, name, keys = None, None, set()
        i = 0
        while i < len(argv):
            a = argv[i]
            if a in ("-n", "--namespace") and i + 1 < len(argv):
                ns = argv[i + 1]; i += 2; continue
            if a.startswith("--namespace="):
                ns = a.split("=", 1)[1]
            elif a == "generic" and i + 1 < len(argv) and name is None:
                name = argv[i + 1]; i += 2; continue
            elif a.startswith(("--from-literal=", "--from-file=")):
                v = a.split("=", 1)[1]
                keys.add(v.split("=", 1)[0] if "=" in v or a.startswith("--from-literal=") else os.path.basename(v))
            i += 1
        out.append((ns, name, frozenset(keys), cmd.strip()))
    return out
# What the manifests read: every secretKeyRef (env) and secret volume item in the kustomization.
kz = yaml.safe_load(open(os.path.join(d, "kustomization.yaml"), encoding="utf-8"))
applied = [os.path.join(d, r) for r in kz.get("resources", [])]
default_ns = kz.get("namespace")
refs = {}   # (namespace, secret name) -> keys
def walk(x, ns):
    if isinstance(x, dict):
        skr = x.get("secretKeyRef")
        if isinstance(skr, dict) and skr.get("name") and skr.get("key") and not skr.get("optional"):
            refs.setdefault((ns, skr["name"]), set()).add(skr["key"])
        sec = x.get("secret")
        if isinstance(sec, dict) and sec.get("secretName"):
            refs.setdefault((ns, sec["secretName"]), set()).update(i["key"] for i in sec.get("items", []) if "key" in i)
        for v in x.values(): walk(v, ns)
    elif isinstance(x, list):
        for v in x: walk(v, ns)
for f in applied:
    for doc in yaml.safe_load_all(open(f, encoding="utf-8")):
        if isinstance(doc, dict) and doc.get("kind") != "Ingress":   # Ingress TLS secrets are not ours to create
            walk(doc.get("spec", {}), default_ns or doc.get("metadata", {}).get("namespace"))
check(bool(refs), f"k8s: the applied manifests read a Secret via secretKeyRef ({sorted((n, sorted(k)) for (_, n), k in refs.items())})")
def compare(label, cmds):
    if not cmds:
        check(False, f"{label}: no `kubectl create secret generic` command found")
        return
    for ns, name, keys, cmd in cmds:
        want = set().union(*(ks for (_, rn), ks in refs.items() if rn == name))
        rns = {rns for (rns, rn) in refs if rn == name}
        problems = []
        if not want:
            problems.append(f"creates Secret {name!r}, the manifests read {sorted({n for _, n in refs})}")
        else:
            if want - keys: problems.append(f"keys {sorted(want - keys)} are read by the manifests but not created")
            if keys - want: problems.append(f"keys {sorted(keys - want)} are created but not read")
            if (ns or "default") not in rns: problems.append(f"namespace {ns or '(none: default)'!r}, the manifests use {sorted(rns)}")
        check(not problems, f"{label}: `{cmd}` matches the manifests' secretKeyRefs (name {name!r}, keys {sorted(keys)})"
              + (": " + "; ".join(problems) if problems else ""))
compare("README", commands(open(readme, encoding="utf-8").read()))
ex = os.path.join(d, "secret.example.yaml")
ex_text = open(ex, encoding="utf-8").read()
compare("secret.example.yaml comment", commands(ex_text))
for doc in yaml.safe_load_all(ex_text):
    if isinstance(doc, dict) and doc.get("kind") == "Secret":
        name = doc.get("metadata", {}).get("name")
        keys = set(doc.get("stringData", {})) | set(doc.get("data", {}) or {})
        want = set().union(*(ks for (_, rn), ks in refs.items() if rn == name))
        check(bool(want) and keys == want, f"secret.example.yaml: Secret {name!r} keys {sorted(keys)} equal the secretKeyRefs' {sorted(want)}")
PY

echo
if [[ $FAILS -eq 0 ]]; then
  echo "check-deploy: all checks passed"
else
  echo "check-deploy: $FAILS check(s) FAILED"
  exit 1
fi
