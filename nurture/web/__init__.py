"""The web process: tracking endpoints (open pixel, click redirect, unsubscribe), the JSON
API and the health check. Built by :func:`nurture.web.app.create_app` from a Runtime."""
