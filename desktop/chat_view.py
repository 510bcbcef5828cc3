"""Old import path of :mod:`desktop.chat`, kept only for ``desktop/controller.py`` (being rewritten elsewhere).

Delete this file once the controller imports ``ChatView`` from :mod:`desktop.chat`.
"""

from desktop.chat import ChatView

__all__ = ["ChatView"]
