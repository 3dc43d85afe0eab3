"""Checks of the several-replicas deployment files (deploy/compose.yaml, deploy/compose/,
deploy/k8s-replicas/): parsed with real parsers (PyYAML, tomllib, Caddy's own adapter's
JSON), then the invariants that make the replicas share one state. Prints ok:/FAIL: lines.

    python3 .ci/check-replicas.py DEPLOY_DIR [CADDY_JSON]
"""
import glob
import json
import os
import sys
import tomllib

import yaml

d = sys.argv[1]
caddy_json = sys.argv[2] if len(sys.argv) > 2 else None


def check(cond, msg):
    print(("ok: " if cond else "FAIL: ") + msg)


def load_yaml(path, many=False):
    try:
        with open(path, encoding="utf-8") as f:
            docs = [x for x in yaml.safe_load_all(f) if x is not None]
        check(bool(docs), f"{os.path.relpath(path, d)} parses (PyYAML)")
        return docs if many else (docs[0] if docs else {})
    except (OSError, yaml.YAMLError) as e:
        check(False, f"{os.path.relpath(path, d)} does not parse: {e}")
        return [] if many else {}


# ------------------------------------------------------------------ compose
compose = load_yaml(os.path.join(d, "compose.yaml"))
services = compose.get("services", {}) if isinstance(compose, dict) else {}
known = {"services", "volumes", "networks", "configs", "secrets", "name"}
top = {k for k in compose if not k.startswith("x-")} if isinstance(compose, dict) else set()
check(top <= known, f"compose: only Compose top-level keys ({sorted(top - known)} unknown)")
service_keys = {"image", "build", "command", "environment", "volumes", "ports", "expose", "depends_on",
                "restart", "healthcheck", "user", "read_only", "cap_drop", "security_opt",
                "stop_grace_period", "tmpfs", "networks", "env_file", "entrypoint"}
for name, svc in services.items():
    extra = set(svc) - service_keys
    check(not extra, f"compose: service {name} uses known keys only ({sorted(extra)})")
bots = {n: s for n, s in services.items() if s.get("image") == "dingbot:local" or "build" in s}
check(len(bots) >= 2, f"compose: at least two dingbot replicas ({sorted(bots)})")
redis = [n for n, s in services.items() if str(s.get("image", "")).startswith(("redis:", "valkey/"))]
check(len(redis) == 1, f"compose: one Redis service ({redis})")
rname = redis[0] if redis else "redis"
rsvc = services.get(rname, {})
rcmd = [str(x) for x in rsvc.get("command", [])]
check("--appendonly" in rcmd and rcmd[rcmd.index("--appendonly") + 1] == "yes",
      "compose: Redis runs with AOF (appendonly yes): bindings survive a restart")
check(any(v.startswith(("redis-data:", "redis-data:/data")) for v in rsvc.get("volumes", [])),
      "compose: Redis data on a named volume")
check("--requirepass" in rcmd, "compose: Redis requires a password")
check("ports" not in rsvc, "compose: Redis is not published on the host")
for n, s in bots.items():
    env = s.get("environment", {})
    check(env.get("DINGBOT_STATE__BACKEND") == "redis", f"compose: {n} uses state.backend redis")
    url = str(env.get("DINGBOT_STATE__REDIS_URL", ""))
    check(url.startswith(("redis://", "rediss://")) and f"@{rname}:" in url and "${REDIS_PASSWORD" in url,
          f"compose: {n} reaches Redis by service name with the password from .env")
    check(str(env.get("DINGBOT_DINGTALK__APP_SECRET", "")).startswith("${"),
          f"compose: {n} takes the AppSecret from the environment, not the file")
    check(s.get("depends_on", {}).get(rname, {}).get("condition") == "service_healthy",
          f"compose: {n} starts after Redis is healthy")
    check(str(env.get("DINGBOT_SERVER__LISTEN", "")).startswith("0.0.0.0:"), f"compose: {n} listens on its container interface")
    check("ports" not in s, f"compose: {n} is not published (the proxy is the way in)")
    check(s.get("read_only") is True and str(s.get("user", "")).startswith("10001"), f"compose: {n} read-only, uid 10001")
    mounts = [v for v in s.get("volumes", []) if ":" in str(v)]
    check(not any(str(v).split(":")[0] in compose.get("volumes", {}) for v in mounts),
          f"compose: {n} needs no named volume (bindings live in Redis)")
    cfg = [str(v).split(":") for v in mounts if str(v).split(":")[1] == "/etc/dingbot/dingbot.toml"]
    check(len(cfg) == 1 and os.path.isfile(os.path.join(d, cfg[0][0])), f"compose: {n} mounts an existing dingbot.toml")
proxy = [n for n, s in services.items() if str(s.get("image", "")).startswith("caddy")]
check(len(proxy) == 1, f"compose: one Caddy proxy ({proxy})")
psvc = services.get(proxy[0], {}) if proxy else {}
check(any(str(p).endswith(":443") for p in psvc.get("ports", [])), "compose: the proxy publishes 443")
check(set(bots) <= set(psvc.get("depends_on", [])), "compose: the proxy depends on every replica")

try:
    with open(os.path.join(d, "compose", "dingbot.toml"), "rb") as f:
        conf = tomllib.load(f)
    check(True, "compose/dingbot.toml parses (tomllib)")
except (OSError, tomllib.TOMLDecodeError) as e:
    conf = {}
    check(False, f"compose/dingbot.toml does not parse: {e}")
check(conf.get("state", {}).get("backend") == "redis", "compose/dingbot.toml: [state] backend = redis")
check("redis_url" not in conf.get("state", {}) and "app_secret" not in conf.get("dingtalk", {}),
      "compose/dingbot.toml holds no secret (no redis_url, no app_secret)")
cb = conf.get("server", {}).get("callback_path", "/dingtalk/callback")

# ------------------------------------------------------------------ Caddy (adapted JSON)
if caddy_json:
    cfg = json.load(open(caddy_json))
    proxies, responds = [], []

    def walk(routes, paths, methods):
        for r in routes or []:
            p, m = list(paths), list(methods)
            for mt in r.get("match", []):
                if "path" in mt:
                    p.append(tuple(mt["path"]))
                if "method" in mt:
                    m.append(tuple(mt["method"]))
            for h in r.get("handle", []):
                if h.get("handler") == "subroute":
                    walk(h.get("routes"), p, m)
                elif h.get("handler") == "reverse_proxy":
                    proxies.append((p, m, h))
                elif h.get("handler") == "static_response":
                    responds.append((p, m, h.get("status_code")))

    for s in cfg.get("apps", {}).get("http", {}).get("servers", {}).values():
        walk(s.get("routes"), [], [])
    check(len(proxies) == 1, f"compose Caddy: exactly one reverse_proxy ({len(proxies)})")
    ups = sorted(u.get("dial") for _, _, h in proxies for u in h.get("upstreams", []))
    want = sorted(f"{n}:8080" for n in bots)
    check(ups == want, f"compose Caddy: balances over every replica {want} ({ups})")
    check(all(p and all(x == (cb,) for x in p) and m and all(x == ("POST",) for x in m) for p, m, _ in proxies),
          f"compose Caddy: proxies only POST {cb}")
    lb = [h.get("load_balancing", {}) for _, _, h in proxies]
    check(all(x.get("selection_policy", {}).get("policy") == "round_robin" for x in lb), "compose Caddy: round-robin")
    check(all(not x.get("try_duration") for x in lb), "compose Caddy: never replays a callback to another replica")
    check(all(h.get("buffer_requests") is True for _, _, h in proxies), "compose Caddy: buffers request bodies")
    raw = json.dumps(cfg)
    check(all(s not in raw for s in ("metrics", "healthz", "readyz")), "compose Caddy: /metrics, /healthz, /readyz not exposed")
    check(any(not p and not m and str(c) == "404" for p, m, c in responds), "compose Caddy: everything else 404")

# ------------------------------------------------------------------ Kubernetes
k = os.path.join(d, "k8s-replicas")
docs = {}
for f in sorted(glob.glob(os.path.join(k, "*.yaml"))):
    ds = load_yaml(f, many=True)
    good = all(isinstance(x, dict) and x.get("apiVersion") and x.get("kind") for x in ds)
    check(good, f"k8s-replicas/{os.path.basename(f)}: every object has apiVersion and kind")
    docs[os.path.basename(f)] = ds
kz = (docs.get("kustomization.yaml") or [{}])[0]
res = kz.get("resources", [])
check(bool(res) and all(os.path.isfile(os.path.join(k, r)) for r in res), f"k8s-replicas: kustomization resources exist ({res})")
check("secret.example.yaml" not in res, "k8s-replicas: the example Secret is not applied")
applied = [x for r in res for x in docs.get(r, [])]
by_kind = {}
for x in applied:
    by_kind.setdefault(x["kind"], []).append(x)
check(not by_kind.get("PersistentVolumeClaim"), "k8s-replicas: no PersistentVolumeClaim for dingbot")
deps = by_kind.get("Deployment", [])
check(len(deps) == 1, "k8s-replicas: one Deployment")
dep = deps[0] if deps else {}
spec = dep.get("spec", {})
check(int(spec.get("replicas", 1)) >= 2, f"k8s-replicas: replicas >= 2 ({spec.get('replicas')})")
pod = spec.get("template", {}).get("spec", {})
labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
check(not any("persistentVolumeClaim" in v for v in pod.get("volumes", [])), "k8s-replicas: dingbot pods mount no PVC")
c = (pod.get("containers") or [{}])[0]
env = {e.get("name"): e for e in c.get("env", [])}
secret_docs = docs.get("secret.example.yaml", [])
secret = secret_docs[0] if secret_docs else {}
sname, skeys = secret.get("metadata", {}).get("name"), set(secret.get("stringData", {}))
refs = set()


def walk_refs(x):
    if isinstance(x, dict):
        r = x.get("secretKeyRef")
        if isinstance(r, dict):
            refs.add((r.get("name"), r.get("key")))
        for v in x.values():
            walk_refs(v)
    elif isinstance(x, list):
        for v in x:
            walk_refs(v)


for x in applied:
    walk_refs(x.get("spec", {}))
check(refs and all(n == sname for n, _ in refs) and {key for _, key in refs} == skeys,
      f"k8s-replicas: secretKeyRefs {sorted(refs)} match secret.example.yaml ({sname}, {sorted(skeys)})")
sx = open(os.path.join(k, "secret.example.yaml"), encoding="utf-8").read()
check(f"create secret generic {sname}" in sx and all(f"--from-literal={key}=" in sx for key in skeys),
      "k8s-replicas: the example Secret's kubectl command creates every key")
check("valueFrom" in env.get("DINGBOT_STATE__REDIS_URL", {}), "k8s-replicas: DINGBOT_STATE__REDIS_URL from the Secret")
check("valueFrom" in env.get("DINGBOT_DINGTALK__APP_SECRET", {}), "k8s-replicas: DINGBOT_DINGTALK__APP_SECRET from the Secret")
st = spec.get("strategy", {})
check(st.get("type") == "RollingUpdate" and str(st.get("rollingUpdate", {}).get("maxUnavailable")) == "0",
      "k8s-replicas: rolling updates keep every replica until its successor is ready")
check(c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "k8s-replicas: readinessProbe /readyz")
pdbs = by_kind.get("PodDisruptionBudget", [])
check(len(pdbs) == 1, "k8s-replicas: one PodDisruptionBudget")
if pdbs:
    ps = pdbs[0].get("spec", {})
    sel = ps.get("selector", {}).get("matchLabels", {})
    check(bool(sel) and all(labels.get(a) == b for a, b in sel.items()), "k8s-replicas: the PDB selects the dingbot pods")
    check(ps.get("minAvailable") is not None and int(ps["minAvailable"]) >= 1 and int(ps["minAvailable"]) < int(spec.get("replicas", 1)),
          "k8s-replicas: PDB minAvailable >= 1 and below replicas (drains can proceed)")
cms = by_kind.get("ConfigMap", [])
try:
    conf = tomllib.loads((cms[0] if cms else {}).get("data", {}).get("dingbot.toml", ""))
    check(True, "k8s-replicas: ConfigMap dingbot.toml parses (tomllib)")
except tomllib.TOMLDecodeError as e:
    conf = {}
    check(False, f"k8s-replicas: ConfigMap dingbot.toml does not parse: {e}")
check(conf.get("state", {}).get("backend") == "redis", "k8s-replicas: [state] backend = redis")
check("redis_url" not in conf.get("state", {}), "k8s-replicas: no Redis URL (password) in the ConfigMap")
svcs = {x["metadata"]["name"]: x for x in by_kind.get("Service", [])}
bot_svc = svcs.get("dingbot", {}).get("spec", {})
sel = bot_svc.get("selector", {})
check(bool(sel) and all(labels.get(a) == b for a, b in sel.items()), "k8s-replicas: Service selects the dingbot pods")
sts = by_kind.get("StatefulSet", [])
if sts:
    ss = sts[0]
    rlabels = ss.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {})
    check(not all(rlabels.get(a) == b for a, b in sel.items()), "k8s-replicas: the dingbot Service does not select Redis")
    rc = (ss.get("spec", {}).get("template", {}).get("spec", {}).get("containers") or [{}])[0]
    args = [str(a) for a in rc.get("args", [])]
    check("--appendonly" in args and args[args.index("--appendonly") + 1] == "yes", "k8s-replicas: Redis with AOF")
    check("--requirepass" in args, "k8s-replicas: Redis requires a password")
    check(bool(ss.get("spec", {}).get("volumeClaimTemplates")), "k8s-replicas: Redis data on its own volume")
    host = ss["metadata"]["name"] + "-0." + ss.get("spec", {}).get("serviceName", "") + ":6379"
    check(host in secret.get("stringData", {}).get("redis-url", ""), f"k8s-replicas: the example redis-url points at {host}")
    check(ss.get("spec", {}).get("serviceName") in svcs and svcs[ss["spec"]["serviceName"]]["spec"].get("clusterIP") == "None",
          "k8s-replicas: Redis has its headless Service")
    psc = ss.get("spec", {}).get("template", {}).get("spec", {}).get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and (rc.get("securityContext", {}).get("readOnlyRootFilesystem") is True),
          "k8s-replicas: Redis runs non-root with a read-only root filesystem (restricted namespace)")
names = {x.get("metadata", {}).get("namespace") for x in applied if x["kind"] != "Namespace"}
check(names == {"dingbot"}, f"k8s-replicas: everything in namespace dingbot ({names})")
ing = by_kind.get("Ingress", [{}])[0]
paths = [p for r in ing.get("spec", {}).get("rules", []) for p in r.get("http", {}).get("paths", [])]
check(bool(paths) and all(p.get("path") == cb and p.get("backend", {}).get("service", {}).get("name") == "dingbot" for p in paths),
      f"k8s-replicas: Ingress exposes only {cb}, to the dingbot Service")
