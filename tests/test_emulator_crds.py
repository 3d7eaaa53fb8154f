"""CustomResourceDefinitions in the emulator, driven the way their users drive them: kubectl apply,
wait, get, api-resources and auth can-i, and the official Python client's CustomObjectsApi. A CRD's
resource is served with discovery, RBAC and its schema; it goes away with its CRD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from fleetscan.emulator.server import Emulator

from .conftest import api_client, make_kubectl

ROOT = Path(__file__).resolve().parent.parent
CRD = ROOT / "deployments" / "policy-reports" / "policyreports.crd.yaml"
GROUP, VERSION, PLURAL = "wgpolicyk8s.io", "v1alpha2", "policyreports"


def report(name: str, result: str = "fail") -> dict[str, object]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "PolicyReport",
        "metadata": {"name": name},
        "summary": {"pass": 0, "fail": 1},
        "results": [{"policy": "CB-01", "result": result, "severity": "high", "timestamp": {"seconds": 1, "nanos": 0}}],
    }


def test_a_crd_serves_its_resource_to_kubectl_and_the_python_client(fresh_emulator: Emulator, tmp_path: Path) -> None:
    kubectl = make_kubectl(fresh_emulator, tmp_path)
    assert b"policyreports" not in kubectl("api-resources", check=True).stdout
    kubectl("apply", "-f", str(CRD), check=True)
    kubectl("wait", "--for=condition=Established", "crd/policyreports.wgpolicyk8s.io", "--timeout=30s", check=True)
    resources = kubectl("api-resources", "--api-group", GROUP, check=True).stdout.decode()
    assert "policyreports" in resources and "polr" in resources and "PolicyReport" in resources
    assert kubectl("apply", "-f", str(CRD), check=True).stdout.strip().endswith(b"unchanged")  # re-apply is a no-op

    custom = client.CustomObjectsApi(api_client(fresh_emulator, tmp_path))
    custom.create_namespaced_custom_object(GROUP, VERSION, "alpha", PLURAL, report("fleetscan"))
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, "alpha", PLURAL)
    assert [i["metadata"]["name"] for i in listed["items"]] == ["fleetscan"]
    table = kubectl("get", "polr", "-n", "alpha", check=True).stdout.decode().split("\n")
    assert table[0].split() == ["NAME", "PASS", "FAIL", "WARN", "ERROR", "SKIP", "AGE"]  # the printer columns
    assert table[1].split()[:3] == ["fleetscan", "0", "1"]
    got = json.loads(kubectl("get", "policyreport", "fleetscan", "-n", "alpha", "-o", "json", check=True).stdout)
    assert got["results"][0]["policy"] == "CB-01" and got["metadata"]["uid"]

    # the CRD's schema is enforced on create and update, with the field that is wrong
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(GROUP, VERSION, "alpha", PLURAL, report("bad", result="broken"))
    assert err.value.status == 422
    assert 'results[0].result: Unsupported value: "broken"' in json.loads(err.value.body)["message"]
    bad = yaml.safe_dump(report("bad2", result="maybe") | {"metadata": {"name": "bad2", "namespace": "alpha"}})
    refused = kubectl("apply", "-f", "-", stdin=bad.encode())
    assert refused.returncode != 0 and b"results[0].result" in refused.stderr
    wrong_type = report("bad3") | {"summary": {"pass": "many"}}
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(GROUP, VERSION, "alpha", PLURAL, wrong_type)
    assert err.value.status == 422 and "summary.pass" in json.loads(err.value.body)["message"]

    # RBAC applies as to any resource
    kubectl("create", "serviceaccount", "reader", "-n", "alpha", check=True)
    kubectl("create", "role", "polr-read", "-n", "alpha", "--verb=get,list", "--resource=policyreports.wgpolicyk8s.io",
            check=True)  # fmt: skip
    kubectl("create", "rolebinding", "polr-read", "-n", "alpha", "--role=polr-read", "--serviceaccount=alpha:reader",
            check=True)  # fmt: skip
    as_reader = ["--as", "system:serviceaccount:alpha:reader"]

    def can_i(verb: str) -> bytes:
        return kubectl("auth", "can-i", verb, "policyreports.wgpolicyk8s.io", "-n", "alpha", *as_reader).stdout.strip()

    assert (can_i("list"), can_i("delete")) == (b"yes", b"no")
    denied = kubectl("delete", "polr", "fleetscan", "-n", "alpha", *as_reader)
    assert denied.returncode != 0 and b"forbidden" in denied.stderr.lower()

    # deleting the CRD deletes its objects and stops serving the resource
    kubectl("delete", "crd", "policyreports.wgpolicyk8s.io", check=True)
    with pytest.raises(ApiException) as err:
        custom.list_namespaced_custom_object(GROUP, VERSION, "alpha", PLURAL)
    assert err.value.status == 404
    kubectl("apply", "-f", str(CRD), check=True)
    assert custom.list_namespaced_custom_object(GROUP, VERSION, "alpha", PLURAL)["items"] == []


def test_a_bad_crd_is_refused_with_its_field(fresh_emulator: Emulator, tmp_path: Path) -> None:
    ext = client.ApiextensionsV1Api(api_client(fresh_emulator, tmp_path))
    crd = yaml.safe_load(CRD.read_text())
    crd["metadata"]["name"] = "reports.wgpolicyk8s.io"  # not plural.group
    with pytest.raises(ApiException) as err:
        ext.create_custom_resource_definition(crd)
    assert err.value.status == 422 and "metadata.name" in json.loads(err.value.body)["message"]
    crd = yaml.safe_load(CRD.read_text())
    crd["spec"]["versions"][0]["storage"] = False
    with pytest.raises(ApiException) as err:
        ext.create_custom_resource_definition(crd)
    assert "exactly one version marked as storage version" in json.loads(err.value.body)["message"]
    created = ext.create_custom_resource_definition(yaml.safe_load(CRD.read_text()))
    conditions = {c.type: c.status for c in created.status.conditions}
    assert conditions == {"NamesAccepted": "True", "Established": "True"}
