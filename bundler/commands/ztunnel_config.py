"""``bundle ztunnel-config {workload,service,policy,certificate,connections,all} BUNDLE``: istioctl's
``ztunnel-config`` tables, offline, from a bundle's ztunnel config dump (or ``--file DUMP``, as istioctl's ``--file``).

The ``short`` output reproduces istioctl byte for byte (Go tabwriter layout); ``-o json|yaml`` prints the selected raw
dump objects (the whole raw dump for ``all``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from bundler.errors import ArtifactError, BundleError
from bundler.views import ztunnel_config as views

# istioctl's aliases (formats.md section 4)
ALIASES = {
    "w": "workload", "workloads": "workload",
    "s": "service", "services": "service", "svc": "service",
    "p": "policy", "policies": "policy", "pol": "policy",
    "certificates": "certificate", "certs": "certificate", "cert": "certificate", "secret": "certificate",
    "cons": "connections",
}


class _AliasGroup(click.Group):
    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, ALIASES.get(cmd_name, cmd_name))


def _parse_json(data: bytes, what: str) -> dict[str, Any]:
    from bundler.validation import parse_json

    try:
        doc = parse_json(data)  # orjson: no RecursionError on a hostile dump nested 100000 levels deep
    except ArtifactError as exc:
        raise BundleError(f"{what} is not valid JSON: {exc}") from None
    from bundler.model.normalize import legacy_layout

    legacy = legacy_layout(doc)
    if legacy is not None:
        raise BundleError(f"{what}: {' '.join(str(legacy).split())}")
    if not isinstance(doc, dict):
        names = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string", list: "array"}
        got = names.get(type(doc), "value")
        raise BundleError(f"{what} is not a ztunnel config dump (a JSON object), but a JSON {got}")
    return doc


def load_dump(bundle: str | None, file: str | None, node: str | None, ztunnel: str | None) -> dict[str, Any]:
    """The raw config dump: from ``file``, or from the bundle's ztunnel chosen by pod, node, or the first by node."""
    if file is not None:
        if bundle is not None or node or ztunnel:
            raise click.UsageError("--file cannot be combined with BUNDLE, --node or --ztunnel")
        try:
            data = click.get_binary_stream("stdin").read() if file == "-" else Path(file).read_bytes()
        except OSError as exc:
            raise BundleError(f"cannot read {file}: {exc.strerror or exc}") from None
        return _parse_json(data, file)
    if bundle is None:
        raise click.UsageError("give a BUNDLE or --file DUMP")
    if node and ztunnel:
        raise click.UsageError("give at most one of --node and --ztunnel")
    from bundler.commands.analyze import open_model

    with open_model(Path(bundle)) as model:  # refuses an unsafe or damaged bundle, as every command does
        refs = model.ztunnel_refs()
        known = ", ".join(f"{r.pod} ({r.node})" for r in refs) or "none"
        if ztunnel:
            chosen = [r for r in refs if r.pod == ztunnel]
            if not chosen:
                raise BundleError(f"no ztunnel {ztunnel!r} in the bundle (ztunnels: {known})")
        elif node:
            chosen = [r for r in refs if r.node == node]
            if not chosen:
                raise BundleError(f"no ztunnel on node {node!r} in the bundle (ztunnels: {known})")
        else:
            chosen = refs
            if not chosen:
                raise BundleError("the bundle has no ztunnel")
        ref = chosen[0]
        what = f"the config dump of ztunnel {ref.pod} ({ref.dump_path})"
        if ref.dump_status not in ("ok", "truncated"):
            reason = f": {ref.dump_reason}" if ref.dump_reason else ""
            raise BundleError(f"{what} was not collected (status {ref.dump_status}{reason})")
        try:
            data = model.bundle.read(ref.dump_path)
        except BundleError as exc:
            raise BundleError(f"cannot read {what}: {exc}") from None
        return _parse_json(data, what)


def _emit(output: str, short: Callable[[], str], objects: Callable[[], Any]) -> None:
    if output == "short":
        click.echo(short(), nl=False)
        return
    value = objects()
    try:
        if output == "json":
            text = json.dumps(value, indent=2)
        else:
            import yaml

            text = yaml.safe_dump(value, sort_keys=False, default_flow_style=False)
    except RecursionError:  # a hostile dump nested ~1000 levels deep parses, but cannot be written back
        raise BundleError(f"the selected dump objects are nested too deeply to print as {output}") from None
    click.echo(text, nl=output == "json")


def _split_workload(value: str | None) -> tuple[str, str]:
    """``name`` or ``name.namespace`` (istioctl's pod argument form)."""
    if not value:
        return "", ""
    name, _, namespace = value.partition(".")
    return name, namespace


def _common(func: Callable[..., Any]) -> Callable[..., Any]:
    func = click.option("-o", "--output", type=click.Choice(["short", "json", "yaml"]), default="short",
                        show_default=True, help="short: istioctl's table; json/yaml: the selected dump objects.")(func)
    func = click.option("-f", "--file", "file", metavar="DUMP",
                        help="Read one ztunnel config dump JSON file ('-' = stdin) instead of a bundle.")(func)
    func = click.option("--ztunnel", metavar="POD", help="The ztunnel pod whose view to show.")(func)
    func = click.option("--node", metavar="NODE",
                        help="Show the view of the ztunnel on NODE (default: the first ztunnel by node).")(func)
    func = click.argument("bundle", required=False, type=click.Path(dir_okay=True))(func)
    return func


_WORKLOAD_HELP = "Only this workload: POD or POD.NAMESPACE (istioctl's non-ztunnel pod argument)."


@click.group("ztunnel-config", cls=_AliasGroup)
def command() -> None:
    """istioctl ztunnel-config tables from a bundle (alias-compatible: w, s, p, certs, cons).

    The view is the first ztunnel by node unless --node or --ztunnel picks one; --file reads a single dump instead.
    """


@command.command("workload")
@_common
@click.option("--workload-namespace", default="", help="Only workloads in this namespace.")
@click.option("--workload-node", default="", help="Only workloads on this node.")
@click.option("--address", default="", help="Only the workload with this IP address.")
@click.option("--workload", "workload", default=None, metavar="POD[.NS]", help=_WORKLOAD_HELP)
def workload_cmd(bundle, node, ztunnel, file, output, workload_namespace, workload_node, address, workload):
    """NAMESPACE  POD NAME  ADDRESS  NODE  WAYPOINT  PROTOCOL."""
    doc = load_dump(bundle, file, node, ztunnel)
    name, name_ns = _split_workload(workload)
    flt = views.WorkloadFilter(namespace=workload_namespace, node=workload_node, address=address, name=name,
                               name_namespace=name_ns)
    _emit(output, lambda: views.workload_table(doc, flt), lambda: views.workloads(doc, flt))


@command.command("service")
@_common
@click.option("--service-namespace", default="", help="Only services in this namespace.")
def service_cmd(bundle, node, ztunnel, file, output, service_namespace):
    """NAMESPACE  SERVICE NAME  SERVICE VIP  WAYPOINT  ENDPOINTS."""
    doc = load_dump(bundle, file, node, ztunnel)
    _emit(output, lambda: views.service_table(doc, service_namespace),
          lambda: views.services(doc, service_namespace))


@command.command("policy")
@_common
@click.option("--policy-namespace", default="", help="Only policies in this namespace.")
def policy_cmd(bundle, node, ztunnel, file, output, policy_namespace):
    """NAMESPACE  POLICY NAME  ACTION  SCOPE."""
    doc = load_dump(bundle, file, node, ztunnel)
    _emit(output, lambda: views.policy_table(doc, policy_namespace), lambda: views.policies(doc, policy_namespace))


@command.command("certificate")
@_common
def certificate_cmd(bundle, node, ztunnel, file, output):
    """CERTIFICATE NAME  TYPE  STATUS  VALID CERT  SERIAL NUMBER  NOT AFTER  NOT BEFORE."""
    doc = load_dump(bundle, file, node, ztunnel)
    _emit(output, lambda: views.certificate_table(doc), lambda: views.certificates(doc))


@command.command("connections")
@_common
@click.option("--direction", type=click.Choice(["inbound", "outbound"]), default=None, help="Only one direction.")
@click.option("--raw", is_flag=True, help="Show IP addresses instead of workload/service names.")
@click.option("--workload-namespace", default="", help="Only workloads in this namespace.")
@click.option("--workload", "workload", default=None, metavar="POD[.NS]", help=_WORKLOAD_HELP)
def connections_cmd(bundle, node, ztunnel, file, output, direction, raw, workload_namespace, workload):
    """WORKLOAD  DIRECTION  LOCAL  REMOTE  REMOTE TARGET  PROTOCOL."""
    doc = load_dump(bundle, file, node, ztunnel)
    name, name_ns = _split_workload(workload)
    flt = views.ConnectionsFilter(namespace=workload_namespace, direction=direction or "", raw=raw, name=name,
                                  name_namespace=name_ns)
    _emit(output, lambda: views.connections_table(doc, flt), lambda: views.connections(doc, flt))


@command.command("all")
@_common
@click.option("--with-headers", is_flag=True, help="Precede each table with a '------ X INFO ------' line.")
def all_cmd(bundle, node, ztunnel, file, output, with_headers):
    """All five tables; -o json/yaml prints the raw dump unchanged."""
    doc = load_dump(bundle, file, node, ztunnel)
    _emit(output, lambda: views.all_tables(doc, with_headers), lambda: doc)
