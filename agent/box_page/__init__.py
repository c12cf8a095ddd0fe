"""The box page: what a person commissioning a camera needs to see, in a browser, on the box.

Off unless ``console.enabled``; loopback only unless a password is set (``access.py``). A request's path::

    browser -> server.py (console-http worker: access check, routes)
            -> agent.app.box_page.BoxPageBackend (the daemon's side of the seam)
                 state    the status document, built by the event loop (status.json when the loop is slow)
                 preview  preview.py: the rules thread's newest PreviewFrame -> annotated JPEG, rate-capped
                 outputs  the output writer's RecentOutputs snapshot
                 command  views.command_payload -> the MQTT parser -> CommandHandler (as an MQTT command)

``views.py`` and ``access.py`` are pure. This package imports only its configuration here, so that
``agent.config`` can include it without pulling in the pipeline.
"""

from agent.box_page.config import ConsoleConfig

__all__ = ["ConsoleConfig"]
