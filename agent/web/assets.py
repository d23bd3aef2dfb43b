"""The page's files, read once at start-up and served from memory with an ETag."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

PAGE = "apps.html"
STATIC_FILES = {
    "apps.js": "text/javascript",
    "apps.css": "text/css",
}

# The page runs only its own module and style sheet; images and media it shows come from
# the agent (results inline as blob:/data: URLs) or, for an app's gallery, from the URLs
# the app author listed.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob: https:",
        "media-src 'self' data: blob:",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclass(frozen=True)
class Asset:
    """One file of the page."""

    body: bytes
    content_type: str
    etag: str


class PageAssets:
    """The page's files by name."""

    def __init__(self, files: dict[str, Asset]) -> None:
        self.files = files

    @classmethod
    def load(cls) -> PageAssets:
        """Read the files shipped in this package (a few kilobytes; done once)."""
        root = resources.files(__package__ or "agent.web")
        kinds = {PAGE: "text/html", **STATIC_FILES}
        files = {}
        for name, kind in kinds.items():
            body = root.joinpath(name).read_bytes()
            etag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
            files[name] = Asset(body, kind, etag)
        return cls(files)
