"""Broker URLs: ``kafka://[user[:password]@]host:port[,...][?options]`` or ``memory://[name]``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlparse


class BrokerURLError(ValueError):
    """A broker URL this version cannot use."""


@dataclass(frozen=True)
class BrokerURL:
    """``kafka://[user[:password]@]host:port[,host:port][?option=value&...]`` or
    ``memory://[name]``; the password, when there is one, is never shown (:attr:`safe`)."""

    scheme: str
    location: str
    options: dict[str, str]
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerURL:
        parsed = urlparse(url)
        if parsed.scheme not in ("kafka", "memory"):
            raise BrokerURLError(
                f"unsupported broker URL {_redact(url)!r}: use kafka://host:port[,host:port] "
                "or memory://"
            )
        userinfo, at, hosts = parsed.netloc.rpartition("@")
        if parsed.scheme == "kafka" and not hosts:
            raise BrokerURLError(
                f"broker URL {_redact(url)!r} names no host: use kafka://host:port"
            )
        username = password = None
        if at:
            user, colon, secret = userinfo.partition(":")
            username, password = unquote(user) or None, unquote(secret) if colon else None
        options = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        return cls(
            parsed.scheme, hosts or parsed.path.strip("/"), options, username, password
        )

    @property
    def safe(self) -> str:
        """The URL as it may be logged: the password replaced by ``***``."""
        user = ""
        if self.username:
            user = self.username + (":***" if self.password else "") + "@"
        query = "&".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.scheme}://{user}{self.location}" + (f"?{query}" if query else "")


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    userinfo, at, hosts = rest.rpartition("@")
    if at and ":" in userinfo:
        return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{hosts}"
    return url
