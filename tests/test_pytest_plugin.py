"""The pytest11 plugin: inert by default, runs the vectors on request, reports a broken decoder.

The inner runs load the plugin explicitly with entry-point autoloading off, so the tests mean the
same whether or not the distribution is installed; one test checks the installed entry point.
"""

from __future__ import annotations

import importlib.metadata

import pytest

from llmproto_conformance import load_vectors

pytest_plugins = ["pytester"]

PLUGIN = "llmproto_conformance.pytest_plugin"


@pytest.fixture
def run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A pytester whose runs see the plugin and no other third-party plugin."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.syspathinsert()
    return pytester


def _pytest(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", PLUGIN, "-p", "no:cacheprovider", *args)


def test_inert_without_options(run: pytest.Pytester) -> None:
    """Without its options the plugin collects nothing and changes no outcome."""
    run.makepyfile(test_plain="def test_one() -> None:\n    assert True\n")
    result = _pytest(run, "-q")
    result.assert_outcomes(passed=1)
    collected = _pytest(run, "--collect-only", "-q")
    assert ["test_plain.py::test_one"] == [line for line in collected.outlines if "::" in line]


def test_options_are_listed_in_help(run: pytest.Pytester) -> None:
    """``pytest --help`` shows the three options under their group."""
    result = _pytest(run, "--help")
    text = result.stdout.str()
    for option in ("--llmproto-vectors", "--llmproto-decoder", "--llmproto-transport"):
        assert option in text


def test_every_vector_passes_against_the_reference_decoder(run: pytest.Pytester) -> None:
    """``--llmproto-vectors`` collects one item per shipped vector, and all pass."""
    result = _pytest(run, "--llmproto-vectors", "-q")
    result.assert_outcomes(passed=len(load_vectors()))


def test_vector_items_are_named_after_the_vectors(run: pytest.Pytester) -> None:
    """Node IDs are ``llmproto-vectors::<vector id>``, so ``-k`` and ``--deselect`` work."""
    result = _pytest(run, "--llmproto-vectors", "--collect-only", "-q")
    ids = [line for line in result.outlines if line.startswith("llmproto-vectors::")]
    assert [f"llmproto-vectors::{v.id}" for v in load_vectors()] == ids


def test_a_broken_decoder_fails_the_vectors_it_gets_wrong(run: pytest.Pytester) -> None:
    """A decoder that accepts everything fails exactly the invalid vectors, saying why."""
    run.makepyfile(lenient="def decode(raw: bytes, **settings: object) -> None:\n    return None\n")
    vectors = load_vectors()
    invalid = [v for v in vectors if not v.expect_valid]
    result = _pytest(run, "--llmproto-vectors", "--llmproto-decoder", "lenient:decode", "-q")
    result.assert_outcomes(passed=len(vectors) - len(invalid), failed=len(invalid))
    first = invalid[0]
    result.stdout.fnmatch_lines(
        [
            f"*vector {first.id}*",
            f"*{first.id}*{first.expect_code}*accepted*",
            f"*vector file:*{first.file}",
            f"*requirements: {', '.join(first.requirements)}",
        ]
    )


def test_a_crashing_decoder_fails_every_vector(run: pytest.Pytester) -> None:
    """A decoder raising an exception without ``code`` and ``pointer`` fails even valid vectors."""
    run.makepyfile(
        crash="def decode(raw: bytes, **settings: object) -> None:\n    raise KeyError\n"
    )
    result = _pytest(run, "--llmproto-vectors", "--llmproto-decoder", "crash:decode", "-q")
    result.assert_outcomes(failed=len(load_vectors()))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--llmproto-transport", "nats://127.0.0.1:4222?no_such_option=1"],
            "*unknown NATS transport option 'no_such_option'*",
        ),
        (["--llmproto-decoder", "lenient:decode"], "*needs --llmproto-vectors*"),
        (["--llmproto-vectors", "--llmproto-decoder", "nocolon"], "*expected module:function*"),
        (["--llmproto-vectors", "--llmproto-decoder", "no_such_mod:f"], "*cannot import*"),
        (["--llmproto-vectors", "--llmproto-decoder", "json:nope"], "*has no attribute 'nope'*"),
    ],
)
def test_unusable_options_are_usage_errors(
    run: pytest.Pytester, args: list[str], message: str
) -> None:
    """Options that cannot work stop the run with a usage error, never a silent pass."""
    result = _pytest(run, *args)
    assert pytest.ExitCode.USAGE_ERROR == result.ret
    result.stderr.fnmatch_lines([message])


def test_the_installed_entry_point_names_the_plugin() -> None:
    """An installed llmproto registers the plugin as ``pytest11`` entry point ``llmproto``."""
    try:
        distribution = importlib.metadata.distribution("llmproto")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llmproto is not installed (running from a source tree on PYTHONPATH)")
    points = {(ep.group, ep.name): ep.value for ep in distribution.entry_points}
    assert PLUGIN == points[("pytest11", "llmproto")]
