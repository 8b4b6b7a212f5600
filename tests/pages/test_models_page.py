"""The Models page under AppTest: providers with their key status (never the key), the
connection test, and the price table with unknown prices named."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from core.result import CallResult, CallStatus, Decision, DecisionStatus, RunResult
from core.spec import RunSpec
from core.store import Store

PAGE = "pages/models.py"
SECRET = "sk-test-SECRET"


def every_string(at: AppTest) -> Iterator[str]:
    """Every piece of text the page produced: element values, labels, captions, table cells."""
    for node in at.main:
        yield from strings_of(node)


def strings_of(node: Any) -> Iterator[str]:
    yield repr(getattr(node, "proto", ""))
    for attr in ("value", "label", "body", "help", "placeholder"):
        try:
            value = getattr(node, attr, None)
        except Exception:  # some elements compute values lazily from session state
            continue
        if value is not None:
            yield str(value)
            if hasattr(value, "to_csv"):
                yield value.to_csv()
    for child in getattr(node, "children", {}).values():
        yield from strings_of(child)


@pytest.fixture
def with_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)


def providers(at: AppTest) -> dict[str, dict[str, Any]]:
    frame = at.dataframe[0].value
    return {row["provider"]: row for row in frame.to_dict("records")}


def test_key_status_without_the_key(
    page_test: Callable[[str], AppTest], store: Store, with_key: None
) -> None:
    at = page_test(PAGE).run()
    assert not at.exception, [e.message for e in at.exception]
    rows = providers(at)
    assert rows["openai"]["key set"] == "yes (OPENAI_API_KEY)"
    assert rows["anthropic"]["key set"] == "no (ANTHROPIC_API_KEY)"
    assert rows["sim"]["key set"] == "not needed"
    assert rows["ollama"]["key set"] == "not needed"
    text = "\n".join(every_string(at))
    assert "OPENAI_API_KEY" in text  # the name of the variable is shown...
    assert SECRET not in text  # ...its value never is
    assert "SECRET" not in text


def test_the_connection_test_of_the_sim(
    page_test: Callable[[str], AppTest], store: Store, with_key: None
) -> None:
    at = page_test(PAGE).run()
    at.button(key="models.test.sim").click().run()
    assert not at.exception
    (ok,) = [s.value for s in at.success]
    assert ok.startswith("Connected in ") and "models offered" in ok
    listing = "\n".join(t.value for t in at.text)
    assert "sim-strong" in listing and "sim-oracle" in listing
    assert SECRET not in "\n".join(every_string(at))


def test_a_provider_without_its_key_fails_the_test_without_a_request(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    at = page_test(PAGE).run()
    at.button(key="models.test.anthropic").click().run()
    assert [e.value for e in at.error] == ["Not connected: ANTHROPIC\\_API\\_KEY is not set"]


def test_price_table_names_unknown_prices(
    page_test: Callable[[str], AppTest], store: Store
) -> None:
    stored = RunResult(
        run_id="r1",
        input="x",
        spec=RunSpec.from_json(
            {"task": {"format": {"kind": "yesno"}}, "panel": ["local:my-model"], "policy": {}}
        ),
        decision=Decision(status=DecisionStatus.DECIDED, label="a"),
        votes={"a": 1},
        calls=[CallResult(slot=0, model="local:my-model", status=CallStatus.OK, answer="a")],
        cost_usd=None,
        latency_ms=1.0,
    )
    store.save_run(stored, source="cli")
    at = page_test(PAGE).run()
    prices = {r["model"]: r for r in at.dataframe[1].value.to_dict("records")}
    assert prices["sim:sim-strong"]["input $/Mtok"] == "$3"
    assert prices["sim:sim-strong"]["output $/Mtok"] == "$15"
    assert prices["sim:sim-strong"]["source"] == "sim"
    unknown = prices["local:my-model"]  # a model with stored calls and no price
    assert (unknown["input $/Mtok"], unknown["source"]) == ("unknown", "unknown")
    (warning,) = [w.value for w in at.warning]
    assert "local\\:my\\-model" in warning and "never \\$0" in warning

    at.text_input(key="models.lookup").input("openai:gpt-4.1-mini").run()
    prices = {r["model"]: r for r in at.dataframe[1].value.to_dict("records")}
    assert prices["openai:gpt-4.1-mini"]["source"] in ("genai-prices", "unknown")
