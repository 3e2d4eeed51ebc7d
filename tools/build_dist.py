"""Build the single-file executables that operators deploy: ``make dist``.

Writes into the output directory (default ``dist/``):

* ``consul-registration-hook`` and ``consul-mesos-executor``: one file each, a zip
  application (PEP 441, the format of the standard library's ``zipapp``) that starts with
  ``#!/usr/bin/env python3`` and holds the project and every runtime dependency as
  pure-Python code. Python imports straight from the zip (zipimport): nothing is unpacked
  to a cache directory, so the files run from a read-only volume, without a HOME, on any
  Linux host whose ``python3`` is at least the version setup.cfg's ``python_requires``
  names (and links OpenSSL >= 1.1.1, as urllib3 2 requires). Two costs of that choice:
  zipimport cannot cache bytecode, so every start compiles what it imports (a few hundred
  ms for the executor), and certifi hands requests a copy of its CA bundle in $TMPDIR,
  removed when the process exits.
* ``consul-registration-hook.tar.gz``: the hook at the archive root, the form the
  Kubernetes init container unpacks with ``tar -C /hooks -zxvf -``.

How the dependencies get in (all from the package index, through pip):

* They are resolved for the *oldest* supported Python (``--python-version``) and only as
  pure wheels (``--platform any --abi none``), so pip cannot pick a release that needs a
  newer interpreter or one whose only wheels are compiled (charset-normalizer's mypyc
  builds, for example: its pure ``py3-none-any`` wheel is taken instead).
* pymesos is installed without its dependencies because it lists kazoo, which only its
  scheduler side imports; its other dependencies (six, addict, http-parser) are listed
  here. http-parser comes from the pure wheel that build_http_parser_wheel.py makes.
* PyYAML is built from its sdist with ``PYYAML_FORCE_LIBYAML=0`` (its setup.py then
  leaves the C extension out and the wheel is pure).
* Whatever happens, the build fails if a compiled extension ended up in the archive.

Usage: python tools/build_dist.py [--out DIR]
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"  # docker-compose.yml mounts it into the Mesos agent
WHEELHOUSE = ROOT / "build" / "wheels"
SHEBANG = b"#!/usr/bin/env python3\n"
HOOK = "consul-registration-hook"

# pymesos's Requires-Dist without kazoo (needed only by its scheduler's ZooKeeper detector).
PYMESOS_DEPENDENCIES = ["six", "addict", "http-parser"]
# Requirements downloaded without their dependencies, for the reasons in the module docstring.
NO_DEPS = {"pymesos", "pyyaml"}
# Anything that would tie the archive to one interpreter build or platform.
COMPILED = (".so", ".pyd", ".dylib")

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
# Pure wheels only, for the oldest allowed Python: what runs there runs on the later ones.
PURE_WHEELS = ["--implementation", "py", "--abi", "none", "--platform", "any"]


class BuildError(Exception):
    pass


def read_setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return config


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip()]


def requirement_name(requirement: str) -> str:
    name = re.match(r"[A-Za-z0-9._-]+", requirement)
    if not name:
        raise BuildError(f"setup.cfg: cannot read the requirement {requirement!r}")
    return re.sub(r"[-_.]+", "-", name.group()).lower()


def oldest_python(config: configparser.ConfigParser) -> str:
    found = re.search(r">=\s*(\d+\.\d+)", config.get("options", "python_requires"))
    if not found:
        raise BuildError("setup.cfg: python_requires has no '>=X.Y' lower bound")
    return found.group(1)


def console_scripts(config: configparser.ConfigParser) -> dict[str, str]:
    """``{script name: "module:function"}`` from setup.cfg's entry points."""
    scripts = {}
    for line in lines(config.get("options.entry_points", "console_scripts")):
        name, _, target = line.partition("=")
        scripts[name.strip()] = target.strip()
    return scripts


def project_source(config: configparser.ConfigParser, into: Path) -> Path:
    """A clean copy of the project to install from.

    Building in the work tree would reuse its ``build/lib``, where modules deleted from the
    source survive and would be shipped.
    """
    source = into / "project"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in lines(config.get("options.packages.find", "include")):
        if "." not in package:  # "hooks.*" is inside "hooks"
            shutil.copytree(
                ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
            )
    return source


def install_dependencies(config: configparser.ConfigParser, site: Path, work: Path) -> None:
    """Resolve and download for the oldest allowed Python, then install all into ``site``.

    ``pip download`` and not ``pip install --target``: only download checks each release's
    own Requires-Python against ``--python-version`` (install trusts the index's
    data-requires-python, which a mirror may lack).
    """
    python = ["--python-version", oldest_python(config)]
    requirements = lines(config.get("options", "install_requires"))
    resolved = [r for r in requirements if requirement_name(r) not in NO_DEPS]
    no_deps = [r for r in requirements if requirement_name(r) in NO_DEPS]
    http_parser = [sys.executable, str(ROOT / "tools" / "build_http_parser_wheel.py")]
    subprocess.run([*http_parser, str(WHEELHOUSE)], check=True)

    downloads = work / "downloads"
    download = [*PIP, "download", "--quiet", "--dest", str(downloads), *python]
    links = ["--find-links", str(WHEELHOUSE)]
    pure = [*resolved, *PYMESOS_DEPENDENCIES]
    subprocess.run([*download, *PURE_WHEELS, "--only-binary=:all:", *links, *pure], check=True)
    subprocess.run([*download, "--no-deps", "--no-binary", "pyyaml", *no_deps], check=True)

    # No cache: a PyYAML wheel built earlier with its C extension must not be reused.
    install = [*PIP, "install", "--quiet", "--no-deps", "--no-cache-dir"]
    files = sorted(str(path) for path in downloads.iterdir())
    subprocess.run(
        [*install, "--target", str(site), *files, str(project_source(config, work))],
        check=True,
        env={**os.environ, "PYYAML_FORCE_LIBYAML": "0"},
    )


def archive_files(site: Path) -> list[Path]:
    """The files to ship, sorted; fails on any compiled extension."""
    files, compiled = [], []
    for path in sorted(site.rglob("*")):
        relative = path.relative_to(site)
        parts = relative.parts
        # Console-script wrappers (pointing at the build interpreter), bytecode for the build
        # interpreter only, and test suites: none of them is used at run time.
        if parts[0] == "bin" or "__pycache__" in parts or {"tests", "test"} & set(parts[:-1]):
            continue
        if path.is_dir() or path.suffix == ".pyc":
            continue
        if path.name.endswith(COMPILED) or ".so." in path.name:
            compiled.append(str(relative))
        files.append(path)
    if compiled:
        raise BuildError("compiled extensions would end up in the archive: " + ", ".join(compiled))
    return files


# zipimport cannot cache bytecode, so sources compile at every start, and Python >= 3.12
# would then print http-parser's invalid-escape SyntaxWarnings every time: nothing an
# operator can act on, so they are silenced for that package only.
MAIN_TEMPLATE = """\
# Generated by tools/build_dist.py.
import sys
import warnings

warnings.filterwarnings("ignore", category=SyntaxWarning, module=".*/http_parser/")

from {module} import {function}  # noqa: E402

sys.exit({function}())
"""


def write_zipapp(site: Path, files: list[Path], entry_point: str, target: Path) -> None:
    module, _, function = entry_point.partition(":")
    # zipapp's generated __main__ drops main()'s return value; the exit status matters here.
    main = MAIN_TEMPLATE.format(module=module, function=function)
    with open(target, "wb") as out:
        out.write(SHEBANG)  # zipimport finds the archive after any prefix
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            archive.writestr("__main__.py", main)
            for path in files:
                archive.write(path, path.relative_to(site).as_posix())
    target.chmod(0o755)


def write_tarball(executable: Path, target: Path) -> None:
    with tarfile.open(target, "w:gz") as tar:
        info = tar.gettarinfo(str(executable), arcname=executable.name)
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = 0o755
        with open(executable, "rb") as data:
            tar.addfile(info, data)


# Run with the built file first on sys.path and no site-packages, so every import has to
# come from the archive. certifi must hand out a usable CA bundle from inside the zip.
SMOKE_TEST = """
import importlib, ssl, sys
archive, module = sys.argv[1:]
sys.path.insert(0, archive)
for name in (module, "requests", "certifi", "yaml", "pymesos.executor", "tenacity"):
    loaded = importlib.import_module(name)
    if not loaded.__file__.startswith(archive):
        sys.exit(f"{name} was imported from {loaded.__file__}, not from the archive")
import certifi, requests.utils
bundle = certifi.where()
context = ssl.create_default_context(cafile=requests.utils.DEFAULT_CA_BUNDLE_PATH)
if not context.get_ca_certs():
    sys.exit(f"no CA certificate in {bundle}")
print(f"imports from the archive; {len(context.get_ca_certs())} CA certificates in certifi")
"""


def smoke_test(executable: Path, entry_point: str) -> str:
    module = entry_point.partition(":")[0]
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", SMOKE_TEST, str(executable), module],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise BuildError(f"{executable.name} does not work on its own:\n{result.stderr}")
    return result.stdout.strip()


def build(out: Path) -> None:
    config = read_setup_cfg()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-dist-") as tmp:
        work = Path(tmp)
        site = work / "site"
        install_dependencies(config, site, work)
        files = archive_files(site)
        vendored = sorted(path.name.removesuffix(".dist-info") for path in site.glob("*.dist-info"))
        print("inside:", ", ".join(vendored))
        for name, entry_point in console_scripts(config).items():
            target = out / name
            write_zipapp(site, files, entry_point, target)
            report(target, smoke_test(target, entry_point))
    tarball = out / f"{HOOK}.tar.gz"
    write_tarball(out / HOOK, tarball)
    report(tarball, f"{HOOK} at the archive root")


def report(path: Path, note: str) -> None:
    print(f"built {path} ({path.stat().st_size // 1024} KiB): {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=DIST, help="output directory")
    args = parser.parse_args(argv)
    try:
        build(args.out)
    except BuildError as exc:
        print(f"build_dist: error: {exc}", file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as exc:
        command = shlex.join(exc.cmd)
        print(f"build_dist: error: status {exc.returncode} from {command}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
