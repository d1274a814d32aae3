"""The absolute URLs DICOMweb answers carry (RetrieveURL, BulkDataURI).

One place, because a URL the client cannot follow is worse than none:
``settings.public_base_url`` when the operator set it (a reverse proxy's public
name), else the request's own scheme and Host header.
"""

from __future__ import annotations

from fastapi import Request

from api.deps import ApiContext


def service_url(request: Request) -> str:
    """``<base>/dicomweb``, without a trailing slash."""
    context: ApiContext = request.app.state.context
    base = context.settings.public_base_url or str(request.base_url).rstrip("/")
    return f"{base}/dicomweb"
