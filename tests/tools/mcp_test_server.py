"""A real MCP server for the tool tests, written with the official SDK (``MCPServer``).

Run as ``python mcp_test_server.py [--http --port-file FILE] [--fail-start] [--name NAME]``: stdio by default,
streamable HTTP on 127.0.0.1 (a port the OS picks, written to ``--port-file``) with ``--http``. The folder in
``OLMO_TEST_ROOT`` is where ``read_file`` reads, where the server leaves ``pid-<name>`` (and a line in
``starts-<name>``) on start and where ``slow``
leaves ``slow-started``/``slow-cancelled``/``slow-finished`` markers, so a test can see what the server saw.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

ROOT = Path(os.environ.get("OLMO_TEST_ROOT", "/nonexistent/OLMO_TEST_ROOT-is-not-set"))


def build(name: str) -> MCPServer:
    server = MCPServer(name, log_level="WARNING")

    @server.tool()
    def add(a: float, b: float) -> float:
        """Add two numbers."""
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def read_file(name: str) -> str:
        """Read a text file from the test folder."""
        path = (ROOT / name).resolve()
        if ROOT.resolve() not in path.parents:
            raise ToolError(f"{name}: outside the folder")
        if not path.is_file():
            raise ToolError(f"{name}: no such file")
        return path.read_text()

    @server.tool()
    def big(n: int) -> str:
        """Return n characters."""
        return "".join(chr(ord("a") + i % 26) for i in range(n))

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, noting start, cancellation and end in the test folder."""
        (ROOT / "slow-started").write_text("1")
        try:
            await anyio.sleep(seconds)
        except anyio.get_cancelled_exc_class():
            (ROOT / "slow-cancelled").write_text("1")
            raise
        (ROOT / "slow-finished").write_text("1")
        return f"slept {seconds}"

    return server


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--name", default="test")
    p.add_argument("--http", action="store_true")
    p.add_argument("--port-file")
    p.add_argument("--fail-start", action="store_true")
    args = p.parse_args()
    with open(ROOT / f"starts-{args.name}", "a") as fh:
        fh.write("start\n")
    if args.fail_start:
        print("test server: missing API key TEST_TOKEN", file=sys.stderr)
        sys.exit(3)
    (ROOT / f"pid-{args.name}").write_text(str(os.getpid()))
    server = build(args.name)
    if not args.http:
        server.run("stdio")
        return

    import uvicorn

    # Bind first, then tell the test the port: no window in which another process can take it.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
    tmp = Path(args.port_file + ".tmp")
    tmp.write_text(str(sock.getsockname()[1]))
    tmp.replace(args.port_file)
    anyio.run(lambda: uvicorn.Server(config).serve(sockets=[sock]))


if __name__ == "__main__":
    main()
