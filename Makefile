# quantwise: build, test, and run the e2e suite on kind.
#   make test          the whole suite (as CI runs it: bash .ci/run)
#   make chart-test    the Helm chart and the Argo CD health check only
#   make crds          regenerate crds/ and the chart's generated files after an API change
#   make images        build the operator and quantizer images (needs docker)
#   make e2e           the e2e suite against the cluster KUBECONFIG names (README: End to end)
#   make e2e-kind      create a kind cluster, load the operator image, install, run tests/e2e

PYTHON ?= python
REGISTRY ?= ghcr.io/quantwise
VERSION ?= $(shell $(PYTHON) -c "import tomllib;print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
KIND_CLUSTER ?= quantwise
NAMESPACE ?= quantwise-system

.PHONY: test chart-test crds images install-manifest e2e e2e-kind kind-cluster kind-install e2e-kind-down lint

test:
	bash .ci/run

lint:
	$(PYTHON) -m ruff check operator tests benchmarks
	$(PYTHON) -m mypy --strict operator/quantwise

chart-test:
	$(PYTHON) -m pytest tests/chart tests/unit/test_argocd.py -q

crds:
	quantwise crd
	quantwise chart-files

images:
	docker build -f images/operator/Dockerfile -t $(REGISTRY)/operator:$(VERSION) .
	docker build -f images/quantizer/Dockerfile -t $(REGISTRY)/quantizer:$(VERSION) .

install-manifest:
	@$(PYTHON) hack/render_chart.py --namespace $(NAMESPACE)

# The e2e suite against whatever KUBECONFIG names: the real control plane of ../shared/k8s with
# QUANTWISE_STANDIN (the kubelet stand-in) and QUANTWISE_E2E_LWS_CRD set, as the README says.
e2e:
	$(PYTHON) -m pytest tests/e2e -v

# The e2e suite runs the operator in-process against the kind cluster (tests/e2e): only the CRD
# is installed. `make kind-install` installs the whole chart instead, to try quantwise by hand.
e2e-kind: kind-cluster
	kubectl --context kind-$(KIND_CLUSTER) apply --server-side -f crds/
	KUBECONFIG=$${KUBECONFIG:-$$HOME/.kube/config} $(PYTHON) -m pytest tests/e2e -v

kind-cluster:
	kind get clusters | grep -qx $(KIND_CLUSTER) || \
		kind create cluster --name $(KIND_CLUSTER) --config tests/e2e/kind-config.yaml

kind-install: kind-cluster
	docker build -f images/operator/Dockerfile -t $(REGISTRY)/operator:$(VERSION) .
	kind load docker-image $(REGISTRY)/operator:$(VERSION) --name $(KIND_CLUSTER)
	kubectl --context kind-$(KIND_CLUSTER) create namespace $(NAMESPACE) --dry-run=client -o yaml \
		| kubectl --context kind-$(KIND_CLUSTER) apply -f -
	$(PYTHON) hack/render_chart.py --namespace $(NAMESPACE) \
		--set-json '{"watch": {"allNamespaces": true}, "image": {"pullPolicy": "Never"}}' \
		| kubectl --context kind-$(KIND_CLUSTER) apply --server-side -f -

e2e-kind-down:
	kind delete cluster --name $(KIND_CLUSTER)
