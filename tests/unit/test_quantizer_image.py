"""The quantizer image's Dockerfile: pinned, non-root, and consistent with the package."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from quantwise.render.pods import RUN_AS_USER

ROOT = Path(__file__).parents[2]
IMAGE = ROOT / "images" / "quantizer"


def constraints() -> dict[str, str]:
    pins = {}
    for line in (IMAGE / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line}: constraints must pin an exact version"
            pins[canonicalize_name(name)] = version
    return pins


def test_constraints_satisfy_the_quantizer_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = constraints()
    assert pins["torch"] == "2.13.0"
    for spec in project["optional-dependencies"]["quantizer"]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is in the quantizer extra but not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name]), (name, pins[name], spec)


def test_dockerfile_is_pinned_non_root_and_runs_quantwise() -> None:
    text = (IMAGE / "Dockerfile").read_text()
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert bases and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", bases[0]), bases
    assert "latest" not in text
    assert f"USER {RUN_AS_USER}:{RUN_AS_USER}" in text  # the UID the Job's pod runs as
    assert 'ENTRYPOINT ["quantwise"]' in text
    assert text.count("--constraint /tmp/constraints.txt") == 2
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which does not exist"
