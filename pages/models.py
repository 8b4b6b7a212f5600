"""Models: the providers Tally can call, whether their keys are set, a connection test for each,
and the prices every cost on the dashboard is computed with.

A key is reported as set or not, never shown: the registry does not hand it out. An unknown
price stays ``unknown`` here and everywhere, and the models without one are named, so a total
that leaves them out is never mistaken for a complete one.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from core.connection import ConnectionResult, test_connection_blocking
from core.errors import TallyError
from core.jobs.inprocess import InProcessExecutor
from core.store.db import mask_url
from pages import ui

ui.leave_folder_mode()

S = st.session_state
RESULTS_KEY = "models.connection"


def key_text(row: dict[str, Any]) -> str:
    if row["api_key_env"] is None:
        return "not needed"
    return f"{'yes' if row['key_set'] else 'no'} ({row['api_key_env']})"


def providers_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "provider": r["name"],
                "protocol": r["kind"],
                "base URL": mask_url(r["base_url"]),
                "key set": key_text(r),
                "max concurrency": r["max_concurrency"],
                "models": ", ".join(r["models"]) or "(any: name them as provider:model)",
                "from": "built in" if r["builtin"] else "tally.toml",
            }
            for r in rows
        ]
    )


def show_result(result: ConnectionResult) -> None:
    if result.ok:
        st.success(
            f"Connected in {ui.latency(result.latency_ms)}: {len(result.models)} models offered."
        )
        if result.models:
            with st.expander("Models the endpoint offers"):
                st.text("\n".join(result.models))
    else:
        st.error(f"Not connected: {ui.md_text(result.error or 'unknown error', 300)}")


def test(runner: InProcessExecutor, provider: str) -> None:
    """Button callback: runs in the script thread, before the page is drawn again."""
    results = S.setdefault(RESULTS_KEY, {})
    results[provider] = test_connection_blocking(runner.tally, provider)


def connection_section(runner: InProcessExecutor, rows: list[dict[str, Any]]) -> None:
    st.subheader("Connection test")
    st.caption(
        "Lists each provider's models over the same HTTP client settings a run uses. A "
        "provider whose key is not set is reported without a request."
    )
    results: dict[str, ConnectionResult] = S.get(RESULTS_KEY, {})
    for row in rows:
        name = row["name"]
        left, right = st.columns([1, 4])
        left.button(
            f"Test {name}",
            key=f"models.test.{name}",
            on_click=test,
            args=(runner, name),
            width="stretch",
        )
        with right:
            if name in results:
                show_result(results[name])
            else:
                st.caption("not tested yet")


def price_section(runner: InProcessExecutor, rows: list[dict[str, Any]]) -> None:
    st.subheader("Prices in use")
    st.caption(
        "USD per million tokens. From, in order: a [prices] override in tally.toml, the "
        "simulated panel's catalogue, then the genai-prices snapshot installed with Tally "
        "(never fetched over the network)."
    )
    models = [f"{r['name']}:{m}" for r in rows for m in r["models"]]
    try:
        models += runner.store.models()  # every model with a stored call
    except TallyError as err:
        st.warning(f"Stored models could not be read: {err}")
    extra = st.text_input(
        "Look up another model (provider:model)", key="models.lookup", placeholder="openai:o3"
    )
    if extra.strip():
        models.append(extra.strip())
    table = runner.tally.prices.table(models)

    def rate(value: float | None) -> str:
        return "unknown" if value is None else f"${value:,.4g}"

    frame = pd.DataFrame(
        [
            {
                "model": r["model"],
                "input $/Mtok": rate(r["input_per_mtok"]),
                "output $/Mtok": rate(r["output_per_mtok"]),
                "source": r["source"],
            }
            for r in table
        ]
    )
    rows_px = 35 * (len(frame) + 1) + 3  # every row on screen, up to a point
    st.dataframe(frame, hide_index=True, width="stretch", height=min(rows_px, 640))
    unknown = [r["model"] for r in table if r["source"] == "unknown"]
    if unknown:
        st.warning(
            "No known price for "
            + ", ".join(ui.md_text(m, 80) for m in unknown)
            + ': their calls show cost unknown (never \\$0). Add a [prices."provider:model"] '
            "table to tally.toml to price them."
        )
    else:
        st.caption("Every model listed has a known price.")


def main() -> None:
    ui.page_identity()
    st.title("Models")
    try:
        runner = ui.get_runner()
        rows = runner.tally.registry.describe()
    except TallyError as err:
        st.error(f"The runner could not start: {err}")
        return
    st.subheader("Providers")
    st.dataframe(providers_frame(rows), hide_index=True, width="stretch")
    missing = [r["api_key_env"] for r in rows if r["api_key_env"] and not r["key_set"]]
    if missing:
        st.caption(
            "Keys come only from the environment (or Streamlit secrets) and are never shown, "
            f"stored or exported. Not set: {', '.join(missing)}. Without keys the simulated "
            "panel (sim:...) works offline."
        )
    connection_section(runner, rows)
    price_section(runner, rows)


main()
