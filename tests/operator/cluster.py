"""kmock's Kubernetes emulator, plus the few API-server behaviours the operator relies on.

kmock stores objects as they are posted and merge-patches them. A real API server also assigns a
uid, a creationTimestamp and a resourceVersion on every write (here: on creations and merge patches), bumps metadata.generation when the
spec changes, names objects from generateName (kopf's Events), serves the resource of a created
CustomResourceDefinition, and its garbage collector deletes objects whose owners are gone.
``Cluster`` adds exactly those, so tests can assert on the operator's real behaviour;
``collect_garbage`` runs the garbage collector once, when a test asks.
"""

from __future__ import annotations

import copy
import datetime
import itertools
import uuid
from collections.abc import Mapping
from typing import Any

import aiohttp.web
import attrs
import kmock

from fpgaserve.api.crd_models import API_VERSION, MODEL_KIND, MODEL_PLURAL, WEBSERVICE_KIND, WEBSERVICE_PLURAL

__all__ = ["Cluster", "declare_crd", "declare_resources"]

_VERBS = {"get", "list", "watch", "create", "patch", "delete"}


def _merge(base: Any, patch: Any) -> Any:
    """RFC 7386 merge patch (what kmock applies, repeated here to foresee the new spec)."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    out = dict(base) if isinstance(base, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


@attrs.define(kw_only=True)
class Cluster(kmock.KubernetesEmulator):
    """The emulator with uids, generations, resourceVersions, generateName and a garbage collector."""

    _versions: itertools.count[int] = attrs.field(factory=lambda: itertools.count(1), init=False)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        data = request.data
        if request.resource is not None and isinstance(data, dict):
            meta = data.setdefault("metadata", {})
            if request.action == kmock.action.CREATE:
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("namespace", request.namespace)
                meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                meta["generation"] = 1
                meta["resourceVersion"] = str(next(self._versions))
                if request.resource.plural == "customresourcedefinitions":
                    declare_crd(self, data)
            elif request.action == kmock.action.UPDATE and self._exists(request):
                live = self.objects[request.resource, request.namespace, request.name].raw
                meta["resourceVersion"] = str(next(self._versions))
                old_spec = live.get("spec")
                if (
                    request.subresource is None
                    and "spec" in data
                    and _merge(old_spec, data["spec"]) != old_spec
                ):
                    meta["generation"] = int(live["metadata"].get("generation", 1)) + 1
        # JSON patches (kopf's finalizer changes, guarded by a resourceVersion test) keep the version:
        # kmock replays every object when a watch starts, and against that older replayed copy the
        # test would fail forever, where a real watch would have started after it.
        return await super()._handle(request)

    def _exists(self, request: kmock.Request) -> bool:
        key = (request.resource, request.namespace, request.name)
        return key in self.objects and not self.objects[key].deleted

    def live(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """The object's current state, or None when absent or deleted."""
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return copy.deepcopy(self.objects[key].raw)

    async def collect_garbage(self) -> list[tuple[str, str]]:
        """Delete (through the API) every object whose owners all are gone; what was deleted."""
        uids = {obj.raw["metadata"].get("uid") for obj in self.objects.values() if not obj.deleted}
        orphans = []
        for (resource, namespace, name), obj in list(self.objects.items()):
            if obj.deleted:
                continue
            refs = obj.raw.get("metadata", {}).get("ownerReferences") or []
            if refs and not any(ref.get("uid") in uids for ref in refs):
                orphans.append((resource, namespace, name))
        for resource, namespace, name in orphans:
            prefix = "/api/v1" if resource.group == "" else f"/apis/{resource.group}/{resource.version}"
            await self.delete(f"{prefix}/namespaces/{namespace}/{resource.plural}/{name}")
        return [(str(resource.plural), name) for resource, _, name in orphans]


def declare_resources(cluster: kmock.KubernetesEmulator) -> None:
    """Discovery for what kopf looks up: its backbone (namespaces, CRDs, events) and our CRDs."""
    info = kmock.ResourceInfo
    cluster.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs=_VERBS)
    cluster.resources["v1/events"] = info(kind="Event", namespaced=True, verbs=_VERBS)
    cluster.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", namespaced=False, verbs=_VERBS
    )
    # What the operator owns, watches (kopf resolves these through discovery) or lists.
    for resource, kind in (
        ("apps/v1/deployments", "Deployment"),
        ("v1/services", "Service"),
        ("v1/secrets", "Secret"),
        ("v1/pods", "Pod"),
        ("networking.k8s.io/v1/ingresses", "Ingress"),
        ("autoscaling/v2/horizontalpodautoscalers", "HorizontalPodAutoscaler"),
        ("policy/v1/poddisruptionbudgets", "PodDisruptionBudget"),
    ):
        cluster.resources[resource] = info(kind=kind, namespaced=True, verbs=_VERBS, subresources={"status"})
    for kind, plural in ((MODEL_KIND, MODEL_PLURAL), (WEBSERVICE_KIND, WEBSERVICE_PLURAL)):
        cluster.resources[f"{API_VERSION}/{plural}"] = info(
            kind=kind, singular=kind.lower(), namespaced=True, verbs=_VERBS, subresources={"status"}
        )


def declare_crd(cluster: kmock.KubernetesEmulator, crd: Mapping[str, Any]) -> None:
    """Discovery for a CRD's served versions (what the API server does once the CRD is created)."""
    spec, names = crd["spec"], crd["spec"]["names"]
    for version in spec["versions"]:
        if version.get("served"):
            cluster.resources[f"{spec['group']}/{version['name']}/{names['plural']}"] = kmock.ResourceInfo(
                kind=names["kind"],
                singular=names.get("singular"),
                namespaced=spec["scope"] == "Namespaced",
                verbs=_VERBS,
                subresources=set(version.get("subresources") or {}),
            )
