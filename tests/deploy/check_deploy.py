#!/usr/bin/python3
"""Static checks of the deployment files under deploy/ (docs/deployment.md).

Nothing here needs a Docker engine or a Kubernetes cluster: the files are
parsed and what they promise is checked on the objects they produce.

  check_deploy.py k8s        kustomize base + each overlay (a subset of
                             kustomize: resources, JSON 6902 patches) and
                             the rules of docs/deployment.md on the result
  check_deploy.py kustomize  the same build compared with `kubectl
                             kustomize` (skipped without kubectl)
  check_deploy.py compose    deploy/docker-compose.yml, both profiles
  check_deploy.py compose-schema
                             `docker-compose config` validates the file
                             (skipped without docker-compose)
  check_deploy.py dockerfile the checklist of deploy/Dockerfile
  check_deploy.py dockerfile-lint
                             dockerfile-utils lint (from .tools/, skipped
                             without it)
  check_deploy.py runtime-libs
                             the image's runtime packages provide every
                             shared library the built programs load
  check_deploy.py probes     every probe command (Kubernetes, compose, the
                             image's HEALTHCHECK), run with the built
                             payoutctl against a TLS gateway started here
  check_deploy.py systemd    systemd-analyze verify and security of
                             deploy/systemd/payout-gateway.service
  check_deploy.py selftest   each check fails on a broken copy of the files

Exit status: 0 all checks passed, 1 a check failed, 77 the tool a check
needs is missing (ctest reports it skipped), 2 usage.
"""

import argparse
import copy
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile

import yaml

SKIP = 77
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy")
K8S = os.path.join(DEPLOY, "k8s")
OVERLAYS = ("sqlite", "postgresql")
COMPOSE = os.path.join(DEPLOY, "docker-compose.yml")
DOCKERFILE = os.path.join(DEPLOY, "Dockerfile")
UNIT = os.path.join(DEPLOY, "systemd", "payout-gateway.service")
PLACEHOLDER = "REPLACE-ME"
GATEWAY_IMAGE = "payout-gateway"
PAYOUT_SERVER = "/usr/bin/payout-server"
PAYOUTCTL = "/usr/bin/payoutctl"


class CheckFailed(Exception):
    pass


class Report:
    """Collects failures; a check goes on after the first."""

    def __init__(self, name):
        self.name = name
        self.failures = []

    def check(self, condition, message):
        if not condition:
            self.failures.append(message)
        return condition

    def fail(self, message):
        self.failures.append(message)

    def finish(self):
        for failure in self.failures:
            print(f"FAIL {self.name}: {failure}")
        if self.failures:
            return 1
        print(f"ok   {self.name}")
        return 0


# ---------------------------------------------------------------- values --

DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def parse_duration(text):
    """Seconds in an absl or systemd duration (35s, 1m30s, 250ms, 50)."""
    text = str(text).strip().strip('"')
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total = 0.0
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ns|us|ms|min|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise CheckFailed(f"not a duration: {text!r}")
    for number, unit in parts:
        total += float(number) * DURATION_UNITS["m" if unit == "min" else unit]
    return total


def server_flags(payout_server):
    """payout-server's flags and their defaults, from --helpfull."""
    out = subprocess.run([payout_server, "--helpfull"], capture_output=True,
                         text=True, check=False)
    text = out.stdout + out.stderr
    flags = {}
    for name, default in re.findall(r"--([a-z0-9_]+) \(.*?\);\s+default: (.*?);",
                                    text, re.S):
        flags[name] = default.strip().strip('"')
    if "listen" not in flags or "shutdown_grace" not in flags:
        raise CheckFailed(f"cannot read the flags of {payout_server}")
    return flags


def parse_flag_args(args, report, where, known):
    """--name=value arguments as a dict; every one must be a known flag."""
    flags = {}
    for arg in args:
        m = re.fullmatch(r"--([a-z0-9_]+)(?:=(.*))?", str(arg), re.S)
        if not report.check(m is not None, f"{where}: argument {arg!r} is not --flag=value"):
            continue
        name, value = m.group(1), m.group(2)
        if known is not None:
            report.check(name in known, f"{where}: payout-server has no flag --{name}")
        flags[name] = "true" if value is None else value
    return flags


def env_flag_name(variable):
    return variable[len("PAYOUT_"):].lower() if variable.startswith("PAYOUT_") else None


def host_port(address):
    host, _, port = str(address).rpartition(":")
    return host.strip("[]"), port


def is_loopback(host):
    return host == "localhost" or host == "::1" or host.startswith("127.")


def split_ledger(value):
    """('sqlite', PATH) or ('postgresql', URI)."""
    if value.startswith("sqlite:"):
        return "sqlite", value[len("sqlite:"):].split("?")[0]
    if value.startswith(("postgresql://", "postgres://")):
        return "postgresql", value
    return "unknown", value


def check_postgres_uri(report, where, uri):
    query = uri.partition("?")[2]
    params = dict(p.partition("=")[::2] for p in query.split("&") if p)
    report.check(params.get("sslmode") == "verify-full",
                 f"{where}: the PostgreSQL URI must use sslmode=verify-full")
    userinfo = uri.split("://", 1)[1].split("@", 1)[0] if "@" in uri else ""
    report.check(":" not in userinfo,
                 f"{where}: the PostgreSQL URI holds a password; read it from a file (password=@/path)")
    if "password" in params:
        report.check(params["password"].startswith("@/"),
                     f"{where}: password= must name a file (password=@/path), not hold the password")


# ------------------------------------------------------------ Dockerfile --

def dockerfile_instructions(text):
    """[(line, INSTRUCTION, arguments)] with continuations joined."""
    out = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        pending += line
        word, _, rest = pending.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        pending = ""
    return out


def dockerfile_stages(text):
    stages = []
    for line, word, args in dockerfile_instructions(text):
        if word == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", args, re.I)
            if not m:
                raise CheckFailed(f"Dockerfile:{line}: cannot read FROM {args}")
            stages.append({"image": m.group(1), "name": m.group(2), "line": line,
                           "instructions": []})
        elif not stages:
            if word != "ARG":
                raise CheckFailed(f"Dockerfile:{line}: {word} before FROM")
        else:
            stages[-1]["instructions"].append((line, word, args))
    return stages


def exec_form(args):
    """The argv of an exec-form (JSON) instruction, else None."""
    args = args.strip()
    if not args.startswith("["):
        return None
    return yaml.safe_load(args)


def healthcheck_command(args):
    m = re.search(r"\bCMD\s+(.*)$", args, re.S)
    if not m:
        return None
    argv = exec_form(m.group(1))
    return argv if argv is not None else shlex.split(m.group(1))


def apt_packages(run_args):
    m = re.search(r"apt-get\s+install\s+(.*?)(?:&&|;|$)", run_args, re.S)
    if not m:
        return []
    return [w for w in m.group(1).split() if not w.startswith("-")]


BUILD_TOOLS = re.compile(
    r"^(build-essential|gcc(-\d+)?|g\+\+(-\d+)?|clang(-\d+)?|cmake|make|ninja-build|"
    r"pkg-config|git|protobuf-compiler.*|.*-dev)$")


def dockerfile_env(stage):
    env = {}
    for _, word, args in stage["instructions"]:
        if word == "ENV":
            for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                env[k] = v.strip('"')
    return env


def check_dockerfile(text, report):
    stages = dockerfile_stages(text)
    names = set()
    report.check(len(stages) >= 2, "the Dockerfile must be multi-stage")
    for stage in stages:
        image = stage["image"]
        if image in names:
            pass
        else:
            report.check(image == "debian:bookworm-slim",
                         f"line {stage['line']}: stage from {image}: every stage starts from debian:bookworm-slim")
            report.check(":" in image and not image.endswith(":latest"),
                         f"line {stage['line']}: image {image} has no fixed tag")
        if stage["name"]:
            names.add(stage["name"])
        for line, word, args in stage["instructions"]:
            if word == "RUN" and "apt-get" in args:
                if "install" in args:
                    report.check("apt-get update" in args,
                                 f"line {line}: apt-get install without apt-get update in the same RUN")
                    report.check("--no-install-recommends" in args,
                                 f"line {line}: apt-get install without --no-install-recommends")
                    report.check(re.search(r"install\s+(-\S+\s+)*-y\b", args) is not None,
                                 f"line {line}: apt-get install without -y")
                    report.check("rm -rf /var/lib/apt/lists/*" in args,
                                 f"line {line}: the apt lists are not removed in the same RUN")
                    for package in apt_packages(args):
                        report.check(":latest" not in package, f"line {line}: {package}")
            if word in ("ADD",):
                report.fail(f"line {line}: ADD; use COPY")
            if word == "COPY" and "--from=" in args:
                source = re.search(r"--from=(\S+)", args).group(1)
                report.check(source in names, f"line {line}: COPY --from={source}: not an earlier stage")
    final = stages[-1] if stages else {"instructions": [], "name": None}
    words = [(word, args) for _, word, args in final["instructions"]]
    users = [args for word, args in words if word == "USER"]
    report.check(users and re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", users[-1]) is not None,
                 "the final stage must end as a numeric non-root USER (uid:gid)")
    checks = [args for word, args in words if word == "HEALTHCHECK"]
    argv = healthcheck_command(checks[-1]) if checks else None
    report.check(argv is not None and argv[0] == PAYOUTCTL and "health" in argv,
                 "the final stage's HEALTHCHECK must run payoutctl health")
    if argv:
        report.check("--liveness" not in argv,
                     "the HEALTHCHECK reports readiness: no --liveness")
    exposed = set()
    for word, args in words:
        if word == "EXPOSE":
            exposed.update(p.split("/")[0] for p in args.split())
    env = dockerfile_env(final)
    listen_port = host_port(env.get("PAYOUT_LISTEN", ":"))[1]
    metrics_port = host_port(env.get("PAYOUT_METRICS_LISTEN", ":"))[1]
    report.check(listen_port and listen_port in exposed,
                 f"EXPOSE must list the gRPC port of PAYOUT_LISTEN ({listen_port})")
    report.check(metrics_port and metrics_port in exposed,
                 f"EXPOSE must list the metrics port of PAYOUT_METRICS_LISTEN ({metrics_port})")
    report.check(not is_loopback(host_port(env.get("PAYOUT_LISTEN", ""))[0]),
                 "PAYOUT_LISTEN on loopback: nothing outside the container could call")
    for word, args in words:
        if word == "RUN":
            for package in apt_packages(args):
                report.check(BUILD_TOOLS.match(package) is None,
                             f"the final stage installs the build tool {package}")
    entry = [args for word, args in words if word == "ENTRYPOINT"]
    report.check(entry and exec_form(entry[-1]) == [PAYOUT_SERVER],
                 f"ENTRYPOINT must be [\"{PAYOUT_SERVER}\"] in exec form (signals reach it)")
    stop = [args for word, args in words if word == "STOPSIGNAL"]
    report.check(not stop or stop[-1] == "SIGTERM", "STOPSIGNAL must be SIGTERM")
    copies = [args for word, args in words if word == "COPY"]
    report.check(any("--from=" in c for c in copies) and
                 all("--from=" in c for c in copies),
                 "the final stage copies only from the build stage")
    return stages


def final_stage_packages(text):
    stage = dockerfile_stages(text)[-1]
    packages = []
    for _, word, args in stage["instructions"]:
        if word == "RUN":
            packages += apt_packages(args)
    return packages


# --------------------------------------------------------------- kustomize --

def load_documents(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def pointer_parts(path):
    if not path.startswith("/"):
        raise CheckFailed(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(document, operations, where):
    """RFC 6902 add, remove, replace and test on a copy of `document`."""
    document = copy.deepcopy(document)
    for op in operations:
        parts = pointer_parts(op["path"])
        parent = document
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        last = parts[-1]
        kind = op["op"]
        if kind == "add":
            if isinstance(parent, list):
                if last == "-":
                    parent.append(copy.deepcopy(op["value"]))
                else:
                    parent.insert(int(last), copy.deepcopy(op["value"]))
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif kind in ("remove", "replace"):
            key = int(last) if isinstance(parent, list) else last
            if isinstance(parent, dict) and key not in parent:
                raise CheckFailed(f"{where}: {kind} {op['path']}: no such member")
            if kind == "remove":
                del parent[key]
            else:
                parent[key] = copy.deepcopy(op["value"])
        elif kind == "test":
            key = int(last) if isinstance(parent, list) else last
            if parent[key] != op["value"]:
                raise CheckFailed(f"{where}: test {op['path']} failed")
        else:
            raise CheckFailed(f"{where}: JSON patch op {kind!r} is not supported here")
    return document


def matches_target(obj, target):
    api = obj.get("apiVersion", "")
    group, _, version = api.rpartition("/")
    return (obj.get("kind") == target.get("kind", obj.get("kind")) and
            obj["metadata"]["name"] == target.get("name", obj["metadata"]["name"]) and
            group == target.get("group", group) and
            version == target.get("version", version))


def kustomize(directory, files=None):
    """Objects of the kustomization in `directory`. `files` maps a path to
    parsed documents, overriding the file system (for the self-test)."""
    files = files or {}

    def documents(path):
        return copy.deepcopy(files[path]) if path in files else load_documents(path)

    path = os.path.join(directory, "kustomization.yaml")
    kustomization = documents(path)[0]
    unknown = set(kustomization) - {"apiVersion", "kind", "resources", "patches"}
    if unknown:
        raise CheckFailed(f"{path}: this checker does not understand {sorted(unknown)}")
    objects = []
    for resource in kustomization.get("resources", []):
        full = os.path.normpath(os.path.join(directory, resource))
        if os.path.isdir(full):
            objects += kustomize(full, files)
        else:
            objects += documents(full)
    for patch in kustomization.get("patches", []):
        if set(patch) != {"path", "target"}:
            raise CheckFailed(f"{path}: a patch needs exactly path and target")
        full = os.path.join(directory, patch["path"])
        operations = documents(full)[0]
        if not isinstance(operations, list):
            raise CheckFailed(f"{full}: only JSON 6902 patches (a list of operations) are supported")
        hits = [i for i, o in enumerate(objects) if matches_target(o, patch["target"])]
        if len(hits) != 1:
            raise CheckFailed(f"{full}: its target matches {len(hits)} objects")
        objects[hits[0]] = json_patch(objects[hits[0]], operations, full)
    seen = set()
    for obj in objects:
        key = (obj["kind"], obj["metadata"]["name"])
        if key in seen:
            raise CheckFailed(f"{directory}: {key} defined twice")
        seen.add(key)
    return objects


def k8s_files():
    out = []
    for root, _, names in os.walk(K8S):
        out += [os.path.join(root, n) for n in names if n.endswith((".yaml", ".yml"))]
    return sorted(out)


# ---------------------------------------------------------- k8s: checks ---

def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def named(objects, kind, name):
    for o in objects:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    return None


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_flags(container, objects, defaults, report, where):
    """Every payout-server flag's value as the container runs it: default,
    image ENV, envFrom ConfigMaps, env, args (later wins). A value from a
    Secret is ('secret', NAME, KEY)."""
    flags = dict(defaults)
    image_env = dockerfile_env(dockerfile_stages(open(DOCKERFILE).read())[-1])
    for var, value in image_env.items():
        if env_flag_name(var):
            flags[env_flag_name(var)] = value
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        report.check(ref is not None, f"{where}: envFrom only from ConfigMaps (secrets are files)")
        if ref is None:
            continue
        cm = named(objects, "ConfigMap", ref["name"])
        if not report.check(cm is not None, f"{where}: ConfigMap {ref['name']} is not in the build"):
            continue
        for var, value in cm.get("data", {}).items():
            name = env_flag_name(var)
            report.check(name in defaults, f"{where}: ConfigMap {ref['name']}: {var} is no payout-server flag")
            if name:
                flags[name] = str(value)
    for env in container.get("env", []):
        name = env_flag_name(env["name"])
        report.check(name in defaults, f"{where}: env {env['name']} is no payout-server flag")
        if "value" in env:
            flags[name] = str(env["value"])
        else:
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if not report.check(ref is not None, f"{where}: env {env['name']}: only secretKeyRef"):
                continue
            secret = named(objects, "Secret", ref["name"])
            report.check(secret is not None and ref["key"] in secret_keys(secret),
                         f"{where}: env {env['name']}: Secret {ref['name']} has no key {ref['key']}")
            flags[name] = ("secret", ref["name"], ref["key"])
    flags.update(parse_flag_args(container.get("args", []), report, where, defaults))
    return flags


def secret_keys(secret):
    return set(secret.get("data", {})) | set(secret.get("stringData", {}))


def mounted_file(path, container, pod_spec, objects):
    """The (kind, name, key) a path inside the container comes from, or
    ('volume', NAME, rest) for other volumes; None if nothing is mounted."""
    best = None
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if path.startswith(prefix) and (best is None or len(prefix) > len(best[0])):
            best = (prefix, mount)
    if best is None:
        return None
    prefix, mount = best
    volume = next((v for v in pod_spec.get("volumes", []) if v["name"] == mount["name"]), None)
    if volume is None:
        return ("missing-volume", mount["name"], None)
    rest = path[len(prefix):]
    if "secret" in volume:
        return ("Secret", volume["secret"]["secretName"], rest)
    if "configMap" in volume:
        return ("ConfigMap", volume["configMap"]["name"], rest)
    if "persistentVolumeClaim" in volume:
        return ("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"], rest)
    return ("volume", mount["name"], rest)


def probe_argv(probe):
    if probe is None:
        return None
    return probe.get("exec", {}).get("command")


def check_probe_command(report, where, argv, flags, grpc_port, liveness):
    if not report.check(argv is not None and argv[0] == PAYOUTCTL and "health" in argv,
                        f"{where}: must run {PAYOUTCTL} ... health"):
        return
    opts = {}
    for arg in argv[1:]:
        if arg.startswith("--"):
            name, _, value = arg[2:].partition("=")
            opts[name] = value
    host, port = host_port(opts.get("target", ""))
    report.check(host in ("localhost", "127.0.0.1"), f"{where}: --target must be the pod itself (localhost)")
    report.check(port == str(grpc_port), f"{where}: --target port {port} is not the gRPC port {grpc_port}")
    if flags.get("tls_cert"):
        report.check("tls_ca" in opts, f"{where}: the gateway serves TLS: the probe needs --tls_ca")
    if flags.get("tls_client_ca"):
        report.check("tls_cert" in opts and "tls_key" in opts,
                     f"{where}: mTLS: the probe needs --tls_cert and --tls_key")
    report.check("token" not in opts and "token_file" not in opts, f"{where}: health needs no token")
    report.check(("liveness" in opts) == liveness,
                 f"{where}: {'liveness needs' if liveness else 'readiness must not use'} --liveness")
    report.check("timeout" in opts, f"{where}: give --timeout (the default is 60s)")
    return opts


def check_k8s_overlay(overlay, objects, defaults, report):
    w = f"overlays/{overlay}"
    deployments = by_kind(objects, "Deployment")
    if not report.check(len(deployments) == 1, f"{w}: exactly one Deployment"):
        return
    dep = deployments[0]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    report.check(selects(spec["selector"]["matchLabels"], labels), f"{w}: the selector does not match the pod")
    containers = [c for c in pod["containers"] if c["name"] == "payout-gateway"]
    if not report.check(len(containers) == 1, f"{w}: one container named payout-gateway"):
        return
    c = containers[0]
    image = c.get("image", "")
    report.check(re.search(r":[^/:]+$", image) and not image.endswith(":latest"),
                 f"{w}: image {image!r} needs a fixed tag")
    flags = container_flags(c, objects, defaults, report, w)

    def value(name):
        v = flags.get(name, "")
        return v if isinstance(v, str) else ""

    # Exposure: reachable from other pods only with TLS and clients.
    listen_host, listen_port = host_port(value("listen"))
    report.check(not is_loopback(listen_host), f"{w}: --listen on loopback cannot be reached")
    report.check(value("allow_unauthenticated") in ("", "false"), f"{w}: --allow_unauthenticated")
    report.check(value("allow_insecure_tokens") in ("", "false"), f"{w}: --allow_insecure_tokens")
    report.check(flags.get("clients") and flags.get("tls_cert") and flags.get("tls_key"),
                 f"{w}: a non-loopback --listen needs --clients, --tls_cert and --tls_key")
    metrics_host, metrics_port = host_port(value("metrics_listen"))
    report.check(metrics_port and not is_loopback(metrics_host),
                 f"{w}: --metrics_listen must be reachable for scraping")
    report.check(value("aopay_url").startswith("https://"), f"{w}: --aopay_url must be https://")

    ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
    report.check(str(ports.get("grpc")) == listen_port, f"{w}: containerPort grpc is not --listen's port")
    report.check(str(ports.get("metrics")) == metrics_port, f"{w}: containerPort metrics is not --metrics_listen's port")

    # Secrets are files from Secrets; nothing secret inline.
    registration = value("registration_id")
    report.check(registration.startswith("@/"), f"{w}: --registration_id must be @/path to a mounted Secret")
    file_flags = {"clients": value("clients"), "tls_cert": value("tls_cert"),
                  "tls_key": value("tls_key"), "registration_id": registration[1:]}
    for flag in ("tls_client_ca", "aopay_ca"):
        if value(flag):
            file_flags[flag] = value(flag)
    for flag, path in file_flags.items():
        if not path:
            continue
        source = mounted_file(path, c, pod, objects)
        if not report.check(source is not None and source[0] in ("Secret", "ConfigMap"),
                            f"{w}: --{flag}={path} is not a file of a mounted Secret"):
            continue
        obj = named(objects, source[0], source[1])
        report.check(obj is not None and source[2] in (secret_keys(obj) | set(obj.get("data", {}))),
                     f"{w}: --{flag}={path}: {source[0]} {source[1]} has no key {source[2]}")
        if flag in ("clients", "tls_key", "registration_id"):
            report.check(source[0] == "Secret", f"{w}: --{flag} must come from a Secret")
    for env in c.get("env", []):
        if "value" in env and re.search(r"PASSWORD|TOKEN|SECRET|REGISTRATION", env["name"]):
            report.fail(f"{w}: env {env['name']} holds a secret inline")
    for secret in by_kind(objects, "Secret"):
        for key, text in {**secret.get("stringData", {}), **secret.get("data", {})}.items():
            report.check(PLACEHOLDER in str(text),
                         f"{w}: Secret {secret['metadata']['name']} key {key}: only {PLACEHOLDER} placeholders may be committed")

    # The ledger.
    ledger = flags.get("ledger", "")
    if isinstance(ledger, tuple):
        secret = named(objects, "Secret", ledger[1])
        text = (secret or {}).get("stringData", {}).get(ledger[2], "")
        kind = "postgresql" if "postgresql" in text.lower() else "unknown"
        ledger_value = None
    else:
        kind, ledger_value = split_ledger(ledger)
        if kind == "postgresql":
            check_postgres_uri(report, w, ledger_value)
    report.check(kind == overlay, f"{w}: the ledger is {kind}, not {overlay}")
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    pdbs = by_kind(objects, "PodDisruptionBudget")
    strategy = spec.get("strategy", {})
    if overlay == "sqlite":
        report.check(spec.get("replicas") == 1, f"{w}: SQLite takes exactly one pod: replicas 1")
        report.check(strategy.get("type") == "Recreate",
                     f"{w}: SQLite needs strategy Recreate (a rolling update runs two pods)")
        report.check(not hpas, f"{w}: no HorizontalPodAutoscaler on SQLite")
        source = mounted_file(ledger_value or "", c, pod, objects)
        report.check(source is not None and source[0] == "PersistentVolumeClaim",
                     f"{w}: the SQLite ledger {ledger_value} must be on a PersistentVolumeClaim")
        if source and source[0] == "PersistentVolumeClaim":
            pvc = named(objects, "PersistentVolumeClaim", source[1])
            modes = (pvc or {}).get("spec", {}).get("accessModes", [])
            report.check(pvc is not None and set(modes) <= {"ReadWriteOncePod", "ReadWriteOnce"} and modes,
                         f"{w}: the ledger's claim must be ReadWriteOncePod (or ReadWriteOnce)")
        for pdb in pdbs:
            s = pdb["spec"]
            report.check(s.get("maxUnavailable", 0) >= 1 or s.get("minAvailable", 1) == 0,
                         f"{w}: with one replica the PDB must allow an eviction (maxUnavailable: 1)")
    else:
        report.check(strategy.get("type") == "RollingUpdate", f"{w}: several replicas roll: RollingUpdate")
        report.check(strategy.get("rollingUpdate", {}).get("maxUnavailable") == 0,
                     f"{w}: a rolling update keeps every replica serving: maxUnavailable 0")
        if report.check(len(hpas) == 1, f"{w}: one HorizontalPodAutoscaler"):
            hpa = hpas[0]["spec"]
            target = hpa["scaleTargetRef"]
            report.check(target["kind"] == "Deployment" and target["name"] == dep["metadata"]["name"],
                         f"{w}: the HPA must scale the Deployment")
            report.check(hpa.get("minReplicas", 1) >= 2 and hpa["maxReplicas"] >= hpa.get("minReplicas", 1),
                         f"{w}: the HPA keeps at least two replicas")
            report.check("replicas" not in spec or spec["replicas"] >= 2,
                         f"{w}: several replicas")
        for volume in pod.get("volumes", []):
            report.check("persistentVolumeClaim" not in volume, f"{w}: no ledger volume on PostgreSQL")
        for pdb in pdbs:
            s = pdb["spec"]
            report.check(s.get("maxUnavailable", 0) >= 1 or "minAvailable" in s,
                         f"{w}: the PDB must allow an eviction")
    report.check(len(pdbs) == 1 and selects(pdbs[0]["spec"]["selector"]["matchLabels"], labels),
                 f"{w}: one PodDisruptionBudget selecting the pods")

    # Probes.
    tls = bool(flags.get("tls_cert"))
    for name in ("readinessProbe", "livenessProbe", "startupProbe"):
        probe = c.get(name)
        if not report.check(probe is not None, f"{w}: no {name}"):
            continue
        if "grpc" in probe:
            report.check(not tls, f"{w}: {name}: Kubernetes' gRPC probes are plaintext; the gateway serves TLS")
            continue
        opts = check_probe_command(report, f"{w}: {name}", probe_argv(probe), flags, listen_port,
                                   liveness=name != "readinessProbe")
        if opts and "tls_ca" in opts:
            source = mounted_file(opts["tls_ca"], c, pod, objects)
            report.check(source is not None and source[0] in ("Secret", "ConfigMap"),
                         f"{w}: {name}: --tls_ca {opts['tls_ca']} is not mounted")
        if opts and "timeout" in opts:
            report.check(parse_duration(opts["timeout"]) < probe.get("timeoutSeconds", 1),
                         f"{w}: {name}: payoutctl's --timeout must be below timeoutSeconds")

    # Stopping.
    grace = parse_duration(value("shutdown_grace"))
    report.check(grace > parse_duration(value("upstream_timeout")),
                 f"{w}: --shutdown_grace must be above --upstream_timeout")
    pre_stop = c.get("lifecycle", {}).get("preStop")
    pause = 0.0
    if report.check(pre_stop is not None, f"{w}: no preStop hook"):
        argv = pre_stop.get("exec", {}).get("command", [])
        if "sleep" in pre_stop:
            pause = float(pre_stop["sleep"]["seconds"])
        elif argv and argv[0].endswith("sleep"):
            pause = parse_duration(argv[1])
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    report.check(tgps > grace + pause,
                 f"{w}: terminationGracePeriodSeconds {tgps} must exceed preStop {pause:g}s + --shutdown_grace {grace:g}s")

    # Security.
    psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
    report.check(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{w}: runAsNonRoot")
    report.check(csc.get("runAsUser", psc.get("runAsUser", 1)) != 0, f"{w}: runAsUser 0")
    report.check(csc.get("readOnlyRootFilesystem") is True, f"{w}: readOnlyRootFilesystem")
    report.check(csc.get("allowPrivilegeEscalation") is False, f"{w}: allowPrivilegeEscalation false")
    report.check("ALL" in csc.get("capabilities", {}).get("drop", []), f"{w}: capabilities drop ALL")
    report.check(not csc.get("privileged"), f"{w}: privileged")
    res = c.get("resources", {})
    for part in ("requests", "limits"):
        for what in ("cpu", "memory"):
            report.check(what in res.get(part, {}), f"{w}: resources.{part}.{what}")

    # Placement and monitoring.
    spread = [t for t in pod.get("topologySpreadConstraints", [])
              if t.get("topologyKey") == "kubernetes.io/hostname"]
    report.check(spread and selects(spread[0].get("labelSelector", {}).get("matchLabels"), labels),
                 f"{w}: topologySpreadConstraints across kubernetes.io/hostname for these pods")
    annotations = spec["template"]["metadata"].get("annotations", {})
    report.check(annotations.get("prometheus.io/scrape") == "true", f"{w}: prometheus.io/scrape")
    report.check(annotations.get("prometheus.io/port") == metrics_port, f"{w}: prometheus.io/port")
    report.check(annotations.get("prometheus.io/path", "/metrics") == "/metrics", f"{w}: prometheus.io/path")

    # The Service.
    services = [s for s in by_kind(objects, "Service") if s["spec"].get("clusterIP") != "None"]
    if report.check(len(services) == 1, f"{w}: one ClusterIP Service"):
        svc = services[0]["spec"]
        report.check(selects(svc["selector"], labels), f"{w}: the Service does not select the pods")
        sports = {p["name"]: p for p in svc["ports"]}
        report.check("grpc" in sports and sports["grpc"].get("targetPort") in ("grpc", ports.get("grpc")),
                     f"{w}: the Service needs a port named grpc to the gRPC port")
        report.check("metrics" in sports, f"{w}: the Service needs a metrics port")


def check_k8s(defaults, report, files=None):
    for path in k8s_files():
        if files and path in files:
            continue
        try:
            load_documents(path)
        except yaml.YAMLError as e:
            report.fail(f"{os.path.relpath(path, REPO)}: {e}")
    builds = {}
    for overlay in OVERLAYS:
        try:
            objects = kustomize(os.path.join(K8S, "overlays", overlay), files)
        except (CheckFailed, KeyError, IndexError, ValueError, TypeError) as e:
            report.fail(f"overlays/{overlay}: cannot build: {e!r}")
            continue
        builds[overlay] = objects
        check_k8s_overlay(overlay, objects, defaults, report)
    return builds


# ------------------------------------------------------------- compose ----

def compose_services(document):
    return document.get("services", {})


def command_list(value):
    if value is None:
        return None
    return value if isinstance(value, list) else shlex.split(value)


def is_gateway(service):
    return (str(service.get("image", "")).startswith(GATEWAY_IMAGE + ":") and
            command_list(service.get("entrypoint")) in (None, [PAYOUT_SERVER]))


def check_compose(document, defaults, report):
    services = compose_services(document)
    volumes = document.get("volumes", {}) or {}
    for name, svc in services.items():
        image = str(svc.get("image", ""))
        report.check(re.search(r":[^/:]+$", image) and not image.endswith(":latest"),
                     f"{name}: image {image!r} needs a fixed tag")
        for var, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|TOKEN|SECRET", var) and not var.endswith("_FILE"):
                report.fail(f"{name}: environment {var} holds a secret inline; use a file")
        if image.startswith(GATEWAY_IMAGE + ":") and not is_gateway(svc):
            # Without a healthcheck of its own it inherits the image's, which
            # asks a gateway that is not there.
            hc = svc.get("healthcheck")
            report.check(hc is not None and (hc.get("disable") is True or
                                             "payoutctl" not in str(hc.get("test", ""))),
                         f"{name}: runs no gateway: disable the image's payoutctl health check")
    gateways = {n: s for n, s in services.items() if is_gateway(s)}
    profiles = {"default": [], "postgresql": []}
    sqlite_users = {}
    for name, svc in gateways.items():
        w = name
        flags = dict(defaults)
        image_env = dockerfile_env(dockerfile_stages(open(DOCKERFILE).read())[-1])
        for var, val in image_env.items():
            if env_flag_name(var):
                flags[env_flag_name(var)] = val
        for var, val in (svc.get("environment") or {}).items():
            if env_flag_name(var):
                report.check(env_flag_name(var) in defaults, f"{w}: {var} is no payout-server flag")
                flags[env_flag_name(var)] = str(val)
        cmd = command_list(svc.get("command"))
        report.check(cmd is not None, f"{w}: give the gateway's flags as its command (the image's default is a demo)")
        flags.update(parse_flag_args(cmd or [], report, w, defaults))
        listen_host = host_port(flags["listen"])[0]
        if not is_loopback(listen_host):
            report.check(flags.get("clients") and flags.get("tls_cert") and flags.get("tls_key"),
                         f"{w}: a non-loopback --listen needs --clients and TLS")
        report.check(flags.get("allow_unauthenticated") in ("", "false"), f"{w}: --allow_unauthenticated")
        report.check(flags["registration_id"].startswith("@/"), f"{w}: --registration_id from a file (@/path)")
        mounts = [str(v).split(":") for v in svc.get("volumes", [])]
        for flag in ("registration_id", "clients", "tls_cert", "tls_key", "aopay_ca"):
            path = flags.get(flag, "").lstrip("@")
            if path:
                report.check(any(path.startswith(m[1].rstrip("/") + "/") for m in mounts if len(m) > 1),
                             f"{w}: --{flag}={path} is on no mounted volume")
        kind, where = split_ledger(flags["ledger"])
        profile = "postgresql" if "postgresql" in svc.get("profiles", []) else "default"
        profiles[profile].append((name, kind))
        if kind == "sqlite":
            mount = [m for m in mounts if len(m) > 1 and where.startswith(m[1].rstrip("/") + "/")]
            if report.check(mount and mount[0][0] in volumes and (len(mount[0]) < 3 or mount[0][2] != "ro"),
                            f"{w}: the SQLite ledger {where} must be on a named, writable volume"):
                sqlite_users.setdefault(mount[0][0], []).append(name)
            replicas = (svc.get("deploy") or {}).get("replicas", 1)
            report.check(replicas == 1 and "scale" not in svc, f"{w}: SQLite takes exactly one replica")
        elif kind == "postgresql":
            check_postgres_uri(report, w, where)
            report.check((svc.get("depends_on") or {}).get("postgres", {}).get("condition") == "service_healthy",
                         f"{w}: must wait for postgres to be healthy")
        hc = svc.get("healthcheck", {})
        test = hc.get("test", [])
        report.check(isinstance(test, list) and test[:2] == ["CMD", PAYOUTCTL] and "health" in test,
                     f"{w}: the health check must run payoutctl health")
        if flags.get("tls_cert"):
            report.check(any(str(t).startswith("--tls_ca=") for t in test),
                         f"{w}: the gateway serves TLS: its health check needs --tls_ca")
        report.check("--liveness" not in test, f"{w}: the health check reports readiness: no --liveness")
        grace = parse_duration(flags["shutdown_grace"])
        report.check(parse_duration(svc.get("stop_grace_period", "10s")) > grace,
                     f"{w}: stop_grace_period must exceed --shutdown_grace ({grace:g}s)")
        report.check(svc.get("read_only") is True, f"{w}: read_only: true")
        report.check("ALL" in (svc.get("cap_drop") or []), f"{w}: cap_drop: [ALL]")
        report.check(any("no-new-privileges" in str(o) for o in svc.get("security_opt") or []),
                     f"{w}: security_opt no-new-privileges")
        user = str(svc.get("user", ""))
        report.check(re.fullmatch(r"[1-9]\d*(:[1-9]\d*)?", user) is not None, f"{w}: user must be a numeric non-root uid")
        for port in svc.get("ports", []):
            report.check(str(port).startswith("127.0.0.1:"),
                         f"{w}: port {port} must be published on 127.0.0.1 only")
        report.check(flags["aopay_url"] == "sandbox" or flags["aopay_url"].startswith("https://"),
                     f"{w}: --aopay_url must be https://")
    for volume, users in sqlite_users.items():
        report.check(len(users) == 1, f"the SQLite ledger volume {volume} is used by {users}: one process per file")
    report.check([k for _, k in profiles["default"]] == ["sqlite"],
                 "the default profile runs exactly one gateway, on SQLite")
    report.check("aopay-sandbox" in services and not services["aopay-sandbox"].get("profiles"),
                 "the default profile runs the aopay-sandbox service")
    pg = [k for _, k in profiles["postgresql"]]
    report.check(len(pg) >= 2 and set(pg) == {"postgresql"},
                 "the postgresql profile runs two or more gateways on PostgreSQL")
    postgres = services.get("postgres", {})
    report.check(postgres.get("profiles") == ["postgresql"], "a postgres service in the postgresql profile")
    report.check("healthcheck" in postgres, "postgres needs a health check")


# ------------------------------------------------------------- systemd ----

def unit_settings(text):
    """{(section, key): [values]} with continuations joined."""
    settings, section, pending = {}, None, ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith(("#", ";"))):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def check_unit_text(text, defaults, report):
    s = unit_settings(text)

    def one(key, section="Service"):
        values = s.get((section, key), [])
        return values[-1] if values else None

    expected = {
        "DynamicUser": "yes", "StateDirectory": "payout-gateway", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "", "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure", "KillSignal": "SIGTERM",
    }
    for key, value in expected.items():
        report.check(one(key) == value, f"unit: {key}={value} (found {one(key)!r})")
    families = (one("RestrictAddressFamilies") or "").split()
    report.check(families and set(families) <= {"AF_INET", "AF_INET6", "AF_UNIX"},
                 "unit: RestrictAddressFamilies to AF_INET AF_INET6 AF_UNIX")
    report.check("@system-service" in s.get(("Service", "SystemCallFilter"), []),
                 "unit: SystemCallFilter=@system-service")
    credentials = dict(v.split(":", 1) for v in s.get(("Service", "LoadCredential"), []))
    argv = shlex.split(one("ExecStart") or "")
    report.check(argv[:1] == [PAYOUT_SERVER], f"unit: ExecStart must run {PAYOUT_SERVER}")
    flags = dict(defaults)
    flags.update(parse_flag_args(argv[1:], report, "unit ExecStart", defaults))
    for flag, at in (("registration_id", "@%d/"), ("clients", "%d/"), ("tls_key", "%d/")):
        value = flags.get(flag, "")
        report.check(value.startswith(at) and value[len(at):] in credentials,
                     f"unit: --{flag} must read a LoadCredential= ({at}NAME), found {value!r}")
    kind, path = split_ledger(flags["ledger"])
    report.check(kind == "sqlite" and path.startswith("/var/lib/payout-gateway/"),
                 "unit: the SQLite ledger lives in the StateDirectory /var/lib/payout-gateway")
    stop = parse_duration(one("TimeoutStopSec") or "90s")
    grace = parse_duration(flags["shutdown_grace"])
    report.check(stop > grace, f"unit: TimeoutStopSec {stop:g}s must exceed --shutdown_grace {grace:g}s")
    listen_host = host_port(flags["listen"])[0]
    if not is_loopback(listen_host):
        report.check(flags.get("clients") and flags.get("tls_cert") and flags.get("tls_key"),
                     "unit: a non-loopback --listen needs --clients and TLS")
    return s


def run_systemd(defaults, payout_server, report, text=None):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return SKIP
    text = text if text is not None else open(UNIT).read()
    check_unit_text(text, defaults, report)
    with tempfile.TemporaryDirectory() as tmp:
        # The unit as installed, except that ExecStart runs the program just
        # built: verify then checks a real executable.
        unit = os.path.join(tmp, "payout-gateway.service")
        with open(unit, "w") as f:
            f.write(text.replace(PAYOUT_SERVER, os.path.abspath(payout_server)))
        out = subprocess.run([tool, "verify", unit], capture_output=True, text=True)
        printed = (out.stdout + out.stderr).strip()
        report.check(out.returncode == 0 and not printed, f"systemd-analyze verify: {printed or out.returncode}")
        out = subprocess.run([tool, "security", "--offline=yes", "--threshold=20", unit],
                             capture_output=True, text=True)
        m = re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout + out.stderr)
        report.check(m is not None and out.returncode == 0,
                     f"systemd-analyze security: {(out.stdout + out.stderr)[-300:]}")
    return 0


# -------------------------------------------------------------- probes ----

def probe_env(path=True):
    """What a probe runs with: nothing of the caller's environment (no token
    may leak in), but a sanitizer build's runtime options (tests/lsan.supp
    in the ASan run) so that the same check holds there."""
    env = {}
    if path:
        env["PATH"] = os.environ.get("PATH", "")
    for var in ("ASAN_OPTIONS", "LSAN_OPTIONS", "UBSAN_OPTIONS", "TSAN_OPTIONS"):
        if var in os.environ:
            env[var] = os.environ[var]
    return env


def free_refusing_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, s.getsockname()[1]


def collect_probe_commands(builds, compose, dockerfile_text):
    """[(where, argv)] of every probe the deployment files run."""
    out = []
    for overlay, objects in builds.items():
        for dep in by_kind(objects, "Deployment"):
            for c in dep["spec"]["template"]["spec"]["containers"]:
                for name in ("startupProbe", "readinessProbe", "livenessProbe"):
                    argv = probe_argv(c.get(name))
                    if argv:
                        out.append((f"overlays/{overlay} {name}", argv))
    for name, svc in compose_services(compose).items():
        test = (svc.get("healthcheck") or {}).get("test")
        if isinstance(test, list) and test[:2] == ["CMD", PAYOUTCTL]:
            out.append((f"compose {name} healthcheck", test[1:]))
    stage = dockerfile_stages(dockerfile_text)[-1]
    for _, word, args in stage["instructions"]:
        if word == "HEALTHCHECK":
            out.append(("Dockerfile HEALTHCHECK", healthcheck_command(args)))
    return out


def run_probes(defaults, payout_server, payoutctl, report):
    builds = check_k8s(defaults, Report("k8s (for probes)"))
    compose = load_documents(COMPOSE)[0]
    probes = collect_probe_commands(builds, compose, open(DOCKERFILE).read())
    report.check(len(probes) >= 7, f"found only {len(probes)} probe commands")
    openssl = shutil.which("openssl")
    if openssl is None:
        return SKIP
    with tempfile.TemporaryDirectory() as tmp:
        def run(args):
            subprocess.run(args, check=True, capture_output=True)
        p = lambda name: os.path.join(tmp, name)
        run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "2",
             "-subj", "/CN=probe test CA"])
        with open(p("ext"), "w") as f:
            f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        run([openssl, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", p("tls.key"), "-out", p("tls.csr"), "-subj", "/CN=gateway"])
        run([openssl, "x509", "-req", "-in", p("tls.csr"), "-CA", p("ca.pem"), "-CAkey",
             p("ca.key"), "-CAcreateserial", "-days", "2", "-extfile", p("ext"),
             "-out", p("tls.crt")])
        with open(p("clients"), "w") as f:
            f.write("probe " + "0" * 64 + " payouts:read\n")
        server = subprocess.Popen(
            [payout_server, "--listen=127.0.0.1:0", "--metrics_listen=",
             "--ledger=sqlite:" + p("ledger.db"), "--tls_cert=" + p("tls.crt"),
             "--tls_key=" + p("tls.key"), "--clients=" + p("clients"), "--shutdown_grace=1s"],
            stdout=subprocess.PIPE, stderr=open(p("server.log"), "w"), text=True,
            env=probe_env(path=False))
        try:
            line = server.stdout.readline()
            m = re.match(r"listening on (\S+)", line)
            if not report.check(m is not None, f"the gateway did not start: {open(p('server.log')).read()[-500:]}"):
                return 1
            port = host_port(m.group(1))[1]
            refusing, refused_port = free_refusing_port()
            try:
                for where, argv in probes:
                    for target, expected in ((f"localhost:{port}", 0), (f"127.0.0.1:{refused_port}", 24)):
                        cmd = [payoutctl]
                        for arg in argv[1:]:
                            if arg.startswith("--target="):
                                arg = "--target=" + target
                            elif arg.startswith("--tls_ca="):
                                arg = "--tls_ca=" + p("ca.pem")
                            cmd.append(arg)
                        if not any(a.startswith("--target=") for a in cmd):
                            cmd.insert(1, "--target=" + target)
                        if not any(a.startswith("--tls_ca=") for a in cmd):
                            cmd.insert(1, "--tls_ca=" + p("ca.pem"))
                        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30,
                                             env=probe_env())
                        report.check(out.returncode == expected,
                                     f"{where}: {' '.join(argv)} against {target} exited {out.returncode}, "
                                     f"expected {expected}: {out.stderr.strip()[-200:]}")
            finally:
                refusing.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


# -------------------------------------------------------- runtime libs ----

BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
# The sanitizer runtimes of an ASan/UBSan/TSan test build: the image is built
# without sanitizers, so these are no runtime dependency of it.
SANITIZER_RUNTIME = re.compile(r"^lib(asan|ubsan|tsan|lsan)\d*$")


def installed_dependencies():
    """{package: [first choice of each dependency]} of every installed package."""
    out = subprocess.run(["dpkg-query", "-W", "-f=${Package}\t${Depends}, ${Pre-Depends}\n"],
                         capture_output=True, text=True, check=True)
    graph = {}
    for line in out.stdout.splitlines():
        package, _, depends = line.partition("\t")
        names = []
        for alternative in depends.split(","):
            choice = alternative.split("|")[0].strip().split(" ")[0].split(":")[0]
            if choice:
                names.append(choice)
        graph.setdefault(package, []).extend(names)
    return graph


def dependency_closure(packages, graph):
    seen, todo = set(), list(packages)
    while todo:
        package = todo.pop()
        if package not in seen:
            seen.add(package)
            todo += graph.get(package, [])
    return seen


def run_runtime_libs(binaries, report):
    if shutil.which("dpkg-query") is None or shutil.which("ldd") is None:
        return SKIP
    wanted = set(final_stage_packages(open(DOCKERFILE).read()))
    closure = dependency_closure(wanted, installed_dependencies())
    libraries = {}  # path as ldd prints it -> the binaries that load it
    for binary in binaries:
        out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True)
        for lib in re.findall(r"=> (/\S+)", out.stdout):
            libraries.setdefault(lib, []).append(os.path.basename(binary))
    # One dpkg-query for every path (each call reads the whole database).
    paths = sorted(set(libraries) | {os.path.realpath(l) for l in libraries})
    out = subprocess.run(["dpkg-query", "-S"] + paths, capture_output=True, text=True)
    owners = {}
    for line in out.stdout.splitlines():
        package, _, path = line.partition(": ")
        owners[path.strip()] = package.split(":")[0].strip()
    for lib, users in sorted(libraries.items()):
        package = owners.get(lib) or owners.get(os.path.realpath(lib))
        if not report.check(package is not None, f"{users}: {lib} belongs to no Debian package"):
            continue
        if SANITIZER_RUNTIME.match(package):
            continue
        report.check(package in closure or package in BASE_IMAGE_PACKAGES,
                     f"{', '.join(users)} loads {lib} from {package}, "
                     "which the image's final stage does not install")
    return 0


# ------------------------------------------------------------ selftest ----

def mutate_yaml(path, change):
    documents = load_documents(path)
    change(documents)
    return {path: documents}


def deployment_doc(documents):
    return documents[0]["spec"]["template"]["spec"]["containers"][0]


def selftest(defaults, payout_server):
    """Each broken copy must make its check fail; the real files must pass."""
    base = os.path.join(K8S, "base")
    dep = os.path.join(base, "deployment.yaml")
    sqlite_patch = os.path.join(K8S, "overlays", "sqlite", "deployment-patch.yaml")
    pg_patch = os.path.join(K8S, "overlays", "postgresql", "deployment-patch.yaml")
    secret = os.path.join(base, "secret.yaml")
    pvc = os.path.join(K8S, "overlays", "sqlite", "persistentvolumeclaim.yaml")
    k8s_cases = {
        "no readiness probe": mutate_yaml(dep, lambda d: deployment_doc(d).pop("readinessProbe")),
        "liveness without --liveness": mutate_yaml(
            dep, lambda d: deployment_doc(d)["livenessProbe"]["exec"]["command"].remove("--liveness")),
        "probe without the CA": mutate_yaml(
            dep, lambda d: deployment_doc(d)["readinessProbe"]["exec"]["command"].pop(2)),
        "gRPC probe on a TLS port": mutate_yaml(
            dep, lambda d: deployment_doc(d).__setitem__("readinessProbe", {"grpc": {"port": 50051}})),
        "grace too short": mutate_yaml(
            dep, lambda d: d[0]["spec"]["template"]["spec"].__setitem__("terminationGracePeriodSeconds", 38)),
        "writable root": mutate_yaml(
            dep, lambda d: deployment_doc(d)["securityContext"].__setitem__("readOnlyRootFilesystem", False)),
        "capabilities kept": mutate_yaml(
            dep, lambda d: deployment_doc(d)["securityContext"].pop("capabilities")),
        "runs as root": mutate_yaml(
            dep, lambda d: d[0]["spec"]["template"]["spec"]["securityContext"].__setitem__("runAsUser", 0)),
        "no preStop": mutate_yaml(dep, lambda d: deployment_doc(d).pop("lifecycle")),
        "no spread": mutate_yaml(dep, lambda d: d[0]["spec"]["template"]["spec"].pop("topologySpreadConstraints")),
        "no scrape annotation": mutate_yaml(
            dep, lambda d: d[0]["spec"]["template"]["metadata"]["annotations"].pop("prometheus.io/scrape")),
        "registration inline": mutate_yaml(
            dep, lambda d: deployment_doc(d)["args"].__setitem__(2, "--registration_id=AOP-12345")),
        "unknown flag": mutate_yaml(dep, lambda d: deployment_doc(d)["args"].append("--shutdown_grase=35s")),
        "real secret committed": mutate_yaml(
            secret, lambda d: d[0]["stringData"].__setitem__("registration-id", "AOP-12345")),
        "latest image": mutate_yaml(dep, lambda d: deployment_doc(d).__setitem__("image", "payout-gateway:latest")),
        "sqlite rolling update": mutate_yaml(
            sqlite_patch, lambda d: d[0][1].__setitem__("value", {"type": "RollingUpdate"})),
        "sqlite two replicas": mutate_yaml(sqlite_patch, lambda d: d[0][0].__setitem__("value", 2)),
        "sqlite shared claim": mutate_yaml(
            pvc, lambda d: d[0]["spec"].__setitem__("accessModes", ["ReadWriteMany"])),
        "postgresql without HPA": mutate_yaml(
            os.path.join(K8S, "overlays", "postgresql", "kustomization.yaml"),
            lambda d: d[0]["resources"].remove("horizontalpodautoscaler.yaml")),
        "postgresql ledger inline password": mutate_yaml(
            pg_patch, lambda d: d[0][2].__setitem__("value", [
                {"name": "PAYOUT_LEDGER", "value": "postgresql://payout:hunter2@db/payouts?sslmode=verify-full"}])),
        "no grpc port name": mutate_yaml(
            os.path.join(base, "service.yaml"), lambda d: d[0]["spec"]["ports"][0].__setitem__("name", "rpc")),
        "PDB blocks eviction": mutate_yaml(
            os.path.join(base, "poddisruptionbudget.yaml"),
            lambda d: d[0]["spec"].update({"minAvailable": 1}) or d[0]["spec"].pop("maxUnavailable")),
    }
    failures = []
    clean = Report("k8s")
    check_k8s(defaults, clean)
    if clean.failures:
        failures.append(f"the real k8s files fail: {clean.failures}")
    for name, files in k8s_cases.items():
        r = Report(name)
        check_k8s(defaults, r, files)
        if not r.failures:
            failures.append(f"k8s: '{name}' was not caught")

    compose = load_documents(COMPOSE)[0]

    def compose_case(change):
        doc = copy.deepcopy(compose)
        change(doc["services"])
        return doc
    compose_cases = {
        "no health check": lambda s: s["gateway"].pop("healthcheck"),
        "health check without CA": lambda s: s["gateway"].__setitem__(
            "healthcheck", {"test": ["CMD", PAYOUTCTL, "--timeout=3s", "health"]}),
        "short stop grace": lambda s: s["gateway"].__setitem__("stop_grace_period", "10s"),
        "second sqlite gateway on the volume": lambda s: s.__setitem__("gateway-2", copy.deepcopy(s["gateway"])),
        "sqlite scaled": lambda s: s["gateway"].__setitem__("deploy", {"replicas": 2}),
        "writable root": lambda s: s["gateway"].__setitem__("read_only", False),
        "root user": lambda s: s["gateway"].__setitem__("user", "0:0"),
        "published on every address": lambda s: s["gateway"].__setitem__("ports", ["50051:50051"]),
        "inline password": lambda s: s["postgres"]["environment"].__setitem__("POSTGRES_PASSWORD", "x"),
        "one postgresql replica": lambda s: s.pop("gateway-pg-2"),
        "latest postgres": lambda s: s["postgres"].__setitem__("image", "postgres:latest"),
        "unauthenticated": lambda s: s["gateway"]["command"].append("--allow_unauthenticated"),
        "sandbox with gateway health check": lambda s: s["aopay-sandbox"].pop("healthcheck"),
    }
    clean = Report("compose")
    check_compose(compose, defaults, clean)
    if clean.failures:
        failures.append(f"the real compose file fails: {clean.failures}")
    for name, change in compose_cases.items():
        r = Report(name)
        check_compose(compose_case(change), defaults, r)
        if not r.failures:
            failures.append(f"compose: '{name}' was not caught")

    dockerfile = open(DOCKERFILE).read()
    docker_cases = {
        "root user": lambda t: t.replace("USER 10001:10001", "USER root"),
        "no USER": lambda t: t.replace("USER 10001:10001\n", ""),
        "no HEALTHCHECK": lambda t: re.sub(r"HEALTHCHECK[^\n]*\\\n[^\n]*\n", "", t),
        "no metrics port": lambda t: t.replace("EXPOSE 50051 9464", "EXPOSE 50051"),
        "latest base": lambda t: t.replace("FROM debian:bookworm-slim AS gateway", "FROM debian:latest AS gateway"),
        "compiler in the image": lambda t: t.replace("libpq5 \\", "libpq5 g++ \\"),
        "headers in the image": lambda t: t.replace("libpq5 \\", "libpq5 libpq-dev \\"),
        "apt lists kept": lambda t: t[:t.rfind("rm -rf /var/lib/apt/lists/*")] + "true" +
        t[t.rfind("rm -rf /var/lib/apt/lists/*") + len("rm -rf /var/lib/apt/lists/*"):],
        "single stage": lambda t: "FROM debian:bookworm-slim\n" + t[t.find("USER 10001:10001"):],
        "shell-form entrypoint": lambda t: t.replace('ENTRYPOINT ["/usr/bin/payout-server"]',
                                                     "ENTRYPOINT /usr/bin/payout-server"),
    }
    clean = Report("dockerfile")
    check_dockerfile(dockerfile, clean)
    if clean.failures:
        failures.append(f"the real Dockerfile fails: {clean.failures}")
    for name, change in docker_cases.items():
        broken = change(dockerfile)
        if broken == dockerfile:
            failures.append(f"dockerfile: the case '{name}' changed nothing")
            continue
        r = Report(name)
        try:
            check_dockerfile(broken, r)
        except CheckFailed as e:
            r.fail(str(e))
        if not r.failures:
            failures.append(f"dockerfile: '{name}' was not caught")

    unit = open(UNIT).read()
    unit_cases = {
        "no DynamicUser": lambda t: t.replace("DynamicUser=yes\n", ""),
        "short TimeoutStopSec": lambda t: t.replace("TimeoutStopSec=50s", "TimeoutStopSec=30s"),
        "registration inline": lambda t: t.replace("--registration_id=@%d/registration-id",
                                                   "--registration_id=AOP-12345"),
        "typo in a key": lambda t: t.replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomee=yes"),
        "no ExecReload": lambda t: t.replace("ExecReload=/bin/kill -HUP $MAINPID\n", ""),
    }
    if shutil.which("systemd-analyze"):
        clean = Report("systemd")
        run_systemd(defaults, payout_server, clean)
        if clean.failures:
            failures.append(f"the real unit fails: {clean.failures}")
        for name, change in unit_cases.items():
            broken = change(unit)
            if broken == unit:
                failures.append(f"systemd: the case '{name}' changed nothing")
                continue
            r = Report(name)
            run_systemd(defaults, payout_server, r, broken)
            if not r.failures:
                failures.append(f"systemd: '{name}' was not caught")
    for failure in failures:
        print(f"FAIL selftest: {failure}")
    if failures:
        return 1
    print(f"ok   selftest: {len(k8s_cases)} k8s, {len(compose_cases)} compose, "
          f"{len(docker_cases)} Dockerfile and "
          f"{len(unit_cases) if shutil.which('systemd-analyze') else 0} systemd breakages caught")
    return 0


# ---------------------------------------------------------------- main ----

def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("check", choices=["k8s", "kustomize", "compose", "compose-schema", "dockerfile",
                                          "dockerfile-lint", "runtime-libs", "probes", "systemd",
                                          "selftest"])
    parser.add_argument("--payout-server", help="the built payout-server")
    parser.add_argument("--payoutctl", help="the built payoutctl")
    parser.add_argument("--aopay-sandbox", help="the built aopay-sandbox")
    args = parser.parse_args()

    def need(path, what):
        if not path or not os.access(path, os.X_OK):
            parser.error(f"{args.check} needs --{what}")
        return path

    report = Report(args.check)
    try:
        if args.check in ("k8s", "compose", "probes", "systemd", "selftest"):
            defaults = server_flags(need(args.payout_server, "payout-server"))
        if args.check == "k8s":
            check_k8s(defaults, report)
        elif args.check == "kustomize":
            kubectl = shutil.which("kubectl")
            if kubectl is None:
                print("skip kustomize: kubectl is not installed")
                return SKIP
            for overlay in OVERLAYS:
                directory = os.path.join(K8S, "overlays", overlay)
                out = subprocess.run([kubectl, "kustomize", directory], capture_output=True, text=True)
                if not report.check(out.returncode == 0, f"kubectl kustomize {overlay}: {out.stderr}"):
                    continue
                theirs = sorted((d for d in yaml.safe_load_all(out.stdout) if d),
                                key=lambda o: (o["kind"], o["metadata"]["name"]))
                ours = sorted(kustomize(directory), key=lambda o: (o["kind"], o["metadata"]["name"]))
                report.check(theirs == ours,
                             f"overlays/{overlay}: this checker's build differs from kubectl kustomize's")
        elif args.check == "compose":
            documents = load_documents(COMPOSE)
            report.check(len(documents) == 1, "one YAML document")
            check_compose(documents[0], defaults, report)
        elif args.check == "compose-schema":
            tool = shutil.which("docker-compose")
            if tool is None:
                print("skip compose-schema: docker-compose is not installed")
                return SKIP
            for profile in ([], ["--profile", "postgresql"]):
                out = subprocess.run([tool, "-f", COMPOSE] + profile + ["config", "-q"],
                                     capture_output=True, text=True, cwd=REPO)
                report.check(out.returncode == 0 and not out.stderr.strip(),
                             f"docker-compose {' '.join(profile)} config: {out.stderr.strip()}")
        elif args.check == "dockerfile":
            check_dockerfile(open(DOCKERFILE).read(), report)
        elif args.check == "dockerfile-lint":
            tool = os.path.join(REPO, ".tools", "node_modules", ".bin", "dockerfile-utils")
            if not os.access(tool, os.X_OK):
                print("skip dockerfile-lint: .tools/ has no dockerfile-utils (deploy/install-deps.sh)")
                return SKIP
            out = subprocess.run([tool, "lint", DOCKERFILE], capture_output=True, text=True)
            report.check(out.returncode == 0, f"dockerfile-utils lint:\n{out.stdout}{out.stderr}")
        elif args.check == "runtime-libs":
            binaries = [need(args.payout_server, "payout-server"), need(args.payoutctl, "payoutctl"),
                        need(args.aopay_sandbox, "aopay-sandbox")]
            if run_runtime_libs(binaries, report) == SKIP:
                print("skip runtime-libs: dpkg-query or ldd is missing")
                return SKIP
        elif args.check == "probes":
            if run_probes(defaults, args.payout_server, need(args.payoutctl, "payoutctl"), report) == SKIP:
                print("skip probes: openssl is not installed")
                return SKIP
        elif args.check == "systemd":
            if run_systemd(defaults, args.payout_server, report) == SKIP:
                print("skip systemd: systemd-analyze is not installed")
                return SKIP
        elif args.check == "selftest":
            return selftest(defaults, args.payout_server)
    except (CheckFailed, yaml.YAMLError, OSError, KeyError) as e:
        report.fail(repr(e))
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
