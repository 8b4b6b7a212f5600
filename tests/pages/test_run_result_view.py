"""The Run page around a result: the run stays in view above the form while it lands, a
changed input marks the result as the previous one's, and going back to pasting after a bundled
item starts from the default task."""

from __future__ import annotations

from collections.abc import Callable

from streamlit.testing.v1 import AppTest

from core import datasets
from core.store import Store

PageTest = Callable[[str], AppTest]
RerunUntil = Callable[[AppTest, Callable[[AppTest], bool]], AppTest]


def test_paste_after_a_bundled_item_starts_from_the_default_task(page_test: PageTest) -> None:
    at = page_test("pages/run.py").run()
    at.radio(key="run.source").set_value("Pick from a bundled set").run()
    at.selectbox(key="run.set").set_value("tickets").run()
    assert at.text_input(key="run.labels").value != "yes, no"
    at.radio(key="run.source").set_value("Paste an input").run()
    assert at.text_area(key="run.input").value == ""
    assert at.text_input(key="run.labels").value == "yes, no"
    assert at.text_area(key="run.template").value == "{input}"
    assert at.text_area(key="run.synonyms").value == ""
    assert not any("Gold answer" in c.value for c in at.caption)
    assert datasets.load_set("tickets").template != "{input}"  # the test means something


def test_the_result_stays_in_view_and_a_changed_input_marks_it(
    page_test: PageTest, store: Store, rerun_until: RerunUntil
) -> None:
    at = page_test("pages/run.py").run()
    assert not any(h.value.startswith("Change the input") for h in at.subheader)
    at.text_area(key="run.input").set_value("Is the sky blue on a clear day?")
    at.button(key="run.submit").click()
    rerun_until(at, lambda a: any(s.value == "Result" for s in a.subheader))
    heads = [h.value for h in at.subheader]
    # the run first, in view while it lands; the form below it
    assert heads.index("Result") < heads.index("Change the input, task, panel or policy")
    assert not any("input has changed" in w.value for w in at.warning)
    at.text_area(key="run.input").set_value("Is the grass green?").run()
    assert any("The input has changed since this run" in w.value for w in at.warning)
