"""Rule cases beyond the shared specification files: operators, versions, segments, strategy
variants, dependencies, regular expressions and address ranges.

Each case is a small state and a context with the answer Unleash's semantics give. The
same table feeds ``test_rules.py`` (safeship) and ``test_reference_engine.py`` (Unleash's
reference engine, when installed), so an expectation written wrong here shows up there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NOW = "2031-06-15T12:00:00.000Z"
"""The injected clock's reading, for date rules without ``currentTime`` in the context."""


@dataclass(frozen=True)
class Case:
    id: str
    features: list[dict[str, Any]]
    context: dict[str, Any]
    expected: bool | tuple[str, str | None]
    """``True``/``False`` for ``is_enabled``; ``(variant name, payload value)`` for ``variant``."""
    segments: list[dict[str, Any]] = field(default_factory=list)
    flag: str = "f"
    portable: bool = True
    """False where safeship deliberately differs from the reference engine (documented)."""


def feature(name: str = "f", *strategies: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": name, "enabled": True, "strategies": list(strategies), **extra}


def default(*constraints: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "default", "parameters": {}, "constraints": list(constraints), **extra}


def rollout(
    percent: str, stickiness: str = "default", group: str | None = "g", **extra: Any
) -> dict[str, Any]:
    parameters = {"rollout": percent, "stickiness": stickiness}
    if group is not None:
        parameters["groupId"] = group
    return {"name": "flexibleRollout", "parameters": parameters, **extra}


def c(field_name: str, operator: str, *values: str, **extra: Any) -> dict[str, Any]:
    return {"contextName": field_name, "operator": operator, "values": list(values), **extra}


def one(field_name: str, operator: str, value: Any, **extra: Any) -> dict[str, Any]:
    return {"contextName": field_name, "operator": operator, "value": value, **extra}


def props(**values: Any) -> dict[str, Any]:
    return {"properties": values}


def variant(name: str, weight: int = 1, value: str | None = None, **extra: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name, "weight": weight, **extra}
    if value is not None:
        result["payload"] = {"type": "string", "value": value}
    return result


def on_when(constraint: dict[str, Any]) -> list[dict[str, Any]]:
    return [feature("f", default(constraint))]


def _string_operators() -> list[Case]:
    return [
        Case(
            "starts-with",
            on_when(c("region", "STR_STARTS_WITH", "eu-")),
            props(region="eu-west-1"),
            True,
        ),
        Case(
            "starts-with-no",
            on_when(c("region", "STR_STARTS_WITH", "eu-")),
            props(region="us-eu-1"),
            False,
        ),
        Case(
            "starts-with-any",
            on_when(c("region", "STR_STARTS_WITH", "ap-", "sa-")),
            props(region="sa-east"),
            True,
        ),
        Case(
            "starts-with-case",
            on_when(c("region", "STR_STARTS_WITH", "EU-")),
            props(region="eu-west"),
            False,
        ),
        Case(
            "starts-with-nocase",
            on_when(c("region", "STR_STARTS_WITH", "EU-", caseInsensitive=True)),
            props(region="eU-west"),
            True,
        ),
        Case(
            "ends-with",
            on_when(c("email", "STR_ENDS_WITH", "@acme.test")),
            props(email="ann@acme.test"),
            True,
        ),
        Case(
            "ends-with-case",
            on_when(c("email", "STR_ENDS_WITH", "@acme.test")),
            props(email="ann@ACME.test"),
            False,
        ),
        Case(
            "ends-with-nocase",
            on_when(c("email", "STR_ENDS_WITH", "@acme.test", caseInsensitive=True)),
            props(email="ann@ACME.TEST"),
            True,
        ),
        Case(
            "contains",
            on_when(c("agent", "STR_CONTAINS", "Firefox")),
            props(agent="Mozilla Firefox/128"),
            True,
        ),
        Case(
            "contains-no",
            on_when(c("agent", "STR_CONTAINS", "Firefox")),
            props(agent="Safari"),
            False,
        ),
        Case(
            "contains-two",
            on_when(c("agent", "STR_CONTAINS", "Edge", "Opera")),
            props(agent="x Opera y"),
            True,
        ),
        Case(
            "contains-inverted",
            on_when(c("agent", "STR_CONTAINS", "bot", inverted=True)),
            props(agent="human"),
            True,
        ),
        Case(
            "contains-inverted-hit",
            on_when(c("agent", "STR_CONTAINS", "bot", inverted=True)),
            props(agent="a bot"),
            False,
        ),
        Case("contains-missing", on_when(c("agent", "STR_CONTAINS", "bot")), {}, False),
        Case(
            "contains-missing-inverted",
            on_when(c("agent", "STR_CONTAINS", "bot", inverted=True)),
            {},
            True,
        ),
        Case(
            "contains-empty-needle",
            on_when(c("agent", "STR_CONTAINS", "")),
            props(agent="any"),
            True,
        ),
    ]


def _membership_operators() -> list[Case]:
    return [
        Case("in-missing", on_when(c("tier", "IN", "gold")), {}, False),
        Case("in-present", on_when(c("tier", "IN", "gold")), props(tier="gold"), True),
        Case("not-in-missing", on_when(c("tier", "NOT_IN", "gold")), {}, True),
        Case("not-in-null", on_when(c("tier", "NOT_IN", "gold")), props(tier=None), True),
        Case(
            "in-inverted",
            on_when(c("tier", "IN", "gold", "silver", inverted=True)),
            props(tier="gold"),
            False,
        ),
        Case("in-inverted-missing", on_when(c("tier", "IN", "gold", inverted=True)), {}, True),
        Case(
            "not-in-inverted",
            on_when(c("tier", "NOT_IN", "gold", "silver", inverted=True)),
            props(tier="gold"),
            True,
        ),
        Case(
            "not-in-inverted-missing",
            on_when(c("tier", "NOT_IN", "gold", inverted=True)),
            {},
            False,
        ),
        # caseInsensitive does not apply to IN/NOT_IN: Unleash's Node SDK, its engine
        # (yggdrasil) and its admin UI compare them exactly whatever the flag says.
        Case(
            "in-nocase",
            on_when(c("appName", "IN", "shop", "shop-ios-[beta]", caseInsensitive=True)),
            props(appName="Shop-iOS-[Beta]"),
            False,
        ),
        Case(
            "in-nocase-exact",
            on_when(c("appName", "IN", "shop", caseInsensitive=True)),
            props(appName="shop"),
            True,
        ),
        Case(
            "in-nocase-inverted",
            on_when(c("appName", "IN", "shop", caseInsensitive=True, inverted=True)),
            props(appName="SHOP"),
            True,
        ),
        Case(
            "not-in-nocase",
            on_when(c("appName", "NOT_IN", "shop", caseInsensitive=True)),
            props(appName="ShOp"),
            True,
        ),
        Case(
            "not-in-nocase-inverted",
            on_when(c("appName", "NOT_IN", "shop", caseInsensitive=True, inverted=True)),
            props(appName="SHOP"),
            False,
        ),
        Case("in-no-trimming", on_when(c("tier", "IN", " gold")), props(tier="gold"), False),
        Case("in-number-context", on_when(c("seats", "IN", "12")), props(seats=12), True),
        Case("in-bool-context", on_when(c("beta", "IN", "true")), props(beta=True), True),
        Case(
            "standard-field-in-properties",
            on_when(c("userId", "IN", "u7")),
            props(userId="u7"),
            True,
        ),
        Case(
            "top-level-wins",
            on_when(c("userId", "IN", "u7")),
            {"userId": "u8", **props(userId="u7")},
            False,
        ),
        Case("custom-field-top-level", on_when(c("tier", "IN", "gold")), {"tier": "gold"}, True),
        Case("unknown-operator", on_when(c("tier", "LIKE", "gold")), props(tier="gold"), False),
        Case(
            "unknown-operator-inverted",
            on_when(c("tier", "LIKE", "gold", inverted=True)),
            props(tier="x"),
            False,
        ),
    ]


def _number_operators() -> list[Case]:
    def num(op: str, value: str, seen: Any, expected: bool, **extra: Any) -> Case:
        case_id = f"{op.lower()}-{value}-{seen}" + ("-inverted" if extra.get("inverted") else "")
        constraint = one("seats", op, value, **extra)
        return Case(case_id, on_when(constraint), props(seats=seen), expected)

    return [
        num("NUM_EQ", "20", "20", True),
        num("NUM_EQ", "20", "20.0", True),
        num("NUM_EQ", "20.0", "20", True),
        num("NUM_EQ", "20", "21", False),
        num("NUM_EQ", "20", "20", False, inverted=True),
        num("NUM_GT", "20", "21", True),
        num("NUM_GT", "20", "20", False),
        num("NUM_GTE", "20", "20", True),
        num("NUM_GTE", "20", "19.5", False),
        num("NUM_LT", "20", "-3", True),
        num("NUM_LT", "20", "20", False),
        num("NUM_LTE", "20", "20", True),
        num("NUM_LTE", "20", "2e1", True),
        num("NUM_LTE", "20", "2e2", False),
        num("NUM_GT", "20", "lots", False),
        num("NUM_GT", "20", "lots", True, inverted=True),
        num("NUM_GT", "20", " 30", False),
        num("NUM_GT", "20", "3_0", False),
        num("NUM_GT", " 20", "30", True),
        Case(
            "num-range",
            [feature("f", default(one("seats", "NUM_GT", "5"), one("seats", "NUM_LT", "9")))],
            props(seats="7"),
            True,
        ),
        Case(
            "num-range-out",
            [feature("f", default(one("seats", "NUM_GT", "5"), one("seats", "NUM_LT", "9")))],
            props(seats="9"),
            False,
        ),
        Case("num-broken-value", on_when(one("seats", "NUM_EQ", "many")), props(seats="3"), False),
        Case(
            "num-broken-value-inverted",
            on_when(one("seats", "NUM_EQ", "many", inverted=True)),
            props(seats="3"),
            False,
        ),
    ]


def _date_operators() -> list[Case]:
    after = one("currentTime", "DATE_AFTER", "2030-03-01T08:00:00.000Z")
    before = one("currentTime", "DATE_BEFORE", "2030-03-01T08:00:00.000Z")
    return [
        Case("date-after", on_when(after), {"currentTime": "2030-03-01T08:00:01.000Z"}, True),
        Case(
            "date-after-equal", on_when(after), {"currentTime": "2030-03-01T08:00:00.000Z"}, False
        ),
        Case(
            "date-after-before", on_when(after), {"currentTime": "2030-02-28T08:00:00.000Z"}, False
        ),
        Case("date-before", on_when(before), {"currentTime": "2030-02-01T00:00:00Z"}, True),
        Case("date-before-equal", on_when(before), {"currentTime": "2030-03-01T08:00:00Z"}, False),
        Case("date-offset", on_when(after), {"currentTime": "2030-03-01T09:30:00+01:00"}, True),
        Case(
            "date-offset-earlier",
            on_when(after),
            {"currentTime": "2030-03-01T08:30:00+01:00"},
            False,
        ),
        Case(
            "date-window",
            [
                feature(
                    "f",
                    default(
                        one("currentTime", "DATE_AFTER", "2030-01-01T00:00:00.000+02:00"),
                        one("currentTime", "DATE_BEFORE", "2030-01-01T01:00:00.000+02:00"),
                    ),
                )
            ],
            {"currentTime": "2029-12-31T22:30:00.000Z"},
            True,
        ),
        Case("date-garbage-context", on_when(after), {"currentTime": "soon"}, False),
        Case(
            "date-garbage-context-inverted",
            on_when({**after, "inverted": True}),
            {"currentTime": "soon"},
            True,
        ),
        Case("date-naive-context", on_when(after), {"currentTime": "2031-01-01T00:00:00"}, False),
        Case(
            "date-broken-value",
            on_when(one("currentTime", "DATE_AFTER", "next tuesday")),
            {"currentTime": "2031-01-01T00:00:00Z"},
            False,
        ),
        Case(
            "date-custom-field",
            on_when(one("signup", "DATE_BEFORE", "2030-01-01T00:00:00.000Z")),
            props(signup="2029-05-05T10:00:00Z"),
            True,
        ),
        Case(
            "date-custom-field-missing",
            on_when(one("signup", "DATE_BEFORE", "2030-01-01T00:00:00.000Z")),
            {},
            False,
        ),
        Case(
            "date-clock-after",
            on_when(one("currentTime", "DATE_AFTER", "2031-06-15T11:59:59.000Z")),
            {},
            True,
            portable=False,
        ),
        Case(
            "date-clock-before",
            on_when(one("currentTime", "DATE_BEFORE", "2031-06-15T11:59:59.000Z")),
            {},
            False,
            portable=False,
        ),
    ]


def _semver_operators() -> list[Case]:
    def sv(op: str, target: str, seen: str, expected: bool) -> Case:
        return Case(
            f"semver-{op[7:].lower()}-{target}-vs-{seen}",
            on_when(one("version", op, target)),
            props(version=seen),
            expected,
        )

    return [
        sv("SEMVER_EQ", "3.4.5", "3.4.5", True),
        sv("SEMVER_EQ", "3.4.5", "3.4.5+build.7", True),
        sv("SEMVER_EQ", "3.4.5+abc", "3.4.5", True),
        sv("SEMVER_EQ", "3.4.5", "3.4.6", False),
        sv("SEMVER_GT", "3.4.5", "3.4.6", True),
        sv("SEMVER_GT", "3.4.5", "3.4.5+meta", False),
        sv("SEMVER_GT", "3.4.5", "3.10.0", True),
        sv("SEMVER_GTE", "3.4.5", "3.4.5", True),
        sv("SEMVER_GTE", "3.4.5", "3.4.4", False),
        sv("SEMVER_LT", "3.4.5", "3.4.5-rc.1", True),
        sv("SEMVER_LT", "3.4.5", "3.4.5", False),
        sv("SEMVER_LTE", "3.4.5", "3.4.5", True),
        sv("SEMVER_LTE", "3.4.5", "4.0.0", False),
        sv("SEMVER_GT", "5.0.0-alpha", "5.0.0-alpha.1", True),
        sv("SEMVER_GT", "5.0.0-alpha.1", "5.0.0-beta", True),
        sv("SEMVER_GT", "5.0.0-beta.2", "5.0.0-beta.11", True),
        sv("SEMVER_GT", "5.0.0-rc.1", "5.0.0", True),
        sv("SEMVER_GT", "5.0.0-rc", "5.0.0-beta.9", False),
        sv("SEMVER_LT", "5.0.0-alpha", "5.0.0-7", True),
        sv("SEMVER_LT", "5.0.0-alpha.1+x", "5.0.0-alpha.1", False),
        sv("SEMVER_GT", "5.0.0-alpha.1+x.1", "5.0.0-alpha.1+x.2", False),
        sv("SEMVER_EQ", "3.4.5", "v3.4.5", False),
        sv("SEMVER_EQ", "3.4.5", "3.4", False),
        sv("SEMVER_EQ", "3.4.5", "03.4.5", False),
        sv("SEMVER_EQ", "3.4.5", "not a version", False),
        Case(
            "semver-broken-target",
            on_when(one("version", "SEMVER_EQ", "v1")),
            props(version="1.0.0"),
            False,
        ),
    ]


def _segments() -> list[Case]:
    segments = [
        {"id": 10, "constraints": [c("plan", "IN", "team", "enterprise")]},
        {"id": 11, "constraints": [c("plan", "IN", "free")]},
        {"id": 12, "constraints": [c("region", "STR_STARTS_WITH", "eu")]},
    ]

    def seg(
        case_id: str,
        ids: list[int],
        context: dict[str, Any],
        expected: bool,
        *constraints: dict[str, Any],
    ) -> Case:
        return Case(
            case_id,
            [feature("f", default(*constraints, segments=ids))],
            context,
            expected,
            segments=segments,
        )

    return [
        seg("segment-match", [10], props(plan="team"), True),
        seg("segment-no-match", [11], props(plan="team"), False),
        seg(
            "segment-and-constraint",
            [10],
            props(plan="team", seats="3"),
            True,
            one("seats", "NUM_LT", "5"),
        ),
        seg(
            "segment-and-failing-constraint",
            [10],
            props(plan="team", seats="9"),
            False,
            one("seats", "NUM_LT", "5"),
        ),
        seg("segment-missing", [99], props(plan="team"), False),
        seg("segments-all", [10, 12], props(plan="team", region="eu-north"), True),
        seg("segments-one-fails", [10, 12], props(plan="team", region="us-east"), False),
    ]


def _strategy_variants() -> list[Case]:
    dev = c("environment", "IN", "dev")
    return [
        Case(
            "strategy-variant",
            [
                feature(
                    "f",
                    rollout(
                        "100", variants=[variant("sv", value="from-strategy")], constraints=[dev]
                    ),
                )
            ],
            {"environment": "dev"},
            ("sv", "from-strategy"),
        ),
        Case(
            "strategy-variant-off",
            [feature("f", rollout("100", variants=[variant("sv")], constraints=[dev]))],
            {"environment": "prod"},
            ("disabled", None),
        ),
        Case(
            "strategy-variant-beats-feature-variant",
            [
                feature(
                    "f",
                    rollout("100", variants=[variant("sv", value="s")]),
                    variants=[variant("fv", value="x")],
                )
            ],
            {"userId": "u1"},
            ("sv", "s"),
        ),
        Case(
            "feature-variant-fallback",
            [feature("f", rollout("100"), variants=[variant("fv", value="x")])],
            {"userId": "u1"},
            ("fv", "x"),
        ),
        Case(
            "empty-strategy-variants-fall-back",
            [feature("f", rollout("100", variants=[]), variants=[variant("fv", value="x")])],
            {"userId": "u1"},
            ("fv", "x"),
        ),
        Case(
            "no-variants-at-all",
            [feature("f", rollout("100", variants=[]))],
            {"userId": "u1"},
            ("disabled", None),
        ),
        Case(
            "first-matching-strategy-wins",
            [
                feature(
                    "f",
                    default(c("tier", "IN", "gold"), variants=[variant("gold-variant")]),
                    default(variants=[variant("everyone-variant")]),
                )
            ],
            props(tier="silver"),
            ("everyone-variant", None),
        ),
        Case(
            "override",
            [
                feature(
                    "f",
                    default(),
                    variants=[
                        variant("a", 1),
                        variant("b", 99, overrides=[{"contextName": "tenant", "values": ["t-1"]}]),
                    ],
                )
            ],
            props(tenant="t-1"),
            ("b", None),
        ),
        Case(
            "first-override-wins",
            [
                feature(
                    "f",
                    default(),
                    variants=[
                        variant("a", 1, overrides=[{"contextName": "userId", "values": ["u9"]}]),
                        variant("b", 1, overrides=[{"contextName": "userId", "values": ["u9"]}]),
                    ],
                )
            ],
            {"userId": "u9"},
            ("a", None),
        ),
        Case(
            "zero-weight-never-chosen",
            [feature("f", default(), variants=[variant("never", 0), variant("always", 5)])],
            {"userId": "anyone"},
            ("always", None),
        ),
    ]


def _dependencies() -> list[Case]:
    parent_on = feature("p-on", default())
    parent_off = {**feature("p-off", default()), "enabled": False}
    parent_variant = feature("p-var", rollout("100", variants=[variant("pv")]))
    parent_dev = feature("p-dev", default(c("environment", "IN", "dev")))
    grand = feature("p-grand", default(), dependencies=[{"feature": "p-on"}])

    def child(
        case_id: str,
        deps: list[dict[str, Any]],
        expected: bool,
        context: dict[str, Any] | None = None,
        enabled: bool = True,
    ) -> Case:
        kid = {**feature("kid", default()), "enabled": enabled, "dependencies": deps}
        states = [parent_on, parent_off, parent_variant, parent_dev, grand, kid]
        return Case(case_id, states, context or {}, expected, flag="kid")

    return [
        child("dep-parent-on", [{"feature": "p-on"}], True),
        child("dep-parent-on-child-off", [{"feature": "p-on"}], False, enabled=False),
        child("dep-parent-off", [{"feature": "p-off"}], False),
        child("dep-expect-off-and-off", [{"feature": "p-off", "enabled": False}], True),
        child("dep-expect-off-but-on", [{"feature": "p-on", "enabled": False}], False),
        child("dep-variant-match", [{"feature": "p-var", "variants": ["pv"]}], True),
        child("dep-variant-any", [{"feature": "p-var", "variants": ["zz", "pv"]}], True),
        child("dep-variant-empty-list", [{"feature": "p-var", "variants": []}], True),
        child("dep-variant-mismatch", [{"feature": "p-var", "variants": ["zz"]}], False),
        child("dep-parent-default-variant", [{"feature": "p-on", "variants": ["disabled"]}], True),
        child(
            "dep-two-parents", [{"feature": "p-on"}, {"feature": "p-off", "enabled": False}], True
        ),
        child("dep-two-parents-one-off", [{"feature": "p-on"}, {"feature": "p-off"}], False),
        child("dep-missing-parent", [{"feature": "nobody"}], False),
        child("dep-transitive", [{"feature": "p-grand"}], False),
        child("dep-parent-context-yes", [{"feature": "p-dev"}], True, {"environment": "dev"}),
        child("dep-parent-context-no", [{"feature": "p-dev"}], False, {"environment": "prod"}),
        Case(
            "dep-cycle",
            [
                feature("x", default(), dependencies=[{"feature": "y"}]),
                feature("y", default(), dependencies=[{"feature": "x"}]),
            ],
            {},
            False,
            flag="x",
        ),
    ]


def _regex() -> list[Case]:
    def rx(case_id: str, pattern: str, seen: Any, expected: bool, **extra: Any) -> Case:
        context = {} if seen is _ABSENT else {"userId": seen}
        return Case(case_id, on_when(one("userId", "REGEX", pattern, **extra)), context, expected)

    return [
        rx("regex-anchored", "^dog$", "dog", True),
        rx("regex-case-sensitive", "^dog$", "Dog", False),
        rx("regex-search-anywhere", "og", "hotdog", True),
        rx("regex-email", "^[^@]+@[^@]+$", "x@y.test", True),
        rx("regex-email-no", "^[^@]+@[^@]+$", "x.y.test", False),
        rx("regex-digits", r"^order-\d{4}$", "order-2024", True),
        rx("regex-digits-short", r"^order-\d{4}$", "order-24", False),
        rx("regex-posix-class", "^[[:upper:]][[:lower:]]+$", "Zed", True),
        rx("regex-posix-class-no", "^[[:upper:]][[:lower:]]+$", "zed", False),
        rx("regex-word-boundary", r"\bdog\b", "a dog barks", True),
        rx("regex-word-boundary-no", r"\bdog\b", "hotdogs", False),
        rx("regex-alternation", "^(north|south)$", "south", True),
        rx("regex-optional", "^(pre)?fix$", "fix", True),
        rx("regex-bounded", "^x{2,3}$", "xxxx", False),
        rx("regex-lazy", "^a.*?z$", "a-z-z", True),
        rx("regex-inline-i", "^(?i)dog$", "DoG", True),
        rx("regex-inline-i-mid", "d(?i)og", "dOG", True),
        rx("regex-inline-i-mid-scope", "d(?i)og", "DOG", False),
        rx("regex-inline-i-next-branch", "x(?i)y|z", "Z", True),
        rx("regex-flag-case-insensitive", "^dog$", "DOG", True, caseInsensitive=True),
        rx("regex-inverted", "^dog$", "cat", True, inverted=True),
        rx("regex-inverted-match", "^dog$", "dog", False, inverted=True),
        rx("regex-multiline", "(?m)^bar$", "foo\nbar\nbaz", True),
        rx("regex-multiline-no", "(?m)^bar$", "foo\nbarn", False),
        rx("regex-dot-all", "^(?s)a.c$", "a\nc", True),
        rx("regex-dollar-is-end", "^dog$", "dog\n", False),
        rx("regex-end-of-text", r"dog\z", "hotdog", True),
        rx("regex-named-group", "(?<animal>dog)", "dog", True),
        rx("regex-missing", "^dog$", _ABSENT, False),
        rx("regex-missing-inverted", "^dog$", _ABSENT, True, inverted=True),
        rx("regex-invalid", "(dog", "dog", False),
        rx("regex-lookahead", "^(?=d)dog$", "dog", False),
        rx("regex-backreference", r"^(o)\1$", "oo", False),
        Case("regex-null-property", on_when(one("pet", "REGEX", "^dog$")), props(pet=None), False),
        Case(
            "regex-values-list",
            on_when(c("pet", "REGEX", "^cat$", "^dog$")),
            props(pet="dog"),
            True,
        ),
        Case(
            "regex-invalid-inverted",
            on_when(one("userId", "REGEX", "(dog", inverted=True)),
            {"userId": "x"},
            False,
            portable=False,
        ),
    ]


_ABSENT = object()


def _cidr() -> list[Case]:
    def cidr(
        case_id: str, values: list[str], seen: str | None, expected: bool, **extra: Any
    ) -> Case:
        context = {} if seen is None else {"remoteAddress": seen}
        return Case(
            case_id, on_when(c("remoteAddress", "IN_CIDR", *values, **extra)), context, expected
        )

    return [
        cidr("cidr-exact", ["10.1.2.3"], "10.1.2.3", True),
        cidr("cidr-exact-no", ["10.1.2.3"], "10.1.2.4", False),
        cidr("cidr-range", ["172.16.0.0/12"], "172.20.9.9", True),
        cidr("cidr-range-no", ["172.16.0.0/12"], "172.32.0.1", False),
        cidr("cidr-host-bits", ["192.168.7.9/16"], "192.168.200.1", True),
        cidr("cidr-bad-entry-ignored", ["not-an-ip", "192.168.0.0/24"], "192.168.0.77", True),
        cidr("cidr-only-bad", ["300.1.1.1"], "10.0.0.1", False),
        cidr("cidr-missing", ["10.0.0.0/8"], None, False),
        cidr("cidr-missing-inverted", ["10.0.0.0/8"], None, True, inverted=True),
        cidr("cidr-inverted", ["10.0.0.0/8"], "11.0.0.1", True, inverted=True),
        cidr("cidr-garbage-context", ["10.0.0.0/8"], "ten", False),
        cidr("cidr-v6-exact", ["fd00::5"], "fd00::5", True),
        cidr("cidr-v6-range", ["fd00:ab::/32"], "fd00:ab:1::9", True),
        cidr("cidr-v6-range-no", ["fd00:ab::/32"], "fd00:ac::1", False),
        cidr("cidr-v4-not-in-v6", ["::/0"], "10.0.0.1", False),
    ]


def _strategies() -> list[Case]:
    return [
        Case(
            "user-with-id",
            [feature("f", {"name": "userWithId", "parameters": {"userIds": "ann, bob ,cy"}})],
            {"userId": "bob"},
            True,
        ),
        Case(
            "user-with-id-no",
            [feature("f", {"name": "userWithId", "parameters": {"userIds": "ann,bob"}})],
            {"userId": "dan"},
            False,
        ),
        Case(
            "remote-address-cidr",
            [
                feature(
                    "f",
                    {"name": "remoteAddress", "parameters": {"IPs": "10.0.0.9, 192.168.0.0/16"}},
                )
            ],
            {"remoteAddress": "192.168.3.4"},
            True,
        ),
        Case(
            "remote-address-no",
            [feature("f", {"name": "remoteAddress", "parameters": {"IPs": "10.0.0.9"}})],
            {"remoteAddress": "10.0.0.8"},
            False,
        ),
        Case(
            "host-name",
            [
                feature(
                    "f",
                    {
                        "name": "applicationHostname",
                        "parameters": {"hostNames": "web-1, Test-Host"},
                    },
                )
            ],
            {},
            True,
            portable=False,
        ),
        Case(
            "host-name-no",
            [feature("f", {"name": "applicationHostname", "parameters": {"hostNames": "web-1"}})],
            {},
            False,
            portable=False,
        ),
        Case("unknown-strategy", [feature("f", {"name": "bespoke", "parameters": {}})], {}, False),
        Case(
            "unknown-then-default",
            [feature("f", {"name": "bespoke", "parameters": {}}, default())],
            {},
            True,
        ),
        Case("no-strategies", [feature("f")], {}, True),
        Case("disabled", [{**feature("f", default()), "enabled": False}], {}, False),
        Case("rollout-100-no-id", [feature("f", rollout("100"))], {}, True),
        Case("rollout-0", [feature("f", rollout("0"))], {"userId": "u"}, False),
        Case("rollout-sticky-missing", [feature("f", rollout("100", "userId"))], {}, False),
        Case(
            "rollout-custom-missing",
            [feature("f", rollout("100", "tenant"))],
            {"userId": "u"},
            False,
        ),
        Case(
            "rollout-custom-present",
            [feature("f", rollout("100", "tenant"))],
            props(tenant="t"),
            True,
        ),
        Case("rollout-random-100", [feature("f", rollout("100", "random"))], {}, True),
        Case(
            "rollout-bad-percent", [feature("f", rollout("25.5", "userId"))], {"userId": "u"}, False
        ),
        Case("rollout-over-100", [feature("f", rollout("150", "userId"))], {"userId": "u"}, False),
        Case(
            "gradual-random-0",
            [feature("f", {"name": "gradualRolloutRandom", "parameters": {"percentage": "0"}})],
            {},
            False,
        ),
        Case(
            "gradual-user-no-group",
            [feature("f", {"name": "gradualRolloutUserId", "parameters": {"percentage": "100"}})],
            {"userId": "u"},
            False,
        ),
        Case(
            "gradual-session",
            [
                feature(
                    "f",
                    {
                        "name": "gradualRolloutSessionId",
                        "parameters": {"percentage": "100", "groupId": "g"},
                    },
                )
            ],
            {"sessionId": "s"},
            True,
        ),
    ]


CASES: list[Case] = [
    *_string_operators(),
    *_membership_operators(),
    *_number_operators(),
    *_date_operators(),
    *_semver_operators(),
    *_segments(),
    *_strategy_variants(),
    *_dependencies(),
    *_regex(),
    *_cidr(),
    *_strategies(),
]


def state_of(case: Case) -> dict[str, Any]:
    return {"version": 1, "features": case.features, "segments": case.segments}
