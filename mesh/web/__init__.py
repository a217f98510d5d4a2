"""The dashboard of a node: web page, JSON API, Prometheus metrics, task history.

``meshnode --http HOST:PORT`` serves it (docs/dashboard.md). :mod:`mesh.web.commands`
(the control commands a dashboard asks peers) is loaded by every node; the HTTP server
(:mod:`mesh.web.component`, which needs aiohttp and prometheus-client) only with --http.
"""
