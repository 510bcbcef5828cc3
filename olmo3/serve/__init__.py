"""``olmo3 serve``: an OpenAI-compatible local server on the app's engine. MLX-free, Qt-free.

* ``protocol``: OpenAI's request and response shapes; ``errors``: its error shape;
* ``backend``: requests to the engine (``Engine.complete``) and their events back onto the event loop;
* ``app``: the Starlette app (endpoints, SSE, API key, body limit, CORS);
* ``server``: uvicorn, in the calling thread (``olmo3 serve``) or a thread of its own (the app).

Cache reuse across stateless requests is the engine's (``olmo3.chat.prefix_index``). Imports nothing at package
level: ``import olmo3.serve.server`` pulls in Starlette, uvicorn only when a server starts.
"""
