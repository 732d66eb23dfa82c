"""OCI references: ``oci://HOST[:PORT]/REPO(:TAG|@sha256:HEX)``, and which hosts are loopback."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace

from toolkit.errors import UsageError

__all__ = ["DIGEST_RE", "Reference", "is_loopback", "parse_reference", "split_host"]

DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,253}[A-Za-z0-9])?)(?::[0-9]{1,5})?\Z")
# The distribution spec's grammar for repository names and tags.
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*\Z")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")


@dataclass(frozen=True, kw_only=True, slots=True)
class Reference:
    """``oci://HOST[:PORT]/REPO(:TAG|@sha256:HEX)``; a digest, when given, wins over the tag."""

    host: str  # as written, port included: "127.0.0.1:5000"
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def hostname(self) -> str:
        """The host without its port (and without the brackets of an IPv6 literal)."""
        return split_host(self.host)[0]

    @property
    def reference(self) -> str:
        """What goes into ``/v2/<repo>/manifests/<reference>``."""
        ref = self.digest or self.tag
        assert ref is not None  # parse_reference guarantees one of them
        return ref

    def pinned(self, digest: str) -> Reference:
        """The same reference, pinned to a manifest digest (the tag kept for people)."""
        return replace(self, digest=digest)

    def __str__(self) -> str:
        text = f"oci://{self.host}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_reference(text: str, *, require_tag: bool = False) -> Reference:
    """Parse ``oci://HOST[:PORT]/REPO(:TAG|@sha256:HEX)``. Raises: UsageError."""
    if not text.startswith("oci://"):
        raise UsageError(f"{text!r}: an OCI reference starts with oci://")
    host, sep, rest = text[len("oci://") :].partition("/")
    if not sep or not _HOST_RE.match(host):
        raise UsageError(f"{text!r}: expected oci://HOST[:PORT]/REPO:TAG or oci://HOST[:PORT]/REPO@sha256:HEX")
    port = split_host(host)[1]
    if port is not None and not 0 < int(port) < 65536:
        raise UsageError(f"{text!r}: port {port} is out of range")
    rest, at, digest = rest.partition("@")
    repository, colon, tag = rest.partition(":")
    if not _REPO_RE.match(repository):
        raise UsageError(f"{text!r}: invalid repository name {repository!r} (lowercase, digits, '._-', '/')")
    if colon and not _TAG_RE.match(tag):
        raise UsageError(f"{text!r}: invalid tag {tag!r}")
    if at and not DIGEST_RE.match(digest):
        raise UsageError(f"{text!r}: invalid digest {digest!r} (sha256:<64 lowercase hex>)")
    if not colon and not at:
        raise UsageError(f"{text!r}: name a tag (:TAG) or a digest (@sha256:HEX)")
    if require_tag and not colon:
        raise UsageError(f"{text!r}: a push needs a tag (:TAG)")
    return Reference(host=host, repository=repository, tag=tag if colon else None, digest=digest if at else None)


def split_host(host: str) -> tuple[str, str | None]:
    """("hostname", "port" or None) of HOST[:PORT]; an IPv6 literal loses its brackets."""
    if host.startswith("["):
        end = host.index("]")
        port = host[end + 1 :].lstrip(":")
        return host[1:end], port or None
    name, colon, port = host.partition(":")
    return name, port if colon else None


def is_loopback(hostname: str) -> bool:
    """127.0.0.0/8, ::1 and localhost: the only hosts spoken to in plain HTTP by default."""
    if hostname.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False
