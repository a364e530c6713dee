"""The llmproto pytest plugin (entry point ``pytest11``: ``llmproto``).

It is inert unless one of its options is given, so installing llmproto changes no other
project's test run:

``--llmproto-vectors``
    collect every shipped vector as a test item (node IDs ``llmproto-vectors::<vector id>``),
    judged against :func:`llmproto_ref.decode`, or against the decoder named by
    ``--llmproto-decoder module:function`` (called as ``decoder(raw, limits=..., understood=...)``,
    it returns for a valid envelope and raises for an invalid one, see
    :func:`llmproto_conformance.judge`).
``--llmproto-transport URL``
    reserved for the conformance kit; it stops the run with a usage error until then.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr

    from llmproto_conformance._vectors import Vector, VectorResult

__all__ = ()

#: The node ID of the collector that holds the vector items.
SUITE_NODE_ID = "llmproto-vectors"

_DECODER = pytest.StashKey[Callable[..., Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the plugin's options; nothing else happens without them."""
    group = parser.getgroup("llmproto", "llmproto conformance")
    group.addoption(
        "--llmproto-vectors",
        action="store_true",
        default=False,
        help="collect every shipped llmproto vector as a test item",
    )
    group.addoption(
        "--llmproto-decoder",
        metavar="MODULE:FUNCTION",
        default=None,
        help="with --llmproto-vectors: judge this decoder instead of llmproto_ref.decode",
    )
    group.addoption(
        "--llmproto-transport",
        metavar="URL",
        default=None,
        help="reserved: the conformance catalogue lands with the issue 'Conformance kit'",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Refuse options that cannot work yet, and resolve the decoder under test."""
    if config.getoption("llmproto_transport"):
        raise pytest.UsageError(
            "--llmproto-transport is not implemented yet: the conformance catalogue that "
            "drives a transport lands with the issue 'Conformance kit'"
        )
    spec: str | None = config.getoption("llmproto_decoder")
    if spec and not config.getoption("llmproto_vectors"):
        raise pytest.UsageError("--llmproto-decoder needs --llmproto-vectors")
    if config.getoption("llmproto_vectors"):
        if spec:
            config.stash[_DECODER] = _load_decoder(spec)
        else:
            from llmproto_ref import decode

            config.stash[_DECODER] = decode


def _load_decoder(spec: str) -> Callable[..., Any]:
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise pytest.UsageError(f"--llmproto-decoder {spec!r}: expected module:function")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise pytest.UsageError(f"--llmproto-decoder {spec!r}: cannot import: {exc}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise pytest.UsageError(
                f"--llmproto-decoder {spec!r}: {module_name} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise pytest.UsageError(f"--llmproto-decoder {spec!r}: not callable")
    decoder: Callable[..., Any] = target
    return decoder


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """Add the vector suite to the session's collection when ``--llmproto-vectors`` is given."""
    report = yield
    if isinstance(collector, pytest.Session) and collector.config.getoption("llmproto_vectors"):
        suite = VectorSuite.from_parent(collector, name=SUITE_NODE_ID, nodeid=SUITE_NODE_ID)
        report.result.append(suite)
    return report


class VectorSuite(pytest.Collector):
    """Every shipped vector, one item each."""

    def collect(self) -> Iterator[pytest.Item]:
        """One :class:`VectorItem` per vector, in the order the vector files hold them."""
        from llmproto_conformance._vectors import load_vectors

        decoder = self.config.stash[_DECODER]
        for vector in load_vectors():
            yield VectorItem.from_parent(self, name=vector.id, vector=vector, decoder=decoder)


class VectorFailure(Exception):  # noqa: N818 - a verdict, not an error of the plugin
    """The decoder's verdict differs from the vector's expectation."""

    def __init__(self, result: VectorResult) -> None:
        super().__init__(result.message)
        self.result = result


class VectorItem(pytest.Item):
    """One vector judged against the decoder under test."""

    def __init__(self, *, vector: Vector, decoder: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vector = vector
        self.decoder = decoder
        self.user_properties.append(("requirements", " ".join(vector.requirements)))

    def runtest(self) -> None:
        """Judge the vector; raise :class:`VectorFailure` if the verdict differs."""
        from llmproto_conformance._vectors import judge

        result = judge(self.vector, decoder=self.decoder)
        if not result.passed:
            raise VectorFailure(result)

    def repr_failure(
        self,
        excinfo: pytest.ExceptionInfo[BaseException],
        style: Any = None,
    ) -> str | TerminalRepr:
        """Expected against actual for a failed vector; the usual traceback otherwise."""
        if isinstance(excinfo.value, VectorFailure):
            return explain(excinfo.value.result)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path | str, int | None, str]:
        """The vector file and the vector's id, for the report header."""
        from llmproto_conformance._vectors import vector_dir

        return vector_dir() / self.vector.file, None, f"vector {self.vector.id}"


def explain(result: VectorResult) -> str:
    """A failed vector as the lines a person needs: what it shows, expected against actual."""
    vector = result.vector
    return (
        f"{result.message}\n"
        f"  vector file:  {vector.file}\n"
        f"  description:  {vector.description}\n"
        f"  requirements: {', '.join(vector.requirements)}"
    )
