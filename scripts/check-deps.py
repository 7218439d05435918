#!/usr/bin/env python3
"""Fails when a script calls a command that its install step does not provide.

A green CI can hide a missing install step: the machine CI runs on may already have the command
(this is how `ping` went missing from a fresh machine once). So this check does not ask the
machine whether a command exists. It asks which Debian packages the script's install step
installs (scripts/install-deps.sh GROUP..., or ph_ensure_tools GROUP... from netns-lib.sh), and
which commands those packages ship (their dpkg file lists, and the alternatives that point into
them), and compares that with every command the script calls.

What counts as provided without an install step: Debian's essential and required packages (on
every Debian machine, the smallest included), the Rust toolchain (cargo, rustc, rustup: the one
thing the README asks for), shell builtins, and functions the script or a file it sources defines.

What a script calls is read from its syntax tree (shfmt --to-json): the first word of every simple
command, and the command behind wrappers such as `timeout 5 X`, `ip netns exec NS X`,
`ph_in_client X`, `ph_wait_for DESC SECS X`, `setsid X`, and arrays run as commands
(`cmd=(tcpdump ...)` ... `"${cmd[@]}"`). A script's closure is the script, the files it sources,
and the Python helpers it names (their subprocess calls). Scripts it runs are checked on their
own, against their own install step. A line may opt out with `# check-deps: optional (why)` when
the call is guarded (for example `systemctl`, used only when systemd runs).

Usage: scripts/check-deps.py [--self-test]
Exit status 1 with one line per problem: FILE:LINE: command, the script whose install step
misses it, and what to do.
"""

from __future__ import annotations

import ast
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL_SCRIPT = "scripts/install-deps.sh"
OPT_OUT = "check-deps: optional"

# Where commands live.
BIN_DIRS = ("/usr/bin/", "/usr/sbin/", "/bin/", "/sbin/")

# The Rust toolchain the README asks for (rustup's proxies in ~/.cargo/bin), and the project's
# own binary (built by it; installed as /usr/bin/pinhole by the package test).
TOOLCHAIN = {"cargo", "rustc", "rustup", "rustfmt", "rustdoc", "cargo-clippy", "clippy-driver", "pinhole"}

# bash builtins and keywords that shfmt reports as calls.
BUILTINS = set(
    """
    . : [ [[ alias bg bind break builtin caller cd command compgen complete compopt continue
    declare dirs disown echo enable eval exec exit export false fc fg getopts hash help history
    jobs kill let local logout mapfile popd printf pushd pwd read readarray readonly return set
    shift shopt source suspend test times trap true type typeset ulimit umask unalias unset wait
    """.split()
)


@dataclass
class Call:
    """One command a script runs; `scope` is the function it is in (None: the top level)."""

    name: str
    path: str
    line: int
    scope: str | None = None


@dataclass
class Script:
    """What one shell script defines, sources, runs and installs."""

    path: str
    calls: list[Call] = field(default_factory=list)
    functions: set[str] = field(default_factory=set)
    # Names in the literal text of each scope (a function named in `trap 'f' EXIT` runs).
    words: dict = field(default_factory=dict)
    sources: set[str] = field(default_factory=set)
    groups: list[str] = field(default_factory=list)


def rel(path: str) -> str:
    return os.path.relpath(path, REPO)


# ------------------------------------------------------------------------------------------------
# Reading a shell script
# ------------------------------------------------------------------------------------------------


def word_literal(word: dict) -> str | None:
    """The text of a word made only of literals (quoted or not), else None."""
    out = []
    for part in word.get("Parts", []):
        kind = part.get("Type")
        if kind == "Lit":
            out.append(part["Value"])
        elif kind == "SglQuoted":
            out.append(part["Value"])
        elif kind == "DblQuoted":
            inner = word_literal(part)
            if inner is None:
                return None
            out.append(inner)
        else:
            return None
    return "".join(out)


def word_head(word: dict) -> str:
    """The literal text at the start of a word (`PATH="$DIR:$PATH"` -> "PATH=")."""
    out = []
    for part in word.get("Parts", []):
        kind = part.get("Type")
        if kind in ("Lit", "SglQuoted"):
            out.append(part["Value"])
        elif kind == "DblQuoted":
            out.append(word_head(part))
            break
        else:
            break
    return "".join(out)


def word_tail(word: dict) -> str | None:
    """The literal text at the end of a word ("$REPO/scripts/x.sh" -> "/scripts/x.sh")."""
    parts = word.get("Parts", [])
    if not parts:
        return None
    last = parts[-1]
    if last.get("Type") == "DblQuoted":
        return word_tail(last)
    if last.get("Type") in ("Lit", "SglQuoted"):
        return last["Value"]
    return None


def array_expansion(word: dict) -> str | None:
    """NAME when the word is "${NAME[@]}"."""
    parts = word.get("Parts", [])
    if len(parts) == 1 and parts[0].get("Type") == "DblQuoted":
        parts = parts[0].get("Parts", [])
    if len(parts) == 1 and parts[0].get("Type") == "ParamExp":
        param = parts[0]
        index = param.get("Index")
        if isinstance(index, dict) and word_literal(index) in ("@", "*"):
            return param["Param"]["Value"]
    return None


def skip_options(args: list, i: int, with_value: set[str]) -> int:
    """Index of the first argument at or after i that is not an option (or an option's value)."""
    while i < len(args):
        text = word_literal(args[i])
        if text is None or not text.startswith("-") or text == "-":
            return i
        if text == "--":
            return i + 1
        i += 2 if text in with_value else 1
    return i


def wrapped_command(name: str, args: list) -> int | None:
    """For a wrapper command, the index of the command it runs; None if it runs none."""
    texts = [word_literal(a) for a in args]
    if name in ("ph_in_client", "ph_in_fw", "ph_in_server", "nohup", "exec"):
        return 1
    if name == "ph_in":
        return 2
    if name == "ph_wait_for":
        return 3
    if name == "ph_start_bg":
        return 4
    if name == "ip":
        # ip netns exec NS CMD...
        if texts[1:3] == ["netns", "exec"]:
            return 4
        return None
    if name == "timeout":
        i = skip_options(args, 1, {"-s", "-k", "--signal", "--kill-after"})
        return i + 1  # the duration, then the command
    if name in ("setsid", "nice", "stdbuf", "setpriv", "unshare", "env"):
        i = skip_options(
            args, 1, {"-n", "--reuid", "--regid", "--groups", "-u", "--bounding-set", "--inh-caps"}
        )
        if name == "env":
            # NAME=VALUE words, whatever their value expands to.
            while i < len(args) and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", word_head(args[i])):
                i += 1
        return i
    if name == "command":
        # `command -v X` only looks X up.
        return None if (len(texts) > 1 and (texts[1] or "").startswith("-")) else 1
    if name == "flock":
        i = skip_options(args, 1, {"-w", "-E"})
        return i + 1  # the lock file, then the command
    if name == "runuser":
        i = skip_options(args, 1, {"-u", "-g", "-G"})
        return i
    return None


def walk(node, visit, scope=None) -> None:
    """Visits every node with the function it is in (None: the top level)."""
    if isinstance(node, dict):
        if node.get("Type") == "FuncDecl":
            name = node["Name"]["Value"]
            visit(node, scope)
            walk(node.get("Body"), visit, name)
            return
        visit(node, scope)
        for value in node.values():
            walk(value, visit, scope)
    elif isinstance(node, list):
        for value in node:
            walk(value, visit, scope)


def parse_shell(path: str) -> Script:
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.splitlines()
    result = subprocess.run(
        ["shfmt", "--to-json", "-ln", "bash"], input=text, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{rel(path)}: shfmt cannot parse it: {result.stderr.strip()}")
    tree = json.loads(result.stdout)
    script = Script(path=path)
    arrays: dict[str, tuple[str, int]] = {}
    array_runs: list[tuple[str, int]] = []

    def opted_out(line: int) -> bool:
        return 0 < line <= len(lines) and OPT_OUT in lines[line - 1]

    def add_call(args: list, i: int, scope) -> None:
        while i is not None and i < len(args):
            word = args[i]
            line = word["Pos"]["Line"]
            name = word_literal(word)
            if name is None:
                array = array_expansion(word)
                if array is not None:
                    array_runs.append((array, line, scope))
                return
            if "/" in name:
                # A path: another script of ours (checked on its own), or an absolute command.
                if name.startswith("/") and not opted_out(line):
                    script.calls.append(Call(os.path.basename(name), path, line, scope))
                if name.endswith("install-deps.sh"):
                    record_install(args[i + 1 :])
                return
            if name in ("source", "."):
                if i + 1 < len(args):
                    tail = word_tail(args[i + 1])
                    if tail:
                        script.sources.add(tail)
                return
            if name == "ph_ensure_tools":
                record_install(args[i + 1 :])
            if not opted_out(line):
                script.calls.append(Call(name, path, line, scope))
            inner = wrapped_command(name, args[i:])
            i = None if inner is None else i + inner

    def record_install(rest: list) -> None:
        groups = [word_literal(w) for w in rest]
        groups = [g for g in groups if g and not g.startswith("-")]
        script.groups.extend(groups or ["testbed"])

    def visit(node: dict, scope) -> None:
        kind = node.get("Type")
        if kind == "FuncDecl":
            script.functions.add(node["Name"]["Value"])
        elif kind in ("Lit", "SglQuoted"):
            words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", node.get("Value", ""))
            script.words.setdefault(scope, set()).update(words)
        elif kind == "CallExpr":
            for assign in node.get("Assigns") or []:
                array = assign.get("Array")
                if array and not assign.get("Append"):
                    elems = array.get("Elems") or []
                    if elems:
                        first = word_literal(elems[0]["Value"])
                        if first and not first.startswith("-"):
                            arrays[assign["Name"]["Value"]] = (first, elems[0]["Value"]["Pos"]["Line"])
            if node.get("Args"):
                add_call(node["Args"], 0, scope)

    walk(tree, visit)
    for name, line, scope in array_runs:
        if name in arrays and not opted_out(arrays[name][1]):
            first, at = arrays[name]
            script.calls.append(Call(first, path, at, scope))
    return script


def python_calls(path: str) -> list[Call]:
    """Commands a Python helper runs: subprocess calls whose argv starts with a literal."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    calls = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = getattr(func, "value", None)
        module = getattr(owner, "id", "")
        if module not in ("subprocess", "os") or not node.args:
            continue
        if name not in ("run", "call", "check_call", "check_output", "Popen", "execvp", "system"):
            continue
        argv = node.args[0]
        first = None
        if isinstance(argv, (ast.List, ast.Tuple)) and argv.elts:
            if isinstance(argv.elts[0], ast.Constant) and isinstance(argv.elts[0].value, str):
                first = argv.elts[0].value
        elif isinstance(argv, ast.Constant) and isinstance(argv.value, str):
            first = argv.value.split()[0] if argv.value.split() else None
        if first:
            calls.append(Call(os.path.basename(first), path, node.lineno))
    return calls


# ------------------------------------------------------------------------------------------------
# What packages provide
# ------------------------------------------------------------------------------------------------


def dpkg_files(package: str) -> set[str] | None:
    """The files an installed package ships, or None when it is not installed."""
    for pattern in (f"/var/lib/dpkg/info/{package}.list", f"/var/lib/dpkg/info/{package}:*.list"):
        for listing in glob.glob(pattern):
            with open(listing, encoding="utf-8", errors="replace") as f:
                return {line.rstrip("\n") for line in f if line.strip()}
    return None


def alternatives() -> list[tuple[list[str], list[list[str]]]]:
    """Each alternative group: its links (master first) and, per choice, the paths behind them."""
    groups = []
    for path in glob.glob("/var/lib/dpkg/alternatives/*"):
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        try:
            links = [lines[1]]
            i = 2
            while lines[i] != "":
                links.append(lines[i + 1])  # slave name, slave link
                i += 2
            i += 1
            choices = []
            while i < len(lines) and lines[i] != "":
                targets = [lines[i]] + lines[i + 2 : i + 2 + len(links) - 1]
                choices.append(targets)
                i += 2 + len(links) - 1
            groups.append((links, choices))
        except IndexError:
            continue
    return groups


def commands_of(files: set[str], alts) -> set[str]:
    names = {os.path.basename(f) for f in files if f.startswith(BIN_DIRS) and f not in BIN_DIRS}
    for links, choices in alts:
        for targets in choices:
            for link, target in zip(links, targets):
                if target and target in files and link.startswith(BIN_DIRS):
                    names.add(os.path.basename(link))
    return names


def installed_packages() -> dict[str, tuple[str, str, list[list[str]]]]:
    """Every installed package: (Essential, Priority, dependencies as lists of alternatives)."""
    out = subprocess.run(
        [
            "dpkg-query",
            "-W",
            "-f",
            "${Package}\t${Essential}\t${Priority}\t${db:Status-Status}\t${Pre-Depends}, ${Depends}\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    packages = {}
    for line in out.splitlines():
        name, essential, priority, status, depends = (line.split("\t") + [""] * 5)[:5]
        if status != "installed":
            continue
        alternatives = []
        for clause in depends.split(","):
            names = [re.split(r"[\s(:]", alt.strip())[0] for alt in clause.split("|")]
            names = [n for n in names if n]
            if names:
                alternatives.append(names)
        packages[name] = (essential, priority, alternatives)
    return packages


def with_dependencies(roots: list[str], packages) -> list[str]:
    """The packages and everything they depend on, as apt would install it on a fresh machine:
    of alternatives (a | b), the first one, or the one installed here when the first is not."""
    result, queue = [], list(roots)
    seen = set()
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        result.append(name)
        for alts in packages.get(name, ("", "", []))[2]:
            chosen = next((a for a in alts if a in packages), None)
            if alts[0] in packages:
                chosen = alts[0]
            if chosen:
                queue.append(chosen)
    return result


def base_packages(packages) -> list[str]:
    """Packages every Debian machine has (Essential: yes, Priority: required), with their
    dependencies."""
    roots = [n for n, (ess, prio, _) in packages.items() if ess == "yes" or prio == "required"]
    return with_dependencies(roots, packages)


def group_packages(groups: list[str]) -> list[str]:
    result = subprocess.run(
        [os.path.join(REPO, INSTALL_SCRIPT), "--list", *groups], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"{INSTALL_SCRIPT} --list {' '.join(groups)}: {result.stderr.strip()}")
    return result.stdout.split()


def owner_hint(command: str) -> str:
    """Which package ships the command on this machine, when it is installed here."""
    found = shutil.which(command)
    if found:
        real = os.path.realpath(found)
        candidates = [found, real]
        # Merged /usr: dpkg may know /bin/X for /usr/bin/X.
        candidates += [c[len("/usr") :] for c in (found, real) if c.startswith("/usr/")]
        for candidate in candidates:
            result = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if result.returncode == 0:
                return f"Debian package {result.stdout.split(':')[0]}"
    return f"find its package with `apt-file search bin/{command}`"


# ------------------------------------------------------------------------------------------------
# The check
# ------------------------------------------------------------------------------------------------


def resolve(reference: str, scripts: dict[str, Script]) -> str | None:
    """The script a sourced/run reference names ("$REPO/scripts/x.sh", "tests/e2e/y.sh")."""
    reference = reference.lstrip("./")
    for path in scripts:
        r = rel(path)
        if r == reference or r.endswith("/" + reference) or reference.endswith("/" + r):
            return path
    base = os.path.basename(reference)
    matches = [p for p in scripts if os.path.basename(p) == base]
    return matches[0] if len(matches) == 1 else None


def reachable_calls(closure: list[Script]) -> list[Call]:
    """The calls that can run: every file's top level (a sourced file's runs when sourced), and
    the functions they call or name, transitively. A library's function that the script never
    reaches does not count against it."""
    defined: dict[str, list[Script]] = {}
    for member in closure:
        for name in member.functions:
            defined.setdefault(name, []).append(member)
    seen: set[tuple[str, str | None]] = set()
    frontier = [(member, None) for member in closure]
    calls = []
    while frontier:
        member, scope = frontier.pop()
        if (member.path, scope) in seen:
            continue
        seen.add((member.path, scope))
        here = [c for c in member.calls if c.scope == scope]
        calls.extend(here)
        names = {c.name for c in here} | member.words.get(scope, set())
        for name in names & defined.keys():
            frontier.extend((owner, name) for owner in defined[name])
    return calls


def shell_files(root: str) -> list[str]:
    found = []
    for pattern in ("scripts/*.sh", "tests/**/*.sh", "benches/**/*.sh", "packaging/**/*.sh", ".ci/run"):
        found.extend(glob.glob(os.path.join(root, pattern), recursive=True))
    return sorted(set(found))


def python_files(root: str) -> list[str]:
    found = []
    for pattern in ("scripts/*.py", "tests/**/*.py", "benches/**/*.py"):
        found.extend(glob.glob(os.path.join(root, pattern), recursive=True))
    return sorted(set(f for f in found if os.path.basename(f) != "check-deps.py"))


def check(root: str, provided_by_group) -> list[str]:
    scripts = {path: parse_shell(path) for path in shell_files(root)}
    pythons = python_files(root)
    problems = []
    base = provided_by_group(None)
    for path, script in scripts.items():
        # Libraries are checked through the scripts that source them.
        if any(resolve(s, scripts) == path for other in scripts.values() for s in other.sources):
            continue
        closure = [script]
        seen = {path}
        queue = list(script.sources)
        while queue:
            target = resolve(queue.pop(), scripts)
            if target and target not in seen:
                seen.add(target)
                closure.append(scripts[target])
                queue.extend(scripts[target].sources)
        with open(path, encoding="utf-8") as f:
            texts = [f.read()]
        for member in closure[1:]:
            with open(member.path, encoding="utf-8") as f:
                texts.append(f.read())
        calls = reachable_calls(closure)
        for py in pythons:
            if any(os.path.basename(py) in t for t in texts):
                calls.extend(python_calls(py))
        functions = set().union(*(m.functions for m in closure))
        groups = script.groups
        provided = base | provided_by_group(groups) if groups else base
        for call in calls:
            name = call.name
            if name in BUILTINS or name in functions or name in TOOLCHAIN or name in provided:
                continue
            if resolve(name, scripts):
                continue
            step = (
                f"its install step ({INSTALL_SCRIPT} {' '.join(groups)})"
                if groups
                else "it has no install step"
            )
            problems.append(
                f"{rel(call.path)}:{call.line}: `{name}`, called by {rel(path)}, is not provided: "
                f"{step}; {owner_hint(name)}: add it to a group in {INSTALL_SCRIPT} that "
                f"{rel(path)} installs"
            )
    return sorted(set(problems))


def downloaded_files(package: str) -> set[str] | None:
    """The files a package that is not installed here would ship: its .deb, fetched with
    `apt-get download` (as any user) and listed with dpkg-deb. None if it cannot be fetched."""
    with tempfile.TemporaryDirectory() as tmp:
        got = subprocess.run(
            ["apt-get", "download", "-qq", package], cwd=tmp, capture_output=True, text=True
        )
        debs = glob.glob(os.path.join(tmp, "*.deb"))
        if got.returncode != 0 or not debs:
            return None
        listing = subprocess.run(
            ["dpkg-deb", "--fsys-tarfile", debs[0]], capture_output=True, check=False
        )
        names = subprocess.run(
            ["tar", "-t"], input=listing.stdout, capture_output=True, check=False
        ).stdout.decode(errors="replace")
    return {"/" + n.lstrip("./").rstrip("/") for n in names.splitlines() if n.strip("./")}


def machine_provider():
    """What Debian packages provide, read off this machine's dpkg database (and, for packages
    of a group that are not installed here, off their .deb files)."""
    alts = alternatives()
    packages = installed_packages()
    cache: dict[tuple, set[str]] = {}
    unknown: list[str] = []

    def provided(groups) -> set[str]:
        key = tuple(groups) if groups else None
        if key in cache:
            return cache[key]
        files: set[str] = set()
        if groups is None:
            names = base_packages(packages)
        else:
            declared = group_packages(list(groups))
            # Installed packages count with their dependencies; one that is not installed here
            # counts with its own files only (declare what you call from its dependencies).
            names = with_dependencies([p for p in declared if p in packages], packages)
            for package in declared:
                if package not in packages:
                    listed = downloaded_files(package)
                    if listed is None:
                        unknown.append(package)
                    else:
                        files |= listed
        for package in names:
            files |= dpkg_files(package) or set()
        cache[key] = commands_of(files, alts)
        return cache[key]

    return provided, unknown


# ------------------------------------------------------------------------------------------------
# Self-test: the check finds what it is for
# ------------------------------------------------------------------------------------------------


def self_test() -> None:
    """Runs the check on a made-up tree whose scripts miss install steps, with made-up packages
    (and made-up command names, so no scanner mistakes the fixtures for calls of this repo)."""
    fake_groups = {("testbed",): {"ip", "ss", "curl", "python3"}}

    def provider(groups):
        if groups is None:
            return {"grep", "sed", "awk", "sleep", "dirname", "timeout", "env"}
        return set().union(*(fake_groups.get((g,), set()) for g in groups))

    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "scripts"))
        os.makedirs(os.path.join(root, "tests/e2e"))
        files = {
            "scripts/lib.sh": 'lib_check() { ph_wait_for "reach" 5 ph_in_client fake-ping -c 1 x; }\n'
            "lib_unused() { fake-unused -r x; }\n"
            "lib_init() { trap 'lib_cleanup' EXIT; }\n"
            "lib_cleanup() { fake-nft flush; }\n"
            'ph_wait_for() { local d=$1 t=$2; shift 2; "$@"; }\n'
            "ph_in_client() { ip netns exec c \"$@\"; }\n"
            "ph_ensure_tools() { :; }\n",
            "tests/e2e/a.sh": '. "$(dirname "$0")/../../scripts/lib.sh"\nph_ensure_tools\n'
            "lib_check\nlib_init\ntimeout 5 curl -s x | grep -q y\n"
            "cmd=(fake-capture -i x)\n\"${cmd[@]}\"\n"
            "systemctl stop x  # check-deps: optional (test)\n"
            "python3 tests/e2e/helper.py\n",
            "tests/e2e/helper.py": "import subprocess\nsubprocess.run(['fake-conntrack', '-L'])\n",
            "scripts/b.sh": "sleep 1\nfake-ftpd conf\nip netns exec x fake-ftp-client -c quit\n"
            'env PATH="$DIR/sbin:$PATH" fake-unpacked -n\n',
        }
        for name, text in files.items():
            with open(os.path.join(root, name), "w", encoding="utf-8") as f:
                f.write(text)
        global REPO
        saved, REPO = REPO, root
        try:
            problems = check(root, provider)
        finally:
            REPO = saved
    found = {(p.split(":")[0], p.split("`")[1]) for p in problems}
    expected = {
        ("scripts/lib.sh", "fake-ping"),
        ("scripts/lib.sh", "fake-nft"),
        ("tests/e2e/a.sh", "fake-capture"),
        ("tests/e2e/helper.py", "fake-conntrack"),
        ("scripts/b.sh", "fake-ftpd"),
        ("scripts/b.sh", "ip"),
        ("scripts/b.sh", "fake-ftp-client"),
        ("scripts/b.sh", "fake-unpacked"),
    }
    if found != expected:
        print("check-deps self-test FAILED", file=sys.stderr)
        print(f"  expected {sorted(expected)}", file=sys.stderr)
        print(f"  found    {sorted(found)}", file=sys.stderr)
        for p in problems:
            print("  " + p, file=sys.stderr)
        raise SystemExit(1)
    print(f"check-deps self-test: ok (found all {len(expected)} planted missing commands)")


def main() -> int:
    if shutil.which("shfmt") is None:
        print(
            f"check-deps: shfmt is not installed (run {INSTALL_SCRIPT} test as root)", file=sys.stderr
        )
        return 1
    self_test()
    if "--self-test" in sys.argv[1:]:
        return 0
    provided, unknown = machine_provider()
    problems = check(REPO, provided)
    if unknown:
        missing = " ".join(sorted(set(unknown)))
        print(
            f"check-deps: cannot tell what these packages provide: not installed, and `apt-get "
            f"download` could not fetch them: {missing}\n"
            f"  run `apt-get update` (or {INSTALL_SCRIPT} test) as root first",
            file=sys.stderr,
        )
        return 1
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"check-deps: {len(problems)} command(s) not provided by an install step", file=sys.stderr)
        return 1
    scripts = shell_files(REPO)
    print(f"check-deps: ok ({len(scripts)} scripts; every command they call is installed by their install step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
