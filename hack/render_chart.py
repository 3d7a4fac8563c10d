"""Render the Helm chart with the Helm engine (helm-python-sdk, no helm binary) to stdout.

    python hack/render_chart.py [--namespace NS] [--set-json '{"image": {"tag": "dev"}}'] \
        | kubectl apply --server-side -f -

Used by `make e2e-kind` and `make install-manifest`; CRDs come first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import helm_python as helm

CHART = Path(__file__).parents[1] / "charts" / "quantwise"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--namespace", default="quantwise-system")
    parser.add_argument("--release", default="quantwise")
    parser.add_argument("--set-json", default="{}", help="values, as a JSON object")
    args = parser.parse_args()
    chart = helm.Chart.load(CHART)
    rendered = chart.render(
        json.loads(args.set_json), name=args.release, namespace=args.namespace, is_install=True
    )
    documents = [c["data"].strip() for c in chart.crds]
    documents += [
        text.strip()
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt") and text.strip()
    ]
    print("\n---\n".join(d.removeprefix("---").strip() for d in documents))


if __name__ == "__main__":
    main()
