"""Olmo-3's own function calling, with tools from MCP servers. Qt-free and MLX-free.

* ``config``: the user's ``mcp.json`` (the ``mcpServers`` shape other apps use) and our per-tool state;
* ``toolhub``: ``ToolHub``, which starts MCP servers on first use and calls their tools from any thread;
* ``calls``: Olmo's ``<function_calls>`` text, parsed (no eval) and rendered as the chat template does;
* ``messages``: the chat-template messages of a conversation with tools, and the OpenAI chat format.

Nothing here imports the rest on import: ``toolhub`` pulls in the MCP SDK, which the CLI's other commands
and the GUI's start-up need not pay for.
"""
