"""Where outbound webhooks may go: public addresses only, unless configured otherwise.

A webhook URL is the caller's, and the API and its workers sit inside the operator's network:
without a check, `http://169.254.169.254/…` or `http://10.0.0.5:6379/` would make inferq POST
to the cloud metadata service or an internal host (server-side request forgery). A URL is
refused at submit (422) when its host is, or resolves to, a loopback, private, link-local,
multicast or otherwise non-global address, and checked again before every delivery, since DNS
can change in between. `INFERQ_WEBHOOK_ALLOW_PRIVATE=true` lifts the check (development, tests,
a receiver inside the operator's own network).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from inferq.errors import InvalidValue


class WebhookTargetRefused(InvalidValue):
    code = "webhook_url_refused"


async def check_webhook_url(url: str, allow_private: bool) -> None:
    """Raise WebhookTargetRefused unless every address of the URL's host is public."""
    if allow_private:
        return
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise WebhookTargetRefused("webhook_url: no host", param="webhook_url")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise WebhookTargetRefused(
            f"webhook_url: the host '{host}' cannot be resolved ({exc})", param="webhook_url"
        ) from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global:
            raise WebhookTargetRefused(
                f"webhook_url: the host '{host}' is a non-public address ({address}); "
                "webhooks go to public addresses only",
                param="webhook_url",
            )
