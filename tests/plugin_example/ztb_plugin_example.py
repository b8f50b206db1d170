"""example.ztunnel-inventory: what each ztunnel holds (workloads, services, policies, certificates).

An info-level analyzer, written as a third-party plug-in would be: it imports only the public API
(bundler.analysis), reads only through ctx.model, and is registered in the ztunnel_bundle.analyzers
entry-point group by its own pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Iterator

from bundler import layout
from bundler.analysis import Analyzer, Context, Evidence, Finding, Metadata, Resource


class ZtunnelInventory(Analyzer):
    metadata = Metadata(
        id="example.ztunnel-inventory",
        title="ztunnel inventory",
        severity="info",
        description="Counts the workloads, services, policies and certificates each ztunnel holds.",
        docs="https://github.com/example/ztb-plugin-example#ztunnel-inventory",
        inputs=(layout.KIND_ZTUNNEL_CONFIG_DUMP,),
    )

    def analyze(self, ctx: Context) -> Iterator[Finding]:
        rows = []
        for zt in ctx.model.ztunnels():  # streamed: one parsed dump at a time
            counts = {"workloads": len(zt.workloads), "services": len(zt.services),
                      "policies": len(zt.policies), "certificates": len(zt.certificates)}
            rows.append({"node": zt.node, "pod": zt.pod, **counts})
            yield ctx.finding(
                "inventory",
                f"ztunnel {zt.pod} on node {zt.node} holds "
                + ", ".join(f"{n} {what}" for what, n in counts.items()),
                resources=[Resource("Pod", zt.pod, zt.namespace, node=zt.node, ztunnel=zt.pod)],
                evidence=[Evidence(zt.path, "/workloads")],
            )
        ctx.view("inventory", rows)
