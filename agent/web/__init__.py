"""The one web layer both pages and the metrics endpoint use: the box page (``agent.box_page``, served by
the daemon), the fleet pages (``trainer.fleet_pages``, served by ``edge-trainer console``) and ``/metrics``.

::

    server.py   WebServer: one stdlib HTTP server in a supervised worker, answering from a route table
                (the box page's, the fleet pages', the daemon's and the ingest's metrics endpoints)
    access.py   who may use a page (pure: peer and Authorization in, a decision out)
    forms.py    the pages' buttons as MQTT commands (pure: a form in, the command's JSON out)
    static/     what both pages load: pages.css, pages.js (the shared helper module)
"""
