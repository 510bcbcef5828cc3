"""The server as the app runs it: on a thread of its own over an engine it shares (here one with no model yet)."""

from __future__ import annotations

import httpx2 as httpx
import openai
import pytest

from olmo3.chat.engine import Engine
from olmo3.serve.server import LocalServer, ServeConfig, check_config


@pytest.fixture
def engine(tmp_path):
    eng = Engine(None, cache_dir=tmp_path / "kv")
    eng.start()
    yield eng
    assert eng.shutdown(30)


def test_api_key_no_model_cors_and_the_model_arriving_later(engine, tiny_model_dir):
    seen = []
    server = LocalServer(
        engine,
        ServeConfig(port=0, api_key="sesame", cors_origins=("http://localhost:5173",)),
        on_change=seen.append,
    )
    server.start()
    try:
        assert server.running and server.port > 0
        url = server.base_url
        for key in ("wrong", None):
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            r = httpx.get(f"{url}/models", headers=headers, timeout=30)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()

        c = openai.OpenAI(base_url=url, api_key="sesame", max_retries=0)
        assert c.models.list().data == []
        with pytest.raises(openai.APIStatusError) as e:
            c.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}])
        assert e.value.status_code == 503 and e.value.body["code"] == "model_not_loaded"
        assert e.value.response.headers["retry-after"].isdigit()
        assert httpx.get(server.base_url.removesuffix("/v1") + "/health", timeout=30).json()["status"] == "no_model"

        preflight = httpx.options(
            f"{url}/chat/completions",
            headers={"Origin": "http://localhost:5173", "Access-Control-Request-Method": "POST"},
            timeout=30,
        )
        assert preflight.headers.get("access-control-allow-origin") == "http://localhost:5173"
        other = httpx.get(f"{url}/models", headers={"Origin": "http://evil.example"}, timeout=30)
        assert "access-control-allow-origin" not in other.headers

        # The app loads a model: the running server serves it.
        assert engine.wait(engine.load_model(tiny_model_dir), 60)
        assert [m.id for m in c.models.list()] == [tiny_model_dir.name]
        r = c.chat.completions.create(
            model=tiny_model_dir.name, messages=[{"role": "user", "content": "hi"}], max_tokens=3, temperature=0
        )
        assert r.usage.completion_tokens <= 3
        assert seen[-1].served == 1 and seen[-1].running == 0
    finally:
        assert server.stop()
    assert not server.running


def test_cors_is_off_by_default_and_unsafe_configs_are_refused(engine):
    server = LocalServer(engine, ServeConfig(port=0))
    server.start()
    try:
        r = httpx.get(f"{server.base_url}/models", headers={"Origin": "http://localhost:5173"}, timeout=30)
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    finally:
        server.stop()
    for bad in (ServeConfig(host="0.0.0.0"), ServeConfig(host="192.168.1.20"), ServeConfig(port=70000)):
        with pytest.raises(ValueError):
            check_config(bad)
    check_config(ServeConfig(host="0.0.0.0", api_key="k"))
    check_config(ServeConfig(host="::1"))
