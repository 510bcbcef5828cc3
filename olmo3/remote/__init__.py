"""The app's "Connect to an Olmo server": a remote ``olmo3 serve`` driven like the local engine. MLX-free, Qt-free.

* ``client``: the HTTP side (the server's address, ``/v1/olmo/info``, ``/health``, a streamed chat completion as
  Server-Sent Events), stdlib ``http.client`` only, every read bounded, every failure one :class:`RemoteError` line;
* ``engine``: :class:`RemoteEngine`, the local engine's job methods and events over that client, on a worker thread
  of its own; the conversation trees live here, the caches on the server.

Imports nothing at package level.
"""
