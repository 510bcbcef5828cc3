"""``HubTools``: a ``ToolHub`` as the engine's tool runner (``olmo3.chat.tool_turns.ToolRunner``).

The app (GUI or CLI) owns the hub; a turn gets a ``HubTools`` that says which tools to offer (the enabled ones),
whether a call needs the person's consent (not when the tool is set to "always allow", nor with ``ask=False``: the
CLI's ``--yes``), and starts calls with the chosen timeout. It never imports the MCP SDK itself: the hub does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..chat.tool_turns import DEFAULT_MAX_ROUNDS, CallHandle, ToolDescription
from .messages import tool_definitions

POLL_S = 0.05


class HubTools:
    """See the module docstring. ``hub`` is an ``olmo3.tools.toolhub.ToolHub`` (typed loosely: no SDK import)."""

    def __init__(
        self,
        hub: Any,
        *,
        ask: bool = True,
        timeout: float | None = None,
        max_rounds: int = DEFAULT_MAX_ROUNDS,
    ) -> None:
        if max_rounds < 1:
            raise ValueError("max_rounds must be at least 1")
        self.hub = hub
        self.ask = ask
        self.timeout = timeout
        self.max_rounds = max_rounds

    def definitions(self, should_stop: Callable[[], bool]) -> list[dict[str, Any]] | None:
        """The enabled tools' definitions. Listing may start servers (seconds): it runs on a helper thread while
        this one watches ``should_stop``, so Stop works during a slow start too (the listing then finishes alone)."""
        done = threading.Event()
        found: list[Any] = []

        def listing() -> None:
            try:
                found.append(self.hub.enabled_tools())
            except Exception as e:  # a closed hub, a broken config: no tools this turn
                found.append(e)
            finally:
                done.set()

        threading.Thread(target=listing, name="mcp-list", daemon=True).start()
        while not done.wait(POLL_S):
            if should_stop():
                return None
        tools = found[0]
        return None if isinstance(tools, Exception) else tool_definitions(tools)

    def describe(self, name: str) -> ToolDescription | None:
        info = self.hub.find_tool(name)
        if info is None:
            return None
        return ToolDescription(name=info.name, server=info.server, description=info.description)

    def needs_consent(self, name: str) -> bool:
        if not self.ask:
            return False
        info = self.hub.find_tool(name)
        # The switch as it is now (the listing's copy is older: "Always allow" may have been chosen since).
        return info is not None and not self.hub.state.always_allow(info.server, info.tool)

    def start(self, name: str, arguments: dict[str, Any]) -> CallHandle:
        handle: CallHandle = self.hub.start_call(name, arguments, self.timeout)
        return handle
