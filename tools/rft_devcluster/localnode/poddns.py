"""What the kubelet gives a pod besides its network: a hostname, an /etc/hosts and a resolv.conf.

The kubelet writes a pod's ``/etc/hosts`` (``localhost``, the pod's own IP under its hostname and,
with ``spec.subdomain``, its fully qualified name ``<hostname>.<subdomain>.<ns>.svc.<domain>``,
then ``spec.hostAliases``) and its ``/etc/resolv.conf`` per ``dnsPolicy`` (``ClusterFirst``: the
cluster's DNS server, the search path ``<ns>.svc.<domain> svc.<domain> <domain>`` and
``options ndots:5``), and runs the pod in a UTS namespace whose hostname is ``spec.hostname``
(default: the pod's name). An Indexed Job's pods get ``<job>-<index>`` from the Job controller, so
with a headless Service named like ``spec.subdomain`` every pod has a DNS name the others resolve:
what torchrun's rendezvous of a multi-node step relies on (``<job>-0.<job>``).

Here the files are written into the pod's directory and every process of the pod starts in a mount
and UTS namespace of its own (``unshare --mount --uts``) that bind-mounts them over ``/etc/hosts``
and ``/etc/resolv.conf`` and sets the hostname, then execs the container's command (same pid), next
to ``nsenter --net`` of the pod's network namespace. That takes CAP_SYS_ADMIN (root): without it
pods keep the host's files and hostname, and the agent says so once (:func:`probe`).

Pod-level fields honoured: ``hostname``, ``subdomain``, ``setHostnameAsFQDN``, ``hostAliases``,
``dnsPolicy`` (``ClusterFirst``, ``Default``, ``None``; ``ClusterFirstWithHostNet`` like
``ClusterFirst``) and ``dnsConfig``. ``hostNetwork`` pods keep the host's files and hostname (the
kubelet gives them the node's; ``ClusterFirstWithHostNet`` is not supported there).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_CLUSTER_DOMAIN = "cluster.local"
# The kubelet's limits (pkg/kubelet/network/dns): 3 nameservers, 32 search domains, ndots 5.
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32
CLUSTER_NDOTS = "5"
HOSTNAME_MAX = 63
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
_PROBE_TIMEOUT_SECONDS = 10.0

# Runs inside the new mount and UTS namespaces: put the pod's files in place, set its hostname,
# then become the container's command (exec: the pid stays the container's).
_SETUP_SCRIPT = (
    'mount --bind "$1" /etc/resolv.conf && mount --bind "$2" /etc/hosts && hostname "$3" && '
    'shift 3 && exec "$@"'
)


@dataclass(frozen=True)
class ClusterDNS:
    """The kubelet's ``--cluster-dns`` and ``--cluster-domain``."""

    nameserver: str
    domain: str = DEFAULT_CLUSTER_DOMAIN


@dataclass(frozen=True)
class ResolvConf:
    """A resolv.conf's content as the kubelet composes it."""

    nameservers: tuple[str, ...]
    searches: tuple[str, ...]
    options: tuple[str, ...]

    def render(self) -> str:
        lines = []
        if self.searches:
            lines.append("search " + " ".join(self.searches))
        lines.extend(f"nameserver {ns}" for ns in self.nameservers)
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "\n".join(lines) + "\n"


def parse_resolv_conf(text: str) -> ResolvConf:
    """The nameservers, search domains and options of a resolv.conf (the host's)."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver" and values:
            nameservers.append(values[0])
        elif key in ("search", "domain"):
            searches = list(values)  # the last one wins, as in the resolver
        elif key == "options":
            options.extend(values)
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options))


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _merge_options(base: list[str], extra: list[dict[str, Any]]) -> list[str]:
    """dnsConfig.options over the base options: a name given again replaces the earlier value."""
    merged: dict[str, str] = {}
    for option in base:
        name, _, value = option.partition(":")
        merged[name] = option if value else name
    for entry in extra:
        name = str(entry["name"])
        merged[name] = f"{name}:{entry['value']}" if entry.get("value") not in (None, "") else name
    return list(merged.values())


def pod_resolv_conf(pod: dict[str, Any], cluster: ClusterDNS | None, host: ResolvConf) -> ResolvConf:
    """The pod's resolv.conf per its ``dnsPolicy`` and ``dnsConfig``, as the kubelet writes it.

    ``ClusterFirst`` without a cluster DNS server configured falls back to ``Default`` (the
    host's), as the kubelet does (it also records a ``MissingClusterDNS`` event).
    """
    spec = pod["spec"]
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and cluster is not None:
        ns = pod["metadata"]["namespace"]
        domain = cluster.domain
        nameservers = [cluster.nameserver]
        searches = [f"{ns}.svc.{domain}", f"svc.{domain}", domain, *host.searches]
        options = [f"ndots:{CLUSTER_NDOTS}"]
    elif policy == "None":
        nameservers, searches, options = [], [], []
    else:  # Default, or ClusterFirst without cluster DNS
        nameservers, searches, options = list(host.nameservers), list(host.searches), list(host.options)
    config = spec.get("dnsConfig") or {}
    nameservers = _unique([*nameservers, *config.get("nameservers", [])])[:MAX_NAMESERVERS]
    searches = _unique([*searches, *config.get("searches", [])])[:MAX_SEARCHES]
    options = _merge_options(options, config.get("options", []))
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options))


def pod_hostname(pod: dict[str, Any], domain: str) -> tuple[str, str | None]:
    """(hostname, fully qualified name or None): ``spec.hostname`` or the pod's name, at most 63
    characters (the kubelet trims a trailing ``-`` or ``.`` after truncating); with
    ``spec.subdomain`` the name ``<hostname>.<subdomain>.<namespace>.svc.<domain>``."""
    spec, meta = pod["spec"], pod["metadata"]
    hostname = str(spec.get("hostname") or meta["name"])
    if len(hostname) > HOSTNAME_MAX:
        hostname = hostname[:HOSTNAME_MAX].rstrip("-.")
    subdomain = spec.get("subdomain")
    fqdn = f"{hostname}.{subdomain}.{meta['namespace']}.svc.{domain}" if subdomain else None
    return hostname, fqdn


def pod_hosts_file(pod: dict[str, Any], pod_ip: str, domain: str) -> str:
    """The kubelet's managed /etc/hosts for a pod with its own network namespace."""
    hostname, fqdn = pod_hostname(pod, domain)
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
        f"{pod_ip}\t{fqdn}\t{hostname}" if fqdn else f"{pod_ip}\t{hostname}",
    ]
    aliases = pod["spec"].get("hostAliases") or []
    if aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        lines.extend(f"{a['ip']}\t{chr(9).join(a.get('hostnames', []))}" for a in aliases)
    return "\n".join(lines) + "\n"


def kernel_hostname(pod: dict[str, Any], domain: str) -> str:
    """The UTS hostname: the short one, or the FQDN with ``setHostnameAsFQDN``."""
    hostname, fqdn = pod_hostname(pod, domain)
    return fqdn if fqdn and pod["spec"].get("setHostnameAsFQDN") else hostname


@dataclass(frozen=True)
class PodIdentity:
    """One pod's files and hostname, and the argv prefix that puts them in place."""

    resolv_conf: Path
    hosts: Path
    hostname: str
    tools: tuple[str, str]  # unshare, sh

    def prefix(self) -> list[str]:
        unshare, sh = self.tools
        return [
            unshare,
            "--mount",
            "--uts",
            "--",
            sh,
            "-c",
            _SETUP_SCRIPT,
            "sh",
            str(self.resolv_conf),
            str(self.hosts),
            self.hostname,
        ]


class PodDNS:
    """The node's side: cluster DNS settings, the host's resolv.conf, whether namespaces work."""

    def __init__(self, cluster: ClusterDNS | None, tools: tuple[str, str] | None, why_not: str = "") -> None:
        self.cluster = cluster
        self.tools = tools
        self.why_not = why_not
        try:
            self.host = parse_resolv_conf(HOST_RESOLV_CONF.read_text())
        except OSError:
            self.host = ResolvConf((), (), ())

    @property
    def available(self) -> bool:
        return self.tools is not None

    def identity(self, pod: dict[str, Any], pod_ip: str, pod_dir: Path) -> PodIdentity | None:
        """Write the pod's files into ``pod_dir/etc``; None where pods keep the host's (see module doc)."""
        if self.tools is None or pod["spec"].get("hostNetwork"):
            return None
        domain = self.cluster.domain if self.cluster else DEFAULT_CLUSTER_DOMAIN
        etc = pod_dir / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        resolv, hosts = etc / "resolv.conf", etc / "hosts"
        resolv.write_text(pod_resolv_conf(pod, self.cluster, self.host).render())
        hosts.write_text(pod_hosts_file(pod, pod_ip, domain))
        return PodIdentity(resolv, hosts, kernel_hostname(pod, domain), self.tools)


def probe() -> tuple[tuple[str, str] | None, str]:
    """((unshare, sh), "") where pods can have their own hostname and files, else (None, why).

    Runs the real prefix once: files bind-mounted in a new mount and UTS namespace.
    """
    tools = [shutil.which(name) for name in ("unshare", "sh", "mount", "hostname")]
    missing = [
        name for name, path in zip(("unshare", "sh", "mount", "hostname"), tools, strict=True) if not path
    ]
    if missing:
        return None, f"{', '.join(missing)} not found"
    unshare, sh = str(tools[0]), str(tools[1])
    with tempfile.TemporaryDirectory(prefix="rft-poddns-probe-") as tmp:
        resolv, hosts = Path(tmp) / "resolv.conf", Path(tmp) / "hosts"
        resolv.write_text("nameserver 127.0.0.1\n")
        hosts.write_text("127.0.0.1\tlocalhost\n")
        identity = PodIdentity(resolv, hosts, "rft-probe", (unshare, sh))
        try:
            result = subprocess.run(
                [*identity.prefix(), "true"],
                capture_output=True,
                text=True,
                timeout=_PROBE_TIMEOUT_SECONDS,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return None, str(exc)
    if result.returncode != 0:
        return None, result.stderr.strip() or f"exit {result.returncode}"
    return (unshare, sh), ""


def node_pod_dns(cluster: ClusterDNS | None) -> PodDNS:
    """The node's :class:`PodDNS` after probing the host (one warning where it cannot)."""
    tools, why_not = probe()
    if tools is None:
        log.warning(
            "pods keep the host's /etc/resolv.conf, /etc/hosts and hostname (no mount and UTS "
            "namespace per pod: %s); %s",
            why_not,
            "cluster DNS names do not resolve in pods" if cluster else "no cluster DNS configured",
        )
    else:
        log.info(
            "pods get their own hostname, /etc/hosts and /etc/resolv.conf (cluster DNS: %s)",
            f"{cluster.nameserver}, domain {cluster.domain}" if cluster else "none, the host's resolvers",
        )
    return PodDNS(cluster, tools, why_not)
