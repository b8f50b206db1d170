"""The canonical model of a bundle: ``BundleModel`` reads a bundle (archive, ``.zip`` parts or directory) and gives
analyzers normalised ztunnel and istiod views (``bundler.model.types``), Kubernetes lists, logs and metrics.

    from bundler.model import BundleModel
    with BundleModel.open("incident.tar.zst") as m:
        for zt in m.ztunnels():                    # one parsed dump at a time, by node
            istiod = m.istiod_view(zt.pod)
"""

from bundler.model.bundle import BundleModel
from bundler.model.types import (
    CertInfo,
    Certificate,
    Connection,
    Endpoint,
    IstiodRef,
    IstiodView,
    LogFile,
    LogRecordRef,
    Policy,
    Problem,
    Service,
    Workload,
    WorkloadState,
    ZtunnelRef,
    ZtunnelView,
)

__all__ = [
    "BundleModel",
    "CertInfo",
    "Certificate",
    "Connection",
    "Endpoint",
    "IstiodRef",
    "IstiodView",
    "LogFile",
    "LogRecordRef",
    "Policy",
    "Problem",
    "Service",
    "Workload",
    "WorkloadState",
    "ZtunnelRef",
    "ZtunnelView",
]
