"""The images' Dockerfiles: pinned, non-root, consistent with the package and the chart."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from quantwise.render.pods import RUN_AS_USER

ROOT = Path(__file__).parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def constraints(image: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "images" / image / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{line}: constraints must pin an exact version"
            pins[canonicalize_name(name)] = version
    return pins


@pytest.mark.parametrize(
    ("image", "requirements"),
    [
        ("quantizer", PROJECT["optional-dependencies"]["quantizer"]),
        ("operator", PROJECT["dependencies"]),
    ],
)
def test_constraints_pin_every_dependency_within_its_range(
    image: str, requirements: list[str]
) -> None:
    pins = constraints(image)
    for spec in requirements:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is a dependency but not pinned in images/{image}"
        assert requirement.specifier.contains(pins[name]), (name, pins[name], spec)


def dockerfile(image: str) -> str:
    return (ROOT / "images" / image / "Dockerfile").read_text()


def chart_uid() -> int:
    text = (ROOT / "charts" / "quantwise" / "templates" / "deployment.yaml").read_text()
    match = re.search(r"runAsUser: (\d+)", text)
    assert match
    return int(match.group(1))


@pytest.mark.parametrize(("image", "uid"), [("quantizer", RUN_AS_USER), ("operator", None)])
def test_dockerfile_is_pinned_non_root_and_runs_quantwise(image: str, uid: int | None) -> None:
    text = dockerfile(image)
    uid = uid if uid is not None else chart_uid()  # the UID its pods run as
    bases = re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert bases and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", bases[0]), bases
    assert "latest" not in text
    assert f"USER {uid}:{uid}" in text
    assert 'ENTRYPOINT ["quantwise"]' in text
    assert "--constraint /tmp/constraints.txt" in text
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"the Dockerfile copies {path}, which does not exist"


def test_quantizer_pins_torch_first() -> None:
    assert constraints("quantizer")["torch"] == "2.13.0"
    assert dockerfile("quantizer").count("--constraint /tmp/constraints.txt") == 2


def test_operator_image_default_command_parses() -> None:
    from quantwise.cli import build_parser

    match = re.search(r"^CMD (\[.*\])$", dockerfile("operator"), re.M)
    assert match
    args = build_parser().parse_args(yaml.safe_load(match.group(1)))
    assert args.command == "run"
    assert args.all_namespaces
