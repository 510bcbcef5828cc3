"""``olmo3 chat``: a terminal chat on the same Engine the app uses, interactive or scripted."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
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
from ..docs.extract import DocumentError
from ..fileio import read_json
from ..units import format_bytes
from .attach import CliAttachments, DocumentTurns, describe
from .chat_tools import TerminalConsent, ToolSetupError, open_tools, print_tool_event, tool_calls_json, wait_turn
from .options import check_fits, model_path

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

    def __init__(self, stream: bool, consent: TerminalConsent | None = None):
        self.stream = stream
        self.consent = consent
        self.events: dict[int, list[Event]] = {}
        self.lock = threading.Lock()
        self._channel: str | None = None

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.events.setdefault(event.job_id, []).append(event)
        if self.consent is not None:
            self.consent.on_event(event)
        if not self.stream:
            return
        tool_line = print_tool_event(event)
        if tool_line is not None:
            sys.stdout.write(tool_line)
            sys.stdout.flush()
        elif isinstance(event, TextDelta):
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

    return {
        "action": action,
        **turn_json(fin),
        "tool_calls": tool_calls_json(events),
        "messages": [_message_json(m) for m in fin.messages],
        "tokens": list(fin.state.tokens),
    }


def _message_json(m: Any) -> dict[str, Any]:
    """One message of the active path (``chat --json``): with tools, the calls and the results are messages."""
    return {"id": m.id, "role": m.role, "content": m.content, "calls": m.calls, "tool": m.tool}


def _reproduce(engine: Engine, conv: str, last: TurnFinished | None, tools: Any = None) -> int | None:
    """Regenerate the last reply with exactly the settings and seed it was made with (None: nothing to redo)."""
    if last is None or last.provenance is None:
        return None
    return engine.regenerate(conv, sampling=last.provenance.reproduce_sampling(), tools=tools)


def run_chat(
    args: argparse.Namespace,
    sampling: dict[str, Any],
    engine_options: dict[str, Any] | None = None,
    loader: Any = None,
) -> int:
    """The chat; ``engine_options`` go to the ``Engine`` (tests pass logits processors that force replies);
    ``loader``: rank 0's ``ClusterLoader`` under ``--parallel`` (else the engine loads this machine's folder)."""
    folder = model_path(args)
    if folder is not None and loader is None:  # no model, or one that won't fit, is refused before MLX loads
        check_fits(args, folder)  # (a parallel group's rank 0 checks the cluster's budgets when it loads)
    actions = read_script(Path(args.script)) if args.script is not None else []  # refused before a model loads
    docs: CliAttachments | None = None
    if getattr(args, "attach", None):
        try:  # before the model loads: a file that can't be attached fails at once
            docs = CliAttachments(args.attach, folder)
        except DocumentError as e:
            print(f"olmo3: {e}", file=sys.stderr)
            return 2
    engine_log = logging.getLogger("olmo3.chat.engine")
    engine_log_level = engine_log.level
    if not (getattr(args, "verbose", False) or getattr(args, "debug", False)):
        # A failed job is reported here (one line, or the JSON's "error"); the engine's log of it would repeat it.
        engine_log.setLevel(logging.CRITICAL)
    try:
        tools = open_tools(args)  # before the model loads: a bad mcp.json is refused at once
    except ToolSetupError as e:
        print(f"olmo3: {e}", file=sys.stderr)
        if docs is not None:
            docs.close()
        return 2
    try:
        return _chat(args, sampling, actions, folder, docs, tools, engine_options or {}, loader)
    finally:
        engine_log.setLevel(engine_log_level)
        if tools is not None:
            tools[0].close()  # stops every MCP server


def _chat(
    args: argparse.Namespace,
    sampling: dict[str, Any],
    actions: list[dict[str, Any]],
    folder: Path | None,
    docs: CliAttachments | None,
    tools: tuple[Any, Any] | None,
    engine_options: dict[str, Any],
    loader: Any = None,
) -> int:
    scripted = args.script is not None
    hub, runner = tools if tools is not None else (None, None)
    consent = TerminalConsent(hub) if hub is not None else None
    printer = _Printer(stream=not args.json, consent=consent)
    engine = Engine(
        printer,
        cache_dir=args.cache_dir,
        memory_limit_bytes=getattr(args, "memory_limit", None),
        kv_bits=getattr(args, "kv_bits", None),
        **engine_options,
        loader=loader,
    )
    engine.start()
    conv = uuid.uuid4().hex
    doc_turns = DocumentTurns(engine, conv, docs, tools=runner)
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
        job = engine.open_conversation(conv, system_prompt=args.system, sampling=sampling)
        engine.wait(job)
        doc_turns.opened(printer.of(job))
        if scripted:
            return _run_script(doc_turns, printer, actions, args.json, consent)
        with_tools = " · tools on" if runner is not None else ""
        print(f"Olmo chat · {info.name} · {info_context(engine)}{with_tools} · /help lists the commands")
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
                job = doc_turns.regenerate()
            elif command == "/reproduce":
                redo = _reproduce(engine, conv, last, runner)
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
                job = doc_turns.edit(int(parts[1]), text)
            elif command == "/continue":
                job = doc_turns.send(CONTINUE, overflow="drop_oldest", documents=False)
            elif command:
                print(f"unknown command {command}; {HELP}")
                continue
            else:
                job = doc_turns.send(line)
            wait_turn(engine, job, consent)
            used = doc_turns.finished(printer.of(job))
            if used:
                print(describe(used))
            last = next((e for e in printer.of(job) if isinstance(e, TurnFinished)), last)
        return 0
    finally:
        engine.shutdown()
        if docs is not None:
            docs.close()


def info_context(engine: Engine) -> str:
    return f"{engine.context_tokens:,}-token context" if engine.context_tokens else "full context"


SCRIPT_MAX_BYTES = 16 * 1024**2
_ACTION_KEYS = {
    "send": {"send", "sampling"},
    "regenerate": {"regenerate", "sampling"},
    "reproduce": {"reproduce"},
    "edit": {"edit", "text", "sampling"},
}


def read_script(path: Path) -> list[dict[str, Any]]:
    """A ``--script`` file, bounded (size, nesting) and checked action by action; ``ValueError`` names the problem.

    Actions: ``{"send": TEXT}``, ``{"regenerate": true}``, ``{"reproduce": true}``, ``{"edit": N, "text": TEXT}``,
    each but ``reproduce`` with an optional ``"sampling": {...}`` object. Unknown keys are refused (a typo must not
    pass silently).
    """
    try:
        actions = read_json(path, max_bytes=SCRIPT_MAX_BYTES)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the script ({e.strerror or e})") from None
    if not isinstance(actions, list):
        raise ValueError(f"{path}: expected a JSON list of actions")
    for i, action in enumerate(actions):
        where = f"{path}: action {i}"
        if not isinstance(action, dict):
            raise ValueError(f"{where} is not an object")
        kinds = [k for k in _ACTION_KEYS if k in action]
        if len(kinds) != 1:
            raise ValueError(f"{where} needs exactly one of 'send', 'regenerate', 'reproduce' or 'edit'")
        unknown = sorted(set(action) - _ACTION_KEYS[kinds[0]])
        if unknown:
            raise ValueError(f"{where}: unknown key {unknown[0]!r}")
        if "send" in action and not isinstance(action["send"], str):
            raise ValueError(f"{where}: 'send' must be text")
        for flag in ("regenerate", "reproduce"):
            if flag in action and action[flag] is not True:
                raise ValueError(f"{where}: '{flag}' must be true")
        if "edit" in action:
            turn = action["edit"]
            if isinstance(turn, bool) or not isinstance(turn, int) or turn < 0:
                raise ValueError(f"{where}: 'edit' must be a user turn number (0, 1, ...)")
            if not isinstance(action.get("text"), str):
                raise ValueError(f"{where}: 'edit' needs the new 'text'")
        sampling = action.get("sampling")
        if sampling is not None and not isinstance(sampling, dict):
            raise ValueError(f"{where}: 'sampling' must be an object")
        if sampling and any(isinstance(v, float) and not math.isfinite(v) for v in sampling.values()):
            raise ValueError(f"{where}: 'sampling' must hold finite numbers (no NaN or Infinity)")
    return actions


def _run_script(
    doc_turns: DocumentTurns,
    printer: _Printer,
    actions: list[dict[str, Any]],
    as_json: bool,
    consent: TerminalConsent | None = None,
) -> int:
    status = 0
    engine, conv = doc_turns.engine, doc_turns.conv
    last: TurnFinished | None = None
    for i, action in enumerate(actions):
        sampling = action.get("sampling")
        if "send" in action:
            job = doc_turns.send(action["send"], sampling=sampling)
        elif "regenerate" in action:
            job = doc_turns.regenerate(sampling=sampling)
        elif "reproduce" in action:
            redo = _reproduce(engine, conv, last, doc_turns.tools)
            if redo is None:
                print(f"olmo3: action {i}: no reply to reproduce yet", file=sys.stderr)
                return 2
            job = redo
        else:
            job = doc_turns.edit(action["edit"], action["text"], sampling=sampling)
        wait_turn(engine, job, consent)
        last = next((e for e in printer.of(job) if isinstance(e, TurnFinished)), last)
        result = _turn_json(action, printer.of(job))
        result["attachments"] = doc_turns.finished(printer.of(job))
        if "error" in result:
            status = 1
        if as_json:
            print(json.dumps(result), flush=True)
    return status
