"""The bad-input catalogue: every way a person can hand Tally something it cannot use, refused
whole before any call.

One table, one check. A CLI case must exit 2 with exactly one line on stderr (``tally: ...``)
and no traceback; a library case must raise a Tally ``InputError`` whose message is one line.
Either way the store (a fresh SQLite file per case) holds after the case exactly what it held
before: no run, batch, item, call or review half-written. ``expect`` is a piece of the message,
so each case also says *why* it was refused.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from typer.testing import CliRunner

from core import api
from core.cli import app
from core.errors import InputError, TallyError
from core.inputs import read_columns, read_items
from core.panel import Panel
from core.policy import Policy, TieBreak
from core.spec import RunSpec
from core.store import BatchItem, Store
from core.store.lease import BatchOwner
from core.task import Task

TABLES = ("batch", "batch_item", "run", "call", "review", "sweep", "curve")
SIM = ("-m", "sim:sim-strong")
LABELS = ("--labels", "a,b")
BASE = (*SIM, *LABELS)


@dataclass(frozen=True)
class Case:
    id: str
    expect: str
    args: tuple[str, ...] = ()
    call: Callable[[Path, str], object] | None = None
    files: Mapping[str, str | bytes] = field(default_factory=dict)
    env: Mapping[str, str | None] = field(default_factory=dict)
    stdin: str | None = None
    seed: Callable[[Store], None] | None = None


def cli(
    id: str,
    expect: str,
    *args: str,
    files: Mapping[str, str | bytes] | None = None,
    env: Mapping[str, str | None] | None = None,
    stdin: str | None = None,
    seed: Callable[[Store], None] | None = None,
) -> Case:
    return Case(id, expect, args=args, files=files or {}, env=env or {}, stdin=stdin, seed=seed)


def lib(
    id: str,
    expect: str,
    call: Callable[[Path, str], object],
    files: Mapping[str, str | bytes] | None = None,
    seed: Callable[[Store], None] | None = None,
) -> Case:
    return Case(id, expect, call=call, files=files or {}, seed=seed)


def batch_file(id: str, name: str, content: str | bytes, expect: str, *extra: str) -> Case:
    """A ``tally batch`` over a bad input file."""
    return cli(id, expect, "batch", "{d}/" + name, *BASE, *extra, files={name: content})


def run_with(id: str, expect: str, *extra: str, **kwargs: Any) -> Case:
    """A ``tally run`` with the sim panel and two labels, plus ``extra``."""
    return cli(id, expect, "run", "the page renders", *BASE, *extra, **kwargs)


def with_config(id: str, toml: str | bytes, expect: str) -> Case:
    return run_with(id, expect, "--config", "{d}/tally.toml", files={"tally.toml": toml})


# -- seeds: what a case finds in the store -------------------------------------------------------

TASK = Task.for_labels(["a", "b"])
PANEL = Panel.build(["sim:sim-strong"])
POLICY = api.build_policy()
SPEC = RunSpec(task=TASK, panel=PANEL, policy=POLICY)


def seed_batch(status: str, *, items: int = 2) -> Callable[[Store], None]:
    def seed(store: Store) -> None:
        store.create_batch(
            name="seeded",
            source="cli",
            spec=SPEC,
            concurrency=4,
            items=[(i, str(i + 1), f"input {i}", None) for i in range(items)],
            total=items or 3,
            batch_id="b" * 16,
        )
        store.set_batch_status("b" * 16, status)

    return seed


def seed_claimed(store: Store) -> None:
    """A batch running on another host whose lease lasts another hour."""
    seed_batch("running")(store)
    owner = BatchOwner("elsewhere.invalid", 4242, "t-elsewhere", time.time())
    store.claim_batch("b" * 16, owner, 3600.0)


def seed_run(store: Store) -> None:
    from core.result import Decision, DecisionStatus, RunResult

    store.save_run(
        RunResult(
            run_id="r" * 16,
            input="x",
            spec=SPEC,
            decision=Decision(status=DecisionStatus.DECIDED, label="a"),
            votes={"a": 1},
            calls=[],
            cost_usd=0.0,
            latency_ms=1.0,
        ),
        source="cli",
    )


# -- library calls -------------------------------------------------------------------------------


def vote(url: str, text: str = "the page renders", **kwargs: Any) -> object:
    kwargs.setdefault("labels", ["a", "b"])
    return api.vote_sync(text, database_url=url, **kwargs)


def in_running_loop(url: str) -> object:
    async def inside() -> object:
        return api.vote_sync("the page renders", labels=["a", "b"], database_url=url)

    return asyncio.run(inside())


def tally_batch(url: str, items: list[BatchItem], **kwargs: Any) -> object:
    async def main() -> object:
        async with api.Tally.open(database_url=url) as tally:
            spec = RunSpec(
                task=kwargs.pop("task", TASK),
                panel=tally.panel(["sim:sim-strong"]),
                policy=kwargs.pop("policy", POLICY),
            )
            return await tally.run_batch(items, spec, **kwargs)

    import anyio

    return anyio.run(main)


def tally_open(url: str, **kwargs: Any) -> object:
    async def main() -> None:
        async with api.Tally.open(database_url=url, **kwargs):
            pass

    import anyio

    return anyio.run(main)


def tally_revote(url: str, policy: Any) -> object:
    """A re-vote of the seeded run (N=1) under ``policy``."""

    async def main() -> object:
        async with api.Tally.open(database_url=url) as tally:
            return await tally.revote(["r" * 16], policy)

    import anyio

    return anyio.run(main)


ITEMS = [BatchItem(index=0, item_id="1", text="the page renders", gold=None)]


# -- the catalogue -------------------------------------------------------------------------------

CASES: list[Case] = [
    # input files, CSV
    batch_file("csv-unclosed-quote-at-end", "q.csv", 'text\nfine\n"never closed\nmore\n', "line 3"),
    batch_file(
        "csv-unclosed-quote-runs-into-a-later-one",
        "q2.csv",
        'text,label\n"open,a\nnext,b\n"third",a\n',
        "line 2",
    ),
    batch_file("csv-row-with-too-few-cells", "few.csv", "text,label\none,a\ntwo\n", "line 3"),
    batch_file("csv-row-with-too-many-cells", "many.csv", "text\none\ntwo,three\n", "line 3"),
    batch_file(
        "csv-duplicate-header", "dup.csv", "text,label,text\na,b,c\n", "'text' appears twice"
    ),
    batch_file("csv-empty", "empty.csv", "", "the file is empty"),
    batch_file("csv-blank-lines-only", "blank.csv", "\n \n\t\n", "the file is empty"),
    batch_file("csv-header-only", "head.csv", "text,label\n", "header but no rows"),
    batch_file("csv-not-utf8", "latin.csv", "text\ncafé\n".encode("latin-1"), "not UTF-8"),
    batch_file("csv-no-text-column", "cols.csv", "body\nhello\n", "no column 'text'"),
    batch_file(
        "csv-no-gold-column", "g.csv", "text\nhello\n", "no column 'gold'", "--gold-column", "gold"
    ),
    batch_file(
        "csv-no-id-column", "i.csv", "text\nhello\n", "no column 'key'", "--id-column", "key"
    ),
    batch_file("csv-empty-text-cell", "gap.csv", "text,label\nfirst,a\n ,b\n", "line 3"),
    batch_file(
        "csv-duplicate-id",
        "ids.csv",
        "id,text\nx,one\nx,two\n",
        "appears twice",
        "--id-column",
        "id",
    ),
    batch_file("csv-huge-cell", "huge.csv", "x" * 200_000 + "\n", "field larger"),
    batch_file("csv-quote-inside-a-quoted-cell", "bad.csv", 'text\n"a"b",c\nfine\n', "line 2"),
    cli("batch-file-missing", "no such file", "batch", "{d}/absent.csv", *BASE),
    cli("batch-file-is-a-directory", "no such file", "batch", "{d}", *BASE),
    # input files, JSONL
    batch_file("jsonl-not-json", "b.jsonl", '{"text": "ok"}\n{"text": "cut\n', "line 2"),
    batch_file("jsonl-array-line", "a.jsonl", '{"text": "ok"}\n[1, 2]\n', "line 2"),
    batch_file("jsonl-string-line", "s.jsonl", '"just text"\n', "expected a JSON object"),
    batch_file(
        "jsonl-duplicate-key", "k.jsonl", '{"text": "a", "text": "b"}\n', "'text' appears twice"
    ),
    batch_file("jsonl-text-is-an-object", "o.jsonl", '{"text": {"a": 1}}\n', "line 1"),
    batch_file("jsonl-text-is-a-list", "l.jsonl", '{"text": "ok"}\n{"text": [1]}\n', "line 2"),
    batch_file("jsonl-nan", "n.jsonl", '{"text": "ok", "gold": NaN}\n', "NaN"),
    batch_file("jsonl-text-null", "null.jsonl", '{"text": null}\n', "line 1"),
    batch_file("jsonl-text-missing", "miss.jsonl", '{"text": "a"}\n{"body": "b"}\n', "line 2"),
    batch_file("jsonl-blank", "blank.jsonl", "\n\n", "the file is empty"),
    batch_file(
        "jsonl-id-is-an-object",
        "id.jsonl",
        '{"text": "a", "id": {"n": 1}}\n',
        "line 1",
        "--id-column",
        "id",
    ),
    lib(
        "read-items-unclosed-quote",
        "line 2",
        lambda d, u: read_items(b'text\n"open\nx\n', name="up.csv"),
    ),
    lib(
        "read-columns-duplicate-header",
        "'a' appears twice",
        lambda d, u: read_columns(b"a,b,a\n1,2,3\n", name="up.csv"),
    ),
    lib(
        "read-columns-jsonl-duplicate-key",
        "twice",
        lambda d, u: read_columns(b'{"x": 1, "x": 2}\n', name="up.jsonl"),
    ),
    # tally.toml
    with_config("config-not-toml", "x = = 1\n", "not valid TOML"),
    with_config("config-unknown-table", "[frobnicate]\nx = 1\n", "unknown key"),
    with_config(
        "config-provider-unknown-kind",
        '[providers.p]\nkind = "grpc"\nbase_url = "http://x"\n',
        "providers.p.kind",
    ),
    with_config(
        "config-provider-url-not-http",
        '[providers.p]\nkind = "openai"\nbase_url = "ftp://x"\n',
        "http://",
    ),
    with_config(
        "config-literal-api-key",
        '[providers.p]\nkind = "openai"\nbase_url = "http://x"\napi_key = "sk-1"\n',
        "api_key_env",
    ),
    with_config(
        "config-api-key-env-holds-a-key",
        '[providers.p]\nkind = "openai"\nbase_url = "http://x"\napi_key_env = "sk-1 2"\n',
        "NAME of an environment variable",
    ),
    with_config(
        "config-authorization-header",
        '[providers.p]\nkind = "openai"\nbase_url = "http://x"\n'
        '[providers.p.headers]\nAuthorization = "Bearer x"\n',
        "api_key_env",
    ),
    with_config(
        "config-provider-max-concurrency-0",
        '[providers.p]\nkind = "openai"\nbase_url = "http://x"\nmax_concurrency = 0\n',
        "at least 1",
    ),
    with_config("config-provider-bad-name", '[providers."a b"]\nkind = "openai"\n', "provider"),
    with_config("config-providers-not-a-table", "providers = 3\n", "must be a table"),
    with_config("config-concurrency-0", "[defaults]\nconcurrency = 0\n", "defaults.concurrency"),
    with_config("config-concurrency-huge", "[defaults]\nconcurrency = 5000\n", "at most 4096"),
    with_config("config-n-too-big", "[defaults]\nn = 100\n", "defaults.n"),
    with_config("config-n-zero", "[defaults]\nn = 0\n", "defaults.n"),
    with_config("config-call-timeout-0", "[defaults]\ncall_timeout_s = 0\n", "call_timeout_s"),
    with_config("config-max-attempts-0", "[defaults]\nmax_attempts = 0\n", "max_attempts"),
    with_config("config-string-for-number", '[defaults]\nconcurrency = "8"\n', "integer"),
    with_config(
        "config-negative-price",
        '[prices."sim:x"]\ninput_per_mtok = -1\noutput_per_mtok = 1\n',
        "at least 0",
    ),
    with_config("config-not-utf8", "# caf\xe9\n".encode("latin-1"), "UTF-8"),
    run_with("config-missing", "file not found", "--config", "{d}/absent.toml"),
    run_with("config-is-a-directory", "is a directory", "--config", "{d}"),
    run_with(
        "config-from-env-missing", "file not found", env={"TALLY_CONFIG": "/nonexistent.toml"}
    ),
    # environment
    run_with(
        "env-sim-time-scale-not-a-number",
        "TALLY_SIM_TIME_SCALE",
        env={"TALLY_SIM_TIME_SCALE": "abc"},
    ),
    run_with(
        "env-sim-time-scale-negative", "TALLY_SIM_TIME_SCALE", env={"TALLY_SIM_TIME_SCALE": "-1"}
    ),
    run_with("env-sim-seed-not-a-number", "TALLY_SIM_SEED", env={"TALLY_SIM_SEED": "x"}),
    run_with("env-trust-env-not-a-bool", "TALLY_TRUST_ENV", env={"TALLY_TRUST_ENV": "maybe"}),
    run_with(
        "env-database-url-unknown-dialect",
        "unsupported database",
        env={"TALLY_DATABASE_URL": "mysql://h/db"},
    ),
    run_with(
        "env-database-url-not-a-url",
        "not a database URL",
        env={"TALLY_DATABASE_URL": "::nonsense::"},
    ),
    cli(
        "env-api-key-not-ascii",
        "OPENAI_API_KEY",
        "run",
        "x",
        "-m",
        "openai:gpt-4.1-mini",
        *LABELS,
        env={"OPENAI_API_KEY": "sk-caf\u00e9"},
    ),
    cli(
        "env-api-key-missing",
        "OPENAI_API_KEY",
        "run",
        "x",
        "-m",
        "openai:gpt-4.1-mini",
        *LABELS,
        env={"OPENAI_API_KEY": None},
    ),
    run_with("env-batch-lease-zero", "TALLY_BATCH_LEASE_S", env={"TALLY_BATCH_LEASE_S": "0"}),
    # run: the input and the panel
    cli("run-no-model", "choose at least one model", "run", "x", *LABELS),
    cli("run-empty-input", "empty", "run", "   ", *BASE),
    cli("run-empty-stdin", "empty", "run", "-", *BASE, stdin=""),
    run_with("run-model-without-provider", "provider:model", "-m", "gpt"),
    run_with("run-unknown-provider", "nope", "-m", "nope:model"),
    run_with("run-bad-weight", "bad weight", "-m", "sim:sim-mid*x"),
    run_with("run-negative-weight", "weight must be positive", "-m", "sim:sim-mid*-1"),
    run_with("run-n-zero", "N must be at least 1", "-n", "0"),
    run_with("run-n-above-limit", "limit of 64", "-n", "65"),
    run_with("run-temperature-too-high", "--temperature", "--temperature", "3"),
    run_with("run-temperature-negative", "--temperature", "--temperature", "-0.5"),
    run_with("run-temperature-nan", "--temperature", "--temperature", "nan"),
    # run: the task
    cli("run-no-labels-no-format", "labels", "run", "x", *SIM),
    cli("run-label-format-without-labels", "--labels", "run", "x", *SIM, "--format", "label"),
    cli("run-unknown-format", "format", "run", "x", *SIM, "--format", "prose"),
    cli("run-labels-with-number", "--labels only applies", "run", "x", *BASE, "--format", "number"),
    cli("run-one-label", "two distinct labels", "run", "x", *SIM, "--labels", "a"),
    cli("run-labels-only-commas", "labels", "run", "x", *SIM, "--labels", ",,"),
    cli("run-same-label-twice", "same answer", "run", "x", *SIM, "--labels", "Yes,yes"),
    cli("run-json-without-schema", "schema", "run", "x", *SIM, "--format", "json"),
    run_with("run-synonym-without-equals", "SYNONYM=LABEL", "--synonym", "broken"),
    run_with("run-synonym-to-unknown-label", "not a label", "--synonym", "broken=c"),
    run_with("run-conservative-unknown-label", "not a label", "--conservative", "c"),
    run_with("run-conservative-twice", "twice", "--conservative", "a,a"),
    run_with("run-template-without-input", "{input}", "--template", "Classify this."),
    run_with("run-template-unknown-placeholder", "{inputs}", "--template", "{inputs}: {input}"),
    run_with("run-template-named-placeholder", "{name}", "--template", "Dear {name}, {input}"),
    run_with("run-template-positional-placeholder", "{0}", "--template", "{0} {input}"),
    run_with("run-format-text-majority", "free text", "--format", "text", "--labels", ""),
    cli(
        "run-schema-not-json",
        "not valid JSON",
        "run",
        "x",
        *SIM,
        "--format",
        "json",
        "--schema",
        "{x",
    ),
    cli(
        "run-schema-not-an-object",
        "is an object",
        "run",
        "x",
        *SIM,
        "--format",
        "json",
        "--schema",
        "[1]",
    ),
    cli(
        "run-schema-file-missing",
        "cannot be read",
        "run",
        "x",
        *SIM,
        "--format",
        "json",
        "--schema",
        "@{d}/none.json",
    ),
    cli(
        "run-schema-invalid-schema",
        "invalid JSON schema",
        "run",
        "x",
        *SIM,
        "--format",
        "json",
        "--schema",
        '{"type": 5}',
    ),
    run_with("run-schema-for-labels", "only applies to the json format", "--schema", "{}"),
    cli(
        "run-tolerance-for-yesno",
        "only applies to the number format",
        "run",
        "x",
        *SIM,
        "--format",
        "yesno",
        "--tolerance",
        "1",
    ),
    cli(
        "run-tolerance-negative",
        "tolerance",
        "run",
        "x",
        *SIM,
        "--format",
        "number",
        "--tolerance",
        "-1",
    ),
    run_with(
        "run-task-file-with-labels",
        "--task describes the whole task",
        "--task",
        "{d}/t.toml",
        files={"t.toml": 'template = "{input}"\n[format]\nkind = "yesno"\n'},
    ),
    cli("run-task-file-missing", "cannot be read", "run", "x", *SIM, "--task", "{d}/none.toml"),
    cli(
        "run-task-file-not-toml",
        "not valid TOML",
        "run",
        "x",
        *SIM,
        "--task",
        "{d}/t.toml",
        files={"t.toml": "= ="},
    ),
    cli(
        "run-task-file-unknown-key",
        "bad task",
        "run",
        "x",
        *SIM,
        "--task",
        "{d}/t.toml",
        files={"t.toml": 'colour = "red"\n[format]\nkind = "yesno"\n'},
    ),
    cli(
        "run-task-file-bad-placeholder",
        "unknown placeholder",
        "run",
        "x",
        *SIM,
        "--task",
        "{d}/t.toml",
        files={"t.toml": 'template = "{who}: {input}"\n[format]\nkind = "yesno"\n'},
    ),
    # run: the policy
    run_with("run-unknown-aggregation", "unknown aggregation", "--aggregate", "plurality"),
    run_with("run-at-least-without-number", "at-least needs a number", "--aggregate", "at-least:x"),
    run_with("run-at-least-zero", "k of 1 or more", "--aggregate", "at-least:0"),
    run_with("run-majority-with-argument", "takes no argument", "--aggregate", "majority:2"),
    run_with("run-unknown-tie-break", "unknown tie-break", "--tie-break", "coin"),
    run_with("run-escalate-without-model", "escalate needs a model", "--tie-break", "escalate"),
    run_with("run-escalate-unknown-provider", "nope", "--tie-break", "escalate:nope:model"),
    run_with("run-expand-not-a-number", "expand takes a number", "--tie-break", "expand:x"),
    run_with("run-expand-zero", "positive number", "--tie-break", "expand:0"),
    run_with(
        "run-accept-bad-regex",
        "bad acceptance regex",
        "--aggregate",
        "fastest",
        "--accept",
        "regex:(",
    ),
    run_with(
        "run-accept-no-labels",
        "at least one label",
        "--aggregate",
        "fastest",
        "--accept",
        "labels:",
    ),
    run_with(
        "run-accept-bad-schema", "not valid JSON", "--aggregate", "fastest", "--accept", "schema:{x"
    ),
    run_with(
        "run-accept-unknown-kind",
        "unknown acceptance rule",
        "--aggregate",
        "fastest",
        "--accept",
        "len:3",
    ),
    run_with("run-min-valid-negative", "cannot be negative", "--min-valid", "-1"),
    # run: policies no panel of this size can satisfy, refused before any call
    run_with("run-k-above-n", "the panel has 3", "--aggregate", "at-least:4", "-n", "3"),
    run_with("run-k-above-one-model", "the panel has 1", "--aggregate", "at-least:2"),
    run_with("run-quorum-above-n", "a panel of 5", "--min-valid", "6", "-n", "5"),
    run_with(
        "run-strict-quorum-above-n",
        "a panel of 2",
        "--aggregate",
        "strict",
        "-n",
        "2",
        "--min-valid",
        "3",
    ),
    run_with(
        "run-conservative-without-order",
        "needs a conservative order",
        "--tie-break",
        "conservative",
    ),
    run_with(
        "run-conservative-late-in-the-chain-without-order",
        "needs a conservative order",
        "--tie-break",
        "expand:2,conservative",
    ),
    # usage errors from the command line parser itself
    cli("usage-unknown-command", "frobnicate", "frobnicate"),
    cli("usage-unknown-option", "--frobnicate", "run", "x", "--frobnicate"),
    cli("usage-missing-argument", "'text'", "run"),
    cli("usage-n-not-a-number", "-n", "run", "x", *BASE, "-n", "five"),
    cli("usage-option-without-value", "--model", "run", "x", "--model"),
    cli(
        "usage-temperature-not-a-number", "--temperature", "run", "x", *BASE, "--temperature", "hot"
    ),
    cli(
        "usage-concurrency-not-a-number", "--concurrency", "batch", "f.csv", "--concurrency", "many"
    ),
    cli("usage-db-without-subcommand-arg", "frob", "db", "frob"),
    # batch
    cli("batch-no-file-no-resume", "CSV or JSONL FILE", "batch", *BASE),
    cli(
        "batch-file-and-resume",
        "not both",
        "batch",
        "{d}/in.csv",
        "--resume",
        "abc",
        files={"in.csv": "text\nx\n"},
    ),
    cli("batch-resume-unknown", "no batch 'nope'", "batch", "--resume", "nope"),
    cli(
        "batch-resume-done",
        "already done",
        "batch",
        "--resume",
        "b" * 16,
        seed=seed_batch("done"),
    ),
    cli(
        "batch-resume-running-elsewhere",
        "running in another process (pid 4242 on elsewhere.invalid",
        "batch",
        "--resume",
        "b" * 16,
        seed=seed_claimed,
    ),
    cli(
        "batch-resume-without-items",
        "no stored inputs",
        "batch",
        "--resume",
        "b" * 16,
        seed=seed_batch("interrupted", items=0),
    ),
    cli(
        "batch-no-model",
        "choose at least one model",
        "batch",
        "{d}/in.csv",
        *LABELS,
        files={"in.csv": "text\nx\n"},
    ),
    batch_file(
        "batch-format-text",
        "t.csv",
        "text\nhello\n",
        "free text",
        "--format",
        "text",
        "--labels",
        "",
    ),
    batch_file(
        "batch-concurrency-zero", "c.csv", "text\nx\n", "--concurrency", "--concurrency", "0"
    ),
    batch_file(
        "batch-concurrency-negative", "c.csv", "text\nx\n", "--concurrency", "--concurrency", "-3"
    ),
    batch_file(
        "batch-concurrency-above-cap", "c.csv", "text\nx\n", "4096", "--concurrency", "5000"
    ),
    batch_file(
        "batch-concurrency-far-above-cap",
        "c.csv",
        "text\nx\n",
        "4096",
        "--concurrency",
        "1000000",
    ),
    batch_file(
        "batch-k-above-n",
        "c.csv",
        "text\nx\n",
        "the panel has 3",
        "--aggregate",
        "at-least:4",
        "-n",
        "3",
    ),
    batch_file(
        "batch-quorum-above-n", "c.csv", "text\nx\n", "a panel of 3", "--min-valid", "4", "-n", "3"
    ),
    batch_file(
        "batch-conservative-without-order",
        "c.csv",
        "text\nx\n",
        "needs a conservative order",
        "--tie-break",
        "conservative",
    ),
    batch_file(
        "batch-template-unknown-placeholder",
        "p.csv",
        "text\nx\n",
        "{item}",
        "--template",
        "{item}: {input}",
    ),
    batch_file("batch-unknown-provider", "u.csv", "text\nx\n", "nope", "-m", "nope:x"),
    batch_file(
        "batch-bad-aggregation", "a.csv", "text\nx\n", "unknown aggregation", "--aggregate", "most"
    ),
    batch_file(
        "batch-escalate-unknown-provider",
        "e.csv",
        "text\nx\n",
        "nope",
        "--tie-break",
        "escalate:nope:m",
    ),
    batch_file(
        "batch-text-column-missing",
        "tc.csv",
        "body\nx\n",
        "no column 'prompt'",
        "--text-column",
        "prompt",
    ),
    batch_file(
        "batch-gold-no-label-reads",
        "g.csv",
        "text,label\nx,zzz\n",
        "gold 'zzz'",
        "--gold-column",
        "label",
    ),
    cli(
        "batch-gold-not-a-number",
        "gold",
        "batch",
        "{d}/g.jsonl",
        *SIM,
        "--format",
        "number",
        "--gold-column",
        "gold",
        files={"g.jsonl": '{"text": "2+2", "gold": "four"}\n'},
    ),
    cli(
        "batch-gold-not-the-schema",
        "gold",
        "batch",
        "{d}/g.jsonl",
        *SIM,
        "--format",
        "json",
        "--schema",
        '{"type": "object", "required": ["n"]}',
        "--gold-column",
        "gold",
        files={"g.jsonl": '{"text": "order", "gold": {"m": 1}}\n'},
    ),
    with_config(
        "config-attempt-timeout-zero", "[defaults]\nattempt_timeout_s = 0\n", "attempt_timeout_s"
    ),
    # revote
    cli("revote-nothing", "RUN_ID", "revote"),
    cli("revote-both", "RUN_ID", "revote", "abc", "--batch", "def"),
    cli("revote-unknown-run", "no run 'nope'", "revote", "nope"),
    cli("revote-unknown-batch", "no batch 'nope'", "revote", "--batch", "nope"),
    cli(
        "revote-bad-aggregation",
        "unknown aggregation",
        "revote",
        "r" * 16,
        "--aggregate",
        "x",
        seed=seed_run,
    ),
    cli(
        "revote-bad-tie-break",
        "unknown tie-break",
        "revote",
        "r" * 16,
        "--tie-break",
        "flip",
        seed=seed_run,
    ),
    cli(
        "revote-min-valid-negative",
        "cannot be negative",
        "revote",
        "r" * 16,
        "--min-valid",
        "-2",
        seed=seed_run,
    ),
    cli(
        "revote-k-above-n",
        "the panel has 1",
        "revote",
        "r" * 16,
        "--aggregate",
        "at-least:2",
        seed=seed_run,
    ),
    cli(
        "revote-quorum-above-n",
        "a panel of 1",
        "revote",
        "r" * 16,
        "--min-valid",
        "2",
        seed=seed_run,
    ),
    cli(
        "revote-conservative-without-order",
        "needs a conservative order",
        "revote",
        "r" * 16,
        "--tie-break",
        "conservative",
        seed=seed_run,
    ),
    # export
    cli("export-unknown-kind", "runs, calls or reviews", "export", "votes", "{d}/out.csv"),
    cli(
        "export-reviews-of-a-batch",
        "reviews export the whole trail",
        "export",
        "reviews",
        "{d}/out.csv",
        "--batch",
        "b1",
    ),
    cli("export-unknown-suffix", ".csv, .jsonl or .parquet", "export", "runs", "{d}/out.xlsx"),
    cli(
        "export-unknown-batch",
        "no batch 'nope'",
        "export",
        "runs",
        "{d}/out.csv",
        "--batch",
        "nope",
    ),
    cli(
        "export-parent-is-a-file",
        "not a folder",
        "export",
        "runs",
        "{d}/in.csv/out.csv",
        files={"in.csv": "text\nx\n"},
    ),
    cli(
        "export-into-a-directory",
        "is a folder",
        "export",
        "calls",
        "{d}/sub.csv",
        files={"sub.csv/keep": ""},
    ),
    cli(
        "export-bad-database-url",
        "unsupported database",
        "export",
        "runs",
        "{d}/o.csv",
        "--database-url",
        "mysql://h/db",
    ),
    # sweep
    cli("sweep-levels-not-numbers", "--levels", "sweep", *SIM, "--levels", "a,b"),
    cli("sweep-one-level", "two concurrency levels", "sweep", *SIM, "--levels", "4"),
    cli("sweep-level-zero", "concurrency levels", "sweep", *SIM, "--levels", "0,2"),
    cli("sweep-calls-per-level-zero", "calls per level", "sweep", *SIM, "--calls-per-level", "0"),
    cli("sweep-bad-model", "provider:model", "sweep", "-m", "strong"),
    cli("sweep-unknown-provider", "nope", "sweep", "-m", "nope:x"),
    cli("sweep-save-ceiling-without-config", "tally.toml", "sweep", *SIM, "--save-ceiling"),
    # curve
    cli("curve-unknown-set", "unknown labelled set", "curve", "--set", "nope"),
    cli("curve-k-zero", "K must be at least 1", "curve", "-k", "0"),
    cli("curve-items-zero", "items must be at least 1", "curve", "--items", "0"),
    cli("curve-n-zero", "positive whole number", "curve", "--n", "0"),
    cli("curve-n-not-numbers", "--n", "curve", "--n", "one,three"),
    cli("curve-bad-panel", "provider:model", "curve", "--panel", "strong,weak"),
    cli("curve-unknown-model-provider", "nope", "curve", "-m", "nope:x", "--items", "2"),
    cli("curve-concurrency-zero", "--concurrency", "curve", "--concurrency", "0", "--items", "2"),
    cli(
        "curve-file-without-gold",
        "no column 'label'",
        "curve",
        "--set",
        "{d}/set.csv",
        "--labels",
        "a,b",
        files={"set.csv": "text\nx\n"},
    ),
    cli(
        "curve-file-unclosed-quote",
        "line 2",
        "curve",
        "--set",
        "{d}/set.csv",
        "--labels",
        "a,b",
        files={"set.csv": 'text,label\n"x,a\ny,b\n'},
    ),
    # sim-server
    cli("sim-capacity-zero", "--capacity", "sim-server", "--capacity", "0"),
    cli("sim-contention-zero", "--contention", "sim-server", "--contention", "0"),
    cli(
        "sim-capacity-and-contention",
        "not both",
        "sim-server",
        "--capacity",
        "2",
        "--contention",
        "2",
    ),
    cli("sim-time-scale-negative", "--time-scale", "sim-server", "--time-scale", "-1"),
    cli("sim-time-scale-nan", "--time-scale", "sim-server", "--time-scale", "nan"),
    cli("sim-port-too-high", "--port", "sim-server", "--port", "99999"),
    cli("sim-port-negative", "--port", "sim-server", "--port", "-1"),
    cli("sim-fault-malformed", "fault", "sim-server", "--fault", "sometimes"),
    cli("sim-fault-rate-above-one", "between 0 and 1", "sim-server", "--fault", "429:2"),
    cli("sim-port-in-use", "in use", "sim-server", "--port", "{busy_port}"),
    # dashboard and the store
    cli("dashboard-port-too-high", "--port", "dashboard", "--port", "70000"),
    cli("dashboard-sim-port-too-high", "--sim-port", "dashboard", "--sim-port", "70000"),
    cli(
        "db-upgrade-bad-url",
        "unsupported database",
        "db",
        "upgrade",
        "--database-url",
        "mysql://h/db",
    ),
    cli("db-upgrade-not-a-url", "not a database URL", "db", "upgrade", "--database-url", "::x::"),
    # the library
    lib("lib-labels-as-a-string", "labels", lambda d, u: vote(u, labels="ab")),
    lib("lib-models-as-a-string", "models", lambda d, u: vote(u, models="sim:sim-strong")),
    lib("lib-vote-sync-in-a-running-loop", "await vote", lambda d, u: in_running_loop(u)),
    lib("lib-empty-input", "empty", lambda d, u: vote(u, text=" ")),
    lib("lib-n-zero", "N must be at least 1", lambda d, u: vote(u, n=0)),
    lib("lib-no-models", "at least one model", lambda d, u: vote(u, models=[])),
    lib("lib-unknown-aggregation", "unknown aggregation", lambda d, u: vote(u, aggregate="most")),
    lib("lib-text-majority", "free text", lambda d, u: vote(u, labels=None, task=Task.for_text())),
    # value objects built by hand: a typed error of one line, not pydantic's report
    lib(
        "lib-policy-unknown-aggregation",
        "bad policy: aggregation",
        lambda d, u: Policy(aggregation="most"),
    ),  # type: ignore[arg-type]
    lib(
        "lib-policy-bad-quorum",
        "bad quorum: min_valid",
        lambda d, u: Policy(quorum={"min_valid": "x"}),
    ),  # type: ignore[arg-type]
    lib("lib-policy-unknown-branch", "bad tie-break: kind", lambda d, u: TieBreak(kind="coin")),  # type: ignore[arg-type]
    lib(
        "lib-policy-posterior-not-a-map",
        "bad policy: posterior",
        lambda d, u: Policy(posterior=["a"]),
    ),  # type: ignore[arg-type]
    lib(
        "lib-task-template-not-text",
        "bad task: template",
        lambda d, u: Task(template=3, format=Task.for_text().format),
    ),  # type: ignore[arg-type]
    lib("lib-task-no-format", "bad task: format", lambda d, u: Task()),  # type: ignore[call-arg]
    lib(
        "lib-build-task-labels-as-a-string",
        "labels",
        lambda d, u: api.build_task(labels="regression"),
    ),
    lib(
        "lib-build-task-conservative-as-a-string",
        "conservative",
        lambda d, u: api.build_task(labels=["a", "b"], conservative="ab"),
    ),
    lib(
        "lib-build-policy-accept-as-a-string",
        "accept",
        lambda d, u: api.build_policy(aggregate="fastest", accept="labels:a"),
    ),
    lib(
        "lib-task-for-labels-string",
        "labels",
        lambda d, u: Task.for_labels("ab"),  # type: ignore[arg-type]
    ),
    lib("lib-task-template-without-input", "{input}", lambda d, u: Task.for_yesno(template="hi")),
    lib(
        "lib-task-unknown-placeholder",
        "{text}",
        lambda d, u: Task.for_yesno(template="{text}: {input}"),
    ),
    lib("lib-task-for-json-not-a-schema", "schema", lambda d, u: Task.for_json(schema="x")),  # type: ignore[arg-type]
    lib("lib-task-from-dict-unknown-key", "bad task", lambda d, u: Task.from_dict({"x": 1})),
    lib("lib-panel-models-as-a-string", "models", lambda d, u: Panel.build("sim:a")),  # type: ignore[arg-type]
    lib("lib-open-concurrency-zero", "concurrency", lambda d, u: tally_open(u, concurrency=0)),
    lib("lib-open-concurrency-negative", "concurrency", lambda d, u: tally_open(u, concurrency=-1)),
    lib("lib-vote-k-above-n", "the panel has 3", lambda d, u: vote(u, aggregate="at-least:4", n=3)),
    lib(
        "lib-vote-quorum-above-n",
        "a panel of 2",
        lambda d, u: vote(u, n=2, policy=api.build_policy(min_valid=3)),
    ),
    lib(
        "lib-vote-conservative-without-order",
        "needs a conservative order",
        lambda d, u: vote(u, tie_break="conservative"),
    ),
    lib(
        "lib-batch-k-above-n",
        "the panel has 1",
        lambda d, u: tally_batch(u, ITEMS, policy=api.build_policy(aggregate="at-least:2")),
    ),
    lib(
        "lib-batch-quorum-above-n",
        "a panel of 1",
        lambda d, u: tally_batch(u, ITEMS, policy=api.build_policy(min_valid=2)),
    ),
    lib(
        "lib-batch-conservative-without-order",
        "needs a conservative order",
        lambda d, u: tally_batch(u, ITEMS, policy=api.build_policy(tie_break="conservative")),
    ),
    lib(
        "lib-revote-k-above-n",
        "the panel has 1",
        lambda d, u: tally_revote(u, api.build_policy(aggregate="at-least:2")),
        seed=seed_run,
    ),
    lib(
        "lib-revote-quorum-above-n",
        "a panel of 1",
        lambda d, u: tally_revote(u, api.build_policy(min_valid=2)),
        seed=seed_run,
    ),
    lib(
        "lib-revote-conservative-without-order",
        "needs a conservative order",
        lambda d, u: tally_revote(u, api.build_policy(tie_break="conservative")),
        seed=seed_run,
    ),
    lib("lib-open-concurrency-above-cap", "4096", lambda d, u: tally_open(u, concurrency=10_000)),
    lib(
        "lib-open-config-missing",
        "file not found",
        lambda d, u: tally_open(u, config=d / "absent.toml"),
    ),
    lib("lib-batch-no-rows", "no rows", lambda d, u: tally_batch(u, [])),
    lib(
        "lib-batch-text-task", "free text", lambda d, u: tally_batch(u, ITEMS, task=Task.for_text())
    ),
    lib(
        "lib-batch-empty-input",
        "empty",
        lambda d, u: tally_batch(u, [*ITEMS, BatchItem(index=1, item_id="2", text=" ", gold=None)]),
    ),
    lib(
        "lib-batch-escalate-unknown-provider",
        "nope",
        lambda d, u: tally_batch(u, ITEMS, policy=api.build_policy(tie_break="escalate:nope:m")),
    ),
    lib(
        "lib-batch-resume-done",
        "already done",
        lambda d, u: tally_batch(u, ITEMS, batch_id="b" * 16),
        seed=seed_batch("done"),
    ),
    lib(
        "lib-batch-resume-running-elsewhere",
        "running in another process",
        lambda d, u: tally_batch(u, ITEMS, batch_id="b" * 16),
        seed=seed_claimed,
    ),
    lib(
        "lib-batch-resume-unknown",
        "no batch",
        lambda d, u: tally_batch(u, ITEMS, batch_id="nope"),
    ),
    lib(
        "lib-revote-unknown-run",
        "no run",
        lambda d, u: revote(u, ["nope"]),
    ),
]


def revote(url: str, ids: list[str]) -> object:
    async def main() -> object:
        async with api.Tally.open(database_url=url) as tally:
            return await tally.revote(ids, POLICY)

    import anyio

    return anyio.run(main)


# -- the check -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "tally.db"
    with Store(f"sqlite:///{path}") as store:
        store.upgrade()
    return path


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def counts(url: str) -> dict[str, object]:
    """How many rows each table holds, and every batch's status and claim (a refused resume
    must not even touch the batch)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            found: dict[str, object] = {
                t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES
            }
            found["batches"] = [
                tuple(r)
                for r in conn.execute(
                    text("SELECT id, status, finished_at, owner_token, lease_until FROM batch")
                )
            ]
            return found
    finally:
        engine.dispose()


def test_the_catalogue_is_large_and_its_ids_are_distinct() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 150


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_input_is_refused_whole(
    case: Case, tmp_path: Path, migrated: Path, request: pytest.FixtureRequest
) -> None:
    db = tmp_path / "store" / "tally.db"
    db.parent.mkdir()
    shutil.copy(migrated, db)
    url = f"sqlite:///{db}"
    for name, content in case.files.items():
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    if case.seed is not None:
        with Store(url) as store:
            case.seed(store)
    before = counts(url)

    if case.call is not None:
        with pytest.raises(TallyError) as info:
            case.call(tmp_path, url)
        assert isinstance(info.value, InputError), type(info.value).__name__
        message = str(info.value)
        assert message and "\n" not in message, message
    else:
        args = [a.replace("{d}", str(tmp_path)) for a in case.args]
        if "{busy_port}" in args:
            args = [
                str(request.getfixturevalue("busy_port")) if a == "{busy_port}" else a for a in args
            ]
        env: dict[str, str | None] = {
            "TALLY_DATABASE_URL": url,
            "TALLY_SIM_TIME_SCALE": "0",
            "TALLY_CONFIG": None,
            "TALLY_SIM_URL": None,
            "OPENAI_API_KEY": "sk-test",
            "ANTHROPIC_API_KEY": None,
        }
        env.update(case.env)
        started = time.monotonic()
        result = CliRunner().invoke(app, args, env=env, input=case.stdin)
        assert time.monotonic() - started < 120
        shown = result.stderr
        assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
        assert "Traceback" not in result.output
        lines = shown.splitlines()
        assert len(lines) == 1, shown
        assert lines[0].startswith("tally: "), shown
        message = lines[0]
        assert result.stdout == "", result.stdout
    assert case.expect in message, message
    assert counts(url) == before
