"""Kueue's manager (sigs.k8s.io/kueue, built by tools/build-kueue.sh) as a local process against
the local cluster.

What a Kueue install does in a cluster, done for a process on the host:

- Kueue's CRDs (from the module's config/components/crd/bases), with the conversion webhook of
  the five CRDs that Kueue's cert rotator injects (localqueues, clusterqueues, workloads, cohorts,
  multikueueclusters) pointing at the process (``clientConfig.url``);
- Kueue's admission webhooks (config/components/webhook/manifests.yaml) for Kueue's own kinds
  and ``batch/v1`` Jobs, their ``clientConfig.service`` rewritten to
  ``url: https://127.0.0.1:<port><path>``; the webhooks of integrations that are not enabled are
  left out (nothing would serve them, and with ``failurePolicy: Fail`` they would refuse every
  Pod or Deployment of the cluster);
- the webhook certificate: Kueue's internal certificate management stays on (turning it off makes
  the manager read a metrics certificate from the fixed path /etc/kueue/metrics/certs), and its
  Secret is made here before the start, holding a CA and a serving certificate valid for both
  the Service name the rotator checks (``kueue-webhook-service.kueue-system.svc``) and
  127.0.0.1; the rotator finds it valid and keeps it (``refreshCertIfNeeded``), and the
  certificate is written into the manager's ``certDir`` as the Secret's volume would be.

Started with leader election off, metrics off, the visibility API server off
(``VisibilityOnDemand=false``) and only the ``batch/job`` integration. Ready when its
``/readyz`` answers (certificates in place and the webhook server serving).
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import os
import subprocess
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from rft_devcluster.binaries import REPO_ROOT, script_output_dir
from rft_devcluster.handle import ClusterHandle
from rft_devcluster.pki import KeyPair
from rft_devcluster.processes import ProcessRecord, spawn, stop_group, tail
from rft_devcluster.waiting import free_port, wait_for

BUILD_SCRIPT = REPO_ROOT / "tools" / "build-kueue.sh"
NAMESPACE = "kueue-system"
SERVICE = "kueue-webhook-service"  # Kueue's default internalCertManagement.webhookServiceName
SECRET = "kueue-webhook-server-cert"  # noqa: S105 - a Secret's name (webhookSecretName)
WEBHOOK_CONFIGURATIONS = ("kueue-mutating-webhook-configuration", "kueue-validating-webhook-configuration")
"""The names the rotator injects the CA into (``<service name minus -webhook-service>-<type>-...``)."""
CONVERTED_CRDS = ("localqueues", "clusterqueues", "workloads", "cohorts", "multikueueclusters")
"""The CRDs whose conversion webhook Kueue serves (config/components/crd/kustomization.yaml)."""
SERVED_WEBHOOK_PATHS = ("-kueue-x-k8s-io-", "-batch-v1-job")
"""Webhooks kept: Kueue's own kinds and the batch/job integration."""
_CA_NAME = "kueue-ca"  # the rotator checks its CA for this DNS name (pkg/util/cert: caName)
_VALIDITY = datetime.timedelta(days=3650)  # the rotator wants 90 days ahead (lookahead)


class KueueUnavailableError(RuntimeError):
    """Kueue could not be built or started; the message carries its output."""


def ensure_kueue() -> Path:
    """The directory with ``kueue``, ``crds/`` and ``webhook/manifests.yaml``, built if missing."""
    out = script_output_dir(BUILD_SCRIPT, KueueUnavailableError)
    if not os.access(out / "kueue", os.X_OK):
        raise KueueUnavailableError(f"{out} lacks the kueue binary")
    return out


def _certificates(dns_name: str) -> tuple[KeyPair, KeyPair]:
    """A CA and a serving certificate the rotator accepts as they are: the CA valid for the DNS
    name ``kueue-ca`` with an RSA key in PKCS#1 (what cert-controller parses), the serving
    certificate for ``dns_name`` and 127.0.0.1, both valid well beyond its 90-day lookahead."""
    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "kueue"),
            x509.NameAttribute(NameOID.COMMON_NAME, _CA_NAME),
        ]
    )
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=False,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(_CA_NAME)]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(dns_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca = KeyPair(
        ca_cert.public_bytes(pem),
        ca_key.private_bytes(
            pem, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ),
    )
    serving = KeyPair(
        cert.public_bytes(pem),
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    return ca, serving


def webhook_configurations(manifests: str, base_url: str, ca_bundle: str) -> list[dict[str, Any]]:
    """Kueue's webhook configurations with the served webhooks only, each calling ``base_url``."""
    out = []
    for doc in yaml.safe_load_all(manifests):
        if not doc:
            continue
        kept = []
        for hook in doc.get("webhooks", []):
            path = hook["clientConfig"]["service"]["path"]
            if not any(part in path for part in SERVED_WEBHOOK_PATHS):
                continue
            hook["clientConfig"] = {"url": f"{base_url}{path}", "caBundle": ca_bundle}
            kept.append(hook)
        name = "kueue-" + doc["metadata"]["name"]
        out.append({**doc, "metadata": {"name": name}, "webhooks": kept})
    return out


def configuration(*, webhook_port: int, health_port: int, cert_dir: Path) -> dict[str, Any]:
    """Kueue's Configuration (config.kueue.x-k8s.io/v1beta2) for the local process."""
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"host": "127.0.0.1", "port": webhook_port, "certDir": str(cert_dir)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {
            "enable": True,
            "webhookServiceName": SERVICE,
            "webhookSecretName": SECRET,
        },
        "integrations": {"frameworks": ["batch/job"]},
    }


@dataclass
class Kueue:
    """Kueue installed in ``cluster`` and its manager running; ``stop()`` removes the webhooks
    (so that the cluster admits Jobs without it) and stops the process. The CRDs stay."""

    cluster: ClusterHandle
    work_dir: Path
    kueue_dir: Path = field(default_factory=ensure_kueue)
    log_path: Path = field(init=False)
    _popen: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _record: ProcessRecord | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.log_path = self.work_dir / "kueue.log"

    def start(self, timeout: float = 120) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        webhook_port, health_port = free_port(), free_port()
        base_url = f"https://127.0.0.1:{webhook_port}"
        ca, serving = _certificates(f"{SERVICE}.{NAMESPACE}.svc")
        ca_bundle = base64.b64encode(ca.cert_pem).decode()
        cert_dir = self.work_dir / "certs"
        cert_dir.mkdir(exist_ok=True)
        serving.write(cert_dir / "tls.crt", cert_dir / "tls.key")
        (cert_dir / "ca.crt").write_bytes(ca.cert_pem)

        self.cluster.kubectl("apply", "--server-side", "-f", str(self.kueue_dir / "crds"))
        conversion = {
            "spec": {
                "conversion": {
                    "strategy": "Webhook",
                    "webhook": {
                        "clientConfig": {"url": f"{base_url}/convert", "caBundle": ca_bundle},
                        "conversionReviewVersions": ["v1"],
                    },
                }
            }
        }
        for plural in CONVERTED_CRDS:
            self.cluster.kubectl(
                "patch", "crd", f"{plural}.kueue.x-k8s.io", "--type=merge", "-p", json.dumps(conversion)
            )
        self.cluster.kubectl(
            "wait", "--for=condition=Established", "--timeout=60s", "-f", str(self.kueue_dir / "crds")
        )
        secret_data = {
            "ca.crt": ca.cert_pem,
            "ca.key": ca.key_pem,
            "tls.crt": serving.cert_pem,
            "tls.key": serving.key_pem,
        }
        self.cluster.apply(
            [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": SECRET, "namespace": NAMESPACE},
                    "type": "Opaque",
                    "data": {k: base64.b64encode(v).decode() for k, v in secret_data.items()},
                },
                *webhook_configurations(
                    (self.kueue_dir / "webhook" / "manifests.yaml").read_text(), base_url, ca_bundle
                ),
            ]
        )
        config_path = self.work_dir / "config.yaml"
        config_path.write_text(
            yaml.safe_dump(
                configuration(webhook_port=webhook_port, health_port=health_port, cert_dir=cert_dir)
            )
        )
        self._popen, self._record = spawn(
            "kueue",
            [
                str(self.kueue_dir / "kueue"),
                f"--config={config_path}",
                "--feature-gates=VisibilityOnDemand=false",
                f"--kubeconfig={self.cluster.kubeconfig}",
            ],
            log_path=self.log_path,
            env={**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)},
        )

        def ready() -> bool:
            if self._popen is not None and self._popen.poll() is not None:
                raise KueueUnavailableError(
                    f"kueue exited ({self._popen.returncode}):\n{tail(self.log_path)}"
                )
            with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/readyz", timeout=2) as resp:
                return bool(resp.status == 200)

        wait_for(
            ready,
            timeout=timeout,
            what="kueue /readyz",
            interval=0.5,
            fatal=(KueueUnavailableError,),
            on_timeout=lambda: tail(self.log_path),
        )
        # The rotator kept our certificate (had it made its own, the apiserver could not reach it
        # at 127.0.0.1): the Secret still holds it.
        kept = json.loads(self.cluster.kubectl("get", "secret", SECRET, "-n", NAMESPACE, "-o", "json").stdout)
        if base64.b64decode(kept["data"]["tls.crt"]) != serving.cert_pem:
            raise KueueUnavailableError(f"kueue replaced the webhook certificate:\n{tail(self.log_path)}")

    def stop(self) -> None:
        for name, kind in zip(
            WEBHOOK_CONFIGURATIONS,
            ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"),
            strict=True,
        ):
            self.cluster.kubectl("delete", kind, name, "--ignore-not-found", check=False)
        if self._record is not None:
            stop_group(self._record, popen=self._popen)
            self._record = None

    def __enter__(self) -> Kueue:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
