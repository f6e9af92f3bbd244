"""The node owner's admin page (``/admin``): approve or deny held jobs, budget, ingest history.

Served by the node itself and answered only to loopback clients unless
``DPN_ADMIN_ALLOW_REMOTE=1`` is set (the node binds 127.0.0.1 by default anyway). Sign-in
exchanges the node's ``access_token`` for a signed session cookie; approve and deny forms
carry a CSRF token tied to the session.
"""

from node._web._router import admin_router

__all__ = ["admin_router"]
