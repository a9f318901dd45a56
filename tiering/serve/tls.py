"""TLS and mutual TLS through Python's `ssl`, and the per-certificate topic allowlist."""

from __future__ import annotations

import ssl
from typing import Any

from tiering.config import ServeConfig
from tiering.errors import ConfigError


def server_context(config: ServeConfig) -> ssl.SSLContext | None:
    """None for plaintext (config parsing already refused it on a non-loopback address unless
    serve.allow_plaintext); with serve.tls_ca_file every client must present a certificate
    that CA signed. Raises OSError/ssl.SSLError for unreadable or mismatched files."""
    if config.tls_cert_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(config.tls_cert_file), str(config.tls_key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("[serve]", [f"serve.tls_cert_file {config.tls_cert_file}, serve.tls_key_file "
                                      f"{config.tls_key_file}: cannot load ({_why(exc)}); a PEM certificate "
                                      "and its private key"]) from None
    if config.tls_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=str(config.tls_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("[serve]", [f"serve.tls_ca_file {config.tls_ca_file}: cannot load ({_why(exc)}); "
                                          "PEM certificates of the CAs that sign client certificates"]) from None
    return context


def _why(exc: Exception) -> str:
    return getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)


def peer_subject(peercert: Any) -> str | None:
    """The client certificate's subject as `KEY=value` pairs in the certificate's order,
    comma-joined (e.g. "O=Acme,CN=reporting"); None without a client certificate."""
    if not peercert:
        return None
    names = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
             "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L"}
    parts = [f"{names.get(k, k)}={v}" for rdn in peercert.get("subject", ()) for k, v in rdn]
    return ",".join(parts) or None


def allowed_topics(config: ServeConfig, subject: str | None) -> tuple[str, ...] | None:
    """The topic patterns a client may see: None = all (no allowlist configured). With an
    allowlist, a subject is matched whole or by its CN alone ("CN=reporting"); a subject that
    is not listed sees no topic at all."""
    if config.topic_allowlist is None:
        return None
    if subject is None:
        return ()
    if subject in config.topic_allowlist:
        return config.topic_allowlist[subject]
    cn = [part for part in subject.split(",") if part.startswith("CN=")]
    return config.topic_allowlist.get(cn[-1], ()) if cn else ()
