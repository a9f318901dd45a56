"""botocore's table of AWS endpoints, cut down to the services this process can call.

botocore parses its whole `endpoints.json` (every region of up to 305 services in each of 8
partitions) for the first client of a session and keeps it for the client's life: the
client's event handlers hold the object that holds it. Trimmed, the process holds 4.4 MiB
less once the client is built (its RSS, measured on this project's machine). The sidecar
makes clients for S3 alone, and the credential chain for STS (assumed roles, web identity),
SSO and sign-in. No library offers a smaller table, so the one botocore loads is trimmed
before any client reads it: through the session's data loader (a public component), whose
cache hands every later reader the same trimmed object. Every partition's own data (regions,
DNS suffixes, defaults) is kept whole, so these services resolve exactly as before; a service
left out would still get an endpoint (botocore's endpoint rule sets build the URL; this table
gives only the signing defaults). Should botocore stop caching, nothing is trimmed and
nothing else changes.
"""

from __future__ import annotations

from typing import Any

# S3, and every service botocore's credential providers make a client for.
SERVICES = frozenset({"s3", "sts", "sso", "sso-oidc", "signin"})


def keep_only_needed_endpoints(session: Any) -> None:
    """Trim the session's endpoint table to SERVICES, before its first client is made."""
    data, _ = session.get_component("data_loader").load_data_with_path("endpoints")
    for partition in data.get("partitions", ()):
        services = partition.get("services", {})
        for name in [name for name in services if name not in SERVICES]:
            del services[name]
