"""Risk rules as data: CEL expressions (Common Expression Language), compiled once, never eval()'d.

    rule = Rule(rule_id="big_new_card", expression="event.amount > 500.0 && card.count_30d <= 1",
                action="review")
    RuleSet([rule]).evaluate(context)  # -> [RuleHit(...)] for the rules whose expression is true

Why CEL, via the `common-expression-language` package (Rust core): it is a language made for exactly
this (policy expressions evaluated against untrusted-input contexts, no loops, no I/O, guaranteed to
terminate), it is a published spec shared with Google's and Kubernetes' policy engines, and its Rust
evaluator runs a compiled rule in about 1 µs against a prepared context on this machine, where the
pure-Python `rule-engine` and `cel-python` need 20-30 µs; 50 rules must fit in a 2 ms budget.

A rule is validated when it is created, not when a payment arrives: syntax, every variable and field
it names (against `VARIABLES`), and a dry run on a typical context that must give a boolean.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

import cel

from shopmind.exceptions import InvalidInputError
from shopmind.risk.velocity import DEFAULT_DISTINCT, ENTITIES, WINDOWS

ACTIONS = ("score", "allow", "review", "block", "freeze_account")
MODES = ("enforce", "shadow")
RULE_ID = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
MAX_EXPRESSION = 2000

EVENT_FIELDS = {
    "kind": "login", "amount": 0.0, "currency": "EUR", "n_items": 0, "hour": 12, "weekday": 0,
    "ip_country": "", "shipping_country": "", "billing_country": "", "user_country": "",
    "email_domain": "", "new_device": False, "new_card": False, "account_age_days": -1.0,
}
VELOCITY_FIELDS = (
    [f"{agg}_{w}" for w in WINDOWS for agg in ("count", "sum", "mean", "max")]
    + ["seconds_since_prev"]
)
DISTINCT_FIELDS = {entity: [f"distinct_{what}_{w}" for what in DEFAULT_DISTINCT.get(entity, ()) for w in WINDOWS]
                   for entity in ENTITIES}  # only what the velocity store computes
MODEL_FIELDS = {"score": 0.0, "unusual": 0.0}


def sample_context(list_names: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A typical, complete context: what rules are dry-run against, and what `VARIABLES` documents."""
    # seconds_since_prev -1: no earlier event known, as for an entity without one, and for an entity the
    # event does not carry (a login without a device), which must not read as "0 s after the last one"
    velocity = {name: 0 if name.startswith("count") else -1.0 if name == "seconds_since_prev" else 0.0
                for name in VELOCITY_FIELDS}
    context: dict[str, Any] = {"event": dict(EVENT_FIELDS), "model": dict(MODEL_FIELDS),
                               "lists": {name: False for name in list_names}}
    for entity in ENTITIES:
        context[entity] = velocity | {name: 0 for name in DISTINCT_FIELDS[entity]}
    return context


VARIABLES = ("event", "model", "lists", *ENTITIES)
# CEL's standard functions and macros that make sense on risk events; anything else is refused by name.
CEL_FUNCTIONS = frozenset({
    "size", "contains", "startsWith", "endsWith", "matches", "int", "uint", "double", "string", "bool",
    "has", "exists", "all", "exists_one", "map", "filter", "min", "max", "abs",
})


@dataclass(frozen=True)
class Rule:
    """One rule. `action` "score" adds `weight` to the decision score; the others decide directly."""

    rule_id: str
    expression: str
    action: str = "score"
    weight: float = 0.0
    mode: str = "enforce"
    description: str = ""
    version: int = 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RuleHit:
    rule_id: str
    version: int
    action: str
    weight: float
    shadow: bool
    description: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_MACROS = ("exists_one", "exists", "all", "map", "filter")  # x.all(v, ...) binds v
# CEL's lexis (cel-spec), enough to walk an expression that has parsed: raw strings end at their first
# quote, other strings honour escapes, and // comments are blanks.
_TOKEN = re.compile(
    r"(?P<skip>\s+|//[^\n]*)"
    r"|(?P<string>[bB]?[rR](?:" '"""' r"[\s\S]*?" '"""' r"|'''[\s\S]*?'''|" r'"[^"\n\r]*"' r"|'[^'\n\r]*')"
    r"|[bB]?(?:" '"""' r"(?:\\[\s\S]|[^\\])*?" '"""' r"|'''(?:\\[\s\S]|[^\\])*?'''"
    r'|"(?:\\.|[^"\\\n\r])*"' r"|'(?:\\.|[^'\\\n\r])*'))"
    r"|(?P<number>0[xX][0-9a-fA-F]+[uU]?|\d*\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\d+[uU]?)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<op>.)")
_PLAIN_NAME = re.compile(r"""(["'])([^"'\\]*)\1""")  # lists["name"]: quoted, nothing escaped
_NONE = ("", "")


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) of each token of the expression, blanks and comments left out."""
    return [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text) if m.lastgroup != "skip"]


def _uses(tokens: list[tuple[str, str]], names) -> list[int]:
    """Where the tokens use one of these variables (in x.event, event is a field that shares the name)."""
    return [i for i, (kind, text) in enumerate(tokens)
            if kind == "name" and text in names and (i == 0 or tokens[i - 1] != ("op", "."))]


def _selected(tokens: list[tuple[str, str]], i: int) -> tuple[str | None, int]:
    """The field selected by name from the variable at tokens[i] (`v.f`, `v["f"]`), and where that ends;
    None where nothing is selected from it, "" where it is indexed by anything but a plain name."""
    nxt = tokens[i + 1:i + 4] + [_NONE] * 3
    if nxt[0] == ("op", ".") and nxt[1][0] == "name":
        return nxt[1][1], i + 3
    if nxt[0] == ("op", "["):
        plain = _PLAIN_NAME.fullmatch(nxt[1][1]) if nxt[1][0] == "string" and nxt[2] == ("op", "]") else None
        return (plain.group(2), i + 4) if plain else ("", i + 1)
    return None, i + 1


def _macro_variables(tokens: list[tuple[str, str]]) -> set[str]:
    """Names the expression binds in a macro (`[..].exists(x, x > 1)`), which are not context variables."""
    return {tokens[i + 3][1] for i in range(len(tokens) - 4)
            if tokens[i] == ("op", ".") and tokens[i + 1][0] == "name" and tokens[i + 1][1] in _MACROS
            and tokens[i + 2] == ("op", "(") and tokens[i + 3][0] == "name" and tokens[i + 4] == ("op", ",")}


def _whole(tokens: list[tuple[str, str]], i: int) -> bool:
    """Whether the variable at tokens[i] is only tested as a whole (`"x" in lists`, `size(event)`), which
    reads none of its fields."""
    before = tokens[i - 1] if i else _NONE
    after = tokens[i + 1] if i + 1 < len(tokens) else _NONE
    return before == ("name", "in") or (before == ("op", "(") and i > 1 and tokens[i - 2] == ("name", "size")
                                        and after == ("op", ")"))


def _refuse_selections_from_values(tokens: list[tuple[str, str]]) -> None:
    """Every value a rule reaches through the variables is a field, a single value without fields (the
    variables' own uses are checked above). A field selected from a parenthesised or indexed value, or from
    a macro's variable, is therefore selected from such a value and fails at run time, on exactly the
    events that reach it: `(event.kind).nope`, `[event.kind][0].nope`, `(c ? event.kind : '').nope`,
    `[event.amount].exists(x, x.nope > 1)`. Refused statically, as a dry run need not reach them (a review
    found the direct check `event.kind.nope` alone). Methods (`.startsWith(...)`) are not selections."""
    bound = _macro_variables(tokens)
    padded = tokens + [_NONE] * 2
    for i in range(1, len(tokens)):
        if padded[i] != ("op", ".") or padded[i + 1][0] != "name" or padded[i + 2] == ("op", "("):
            continue
        before = tokens[i - 1]
        from_macro_variable = before[0] == "name" and before[1] in bound and (i < 2 or tokens[i - 2] != ("op", "."))
        if before in (("op", ")"), ("op", "]")) or from_macro_variable:
            raise InvalidInputError(f"expression selects '{padded[i + 1][1]}' from a value without fields "
                                    f"(rules read fields of event, user, card, device, ip, terminal, model "
                                    f"and lists only, each as <variable>.<field>)", field="expression")


def referenced_lists(rules: list[Rule]) -> set[str]:
    """The list names the rules read (`lists.NAME`, `lists["NAME"]`)."""
    names = set()
    for rule in rules:
        tokens = _tokens(rule.expression)
        names.update(member for i in _uses(tokens, ("lists",)) if (member := _selected(tokens, i)[0]))
    return names


def compile_rule(rule: Rule, list_names: tuple[str, ...] = ()) -> "cel.Program":
    """Validate a rule completely and return its compiled program; InvalidInputError names the field."""
    if not RULE_ID.fullmatch(rule.rule_id or ""):
        raise InvalidInputError("rule_id must be 1-64 characters of a-z, 0-9 and _, starting with a letter",
                                field="rule_id")
    if rule.action not in ACTIONS:
        raise InvalidInputError(f"action must be one of {', '.join(ACTIONS)}", field="action")
    if rule.mode not in MODES:
        raise InvalidInputError(f"mode must be one of {', '.join(MODES)}", field="mode")
    if rule.action == "score" and not (-1.0 <= rule.weight <= 1.0 and rule.weight != 0.0):
        raise InvalidInputError("a score rule needs a weight: a number in [-1, 1] other than 0 (or choose "
                                "another action)", field="weight")
    for name in ("expression", "description"):  # PostgreSQL cannot store a NUL (SQLite can): refused on both
        if "\x00" in (getattr(rule, name) or ""):
            raise InvalidInputError(f"{name} must not contain a NUL character (\\u0000)", field=name)
    text = (rule.expression or "").strip()
    if not text:
        raise InvalidInputError("expression is empty", field="expression")
    if len(text) > MAX_EXPRESSION:
        raise InvalidInputError(f"expression is longer than {MAX_EXPRESSION} characters", field="expression")
    try:
        program = cel.compile(text)
    except Exception as exc:  # the parser reports position and expectation; keep its first line
        raise InvalidInputError(f"expression does not parse: {str(exc).splitlines()[0]}", field="expression") from None
    # Operators show up as "_&&_", "!_", "@in": anything that is a plain identifier is a function call.
    strange = sorted(f for f in program.functions() if re.fullmatch(r"\w+", f) and f not in CEL_FUNCTIONS)
    if strange:
        raise InvalidInputError(f"expression calls unknown function(s) {', '.join(strange)}; "
                                f"allowed: {', '.join(sorted(CEL_FUNCTIONS))}", field="expression")
    sample = sample_context(list_names)
    known = {name: set(value) for name, value in sample.items()}
    tokens = _tokens(text)
    unknown = sorted(set(program.variables()) - set(known) - _macro_variables(tokens))
    if unknown:
        raise InvalidInputError(f"expression uses unknown variable(s) {', '.join(unknown)}; "
                                f"known: {', '.join(VARIABLES)}", field="expression")
    # Fields are checked statically too: a dry run does not reach terms behind a short-circuit. So each use
    # of a variable must name its field right there: put in a list or map, in parentheses or a condition,
    # the variable can be selected from further on where no check sees the field ({"a": event}.a.nope).
    for i in _uses(tokens, known):
        owner = tokens[i][1]
        member, end = _selected(tokens, i)
        if member is None and _whole(tokens, i):
            continue
        if member is None:
            raise InvalidInputError(f"expression uses {owner} other than as {owner}.<field> (inside a list, map, "
                                    f"parentheses or condition, say), where its fields cannot be checked: "
                                    f"name the field directly", field="expression")
        if not member:
            raise InvalidInputError(f"expression indexes {owner} with something other than a quoted name, "
                                    f"which cannot be checked: write {owner}.<field>", field="expression")
        if member not in known[owner]:
            where = "list" if owner == "lists" else f"field of {owner}"
            raise InvalidInputError(f"expression uses unknown {where} '{member}'", field="expression")
        after = tokens[end:end + 3] + [_NONE] * 3       # a method of the value is fine: .startsWith(...)
        if not isinstance(sample[owner][member], dict) and (
                after[0] == ("op", "[") or after[0] == ("op", ".") and after[2] != ("op", "(")):
            raise InvalidInputError(f"expression selects from {owner}.{member}, a single value without fields",
                                    field="expression")
    _refuse_selections_from_values(tokens)
    try:
        result = program.execute(cel.Context(sample))
    except Exception as exc:
        raise InvalidInputError(f"expression fails on a typical event: {type(exc).__name__}: "
                                f"{str(exc).splitlines()[0][:200]}", field="expression") from None
    if not isinstance(result, bool):
        raise InvalidInputError(f"expression must give true or false, it gave a {type(result).__name__}",
                                field="expression")
    return program


@dataclass
class RuleSet:
    """Compiled rules of one version of the rule book, evaluated in order against one context."""

    rules: list[Rule]
    list_names: tuple[str, ...] = ()
    version: int = 0
    _programs: list[Any] = field(default_factory=list, repr=False)
    _needed: dict[str, set[str] | None] = field(default_factory=dict, repr=False)
    invalid: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # A stored rule that no longer compiles (say, after an upgrade renamed a field) is left out and
        # reported with every decision as failed, rather than stopping every decision.
        compiled, self.invalid = [], []
        for rule in self.rules:
            try:
                compiled.append((rule, compile_rule(rule, self.list_names)))
            except InvalidInputError:
                self.invalid.append(rule.rule_id)
        self.rules = [rule for rule, _ in compiled]
        self._programs = [program for _, program in compiled]
        # Handing a context to the CEL evaluator costs time per value, so only what the rules read is
        # handed over: the fields they name, or a whole variable where one is used without a field.
        # Read from the same tokens the validation walks (comments and strings are lexed as CEL does:
        # an apostrophe in a // comment once hid the fields after it, and the rule failed on every event).
        needed: dict[str, set[str] | None] = {}
        for rule, program in zip(self.rules, self._programs):
            tokens, variables = _tokens(rule.expression), set(program.variables()) & set(VARIABLES)
            for variable in variables - set(needed):
                needed[variable] = set()
            for i in _uses(tokens, variables):
                variable, (member, _) = tokens[i][1], _selected(tokens, i)
                if not member:  # used whole, or indexed by something other than a plain name
                    needed[variable] = None
                elif needed[variable] is not None:
                    needed[variable].add(member)  # type: ignore[union-attr]
        self._needed = needed

    def __len__(self) -> int:
        return len(self.rules)

    def evaluate(self, context: dict[str, Any]) -> tuple[list[RuleHit], list[str]]:
        """Rules whose expression is true, and the ids of rules that failed on this context.

        A rule that errors at run time (e.g. a field missing from an unusual event) does not fire and is
        reported, so one bad rule cannot block checkout; the decision records it.
        """
        prepared = cel.Context({name: context[name] if fields is None else {f: context[name][f] for f in fields}
                                for name, fields in self._needed.items()})
        hits: list[RuleHit] = []
        failed: list[str] = list(self.invalid)
        for rule, program in zip(self.rules, self._programs):
            try:
                fired = program.execute(prepared)
            except Exception:
                failed.append(rule.rule_id)
                continue
            if fired is True:
                hits.append(RuleHit(rule.rule_id, rule.version, rule.action, rule.weight,
                                    rule.mode == "shadow", rule.description))
            elif fired is not False:  # a value that is not a boolean (a rule's branch returns a number)
                failed.append(rule.rule_id)
        return hits, failed
