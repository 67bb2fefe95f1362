#!/usr/bin/env python3
"""Static checks of the deployment files: docker-compose.yml, Dockerfile and .env.example.

Run from anywhere (the repository root is this script's parent folder unless --root says
otherwise); needs Python 3 and PyYAML. Prints one line per check and exits 1 naming every
failed check, 2 when a file cannot be read at all.

The variables authvault reads are the ones .env.example lists: `tests/config_table.rs` holds
.env.example (and the contract's configuration table) to the server's own table of variables,
`authvault::config::VARIABLES`, so this script does not read Rust sources for them.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

try:
    import yaml
except ImportError:  # pragma: no cover - reported, not raised
    print("error: PyYAML is missing: pip install pyyaml", file=sys.stderr)
    sys.exit(2)

ENV_NAME = r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+"


def listing(prefix: str, items) -> str:
    """`prefix: a, b, c`, or "" when there is nothing to list."""
    items = sorted(items)
    return f"{prefix}: {', '.join(items)}" if items else ""


class Report:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok   {name}" + (f" ({detail})" if detail else ""))
        else:
            self.failed.append(name)
            print(f"FAIL {name}" + (f": {detail}" if detail else ""))
        return ok

    def skip(self, name: str, why: str) -> None:
        print(f"skip {name}: {why}")


# ------------------------------------------------------------------------------------------
# src/config.rs
# ------------------------------------------------------------------------------------------


def strip_rust_comments(source: str) -> str:
    source = re.sub(r"/\*.*?\*/", "", source, flags=re.S)
    return re.sub(r"//[^\n]*", "", source)


def env_readers_outside_config(src: Path) -> list[str]:
    hits = []
    pattern = re.compile(r"\benv\s*::\s*var(?:_os)?\s*\(\s*\"(" + ENV_NAME + r")\"|\benv!\s*\(\s*\"(" + ENV_NAME + r")\"")
    for path in sorted(src.rglob("*.rs")):
        if path.name == "config.rs" and path.parent == src:
            continue
        code = strip_rust_comments(path.read_text(encoding="utf-8"))
        for m in pattern.finditer(code):
            name = m.group(1) or m.group(2)
            if name.startswith("CARGO_"):  # compile-time values set by cargo
                continue
            hits.append(f"{path.relative_to(src.parent)} reads {name}")
    return hits


# ------------------------------------------------------------------------------------------
# .env.example
# ------------------------------------------------------------------------------------------


@dataclass
class EnvExample:
    names: list[str] = field(default_factory=list)  # in order, with repeats
    active: dict[str, str] = field(default_factory=dict)  # uncommented NAME=value


def parse_env_example(text: str) -> EnvExample:
    result = EnvExample()
    for line in text.splitlines():
        m = re.match(r"^\s*(#\s*)?(?:export\s+)?(" + r"[A-Z][A-Z0-9_]*" + r")=(.*)$", line)
        if not m:
            continue
        commented, name, value = m.group(1), m.group(2), m.group(3).strip()
        result.names.append(name)
        if not commented:
            result.active[name] = value
    return result


# ------------------------------------------------------------------------------------------
# docker-compose.yml helpers
# ------------------------------------------------------------------------------------------

INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolated_names(value: str) -> set[str]:
    value = value.replace("$$", "")
    return {m.group(1) or m.group(4) for m in INTERP.finditer(value)}


def resolve_defaults(value: str) -> str | None:
    """The value with ${VAR:-default} replaced by its default; None if it depends on .env."""
    unknown = False

    def sub(m: re.Match) -> str:
        nonlocal unknown
        if m.group(2) in (":-", "-"):
            return m.group(3)
        unknown = True
        return ""

    out = INTERP.sub(sub, value.replace("$$", "\0")).replace("\0", "$")
    return None if unknown else out


def env_mapping(env) -> dict[str, str | None]:
    if env is None:
        return {}
    if isinstance(env, dict):
        return {str(k): (None if v is None else str(v)) for k, v in env.items()}
    out: dict[str, str | None] = {}
    for item in env:
        name, sep, value = str(item).partition("=")
        out[name.strip()] = value if sep else None
    return out


def as_list(command) -> list[str]:
    if command is None:
        return []
    if isinstance(command, str):
        try:
            return shlex.split(command)
        except ValueError:
            return command.split()
    return [str(c) for c in command]


def healthcheck_enabled(hc) -> tuple[bool, str]:
    if not isinstance(hc, dict):
        return False, "no healthcheck"
    if hc.get("disable"):
        return False, "healthcheck has disable: true"
    test = hc.get("test")
    if not test:
        return False, "healthcheck has no test"
    if as_list(test)[:1] == ["NONE"]:
        return False, "healthcheck test is NONE"
    return True, " ".join(as_list(test))[:60]


def image_tag(image: str) -> tuple[str | None, str | None]:
    """(tag, digest) of an image reference."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else None
    return tag, digest


def port_container_side(entry) -> str | None:
    if isinstance(entry, dict):
        return str(entry.get("target")) if entry.get("target") is not None else None
    spec = str(entry).split("/", 1)[0]
    return spec.rsplit(":", 1)[-1]


# ------------------------------------------------------------------------------------------
# Dockerfile helpers
# ------------------------------------------------------------------------------------------


@dataclass
class Instr:
    line: int
    cmd: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instrs: list[Instr] = field(default_factory=list)


def parse_dockerfile(text: str) -> list[Stage]:
    escape = "\\"
    lines = text.splitlines()
    for line in lines:  # parser directives come first
        m = re.match(r"^#\s*(\w+)\s*=\s*(\S+)\s*$", line)
        if not m:
            break
        if m.group(1).lower() == "escape":
            escape = m.group(2)
    logical: list[tuple[int, str]] = []
    buf, start = "", 0
    for no, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):  # comment lines inside a continuation
            continue
        if not buf:
            start = no
        if raw.rstrip().endswith(escape):
            buf += raw.rstrip()[:-1] + " "
            continue
        buf += raw
        logical.append((start, buf.strip()))
        buf = ""
    if buf:
        logical.append((start, buf.strip()))
    stages: list[Stage] = []
    for no, text_line in logical:
        cmd, _, args = text_line.partition(" ")
        cmd = cmd.upper()
        args = args.strip()
        if cmd == "FROM":
            parts = [p for p in args.split() if not p.startswith("--")]
            base = parts[0] if parts else ""
            name = parts[2] if len(parts) >= 3 and parts[1].lower() == "as" else None
            stages.append(Stage(base, name))
        elif stages:
            stages[-1].instrs.append(Instr(no, cmd, args))
    return stages


def copy_sources(args: str) -> tuple[dict[str, str], list[str]]:
    """(flags, sources) of a COPY/ADD line; the destination is dropped."""
    flags: dict[str, str] = {}
    rest = args
    while True:
        m = re.match(r"--([\w-]+)(?:=(\S+))?\s+", rest)
        if not m:
            break
        flags[m.group(1)] = m.group(2) or ""
        rest = rest[m.end():]
    rest = rest.strip()
    if rest.startswith("["):
        try:
            parts = [str(p) for p in json.loads(rest)]
        except json.JSONDecodeError:
            parts = shlex.split(rest)
    else:
        parts = shlex.split(rest)
    return flags, parts[:-1]


def dockerignore_patterns(path: Path) -> list[tuple[bool, str]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip("/")) if line.lstrip("!").strip("/") else "."
        out.append((negate, pattern))
    return out


def dockerignored(rel: str, patterns: list[tuple[bool, str]]) -> bool:
    """Whether .dockerignore keeps `rel` (or a folder above it) out of the build context."""
    rel = os.path.normpath(rel)
    parts = rel.split(os.sep)
    candidates = [os.sep.join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for negate, pattern in patterns:
        regex = fnmatch.translate(pattern).replace(".*", "[^/]*")
        regex = regex.replace("[^/]*[^/]*", ".*")  # ** spans folders
        if any(re.match(regex, c) for c in candidates):
            ignored = not negate
    return ignored


def shell_words(args: str) -> list[str]:
    try:
        return shlex.split(args.replace(";", " ; "))
    except ValueError:
        return args.split()


# ------------------------------------------------------------------------------------------
# The checks
# ------------------------------------------------------------------------------------------


def main() -> int:
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=here, help="repository root (default: %(default)s)")
    opts = ap.parse_args()
    root: Path = opts.root.resolve()

    texts = {}
    for rel in ("docker-compose.yml", "Dockerfile", ".env.example"):
        try:
            texts[rel] = (root / rel).read_text(encoding="utf-8")
        except OSError as e:
            print(f"error: cannot read {rel}: {e}", file=sys.stderr)
            return 2
    try:
        compose = yaml.safe_load(texts["docker-compose.yml"])
    except yaml.YAMLError as e:
        print(f"error: docker-compose.yml is not valid YAML: {e}", file=sys.stderr)
        return 2
    if not isinstance(compose, dict):
        compose = {}
    dockerfile_text, env_text = texts["Dockerfile"], texts[".env.example"]

    r = Report()

    # --- the variables authvault reads: those .env.example lists ----------------------------
    env = parse_env_example(env_text)
    listed = set(env.names)
    allowed = listed
    r.check(".env.example: variable names found", len(listed) >= 10, f"{len(listed)} listed")
    elsewhere = env_readers_outside_config(root / "src")
    r.check("src/: only src/config.rs reads a variable by name", not elsewhere, "; ".join(elsewhere))

    # --- .env.example ---------------------------------------------------------------------
    dupes = sorted({n for n in env.names if env.names.count(n) > 1})
    r.check(".env.example: lists each variable once", not dupes, ", ".join(dupes))
    secrets = sorted(n for n, v in env.active.items()
                     if re.search(r"SECRET|KEYS?$|PASSWORD|SMTP_URL", n) and v not in ("", "''", '""'))
    r.check(".env.example: leaves every secret empty", not secrets, listing("has a value", secrets))

    # --- docker-compose.yml ---------------------------------------------------------------
    services = compose.get("services") or {}
    top_volumes = compose.get("volumes") or {}
    mongo = services.get("mongo")
    app = services.get("authvault")
    r.check("compose: service mongo exists", isinstance(mongo, dict))
    r.check("compose: service authvault exists", isinstance(app, dict))
    mongo = mongo if isinstance(mongo, dict) else {}
    app = app if isinstance(app, dict) else {}

    image = str(mongo.get("image") or "")
    tag, digest = image_tag(image)
    r.check("compose: mongo image is pinned (a tag other than latest, or a digest)",
            bool(image) and (bool(digest) or (tag is not None and tag != "latest")),
            image or "no image")
    mongo_cmd = as_list(mongo.get("command"))
    repl = next((mongo_cmd[i + 1] for i, a in enumerate(mongo_cmd[:-1]) if a == "--replSet"), None)
    repl = repl or next((a.split("=", 1)[1] for a in mongo_cmd if a.startswith("--replSet=")), None)
    r.check("compose: mongo runs with --replSet", repl is not None, " ".join(mongo_cmd) or "no command")
    ok, detail = healthcheck_enabled(mongo.get("healthcheck"))
    r.check("compose: mongo has a healthcheck", ok, detail if not ok else "")
    vols = mongo.get("volumes") or []
    targets, undeclared = [], []
    for v in vols:
        if isinstance(v, dict):
            source, target = v.get("source"), v.get("target")
        else:
            parts = str(v).split(":")
            source, target = (parts[0], parts[1]) if len(parts) > 1 else (None, parts[0])
        targets.append(target)
        if source and not source.startswith((".", "/", "~", "$")) and source not in top_volumes:
            undeclared.append(source)
    r.check("compose: mongo keeps /data/db on a volume", "/data/db" in targets,
            ", ".join(map(str, targets)) or "no volumes")
    r.check("compose: mongo's named volumes are declared under top-level volumes", not undeclared,
            ", ".join(undeclared))

    deps = app.get("depends_on")
    condition = deps.get("mongo", {}).get("condition") if isinstance(deps, dict) and isinstance(deps.get("mongo"), dict) else None
    r.check("compose: authvault depends on mongo being healthy", condition == "service_healthy",
            f"condition: {condition}" if condition else f"depends_on: {deps!r}")

    # The Dockerfile that compose builds (also checked on its own below).
    build = app.get("build")
    if isinstance(build, str):
        context, dockerfile_name = build, "Dockerfile"
    elif isinstance(build, dict):
        context, dockerfile_name = build.get("context", "."), build.get("dockerfile", "Dockerfile")
    else:
        context, dockerfile_name = None, None
    built = (root / context / dockerfile_name) if context is not None else None
    stages = parse_dockerfile(dockerfile_text)
    final = stages[-1] if stages else Stage("", None)
    image_hc = [i for i in final.instrs if i.cmd == "HEALTHCHECK"]
    image_hc_ok = bool(image_hc) and not image_hc[-1].args.upper().startswith("NONE")

    if "healthcheck" in app:
        ok, detail = healthcheck_enabled(app.get("healthcheck"))
        r.check("compose: authvault has a healthcheck", ok, detail if not ok else "its own")
    else:
        relies = built is not None and built.resolve() == (root / "Dockerfile").resolve() and image_hc_ok
        r.check("compose: authvault has a healthcheck or relies on the image's HEALTHCHECK", relies,
                "the image's HEALTHCHECK" if relies else
                f"no healthcheck of its own, and the image it builds ({build!r}) is not this repo's "
                "Dockerfile with a HEALTHCHECK")

    ports = app.get("ports") or []
    r.check("compose: authvault publishes a port", bool(ports), ", ".join(map(str, ports)) or "no ports")

    app_env = env_mapping(app.get("environment"))
    env_files = app.get("env_file") or []
    for f in [env_files] if isinstance(env_files, (str, dict)) else env_files:
        path = f.get("path") if isinstance(f, dict) else f
        p = root / str(path)
        if p.is_file():
            for n in parse_env_example(p.read_text(encoding="utf-8")).active:
                app_env.setdefault(n, None)
    unknown = sorted(set(app_env) - allowed)
    r.check("compose: every variable passed to authvault is one it reads", not unknown,
            listing("not read", unknown) or f"{len(app_env)} variables")

    compose_text = texts["docker-compose.yml"]
    interp = set()
    for line in compose_text.splitlines():
        if not line.lstrip().startswith("#"):
            interp |= interpolated_names(line)
    r.check("compose: every ${VAR} it fills in from .env is listed in .env.example",
            not (interp - listed), listing("missing", interp - listed))

    # The server must listen, on all interfaces, on the port that is published.
    listen = app_env.get("AUTHVAULT_LISTEN")
    listen = resolve_defaults(listen) if listen is not None else None
    if listen is None:
        envs = [i.args for i in final.instrs if i.cmd == "ENV" and "AUTHVAULT_LISTEN" in i.args]
        m = re.search(r"AUTHVAULT_LISTEN[= ]\s*\"?([^\s\"]+)", envs[-1]) if envs else None
        listen = m.group(1) if m else "127.0.0.1:8080"
    host, _, lport = listen.rpartition(":")
    published = {port_container_side(p) for p in ports}
    r.check("compose: authvault listens on all interfaces on a published container port",
            host in ("0.0.0.0", "[::]", "::") and lport in published,
            f"listens on {listen}, publishes container port(s) {', '.join(sorted(map(str, published)))}")

    db = app_env.get("AUTHVAULT_DATABASE_URL")
    db = resolve_defaults(db) if db is not None else None
    if db and db.startswith("mongodb://"):
        rs = re.search(r"[?&]replicaSet=([^&]+)", db)
        hosts = re.match(r"mongodb://(?:[^@/]*@)?([^/?]+)", db)
        names = {h.rsplit(":", 1)[0] for h in hosts.group(1).split(",")} if hosts else set()
        r.check("compose: AUTHVAULT_DATABASE_URL points at service mongo and its replica set",
                "mongo" in names and rs is not None and rs.group(1) == repl,
                f"hosts {sorted(names)}, replicaSet={rs.group(1) if rs else None}, mongo --replSet {repl}")
    else:
        r.skip("compose: AUTHVAULT_DATABASE_URL points at mongo", f"not a fixed mongodb:// URL: {db!r}")

    # --- Dockerfile -----------------------------------------------------------------------
    if built is not None:
        r.check("compose: authvault builds the repository's Dockerfile", built.is_file(), str(built))
    r.check("Dockerfile: at least two FROM stages", len(stages) >= 2, f"{len(stages)} stages")

    users = [i.args for i in final.instrs if i.cmd == "USER"]
    user = users[-1] if users else None
    who = user.split(":", 1)[0].strip() if user else None
    r.check("Dockerfile: the final stage runs as a non-root USER",
            who is not None and who not in ("root", "0"), f"USER {user}" if user else "no USER")

    hc = image_hc[-1].args if image_hc else ""
    r.check("Dockerfile: HEALTHCHECK hits /healthz", image_hc_ok and "/healthz" in hc,
            "no HEALTHCHECK in the final stage" if not image_hc else hc[-80:])
    tools = {w for w in shell_words(hc.partition("CMD")[2]) if w in ("curl", "wget")}
    installs = " ".join(i.args for i in final.instrs if i.cmd == "RUN")
    missing_tools = sorted(t for t in tools
                           if not re.search(r"\b(?:apt-get|apt|apk|dnf|yum|microdnf)\b[^&;|]*\binstall\b[^&;|]*\b" + t + r"\b", installs))
    r.check("Dockerfile: the final stage installs what HEALTHCHECK runs", not missing_tools,
            ", ".join(sorted(tools)) if not missing_tools else listing("not installed", missing_tools))

    exposed = [p.split("/")[0] for i in final.instrs if i.cmd == "EXPOSE" for p in i.args.split()]
    r.check("Dockerfile: EXPOSE in the final stage", bool(exposed), " ".join(exposed))
    if exposed and published:
        r.check("Dockerfile: EXPOSE matches the container port compose publishes",
                bool(set(exposed) & {str(p) for p in published}),
                f"EXPOSE {' '.join(exposed)}, compose publishes {', '.join(sorted(map(str, published)))}")

    ctx = (root / context) if context is not None else root
    ignore = dockerignore_patterns(ctx / ".dockerignore")
    stage_names = {s.name for s in stages if s.name}
    missing, ignored, bad_from = [], [], []
    copies = 0
    for idx, stage in enumerate(stages):
        for ins in stage.instrs:
            if ins.cmd not in ("COPY", "ADD"):
                continue
            flags, sources = copy_sources(ins.args)
            if "from" in flags:
                ref = flags["from"]
                known = ref in stage_names or (ref.isdigit() and int(ref) < idx) or re.search(r"[:/]", ref)
                if not known:
                    bad_from.append(f"line {ins.line}: --from={ref}")
                continue
            for src in sources:
                if re.match(r"^(https?|git)://|^git@", src):
                    continue
                copies += 1
                matches = glob.glob(str(ctx / src)) if any(c in src for c in "*?[") else \
                    ([str(ctx / src)] if (ctx / src).exists() else [])
                if not matches:
                    missing.append(f"line {ins.line}: {src}")
                    continue
                for mpath in matches:
                    rel = os.path.relpath(mpath, ctx)
                    if rel != "." and dockerignored(rel, ignore):
                        ignored.append(f"line {ins.line}: {rel}")
    r.check("Dockerfile: every file it COPYs exists in the repo", not missing and copies > 0,
            "; ".join(missing) if missing else f"{copies} sources")
    r.check("Dockerfile: no file it COPYs is excluded by .dockerignore", not ignored, "; ".join(ignored))
    r.check("Dockerfile: every COPY --from names an earlier stage", not bad_from, "; ".join(bad_from))

    total = r.passed + len(r.failed)
    if r.failed:
        print(f"check-deploy: {len(r.failed)} of {total} checks failed:", file=sys.stderr)
        for name in r.failed:
            print(f"  - {name}", file=sys.stderr)
        return 1
    print(f"check-deploy: all {total} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
