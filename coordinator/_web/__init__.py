"""The coordinator's web pages (``/ui``): a read-only dashboard for operators and auditors.

Server-rendered (Jinja2) with Plotly charts; plotly.js is served from the installed package
at ``/ui/static/plotly.min.js``, so nothing is loaded from the network at view time. Pages
show pooled figures, node status and the epsilon each node spent: never a node's answer.
"""

from coordinator._web._router import dashboard_router

__all__ = ["dashboard_router"]
