"""docs/api.md is what `quantwise api-docs` generates from the CRD (never stale)."""

from __future__ import annotations

from pathlib import Path

from quantwise.api.docs import DOCS_PATH, render_api_docs

ROOT = Path(__file__).parents[2]


def test_api_reference_is_up_to_date() -> None:
    assert (ROOT / DOCS_PATH).read_text() == render_api_docs(), "run `quantwise api-docs`"


def test_api_reference_covers_every_spec_section() -> None:
    text = render_api_docs()
    for field in ("spec.source.huggingFace.repo", "spec.quantization.method",
                  "spec.serving.maxModelLen", "spec.quantizer.activeDeadlineSeconds",
                  "status.plan.tensorParallelSize", "status.conditions"):  # fmt: skip
        assert f"`{field}`" in text, field


def test_the_readme_names_every_metric_the_operator_serves() -> None:
    from quantwise.metrics import REGISTRY

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### Metrics and logs") : readme.index("### Troubleshooting")]
    ours = [m.name for m in REGISTRY.collect() if m.name.startswith("quantwise_")]
    assert len(ours) >= 18
    missing = [
        name
        for name in ours
        if name not in section
        and f"`...{name.removeprefix('quantwise_plan')}`" not in section  # the plan's, abridged
    ]
    assert missing == []


def test_the_architecture_map_names_every_layer_and_module_of_the_operator() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Architecture") : readme.index("## Development")]
    package = ROOT / "operator" / "quantwise"
    layers = sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    assert len(layers) == 7
    named = [f"{layer}/" for layer in layers]
    named += [p.name for p in package.glob("*.py") if p.name != "__init__.py"]
    for layer in ("handlers", "reconcile"):  # the operator's own: every module in the map
        named += [p.name for p in (package / layer).glob("*.py") if p.name != "__init__.py"]
    assert [name for name in named if name not in section] == []


def test_the_e2e_table_names_every_e2e_test() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### End to end on a real control plane") :]
    section = section[: section.index("\n## ")]
    tests = {
        name.split("(")[0]
        for path in (ROOT / "tests" / "e2e").glob("test_*.py")
        for line in path.read_text().splitlines()
        if line.startswith("def test_") and (name := line.removeprefix("def "))
    }
    assert len(tests) >= 17
    named = {name for name in tests if f"`{name}" in section}
    # The pair of admission tests share a row ("..._admits_every_example").
    named |= {name for name in tests if f"..._{name.split('_api_server_')[-1]}`" in section}
    assert sorted(tests - named) == []


def test_the_readme_counts_the_invalid_corpus() -> None:
    specs = len(list((ROOT / "tests" / "fixtures" / "invalid").glob("*.yaml")))
    assert f"(`tests/fixtures/invalid/`, {specs} specs)" in (ROOT / "README.md").read_text()
