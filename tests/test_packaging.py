"""The built distribution: what the wheel and the sdist carry, and that the wheel works alone.

The sdist is built first and the wheel from it (``python -m build``), so a file the sdist forgot
fails here too. ``--no-isolation`` uses the hatchling of the test environment: no network.
Deselect with ``-m 'not packaging'``.
"""

from __future__ import annotations

import configparser
import email.parser
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("llmproto_ref", "llmproto_nats", "llmproto_rabbitmq", "llmproto_conformance")
VECTORS = ROOT / "conformance" / "llmproto_conformance" / "vectors"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The directory holding the freshly built sdist and wheel."""
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert 0 == done.returncode, done.stdout + done.stderr
    return out


@pytest.fixture(scope="module")
def wheel(dist: Path) -> zipfile.ZipFile:
    """The wheel, open for reading."""
    [path] = dist.glob("llmproto-0.1.0-py3-none-any.whl")
    return zipfile.ZipFile(path)


def _dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    return wheel.read(f"llmproto-0.1.0.dist-info/{name}").decode()


def test_the_wheel_carries_the_four_typed_packages(wheel: zipfile.ZipFile) -> None:
    """Each import package is at the wheel's top with its ``py.typed`` marker."""
    names = set(wheel.namelist())
    for package in PACKAGES:
        assert {f"{package}/__init__.py", f"{package}/py.typed"} <= names
    tops = {name.split("/")[0] for name in names}
    assert {*PACKAGES, "llmproto-0.1.0.dist-info"} == tops


def test_the_wheel_carries_the_schemas_inside_llmproto_ref(wheel: zipfile.ZipFile) -> None:
    """Every file of the top-level schemas/ is at ``llmproto_ref/schemas/``."""
    names = set(wheel.namelist())
    expected = {f"llmproto_ref/schemas/{p.name}" for p in (ROOT / "schemas").iterdir()}
    assert {"llmproto_ref/schemas/error-codes.json"} <= expected
    assert len([n for n in expected if n.endswith(".schema.json")]) >= 7
    assert expected <= names


def test_the_wheel_carries_every_vector_file(wheel: zipfile.ZipFile) -> None:
    """The vectors, their schema and README are package data of llmproto_conformance."""
    names = set(wheel.namelist())
    expected = {
        f"llmproto_conformance/vectors/{p.relative_to(VECTORS).as_posix()}"
        for p in VECTORS.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert expected
    assert expected <= names
    assert [] == [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_wheel_declares_the_script_and_the_pytest_plugin(wheel: zipfile.ZipFile) -> None:
    """entry_points.txt has the ``llmproto`` console script and the ``pytest11`` plugin."""
    points = configparser.ConfigParser()
    points.read_string(_dist_info(wheel, "entry_points.txt"))
    assert "llmproto_ref._cli:main" == points["console_scripts"]["llmproto"]
    assert "llmproto_conformance.pytest_plugin" == points["pytest11"]["llmproto"]


def test_the_wheel_metadata(wheel: zipfile.ZipFile) -> None:
    """Name, version, Requires-Python, the runtime dependencies and the three extras."""
    metadata = email.parser.Parser().parsestr(_dist_info(wheel, "METADATA"))
    assert ("llmproto", "0.1.0", ">=3.11") == (
        metadata["Name"],
        metadata["Version"],
        metadata["Requires-Python"],
    )
    assert {"nats", "rabbitmq", "test"} == set(metadata.get_all("Provides-Extra") or [])
    requires = metadata.get_all("Requires-Dist") or []
    for dependency in ("orjson", "jsonschema", "anyio"):
        assert any(r.startswith(dependency) and "extra" not in r for r in requires)
    assert any(r.startswith("nats-py") and ">=2.9" in r and "'nats'" in r for r in requires)
    assert any(r.startswith("aio-pika") and ">=10" in r and "'rabbitmq'" in r for r in requires)


def test_the_sdist_carries_spec_schemas_and_tests(dist: Path) -> None:
    """The sdist holds everything needed to rebuild and to test: spec/, schemas/, tests/."""
    [path] = dist.glob("llmproto-0.1.0.tar.gz")
    with tarfile.open(path) as sdist:
        names = {name.partition("/")[2] for name in sdist.getnames()}
    for folder in ("spec", "schemas", "tests", "src/llmproto_ref", "conformance", "adapters"):
        source = {
            p.relative_to(ROOT).as_posix()
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and not any(_ignored(part) for part in p.relative_to(ROOT).parts)
        }
        assert source <= names, folder
    assert {"pyproject.toml", "README.md", "CHANGELOG.md"} <= names


def _ignored(part: str) -> bool:
    """Tool caches and bytecode, which .gitignore keeps out of the sdist."""
    return part.startswith(".") or part == "__pycache__" or part.endswith(".pyc")


def test_the_unpacked_wheel_works_without_the_source_tree(
    wheel: zipfile.ZipFile, tmp_path: Path
) -> None:
    """Unpacked alone, the wheel finds its schemas and vectors and the vectors load."""
    wheel.extractall(tmp_path)  # noqa: S202 - the wheel this test run just built
    program = (
        "import json, llmproto_ref, llmproto_conformance\n"
        "from llmproto_ref import schema_dir\n"
        "print(json.dumps([llmproto_ref.__file__, str(schema_dir()),"
        " str(llmproto_conformance.vector_dir()), len(llmproto_conformance.load_vectors())]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
        cwd=tmp_path,
    )
    assert 0 == done.returncode, done.stderr
    module, schemas, vectors, count = json.loads(done.stdout)
    assert all(Path(p).is_relative_to(tmp_path) for p in (module, schemas, vectors))
    assert count > 0
