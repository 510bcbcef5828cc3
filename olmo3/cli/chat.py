"""``olmo3 chat``: a terminal chat on the same Engine the app uses, interactive or scripted."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

from ..chat.engine import Engine
from ..chat.events import (
    ContextOverflow,
    Event,
    JobFailed,
    ModelLoaded,
    ModelWontFit,
    TextDelta,
    TurnFinished,
)
from ..chat.transcript import Provenance, TurnStats
from ..units import format_bytes
from .options import model_path

COMMANDS = (
    ("/regen", "regenerate the last reply"),
    ("/reproduce", "regenerate the last reply with exactly its settings and seed"),
    ("/edit N", "edit user turn N (counted from 0) and resend it"),
    ("/continue", "after a reply filled the context: go on, leaving out the oldest turns"),
    ("/stats", "the last turn's numbers and provenance"),
    ("/save FILE", "save the conversation as JSON"),
    ("/help", "this list"),
    ("/quit", "leave (also Ctrl-D)"),
)
HELP = "commands:\n" + "\n".join(f"  {name:<11} {what}" for name, what in COMMANDS)
CONTINUE = "Continue."


def provenance_table(p: Provenance) -> str:
    """A reply's provenance, one setting per line (the sampling parameters flattened)."""
    rows: list[tuple[str, str]] = []
    for key, value in p.to_dict().items():
        if isinstance(value, dict):
            rows += [(f"{key}.{k}", "-" if v is None else str(v)) for k, v in value.items()]
        else:
            rows.append((key, "-" if value is None else str(value)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


def stats_table(s: TurnStats) -> str:
    """The last turn's numbers, one per line, with units."""
    rows = [
        ("time to first token", f"{s.ttft_s:.3f} s"),
        ("speed", f"{s.tokens_per_s:.1f} tokens/s"),
        ("prompt tokens fed", f"{s.prompt_tokens:,}"),
        ("tokens reused from the cache", f"{s.cached_tokens:,} ({s.reconcile})"),
        ("tokens generated", f"{s.generated_tokens:,}"),
        (
            "stopped because",
            {
                "stop": "the reply ended",
                "length": "max tokens",
                "context": "the context is full",
                "cancelled": "cancelled",
            }.get(s.finish_reason, s.finish_reason),
        ),
        ("context used", f"{s.context_used:,} of {s.context_limit:,} tokens"),
        ("prefill / total time", f"{s.prefill_s:.3f} s / {s.total_s:.3f} s"),
        ("peak memory", format_bytes(s.peak_memory_bytes)),
        ("seed", str(s.seed) if s.seed is not None else "-"),
    ]
    if s.dropped_turns:
        rows.append(("oldest turns left out", str(s.dropped_turns)))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


class _Printer:
    """Engine callback: streams text to the terminal (interactive) and keeps each job's events."""

    def __init__(self, stream: bool):
        self.stream = stream
        self.events: dict[int, list[Event]] = {}
        self.lock = threading.Lock()
        self._channel: str | None = None

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.setdefault(event.job_id, []).append(event)
        if not self.stream:
            return
        if isinstance(event, TextDelta):
            if event.channel != self._channel:
                sys.stdout.write(
                    "\n[thinking] "
                    if event.channel == "reasoning"
                    else ("\n[answer] " if self._channel == "reasoning" else "")
                )
                self._channel = event.channel
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif isinstance(event, TurnFinished):
            self._channel = None
            s = event.stats
            sys.stdout.write(
                f"\n  ({s.ttft_s:.2f} s to first token · {s.tokens_per_s:.1f} tok/s · "
                f"{s.cached_tokens} tokens reused · {s.reconcile})\n"
            )
            if s.finish_reason == "context":
                sys.stdout.write(
                    "  The reply filled the model's context; /continue goes on without the oldest turns.\n"
                )
        elif isinstance(event, ContextOverflow):
            sys.stdout.write(
                f"\n! does not fit: {event.used}+{event.max_tokens} tokens > {event.limit}; "
                f"{event.droppable_turns} older turn(s) could be dropped\n"
            )
        elif isinstance(event, JobFailed):
            sys.stdout.write(f"\n! {event.message}\n")

    def of(self, job_id: int) -> list[Event]:
        with self.lock:
            return list(self.events.get(job_id, []))


def _turn_json(action: dict[str, Any], events: list[Event]) -> dict[str, Any]:
    fin = next((e for e in events if isinstance(e, TurnFinished)), None)
    fail = next((e for e in events if isinstance(e, (JobFailed, ContextOverflow))), None)
    if fin is None:
        return {
            "action": action,
            "error": getattr(fail, "message", None) or type(fail).__name__ if fail else "no result",
        }
    from .main import turn_json

    return {"action": action, **turn_json(fin), "tokens": list(fin.state.tokens)}


def _reproduce(engine: Engine, conv: str, last: TurnFinished | None) -> int | None:
    """Regenerate the last reply with exactly the settings and seed it was made with (None: nothing to redo)."""
    if last is None or last.provenance is None:
        return None
    return engine.regenerate(conv, sampling=last.provenance.reproduce_sampling())


def run_chat(args: argparse.Namespace, sampling: dict[str, Any], loader: Any = None) -> int:
    """``loader``: rank 0's ``ClusterLoader`` under ``--parallel`` (else the engine loads this machine's folder)."""
    scripted = args.script is not None
    printer = _Printer(stream=not args.json)
    folder = model_path(args)
    engine = Engine(
        printer,
        cache_dir=args.cache_dir,
        memory_limit_bytes=getattr(args, "memory_limit", None),
        kv_bits=getattr(args, "kv_bits", None),
        loader=loader,
    )
    engine.start()
    conv = uuid.uuid4().hex
    try:
        job = engine.load_model(
            folder or "", context_tokens=getattr(args, "context", None), force=getattr(args, "load_anyway", False)
        )
        engine.wait(job)
        fails = [e for e in printer.of(job) if isinstance(e, (JobFailed, ModelWontFit))]
        if fails:
            print(f"olmo3: {fails[0].message}", file=sys.stderr)
            return 2
        info = next(e for e in printer.of(job) if isinstance(e, ModelLoaded)).info
        engine.wait(engine.open_conversation(conv, system_prompt=args.system, sampling=sampling))
        if scripted:
            return _run_script(engine, printer, conv, Path(args.script), args.json)
        print(f"Olmo chat · {info.name} · {info_context(engine)} · /help lists the commands")
        last: TurnFinished | None = None
        while True:
            try:
                line = input("\n> ").strip()
            except EOFError:
                break
            if not line:
                continue
            if line in ("/quit", "/exit"):
                break
            command = line.split(maxsplit=1)[0] if line.startswith("/") else ""
            if command == "/help":
                print(HELP)
                continue
            if command == "/stats":
                if last is None:
                    print("no turn yet")
                else:
                    print(stats_table(last.stats))
                    if last.provenance is not None:
                        print("provenance (what reproduces this reply):\n" + provenance_table(last.provenance))
                continue
            if line.startswith("/save"):
                parts = line.split(maxsplit=1)
                if len(parts) < 2 or last is None:
                    print("usage: /save FILE (after a turn)")
                    continue
                messages = [dataclasses.asdict(m) for m in last.messages]
                saved = {"messages": messages, "state": last.state.to_json()}
                Path(parts[1]).write_text(json.dumps(saved, indent=2))
                print(f"saved {parts[1]}")
                continue
            user_turns = sum(1 for m in last.messages if m.role == "user") if last else 0
            if command == "/regen":
                if not user_turns:
                    print("nothing to regenerate yet")
                    continue
                job = engine.regenerate(conv)
            elif command == "/reproduce":
                redo = _reproduce(engine, conv, last)
                if redo is None:
                    print("nothing to reproduce yet")
                    continue
                job = redo
            elif command == "/edit":
                parts = line.split()
                if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) >= user_turns:
                    turns = f"0 to {user_turns - 1}" if user_turns else "none yet"
                    print(f"usage: /edit N, where N is a user turn (counted from 0: {turns})")
                    continue
                text = input(f"new text for user turn {parts[1]}: ").strip()
                if not text:
                    continue
                job = engine.edit(conv, int(parts[1]), text)
            elif command == "/continue":
                job = engine.send(conv, CONTINUE, overflow="drop_oldest")
            elif command:
                print(f"unknown command {command}; {HELP}")
                continue
            else:
                job = engine.send(conv, line)
            try:
                engine.wait(job)
            except KeyboardInterrupt:
                engine.cancel()
                engine.wait(job)
            last = next((e for e in printer.of(job) if isinstance(e, TurnFinished)), last)
        return 0
    finally:
        engine.shutdown()


def info_context(engine: Engine) -> str:
    return f"{engine.context_tokens:,}-token context" if engine.context_tokens else "full context"


def _run_script(engine: Engine, printer: _Printer, conv: str, path: Path, as_json: bool) -> int:
    try:
        actions = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        print(f"olmo3: {path}: cannot read the script ({e})", file=sys.stderr)
        return 2
    if not isinstance(actions, list):
        print(f"olmo3: {path}: expected a JSON list of actions", file=sys.stderr)
        return 2
    status = 0
    last: TurnFinished | None = None
    for i, action in enumerate(actions):
        if not isinstance(action, dict):
            print(f"olmo3: {path}: action {i} is not an object", file=sys.stderr)
            return 2
        sampling = action.get("sampling")
        if "send" in action:
            job = engine.send(conv, str(action["send"]), sampling=sampling)
        elif action.get("regenerate"):
            job = engine.regenerate(conv, sampling=sampling)
        elif action.get("reproduce"):
            redo = _reproduce(engine, conv, last)
            if redo is None:
                print(f"olmo3: {path}: action {i}: no reply to reproduce yet", file=sys.stderr)
                return 2
            job = redo
        elif "edit" in action:
            job = engine.edit(conv, int(action["edit"]), str(action.get("text", "")), sampling=sampling)
        else:
            print(f"olmo3: {path}: action {i} needs 'send', 'regenerate', 'reproduce' or 'edit'", file=sys.stderr)
            return 2
        engine.wait(job)
        last = next((e for e in printer.of(job) if isinstance(e, TurnFinished)), last)
        result = _turn_json(action, printer.of(job))
        if "error" in result:
            status = 1
        if as_json:
            print(json.dumps(result), flush=True)
    return status
