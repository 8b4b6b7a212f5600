"""How a simulated model answers: the difficulty and correlation model, and the reply it writes.

Why not coin flips: real models fail on the same inputs. If each call were an independent coin
with accuracy p, majority-of-5 would cut the error about tenfold; the handbook measures roughly
half. The model below reproduces that by making errors correlated in three ways.

**Difficulty.** Every item has a difficulty ``d`` in [0, 1], shared by all models (a bundled
item's ``hardness``; otherwise ``u**2`` for a hash ``u`` of its text, see ``core.sim.items``).
A model of skill ``s`` (``SimModel.skill``, derived from its accuracy at ``d = 0.5``) answers
correctly with probability::

    p = logistic(SKILL_SCALE * (s' - d))        s' = s ± bias for a model that leans

where a model leaning to a label gains ``bias`` skill on items whose gold is that label and
loses it on the others.

**Correlated draws.** Whether a call is right is decided by a Gaussian latent rather than a
fresh coin: the call is right when ``Phi(z) < p``, with::

    z = sqrt(ITEM_SHARE) * g_item                    # one draw per item, shared by every model
      + sqrt(c_m) * g_model_item                     # one per (model, item): shared by samples
      + sqrt(1 - ITEM_SHARE - c_m) * g_call          # one per call

``z`` is standard normal, so each call is still right with probability exactly ``p`` (the
per-call accuracies are untouched), but a high ``g_item`` makes most models wrong on that item
at once (hard items fool the panel together), and ``g_model_item`` (weight ``c_m`` =
``SimModel.consistency``) makes five samples of one model err together more than five
different models do. Models of one ``SimModel.family`` add a family-item component of weight
``family_share`` (taken from the per-call share): a family errs together on top of that.

**Correlated wrong answers.** Every item has a *distractor*, a wrong label chosen by hashing the
item (not the model): a wrong call picks it with probability ``DISTRACTOR_PULL``, so wrong votes
pile up on the same wrong label, as they do when a description is misleading. A leaning model's
wrong answers go to its preferred label. Numbers are off by an item-level offset; JSON objects
have an item-level field perturbed.

**Independent mode** (``independent=True``) keeps every model's per-call accuracy on a set
but removes every shared component: each call sees the difficulty of a random item of the same
set (a fresh hashed difficulty for other inputs), a fresh latent and a fresh wrong label. It is
the Condorcet baseline the correlated panel is compared against.

Calibration (``SKILL_SCALE = 5``, ``ITEM_SHARE = 0.4``), measured on the bundled regression set
over seeds 0-4 by ``tests/core/sim/test_sim_correlation.py``: a single call of the default
panel is wrong 12.4% of the time and its majority-of-5 6.3% (ratio 0.50, the handbook's
"roughly half"); independent mode, at the same 12.7% per call, gets 1.2% (ratio 0.09). Five
samples of one model gain less than five models: ratio 0.75 for sim-strong, 0.67 for sim-mid,
0.84 for sim-fast. A single seed scatters around these (0.34-0.72 over seeds 0-19).

Everything is keyed on ``(seed, model, text, sample)`` through ``core.sim.hashing``: the same
call always gives the same reply. Free-text answers (format ``text``) have no gold and vary
from sample to sample, so votes on prose do not converge.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

from core.sim.hashing import normal, normal_cdf, rng, unit
from core.sim.items import Truth, canonical_json, format_number, hashed_difficulty, truth_for
from core.sim.models import SKILL_SCALE, SimModel

ITEM_SHARE = 0.4
"""Share of the latent's variance drawn once per item and shared by every model."""

DISTRACTOR_PULL = 0.75
"""Probability that a wrong answer is the item's distractor rather than another wrong label."""

TTFT_SIGMA = 0.35
TOKENS_SIGMA = 0.3


@dataclass(frozen=True)
class SimReply:
    """One simulated call.

    ``text`` is what the model writes (the message content). ``answer`` is what it meant, in
    the canonical form of ``Truth.gold`` (``None`` when the reply is malformed, or for errors);
    ``correct`` compares it with the gold (``None`` when there is no gold). ``error`` is an HTTP
    status (500 or 503) when the call fails. Times are milliseconds at time scale 1.
    """

    text: str
    answer: str | None
    gold: str | None
    correct: bool | None
    error: int | None
    latency_ms: float
    ttft_ms: float
    tokens_in: int
    tokens_out: int
    difficulty: float
    malformed: bool = False
    sloppy: bool = False


def estimate_tokens(text: str) -> int:
    """The usual rule of thumb, about four characters a token."""
    return max(1, math.ceil(len(text) / 4))


def correct_probability(model: SimModel, difficulty: float, leaning: float = 0.0) -> float:
    """``logistic(SKILL_SCALE * (skill + leaning - difficulty))``."""
    x = SKILL_SCALE * (model.skill + leaning - difficulty)
    return 1.0 / (1.0 + math.exp(-x))


def _leaning(
    model: SimModel, labels: list[str] | None, gold: str | None
) -> tuple[float, str | None]:
    """The skill shift of a leaning model on this item, and the allowed label it leans to."""
    if model.prefers is None or not labels or gold is None:
        return 0.0, None
    target = model.prefers.casefold()
    preferred = next((label for label in labels if label.casefold() == target), None)
    if preferred is None:
        return 0.0, None
    return (model.bias if preferred == gold else -model.bias), preferred


def _pick_wrong_label(
    labels: list[str], gold: str, key: str, call: random.Random, independent: bool
) -> str:
    wrong = [label for label in labels if label != gold]
    if not wrong:
        return gold
    distractor_u = call.random() if independent else unit("distractor", key)
    distractor = wrong[int(distractor_u * len(wrong))]
    if len(wrong) == 1 or call.random() < DISTRACTOR_PULL:
        return distractor
    return call.choice(wrong)


def _wrong_number(gold: str, key: str, call: random.Random, independent: bool) -> str:
    value = float(gold)
    step = max(1.0, round(abs(value) * 0.1))
    if not independent and call.random() < DISTRACTOR_PULL:
        u = unit("distractor", key)
    else:
        u = call.random()
    offset = 1 + int(u * 5)
    sign = 1 if (u * 10) % 2 < 1 else -1
    return format_number(value + sign * offset * step)


def _perturb(value: Any, u: float) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1 + int(u * 9)
    if isinstance(value, float):
        return round(value * (1.1 + u), 2)
    if isinstance(value, str):
        return value[::-1] if len(value) > 1 and value[::-1] != value else value + " (unclear)"
    if isinstance(value, list):
        return value[:-1] if value else ["unknown"]
    if value is None:
        return "unknown"
    if isinstance(value, dict) and value:
        first = sorted(value)[0]
        return {**value, first: _perturb(value[first], u)}
    return "unknown"


def _wrong_object(
    gold: dict[str, Any], key: str, call: random.Random, independent: bool
) -> dict[str, Any]:
    if not gold:
        return {"unknown": True}
    names = sorted(gold)
    if not independent and call.random() < DISTRACTOR_PULL:
        u = unit("distractor", key)
    else:
        u = call.random()
    name = names[int(u * len(names))]
    return {**gold, name: _perturb(gold[name], u)}


_PROSE_OPENINGS = (
    "On balance",
    "Reading the description",
    "From what is described",
    "Taking the change at face value",
    "Looking at it closely",
)
_PROSE_MIDDLES = (
    "the main effect is on how users experience the page",
    "the change touches behaviour more than appearance",
    "the risk sits mostly in the edge cases",
    "the intent is clear but the outcome depends on context",
    "several details point in different directions",
)
_PROSE_ENDINGS = (
    "and I would keep an eye on it.",
    "so a second look would not hurt.",
    "which is worth noting in the summary.",
    "though the evidence is thin.",
    "and that is the gist of it.",
)

_MALFORMED = (  # no label or synonym of the bundled sets hides in these
    "I cannot tell from this description alone.",
    "",
    "I would need more context to decide.",
    "<|endoftext|>",
    "Both readings are possible here.",
)


def _prose(call: random.Random) -> str:
    return (
        f"{call.choice(_PROSE_OPENINGS)}, {call.choice(_PROSE_MIDDLES)}, "
        f"{call.choice(_PROSE_ENDINGS)}"
    )


def _sloppy_label(label: str, truth: Truth, call: random.Random) -> str:
    synonyms = [
        word
        for name, words in truth.synonyms
        for word in words
        if name.casefold() == label.casefold()
    ]
    forms = [
        f"**{label[:1].upper()}{label[1:]}.**",
        f"I think: {label}",
        f"Answer: {label.upper()}",
        f"{label[:1].upper()}{label[1:]}.\n\nThat is my reading of the description.",
        f"  {label}  ",
    ]
    if synonyms:
        forms += synonyms
    return call.choice(forms)


def _sloppy_number(answer: str, call: random.Random) -> str:
    forms = [
        f"About {answer}.",
        f"{float(answer):.1f}",
        f"The answer is {answer}.",
        f"**{answer}**",
    ]
    return call.choice(forms)


def _sloppy_json(obj_text: str, call: random.Random) -> str:
    forms = [f"```json\n{obj_text}\n```", f"Here is the object:\n{obj_text}", f"{obj_text}\n"]
    return call.choice(forms)


def _render(
    kind: str,
    answer: str | None,
    answer_object: Any,
    structured: bool,
    sloppy: bool,
    truth: Truth,
    call: random.Random,
) -> str:
    """The message content for an intended answer."""
    if kind == "json":
        obj_text = json.dumps(answer_object, ensure_ascii=False)
        return _sloppy_json(obj_text, call) if sloppy and not structured else obj_text
    if kind == "text":
        assert answer is not None
        return json.dumps({"answer": answer}) if structured else answer
    assert answer is not None
    if structured:
        value: Any = answer
        if kind == "number":
            number = float(answer)
            value = int(number) if number == int(number) else number
        return json.dumps({"answer": value}, ensure_ascii=False)
    if not sloppy:
        return answer
    if kind == "number":
        return _sloppy_number(answer, call)
    return _sloppy_label(answer, truth, call)


def _malformed_text(structured: bool, kind: str, call: random.Random) -> str:
    if structured or kind == "json":
        return call.choice(('{"answer": ', '{"answer": null', "{'answer': maybe}", "[]"))
    return call.choice(_MALFORMED)


def simulate(
    model: SimModel,
    text: str,
    labels: list[str] | None,
    fmt_hint: dict[str, Any],
    sample: int,
    seed: int,
    independent: bool = False,
) -> SimReply:
    """One call of ``model`` on ``text``: pure and deterministic in its arguments.

    ``labels``: the allowed labels (format ``label`` or ``yesno``), else ``None``.
    ``fmt_hint``: ``kind`` (``label``, ``yesno``, ``number``, ``json``, ``text``; default
    ``label`` when labels are given, else ``text``), ``structured`` (reply as JSON, as under
    ``response_format``), ``schema`` (the JSON schema of a ``json`` answer).
    ``sample``: which draw of this model on this text (samples of one model differ, but share
    the model-item component of the correlation model).
    """
    kind = str(fmt_hint.get("kind") or ("label" if labels else "text"))
    if kind in ("label", "yesno") and not labels:
        kind = "text"
    structured = bool(fmt_hint.get("structured", False))
    schema = fmt_hint.get("schema")
    truth = truth_for(text, labels, kind, schema if isinstance(schema, dict) else None)
    key = truth.key
    call = rng("call", seed, model.name, key, sample)

    # 1. Does the call fail outright?
    error: int | None = None
    if call.random() < model.error_rate:
        error = 503 if call.random() < 0.5 else 500

    # 2. Is it right? (the correlation model of the module docstring)
    leaning, preferred = _leaning(model, labels, truth.gold)
    difficulty = truth.difficulty
    if independent:
        if truth.pool:
            difficulty = truth.pool[int(call.random() * len(truth.pool))]
        else:
            difficulty = hashed_difficulty(f"{key}\x1f{model.name}\x1f{sample}\x1f{seed}")
        u = call.random()
    else:
        c = model.consistency
        f = model.family_share if model.family is not None else 0.0
        z = (
            math.sqrt(ITEM_SHARE) * normal("item", seed, key)
            + math.sqrt(c) * normal("model-item", seed, model.name, key)
            + math.sqrt(max(0.0, 1.0 - ITEM_SHARE - c - f))
            * normal("latent", seed, model.name, key, sample)
        )
        if f:
            z += math.sqrt(f) * normal("family-item", seed, model.family, key)
        u = normal_cdf(z)
    p = correct_probability(model, difficulty, leaning)
    right = u < p

    # 3. What does it answer?
    answer: str | None
    answer_object: Any = None
    if kind == "text":
        answer = _prose(call)
    elif kind == "json":
        gold_object = truth.gold_object or {}
        answer_object = gold_object if right else _wrong_object(gold_object, key, call, independent)
        answer = canonical_json(answer_object)
    elif kind == "number":
        assert truth.gold is not None
        answer = truth.gold if right else _wrong_number(truth.gold, key, call, independent)
    else:
        assert truth.gold is not None and labels
        if right:
            answer = truth.gold
        elif preferred is not None and preferred != truth.gold:
            answer = preferred
        else:
            answer = _pick_wrong_label(labels, truth.gold, key, call, independent)

    # 4. How is it written?
    malformed = call.random() < model.malformed
    sloppy = not malformed and call.random() < model.sloppy
    if malformed:
        reply_text = _malformed_text(structured, kind, call)
        answer = None
    else:
        reply_text = _render(kind, answer, answer_object, structured, sloppy, truth, call)

    # 5. How long does it take, and how many tokens?
    latency = model.latency_median_ms * math.exp(model.latency_sigma * call.gauss(0.0, 1.0))
    ttft = min(model.ttft_ms * math.exp(TTFT_SIGMA * call.gauss(0.0, 1.0)), 0.9 * latency)
    tokens = model.tokens_out * math.exp(TOKENS_SIGMA * call.gauss(0.0, 1.0) - TOKENS_SIGMA**2 / 2)
    tokens_out = max(estimate_tokens(reply_text), round(tokens))
    if error is not None:
        # A failing call gives up around the time it would have started answering.
        latency = ttft
        reply_text = ""
        answer = None

    correct = None if truth.gold is None or error is not None else answer == truth.gold
    return SimReply(
        text=reply_text,
        answer=answer,
        gold=truth.gold,
        correct=correct,
        error=error,
        latency_ms=latency,
        ttft_ms=ttft,
        tokens_in=estimate_tokens(text),
        tokens_out=0 if error is not None else tokens_out,
        difficulty=truth.difficulty,
        malformed=malformed and error is None,
        sloppy=sloppy and error is None,
    )
