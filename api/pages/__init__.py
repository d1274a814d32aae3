"""The reading room in a browser (issue 18): server-rendered pages at ``/``.

Jinja2 templates and a few plain JavaScript modules, shipped inside the Python
package (``templates/``, ``static/``): installed by ``pip`` with the node, no
build step, no CDN, nothing fetched at run time. The pages call the same
services as the API and sign in through the same ``api.deps.current_principal``
(the session cookie is read there); see docs/web.md and docs/security.md.

One module per area, each with its own ``router``; ``ROUTERS`` is what the
application includes. URLs and the navigation are in ``paths``, what every
page shares in ``common``.
"""

from fastapi import APIRouter

from api.pages import (
    admin,
    audit,
    home,
    orders,
    reconciliation,
    referrals,
    reports,
    turnaround,
    viewer,
    worklist,
)

ROUTERS: list[APIRouter] = [
    home.router,
    worklist.router,
    viewer.router,
    reports.router,
    referrals.router,
    orders.router,
    reconciliation.router,
    admin.router,
    audit.router,
    turnaround.router,
]
