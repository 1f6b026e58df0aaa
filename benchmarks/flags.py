"""Flag evaluation: nanoseconds per call for safeship, its peers and a plain-Python floor.

    python benchmarks/flags.py [--quick]

Cases (the same flags for every implementation):
  on-off                 a flag that is simply on
  rollout-25-userid      a 25% rollout sticky on userId
  constraints-variants   three constraints (environment, plan, country), then one of three
                         weighted variants sticky on userId

Implementations: ``safeship``; ``UnleashClient`` (the installed SDK, bootstrapped from a
dict, no network, stopped afterwards); ``UnleashClient-5`` (5.12.5, its last pure-Python
release, installed into a separate directory and timed in a subprocess beside safeship);
``growthbook``; ``openfeature-inmemory`` (the OpenFeature SDK's in-memory provider); and
``baseline``, a plain-Python floor: a dict lookup, mmh3 and three membership tests, no
checks at all.

Every implementation evaluates the same 1,024 pre-built contexts in turn, through the same
loop, interleaved round by round so a noisy machine slows all of them alike. Each line of
stdout is one measurement (the median over the rounds)::

    {"bench": "flags", "case": "on-off", "impl": "safeship", "value": 61.3, "unit": "ns/call"}

Also measured: safeship with evaluation counting on (``safeship-counted``), and the
OpenFeature client with safeship's provider (``safeship-openfeature``) against the same
client with a provider that returns a constant (``openfeature-noop``); the median of their
per-round differences is the provider's cost (``safeship-openfeature-overhead``). A
summary table goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

CASES = ("on-off", "rollout-25-userid", "constraints-variants")
UNLEASH5_VERSION = "5.12.5"
POOL = 1024

Evaluate = Callable[[Any], Any]

STATE: dict[str, Any] = {
    "version": 1,
    "features": [
        {"name": "on-off", "enabled": True, "strategies": [{"name": "default", "parameters": {}}]},
        {
            "name": "rollout-25-userid",
            "enabled": True,
            "strategies": [
                {
                    "name": "flexibleRollout",
                    "parameters": {
                        "rollout": "25",
                        "stickiness": "userId",
                        "groupId": "rollout-25-userid",
                    },
                }
            ],
        },
        {
            "name": "constraints-variants",
            "enabled": True,
            "strategies": [
                {
                    "name": "default",
                    "parameters": {},
                    "constraints": [
                        {
                            "contextName": "environment",
                            "operator": "IN",
                            "values": ["production", "staging"],
                        },
                        {"contextName": "plan", "operator": "IN", "values": ["pro", "enterprise"]},
                        {"contextName": "country", "operator": "NOT_IN", "values": ["XX", "YY"]},
                    ],
                }
            ],
            "variants": [
                {
                    "name": name,
                    "weight": weight,
                    "stickiness": "userId",
                    "payload": {"type": "string", "value": f"#{name}"},
                }
                for name, weight in (("control", 200), ("blue", 300), ("green", 500))
            ],
        },
    ],
}


def unleash_contexts() -> list[dict[str, Any]]:
    """The context pool, in Unleash's shape; every context passes the three constraints."""
    plans = ("pro", "enterprise")
    return [
        {
            "userId": f"user-{i}",
            "environment": "production",
            "properties": {"plan": plans[i % 2], "country": "NO"},
        }
        for i in range(POOL)
    ]


# --------------------------------------------------------------------------- timing


def sample(evaluate: Evaluate, contexts: list[Any], calls: int) -> float:
    """Nanoseconds per call over ``calls`` evaluations cycling through ``contexts``."""
    batch = (contexts * (calls // len(contexts) + 1))[:calls]
    start = time.perf_counter_ns()
    for context in batch:
        evaluate(context)
    return (time.perf_counter_ns() - start) / calls


def calibrate(evaluate: Evaluate, contexts: list[Any], seconds: float) -> int:
    """How many calls take about ``seconds``."""
    per_call = sample(evaluate, contexts, 200)
    return max(200, min(500_000, int(seconds * 1e9 / max(per_call, 1.0))))


def expected_answers(contexts: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """What every Unleash-compatible implementation must answer, from the hashing rules alone."""
    import mmh3

    def bucket(group: str, user: str, seed: int, modulo: int) -> int:
        return int(mmh3.hash(f"{group}:{user}", seed, False)) % modulo + 1

    def variant(user: str) -> str:
        point = bucket("constraints-variants", user, 86028157, 1000)
        return "control" if point <= 200 else "blue" if point <= 500 else "green"

    users = [context["userId"] for context in contexts]
    return {
        "on-off": [True] * len(users),
        "rollout-25-userid": [bucket("rollout-25-userid", u, 0, 100) <= 25 for u in users],
        "constraints-variants": [variant(u) for u in users],
    }


def answer(result: Any) -> Any:
    """An implementation's answer reduced to a bool or a variant name."""
    if isinstance(result, bool):
        return result
    name = getattr(result, "name", None)
    if name is None and isinstance(result, dict):
        name = result.get("name")
    if name is None and isinstance(result, str):
        name = result.removeprefix("#")
    return name


def verify(impl: str, case: str, evaluate: Evaluate, contexts: list[Any]) -> str | None:
    """Why an implementation's answers cannot be compared (``None`` when they can).

    Unleash-compatible implementations must give exactly the expected answers; the others
    (different hashing) must pass the constraints and roll out close to 25%.
    """
    got = [answer(evaluate(context)) for context in contexts]
    wanted = expected_answers(unleash_contexts())[case]
    if impl.startswith("openfeature-noop"):  # answers a constant by design
        return None
    if impl in ("safeship", "safeship-counted", "baseline", "UnleashClient", "UnleashClient-5"):
        wrong = sum(1 for a, b in zip(got, wanted, strict=True) if a != b)
        return f"{wrong} of {len(got)} answers differ from Unleash's" if wrong else None
    if case == "rollout-25-userid":
        share = sum(1 for a in got if a) / len(got)
        return None if 0.2 <= share <= 0.3 else f"{share:.0%} enabled, not about 25%"
    if case == "constraints-variants":
        names = set(got)
        return None if names <= {"control", "blue", "green"} else f"answered {sorted(names)}"
    return None if all(got) else "not on for every context"


Samples = dict[tuple[str, str], list[float]]


def run_rounds(
    subjects: dict[tuple[str, str], tuple[Evaluate, list[Any]]], rounds: int, seconds: float
) -> Samples:
    """ns/call per (case, impl) and round, subjects interleaved in every round."""
    calls = {key: calibrate(fn, ctxs, seconds) for key, (fn, ctxs) in subjects.items()}
    samples: Samples = {key: [] for key in subjects}
    for _ in range(rounds):
        for key, (evaluate, contexts) in subjects.items():
            samples[key].append(sample(evaluate, contexts, calls[key]))
    return samples


def medians(samples: Samples) -> dict[tuple[str, str], float]:
    return {key: statistics.median(values) for key, values in samples.items()}


def provider_overheads(samples: Samples) -> dict[str, float]:
    """What safeship's provider adds to an OpenFeature evaluation, per case.

    The median of the per-round differences between the calls the client makes to safeship's
    provider and to a provider answering a constant; measured apart from the client, whose
    own cost (several microseconds) would drown a sub-microsecond difference in noise.
    """
    result = {}
    for case in CASES:
        ours, bare = (
            samples.get((case, "safeship-openfeature-provider")),
            samples.get((case, "openfeature-noop-provider")),
        )
        if ours and bare:
            result[case] = statistics.median(a - b for a, b in zip(ours, bare, strict=True))
    return result


def emit(case: str, impl: str, value: float) -> None:
    line = {"bench": "flags", "case": case, "impl": impl, "value": round(value, 1)}
    print(json.dumps({**line, "unit": "ns/call"}), flush=True)


# --------------------------------------------------------------------------- implementations


def safeship_subjects() -> dict[str, Evaluate]:
    from safeship.flags import FlagSet

    flags = FlagSet.from_unleash(STATE)
    is_enabled, variant = flags.is_enabled, flags.variant
    return {
        "on-off": lambda ctx: is_enabled("on-off", ctx),
        "rollout-25-userid": lambda ctx: is_enabled("rollout-25-userid", ctx),
        "constraints-variants": lambda ctx: variant("constraints-variants", ctx),
    }


def safeship_counted_subjects() -> dict[str, Evaluate]:
    """safeship with evaluation counting on, as the live client runs it."""
    from safeship.flags import EvaluationCounter, FlagSet

    flags = FlagSet.from_unleash(STATE, counter=EvaluationCounter())
    is_enabled, variant = flags.is_enabled, flags.variant
    return {
        "on-off": lambda ctx: is_enabled("on-off", ctx),
        "rollout-25-userid": lambda ctx: is_enabled("rollout-25-userid", ctx),
        "constraints-variants": lambda ctx: variant("constraints-variants", ctx),
    }


def baseline_subjects() -> dict[str, Evaluate]:
    """The floor: the least any evaluator with the same call (a flag name and a context) does.

    A dict lookup for the flag, then direct indexing, mmh3 and three membership tests:
    no absent fields, no type checks, no errors handled.
    """
    import mmh3

    murmur = mmh3.hash
    table: dict[str, Any] = {
        "on-off": True,
        "rollout-25-userid": ("rollout-25-userid:", 25),
        "constraints-variants": (
            "constraints-variants:",
            frozenset(("production", "staging")),
            frozenset(("pro", "enterprise")),
            frozenset(("XX", "YY")),
            ("#control", "#blue", "#green"),
        ),
    }

    def on_off(name: str, ctx: dict[str, Any]) -> bool:
        return table[name]

    def rollout(name: str, ctx: dict[str, Any]) -> bool:
        prefix, percentage = table[name]
        return murmur(prefix + ctx["userId"], 0, False) % 100 < percentage

    def constraints_variants(name: str, ctx: dict[str, Any]) -> str:
        prefix, environments, plans, countries, payloads = table[name]
        properties = ctx["properties"]
        if (
            ctx["environment"] in environments
            and properties["plan"] in plans
            and properties["country"] not in countries
        ):
            point = murmur(prefix + ctx["userId"], 86028157, False) % 1000 + 1
            return payloads[0] if point <= 200 else payloads[1] if point <= 500 else payloads[2]
        return "disabled"

    return {
        "on-off": lambda ctx: on_off("on-off", ctx),
        "rollout-25-userid": lambda ctx: rollout("rollout-25-userid", ctx),
        "constraints-variants": lambda ctx: constraints_variants("constraints-variants", ctx),
    }


@contextmanager
def unleash_subjects(directory: str) -> Iterator[dict[str, Evaluate]]:
    """UnleashClient bootstrapped from ``STATE``: no server, no polling, stopped on exit."""
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    cache = FileCache("safeship-bench", directory=directory)
    cache.bootstrap_from_dict(STATE)
    client = UnleashClient(
        url="http://127.0.0.1:9/api",
        app_name="safeship-bench",
        environment="production",  # its get_variant overwrites the context's environment
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
    )
    client.initialize_client(fetch_toggles=False)
    try:
        yield {
            "on-off": lambda ctx: client.is_enabled("on-off", ctx),
            "rollout-25-userid": lambda ctx: client.is_enabled("rollout-25-userid", ctx),
            "constraints-variants": lambda ctx: client.get_variant("constraints-variants", ctx),
        }
    finally:
        client.destroy()


def growthbook_subjects() -> dict[str, tuple[Evaluate, list[Any]]]:
    """GrowthBook with equivalent features; each call sets the user's attributes first."""
    from growthbook import GrowthBook

    features = {
        "on-off": {"defaultValue": True},
        "rollout-25-userid": {
            "defaultValue": False,
            "rules": [{"force": True, "coverage": 0.25, "hashAttribute": "id"}],
        },
        "constraints-variants": {
            "defaultValue": "disabled",
            "rules": [
                {
                    "condition": {
                        "environment": {"$in": ["production", "staging"]},
                        "plan": {"$in": ["pro", "enterprise"]},
                        "country": {"$nin": ["XX", "YY"]},
                    },
                    "key": "constraints-variants",
                    "variations": ["#control", "#blue", "#green"],
                    "weights": [0.2, 0.3, 0.5],
                    "hashAttribute": "id",
                }
            ],
        },
    }
    gb = GrowthBook(features=features)
    attributes = [
        {"id": c["userId"], "environment": c["environment"], **c["properties"]}
        for c in unleash_contexts()
    ]

    def evaluate(key: str, fallback: Any) -> Evaluate:
        def run(attrs: dict[str, Any]) -> Any:
            gb.set_attributes(attrs)
            return gb.get_feature_value(key, fallback)

        return run

    return {
        "on-off": (evaluate("on-off", False), attributes),
        "rollout-25-userid": (evaluate("rollout-25-userid", False), attributes),
        "constraints-variants": (evaluate("constraints-variants", "disabled"), attributes),
    }


def openfeature_contexts() -> list[Any]:
    from openfeature.evaluation_context import EvaluationContext

    return [
        EvaluationContext(c["userId"], {"environment": c["environment"], **c["properties"]})
        for c in unleash_contexts()
    ]


def openfeature_inmemory_subjects() -> dict[str, tuple[Evaluate, list[Any]]]:
    """OpenFeature's in-memory provider; rollout and variants written as context evaluators."""
    import mmh3
    from openfeature import api
    from openfeature.flag_evaluation import FlagResolutionDetails, Reason
    from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

    def rollout(flag: Any, ctx: Any) -> Any:
        point = mmh3.hash(f"rollout-25-userid:{ctx.targeting_key}", 0, False) % 100 + 1
        on = point <= 25
        return FlagResolutionDetails(value=on, variant="on" if on else "off", reason=Reason.SPLIT)

    def variants(flag: Any, ctx: Any) -> Any:
        attrs = ctx.attributes
        if not (
            attrs.get("environment") in ("production", "staging")
            and attrs.get("plan") in ("pro", "enterprise")
            and attrs.get("country") not in ("XX", "YY")
        ):
            return FlagResolutionDetails(value="disabled", reason=Reason.DEFAULT)
        key = f"constraints-variants:{ctx.targeting_key}"
        point = mmh3.hash(key, 86028157, False) % 1000 + 1
        name = "control" if point <= 200 else "blue" if point <= 500 else "green"
        return FlagResolutionDetails(value=f"#{name}", variant=name, reason=Reason.SPLIT)

    flags = {
        "on-off": InMemoryFlag("on", {"on": True, "off": False}),
        "rollout-25-userid": InMemoryFlag(
            "off", {"on": True, "off": False}, context_evaluator=rollout
        ),
        "constraints-variants": InMemoryFlag(
            "disabled", {"disabled": "disabled"}, context_evaluator=variants
        ),
    }
    api.set_provider(InMemoryProvider(flags), "bench-inmemory")
    return _openfeature_client_subjects(api.get_client("bench-inmemory"))


def _openfeature_client_subjects(client: Any) -> dict[str, tuple[Evaluate, list[Any]]]:
    contexts = openfeature_contexts()
    boolean, string = client.get_boolean_value, client.get_string_value
    return {
        "on-off": (lambda ctx: boolean("on-off", False, ctx), contexts),
        "rollout-25-userid": (lambda ctx: boolean("rollout-25-userid", False, ctx), contexts),
        "constraints-variants": (
            lambda ctx: string("constraints-variants", "disabled", ctx),
            contexts,
        ),
    }


def openfeature_provider_subjects() -> dict[str, dict[str, tuple[Evaluate, list[Any]]]]:
    """The OpenFeature client over safeship's provider, and over a provider doing nothing."""
    from openfeature import api
    from openfeature.flag_evaluation import FlagResolutionDetails, Reason
    from openfeature.provider import AbstractProvider, Metadata

    from safeship.flags import FlagSet
    from safeship.flags.openfeature import SafeshipProvider

    class Noop(AbstractProvider):
        """Answers a constant: what the OpenFeature client costs by itself."""

        metadata = Metadata(name="noop")
        yes = FlagResolutionDetails(value=True, reason=Reason.STATIC)
        text = FlagResolutionDetails(value="#blue", reason=Reason.STATIC, variant="blue")

        def get_metadata(self) -> Metadata:
            return self.metadata

        def resolve_boolean_details(self, *args: Any, **kwargs: Any) -> Any:
            return self.yes

        def resolve_string_details(self, *args: Any, **kwargs: Any) -> Any:
            return self.text

        def resolve_integer_details(self, *args: Any, **kwargs: Any) -> Any:
            return self.yes

        resolve_float_details = resolve_object_details = resolve_integer_details

    ours, noop = SafeshipProvider(FlagSet.from_unleash(STATE)), Noop()
    api.set_provider(ours, "bench-safeship")
    api.set_provider(noop, "bench-noop")
    return {
        "safeship-openfeature": _openfeature_client_subjects(api.get_client("bench-safeship")),
        "openfeature-noop": _openfeature_client_subjects(api.get_client("bench-noop")),
        "safeship-openfeature-provider": _provider_calls(ours),
        "openfeature-noop-provider": _provider_calls(noop),
    }


def _provider_calls(provider: Any) -> dict[str, tuple[Evaluate, list[Any]]]:
    """What the client asks of a provider per evaluation: its metadata, then a resolution
    with keyword arguments. Timed on their own, free of the client's much larger cost."""
    contexts = openfeature_contexts()
    metadata = provider.get_metadata
    boolean, string = provider.resolve_boolean_details, provider.resolve_string_details

    def ask(resolve: Callable[..., Any], key: str, default: Any) -> Evaluate:
        def run(ctx: Any) -> Any:
            metadata()
            return resolve(flag_key=key, default_value=default, evaluation_context=ctx).value

        return run

    return {
        "on-off": (ask(boolean, "on-off", False), contexts),
        "rollout-25-userid": (ask(boolean, "rollout-25-userid", False), contexts),
        "constraints-variants": (ask(string, "constraints-variants", "disabled"), contexts),
    }


# --------------------------------------------------------------------------- UnleashClient 5


def unleash5_directory() -> Path:
    return Path(tempfile.gettempdir()) / "safeship-bench" / f"UnleashClient-{UNLEASH5_VERSION}"


def install_unleash5(directory: Path) -> bool:
    """Install UnleashClient 5 into its own directory once; False (and why, on stderr) if not."""
    if (directory / "UnleashClient").is_dir():
        return True
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--target", str(directory), f"UnleashClient=={UNLEASH5_VERSION}"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=240, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"UnleashClient-5: cannot install ({exc}); skipped", file=sys.stderr)
        return False
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        print(f"UnleashClient-5: cannot install ({reason}); skipped", file=sys.stderr)
        return False
    return True


def run_unleash5(rounds: int, seconds: float) -> dict[tuple[str, str], float]:
    """Run this script as a worker with UnleashClient 5 first on the path; its figures.

    The worker times safeship too, interleaved with UnleashClient 5, so the ratio of the
    two holds even if the machine got busier between the main run and the worker's.
    """
    directory = unleash5_directory()
    if not install_unleash5(directory):
        return {}
    env = {**os.environ, "PYTHONPATH": str(directory)}
    command = [sys.executable, __file__, "--worker-unleash5", str(rounds), str(seconds)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"UnleashClient-5: the worker failed ({tail}); skipped", file=sys.stderr)
        return {}
    figures = json.loads(result.stdout)
    return {(case, impl): float(value) for case, impl, value in figures}


def unleash5_worker(rounds: int, seconds: float) -> None:
    """In the subprocess: time UnleashClient 5 and safeship; print [[case, impl, ns]] as JSON."""
    import UnleashClient

    version = getattr(UnleashClient, "__version__", None)
    if version is None:
        from importlib.metadata import version as dist_version

        version = dist_version("UnleashClient")
    if version != UNLEASH5_VERSION:
        raise SystemExit(f"expected UnleashClient {UNLEASH5_VERSION}, imported {version}")
    with tempfile.TemporaryDirectory() as directory, unleash_subjects(directory) as subjects:
        keyed = {}
        for case, evaluate in subjects.items():
            contexts = unleash_contexts()
            problem = verify("UnleashClient-5", case, evaluate, contexts)
            if problem:
                raise SystemExit(f"UnleashClient-5 {case}: {problem}")
            keyed[(case, "UnleashClient-5")] = (evaluate, contexts)
        for case, evaluate in safeship_subjects().items():
            keyed[(case, "safeship")] = (evaluate, unleash_contexts())
        results = medians(run_rounds(keyed, rounds, seconds))
    print(json.dumps([[case, impl, value] for (case, impl), value in results.items()]))


# --------------------------------------------------------------------------- main


def collect(stack: ExitStack) -> dict[tuple[str, str], tuple[Evaluate, list[Any]]]:
    """Every in-process subject, keyed by (case, impl), each with its own contexts.

    A peer that fails to load, or whose answers show it is not doing the same work, is
    skipped with the reason on stderr.
    """
    subjects: dict[tuple[str, str], tuple[Evaluate, list[Any]]] = {}

    def add(impl: str, load: Callable[[], dict[str, Any]]) -> None:
        try:
            loaded = load()
        except Exception as exc:  # noqa: BLE001 - a missing peer must not stop the others
            print(f"{impl}: unavailable ({type(exc).__name__}: {exc}); skipped", file=sys.stderr)
            return
        for case, value in loaded.items():
            evaluate, contexts = value if isinstance(value, tuple) else (value, unleash_contexts())
            problem = verify(impl, case, evaluate, contexts)
            if problem:
                print(f"{impl} {case}: {problem}; skipped", file=sys.stderr)
                continue
            subjects[(case, impl)] = (evaluate, contexts)

    add("safeship", safeship_subjects)
    add("safeship-counted", safeship_counted_subjects)
    add("baseline", baseline_subjects)
    directory = stack.enter_context(tempfile.TemporaryDirectory())
    add("UnleashClient", lambda: stack.enter_context(unleash_subjects(directory)))
    add("growthbook", growthbook_subjects)
    add("openfeature-inmemory", openfeature_inmemory_subjects)
    for impl, per_case in _provider_subjects().items():
        add(impl, lambda per_case=per_case: per_case)
    return subjects


def _provider_subjects() -> dict[str, dict[str, tuple[Evaluate, list[Any]]]]:
    try:
        return openfeature_provider_subjects()
    except ImportError as exc:
        print(f"safeship-openfeature: unavailable ({exc}); skipped", file=sys.stderr)
        return {}


def summarize(
    results: dict[tuple[str, str], float],
    overheads: dict[str, float],
    paired: dict[tuple[str, str], float],
) -> None:
    """A table on stderr: safeship against the fastest peer and the floor.

    Against UnleashClient 5 the ratio uses safeship as timed beside it in the worker.
    """
    peers = ("UnleashClient", "UnleashClient-5", "growthbook", "openfeature-inmemory")
    for case in CASES:
        ours, floor = results.get((case, "safeship")), results.get((case, "baseline"))
        timed = [(results[(case, p)], p) for p in peers if (case, p) in results]
        if ours is None or not timed:
            continue
        fastest, name = min(timed)
        beside = paired.get((case, "safeship"), ours) if name == "UnleashClient-5" else ours
        line = f"{case:22s} safeship {ours:7.0f} ns  fastest peer {name} {fastest:8.0f} ns"
        line += f" ({fastest / beside:5.1f}x"
        line += f", safeship {beside:.0f} ns beside it)" if beside is not ours else ")"
        if floor:
            line += f"  floor {floor:5.0f} ns ({ours / floor:4.2f}x of it)"
        print(line, file=sys.stderr)
        if case in overheads:
            print(f"{'':22s} OpenFeature provider adds {overheads[case]:6.0f} ns", file=sys.stderr)


def _shutdown_openfeature() -> None:
    try:
        from openfeature import api
    except ImportError:
        return
    api.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter rounds (whole run < 60 s)")
    parser.add_argument("--worker-unleash5", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_unleash5:
        unleash5_worker(int(args.worker_unleash5[0]), float(args.worker_unleash5[1]))
        return
    rounds, seconds = (9, 0.01) if args.quick else (41, 0.03)
    with ExitStack() as stack:
        samples = run_rounds(collect(stack), rounds, seconds)
        _shutdown_openfeature()
    results = medians(samples)
    for (case, impl), value in sorted(results.items(), key=lambda item: CASES.index(item[0][0])):
        emit(case, impl, value)
    overheads = provider_overheads(samples)
    for case, value in overheads.items():
        emit(case, "safeship-openfeature-overhead", value)
    paired = run_unleash5(rounds, seconds)
    for (case, impl), value in paired.items():
        if impl == "UnleashClient-5":
            results[(case, impl)] = value
            emit(case, impl, value)
    summarize(results, overheads, paired)


if __name__ == "__main__":
    main()
