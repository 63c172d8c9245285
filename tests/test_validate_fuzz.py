"""Validation never crashes and always locates the problem: property-based mutations of valid specs.

Each property starts from specs/tiny.yaml or specs/llama_1b_8b.yaml, breaks it one way, and runs
validation twice, through the CLI in-process (`familyc validate FILE`) and through the library
(`familyc.compiler.compile_spec`). Every run must:
- finish (within TIME_LIMIT_S), raise nothing but SpecError/UsageError from the library, and
  print no traceback and no "internal error" from the CLI;
- exit 0 or 1, and exit 1 exactly when the library raises SpecError;
- when it exits 1, print exactly the library's diagnostics, each one line of the form
  `FILE:LINE:COL: $.json.path: message` (plus an optional `  hint: ...` line), with
  1 <= LINE <= lines in the file + 1, COL >= 1 and a well-formed JSON path.

Structured mutations (we know the JSON path P we broke) must also be *located*: at least one
diagnostic must satisfy one of
  (a) its path is an ancestor of P or a descendant of P (a missing key is reported at the
      mapping that lacks it, a bad value inside a replaced list at the item);
  (b) its line lies within the text of the mutated node (for a deletion: of the mapping or list
      that lost the item; the key's line is included);
  (c) its path lies in a section whose semantic checks read the mutated section (COUPLED below,
      read off check_spec, assign_budgets and check_plan): e.g. renaming members[0] leaves
      growth[0].from unresolved, a larger seq_len makes training.batch_tokens indivisible, a wider
      member no longer fits the cluster's memory (reported under $.cluster).
Text mutations (truncation, inserted bytes or characters, swapped lines) have no single path;
they get every check except the location rule.

Runs are deterministic (derandomize=True, no example database) so CI is stable.

The familyc bugs these properties found are pinned at the end of this file as regression tests
(while a bug is open, pin it as a strict xfail and step around exactly that case in the
properties). `pytest --hypothesis-show-statistics` shows which exit codes, diagnostic codes and
location rules the examples reach.
"""

from __future__ import annotations

import ast
import copy
import re
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Hang, time_limit
from hypothesis import HealthCheck, currently_in_test_context, event, given, note, settings
from hypothesis import strategies as st
from rich.cells import cell_len
from typer.testing import CliRunner

from familyc.cli import app
from familyc.compiler import compile_spec, display_path
from familyc.errors import Diagnostic, SpecError, UsageError

ROOT = Path(__file__).resolve().parents[1]
BASE_NAMES = ("tiny.yaml", "llama_1b_8b.yaml")
TEXTS: dict[str, str] = {name: (ROOT / "specs" / name).read_text(encoding="utf-8") for name in BASE_NAMES}
DATA: dict[str, Any] = {name: yaml.safe_load(text) for name, text in TEXTS.items()}

WIDTH = 160
"""The CLI's console width when stderr is not a terminal (COLUMNS, default 160); pinned below."""
TIME_LIMIT_S = 20.0
"""One validation of these specs takes ~25 ms; anything near this limit is a hang."""
HANG_LIMIT_S = 2.0
"""For the tests of the known hangs: long enough for a slow machine, short enough to keep CI quick."""

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

RUNNER = CliRunner(env={"COLUMNS": str(WIDTH)})

COUPLED: dict[str, set[str]] = {
    # members: shapes feed growth checks (reported at the target member or growth[k]), names feed
    # growth / budget / lr tables, sizes feed memory (reported at $.cluster) and micro-batches.
    "members": {"members", "growth", "budget", "lr", "training", "cluster"},
    # vocab_size, seq_len, multiple_of, ffn_dim_multiplier: shapes, batch divisibility, memory, tokenizer.
    "architecture": {"architecture", "members", "growth", "training", "cluster", "budget"},
    # a missing or broken growth step leaves a member ungrown (reported at members[j].name).
    "growth": {"growth", "members"},
    # the paper rule reports a stage that needs no more compute at growth[k].to.
    "budget": {"budget", "growth"},
    "lr": {"lr"},
    # batch divisibility (micro_batch_size), precision and checkpointing decide memory ($.cluster).
    "training": {"training", "cluster", "members"},
    "data": {"data"},
    # a builtin tokenizer's vocabulary must fit architecture.vocab_size.
    "tokenizer": {"tokenizer", "architecture"},
    # devices split batches (training / member batch_tokens); the accelerator decides precision.
    "cluster": {"cluster", "training", "members"},
    "family": {"family"},
    "version": {"version"},
}


# --- running validation -----------------------------------------------------------------------


_SEGMENT = re.compile(r"\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\]|\['(?:[^'\\\n]|\\.)*'\]|\[\"(?:[^\"\\\n]|\\.)*\"\]")


def parse_json_path(text: str) -> tuple[str | int, ...] | None:
    """`$.members[0]['a b']` -> ("members", 0, "a b"); None when not a well-formed path."""
    if not text.startswith("$"):
        return None
    out: list[str | int] = []
    pos = 1
    while pos < len(text):
        m = _SEGMENT.match(text, pos)
        if m is None:
            return None
        seg = m.group()
        if seg.startswith("."):
            out.append(seg[1:])
        elif seg[1].isdigit():
            out.append(int(seg[1:-1]))
        else:
            out.append(ast.literal_eval(seg[1:-1]))
        pos = m.end()
    return tuple(out)


def _yaml_line_count(text: str) -> int:
    """Lines as PyYAML counts them (it breaks on \\r\\n, \\r, \\n, NEL, LS and PS), or as \\n does."""
    by_yaml = len(re.findall(r"\r\n|[\r\n\x85\u2028\u2029]", text)) + 1
    return max(by_yaml, text.count("\n") + 1)


def check_diagnostic(d: Diagnostic, file: str, num_lines: int) -> None:
    assert d.file == file
    assert 1 <= d.line <= num_lines + 1, f"line {d.line} outside 1..{num_lines + 1}: {d.format()}"
    assert d.col >= 1, d.format()
    assert d.message.strip() and "\n" not in d.message, d.format()
    assert "\n" not in d.hint, d.format()
    assert parse_json_path(d.path) is not None, f"malformed JSON path {d.path!r}"
    head = d.format().split("\n")[0]
    assert re.fullmatch(rf"{re.escape(file)}:(\d+):(\d+): (\$\S*|\$.*?): .+", head), head


def _event(what: str) -> None:
    """Count `what` in `--hypothesis-show-statistics` (shows which checks the examples reach)."""
    if currently_in_test_context():
        event(what)


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    diagnostics: list[Diagnostic]


def validate_both_ways(path: Path, text_for_lines: str, *, limit: float = TIME_LIMIT_S) -> Outcome:
    """Run `familyc validate` and compile_spec on `path`; check every run-level property."""
    file = display_path(path)
    try:
        with time_limit(limit):
            result = RUNNER.invoke(app, ["validate", str(path)])
    except Hang as hang:
        pytest.fail(f"familyc validate hangs: {hang}")
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        trace = "".join(traceback.format_exception(result.exception))
        pytest.fail(f"the CLI raised {type(result.exception).__name__}:\n{trace}")
    assert "Traceback" not in result.output, result.output
    assert "internal error" not in result.output, result.output
    assert result.exit_code in (0, 1), (result.exit_code, result.output)

    diagnostics: list[Diagnostic] = []
    summary = ""
    usage: UsageError | None = None
    try:
        with time_limit(limit):
            compile_spec(path)
    except Hang as hang:
        pytest.fail(f"compile_spec hangs: {hang}")
    except SpecError as exc:
        diagnostics, summary = exc.diagnostics, exc.message
        assert diagnostics, "a SpecError without diagnostics"
    except UsageError as exc:  # allowed by the contract; the CLI then exits 2, which fails below
        usage = exc
    assert usage is None, f"UsageError on a readable spec file: {usage.message}"

    assert result.exit_code == (1 if diagnostics else 0), (result.exit_code, result.output)
    if not diagnostics:
        assert result.stderr == "", result.stderr
        assert result.stdout.startswith(f"{file}: valid ("), result.stdout
        _event("exit 0")
        return Outcome(0, [])

    num_lines = _yaml_line_count(text_for_lines)
    for d in diagnostics:
        check_diagnostic(d, file, num_lines)
    expected = "".join(d.format() + "\n" for d in diagnostics) + summary + "\n"
    _event(f"exit 1: {diagnostics[0].code}")
    if any(cell_len(line) > WIDTH for line in expected.splitlines()):
        _event("a line wider than the console")  # fixed bug: rich used to wrap these
    assert result.stderr == expected
    assert result.stdout == ""
    return Outcome(1, diagnostics)


# --- structured mutations ---------------------------------------------------------------------

PathT = tuple[str | int, ...]


def all_paths(node: Any, prefix: PathT = ()) -> list[PathT]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += all_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += all_paths(value, prefix + (index,))
    return out


PATHS = {name: all_paths(DATA[name]) for name in BASE_NAMES}


def get(data: Any, path: PathT) -> Any:
    for part in path:
        data = data[part]
    return data


def put(data: Any, path: PathT, value: Any) -> Any:
    if not path:
        return value
    get(data, path[:-1])[path[-1]] = value
    return data


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, default_flow_style=False, width=10**6)


@dataclass(frozen=True)
class Mutation:
    base: str
    kind: str
    path: PathT
    data: Any

    @property
    def text(self) -> str:
        return dump(self.data)


def mutated_region(text: str, path: PathT) -> set[int]:
    """1-based lines of the node at `path` in `text` (with its key), or of its deepest existing ancestor."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    key_node = None
    for part in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == part:
                    key_node, child = k, v
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            key_node, child = None, node.value[part]
        if child is None:
            break
        node = child
    if node is None:
        return set()
    start = (key_node or node).start_mark.line + 1
    return set(range(start, node.end_mark.line + 2))


def locating_rule(d: Diagnostic, mutated: PathT, region: set[int]) -> str:
    """Which of the rules (a), (b), (c) locates the mutation at `mutated`; "" if none does."""
    dpath = parse_json_path(d.path)
    if dpath is not None and dpath[:len(mutated)] == mutated[:len(dpath)]:
        return "(a) ancestor or descendant"
    if d.line in region:
        return "(b) within the mutated lines"
    section = str(mutated[0])
    if dpath and str(dpath[0]) in COUPLED.get(section, {section}):
        return "(c) coupled section"
    return ""


def check_structured(m: Mutation, workdir: Path) -> None:
    text = m.text
    note(f"{m.kind} at {m.path!r} of {m.base}:\n{text}")
    path = workdir / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    outcome = validate_both_ways(path, text)
    if outcome.exit_code == 0:
        return
    region = mutated_region(text, m.path)
    shown = "\n".join(d.format() for d in outcome.diagnostics)
    rules = sorted(r for r in (locating_rule(d, m.path, region) for d in outcome.diagnostics) if r)
    assert rules, f"no diagnostic locates the {m.kind} at {m.path!r} (lines {sorted(region)}):\n{shown}"
    _event(f"located by {rules[0]}")


BASE = st.sampled_from(BASE_NAMES)

ODD_KEYS = st.sampled_from([
    "widht", "x y", "", "-", "1", "1.5", "true", "on", "null", "~", "a.b", "$", "'", '"', "#", ":", "- x",
    "\t", "名前", "emoji 🙂", "x" * 40, "version2", "<<", "*a", "&a", "!!python/object", "abc\n", "a\nb",
    "x" * 300,
])
KEYS = ODD_KEYS | st.text(max_size=20) | st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True)

LEAVES = (st.text(max_size=30) | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.booleans()
          | st.none())
ANY_VALUE = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3)
                         | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)

ABSURD = st.sampled_from([
    0, -1, 1, 2, 3, 10**40, -(10**40), 2**63, 1e308, -1e308, 1e-308, 5e-324, 0.5, -0.0,
    "9" * 5000, "1e400", "-1", "0", "1e-400", "-1e9", "x" * 100_000, "1" + "0" * 63, "20B", "20Q", " 1 ",
])
ABSURD_NUMBERS = st.sampled_from([0, -1, 10**40, -(10**40), 2**63, 1e308, -1e308, 1e-308, 0.5, -0.0])


def _type_tag(value: Any) -> str:
    return "bool" if isinstance(value, bool) else "number" if isinstance(value, int | float) else type(value).__name__


@st.composite
def deletions(draw: st.DrawFn) -> Mutation:
    base = draw(BASE)
    path = draw(st.sampled_from([p for p in PATHS[base] if p]))
    data = copy.deepcopy(DATA[base])
    del get(data, path[:-1])[path[-1]]
    return Mutation(base, "deletion", path, data)


@st.composite
def unknown_keys(draw: st.DrawFn) -> Mutation:
    base = draw(BASE)
    data = copy.deepcopy(DATA[base])
    where = draw(st.sampled_from([p for p in PATHS[base] if isinstance(get(data, p), dict)]))
    mapping = get(data, where)
    key = draw(KEYS.filter(lambda k: k not in mapping))
    mapping[key] = draw(ANY_VALUE)
    return Mutation(base, "unknown key", where + (key,), data)


@st.composite
def type_changes(draw: st.DrawFn) -> Mutation:
    base = draw(BASE)
    path = draw(st.sampled_from(PATHS[base]))
    data = copy.deepcopy(DATA[base])
    old = get(data, path)
    new = draw(ANY_VALUE.filter(lambda v: _type_tag(v) != _type_tag(old)))
    return Mutation(base, "type change", path, put(data, path, new))


@st.composite
def absurd_values(draw: st.DrawFn) -> Mutation:
    base = draw(BASE)
    data = copy.deepcopy(DATA[base])
    numeric = [p for p in PATHS[base] if _type_tag(get(data, p)) == "number"]
    scalars = [p for p in PATHS[base] if p and not isinstance(get(data, p), dict | list)]
    if draw(st.booleans()):
        path, value = draw(st.sampled_from(numeric)), draw(ABSURD_NUMBERS)
    else:
        path, value = draw(st.sampled_from(scalars)), draw(ABSURD)
    return Mutation(base, "absurd value", path, put(data, path, value))


@st.composite
def renamed_members(draw: st.DrawFn) -> Mutation:
    base = draw(BASE)
    data = copy.deepcopy(DATA[base])
    names = [m["name"] for m in data["members"]]
    index = draw(st.integers(0, len(names) - 1))
    new = draw(st.sampled_from(names) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,31}", fullmatch=True)
               | st.text(max_size=40))
    data["members"][index]["name"] = new
    return Mutation(base, "member rename", ("members", index, "name"), data)


@st.composite
def duplicated_items(draw: st.DrawFn) -> Mutation:
    base = draw(BASE)
    data = copy.deepcopy(DATA[base])
    lists = [p for p in PATHS[base] if isinstance(get(data, p), list) and get(data, p)]
    where = draw(st.sampled_from(lists))
    items = get(data, where)
    index = draw(st.integers(0, len(items) - 1))
    items.insert(index + 1, copy.deepcopy(items[index]))
    return Mutation(base, "duplicated item", where + (index + 1,), data)


def test_the_location_rule_is_not_vacuous() -> None:
    def diag(path: str, line: int) -> Diagnostic:
        return Diagnostic(code="t", file="f", path=path, line=line, col=1, message="m")

    mutated = ("members", 1, "dim")
    assert locating_rule(diag("$.members[1]", 30), mutated, {16}).startswith("(a)")
    assert locating_rule(diag("$.members[1].dim.x", 30), mutated, {16}).startswith("(a)")
    assert locating_rule(diag("$.data.dataset", 16), mutated, {16}).startswith("(b)")
    assert locating_rule(diag("$.growth[0].to", 30), mutated, {16}).startswith("(c)")
    assert locating_rule(diag("$.data.dataset", 30), mutated, {16}) == ""
    assert locating_rule(diag("$.lr.table", 30), ("growth", 0, "to"), {16}) == ""
    assert locating_rule(diag("$.members[1]x", 30), mutated, {16}) == ""  # malformed path, wrong line


def test_json_paths_parse() -> None:
    assert parse_json_path("$") == ()
    assert parse_json_path("$.members[0]['a b'][\"it's\"].x_1") == ("members", 0, "a b", "it's", "x_1")
    assert parse_json_path("$['abc\\n']") == ("abc\n",)
    for bad in ("", "members", "$.", "$[x]", "$.abc\n", "$['a'", "$ .a"):
        assert parse_json_path(bad) is None, bad


def test_dumped_bases_are_valid(tmp_path: Path) -> None:
    """The round trip data -> YAML the structured mutations rely on keeps both specs valid."""
    for base in BASE_NAMES:
        path = tmp_path / base
        path.write_text(dump(DATA[base]), encoding="utf-8")
        assert validate_both_ways(path, dump(DATA[base])).exit_code == 0


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(mutation=deletions())
def test_deleted_key_or_item(mutation: Mutation, workdir: Path) -> None:
    check_structured(mutation, workdir)


@FUZZ
@given(mutation=unknown_keys())
def test_unknown_key(mutation: Mutation, workdir: Path) -> None:
    check_structured(mutation, workdir)


@FUZZ
@given(mutation=type_changes())
def test_value_of_another_type(mutation: Mutation, workdir: Path) -> None:
    check_structured(mutation, workdir)


@FUZZ
@given(mutation=absurd_values())
def test_absurd_value(mutation: Mutation, workdir: Path) -> None:
    check_structured(mutation, workdir)


@FUZZ
@given(mutation=renamed_members())
def test_renamed_member(mutation: Mutation, workdir: Path) -> None:
    check_structured(mutation, workdir)


@FUZZ
@given(mutation=duplicated_items())
def test_duplicated_list_item(mutation: Mutation, workdir: Path) -> None:
    check_structured(mutation, workdir)


# --- text mutations ---------------------------------------------------------------------------


def check_text(raw: bytes, workdir: Path) -> None:
    note(repr(raw))
    path = workdir / "spec.yaml"
    path.write_bytes(raw)
    validate_both_ways(path, raw.decode("utf-8", errors="replace").removeprefix("\ufeff"))


@FUZZ
@given(base=BASE, data=st.data())
def test_truncated_text(base: str, data: st.DataObject, workdir: Path) -> None:
    raw = TEXTS[base].encode("utf-8")
    cut = data.draw(st.integers(0, len(raw)))
    check_text(raw[:cut], workdir)


@FUZZ
@given(base=BASE, data=st.data())
def test_inserted_bytes_or_characters(base: str, data: st.DataObject, workdir: Path) -> None:
    raw = TEXTS[base].encode("utf-8")
    at = data.draw(st.integers(0, len(raw)))
    junk = data.draw(st.binary(min_size=1, max_size=16)
                     | st.text(min_size=1, max_size=16).map(lambda s: s.encode("utf-8", errors="surrogatepass"))
                     | st.sampled_from([b"\x00", b"\xff\xfe", b"\t", b"\r", b"\x85", "\u2028".encode(), b"---\n",
                                        b": ", b"- ", b"{", b"]", b"&a ", b"*a", b"!!python/object:os.system ",
                                        b"<<: ", b"'", b'"', b"#", b"%YAML 1.1\n", b"\xef\xbb\xbf"]))
    check_text(raw[:at] + junk + raw[at:], workdir)


@FUZZ
@given(base=BASE, data=st.data())
def test_swapped_lines(base: str, data: st.DataObject, workdir: Path) -> None:
    lines = TEXTS[base].splitlines(keepends=True)
    i = data.draw(st.integers(0, len(lines) - 1))
    j = data.draw(st.integers(0, len(lines) - 2))
    j += j >= i  # any other line
    lines[i], lines[j] = lines[j], lines[i]
    check_text("".join(lines).encode("utf-8"), workdir)


# --- the familyc bugs these properties found -------------------------------------------------
# Each is a regression test now; pin a newly found, still open one as a strict xfail.


def _spec_with(tmp_path: Path, base: str, edit: Any) -> Path:
    data = copy.deepcopy(DATA[base])
    edit(data)
    path = tmp_path / "spec.yaml"
    path.write_text(dump(data), encoding="utf-8")
    return path


def test_long_diagnostic_is_printed_on_one_line(tmp_path: Path) -> None:
    """Regression (found by these properties, fixed): report_error printed diagnostics through a rich
    Console of width COLUMNS (160), which wrapped longer ones over several lines."""
    path = _spec_with(tmp_path, "tiny.yaml", lambda d: d["family"].update({"x" * 200: 1}))
    result = RUNNER.invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    head, *rest = result.stderr.splitlines()
    assert re.fullmatch(rf"{re.escape(display_path(path))}:\d+:\d+: \$\.family\.x{{200}}: unknown key '.*'", head), head
    assert rest[0].startswith("  hint: "), rest


def test_key_ending_in_newline_gives_a_one_line_path(tmp_path: Path) -> None:
    """Regression (found here, fixed): json_path matched keys with `^...$`, whose `$` also matches
    before a final newline, so the key 'abc\\n' was printed raw and split the diagnostic."""
    path = _spec_with(tmp_path, "tiny.yaml", lambda d: d.update({"abc\n": 1}))
    with pytest.raises(SpecError) as caught:
        compile_spec(path)
    (d,) = caught.value.diagnostics
    assert "\n" not in d.path and parse_json_path(d.path) == ("abc\n",), d.path


def _one_member_spec(tmp_path: Path, member: dict[str, Any]) -> Path:
    def edit(d: dict[str, Any]) -> None:
        d["members"] = [member]
        d["growth"] = []
    return _spec_with(tmp_path, "tiny.yaml", edit)


@pytest.mark.parametrize("member", [
    {"name": "a", "dim": 74, "n_layers": 1, "n_heads": 37, "ffn_dim": 1},
    {"name": "a", "dim": 148, "n_layers": 1, "n_heads": 2, "ffn_dim": 1},
])
def test_ffn_dim_1_does_not_hang(tmp_path: Path, member: dict[str, Any]) -> None:
    """Regression (found here, fixed): torchtitan_ffn_args looped forever when ffn_dim is 1 and
    (1 / int(8 dim / 3)) * int(8 dim / 3) rounds below 1 (dim 74, 148, ...)."""
    path = _one_member_spec(tmp_path, member)
    validate_both_ways(path, path.read_text(encoding="utf-8"), limit=HANG_LIMIT_S)


def test_multiplier_that_rounds_ffn_to_zero_is_rejected(tmp_path: Path) -> None:
    """Regression (found here, fixed): a tiny ffn_dim_multiplier (the schema takes any number > 0) made
    torchtitan's rule give ffn_dim 0, nothing rejected it, and torchtitan_ffn_args(dim, 0) looped forever."""
    path = _one_member_spec(tmp_path, {"name": "a", "dim": 64, "n_layers": 1, "n_heads": 4,
                                       "ffn_dim_multiplier": 0.001})
    outcome = validate_both_ways(path, path.read_text(encoding="utf-8"), limit=HANG_LIMIT_S)
    assert outcome.exit_code == 1
    assert any(d.path.startswith("$.members[0]") for d in outcome.diagnostics)


NEGATIVE_STRINGS = [
    (("lr", "power_law", "reference_lr"), "-3.0e-3"),
    (("lr", "power_law", "reference_lr"), "0"),
    (("architecture", "rope_theta"), "-10000"),
    (("architecture", "norm_eps"), "0"),
    (("training", "optimizer", "eps"), "-1e-8"),
]


@pytest.mark.parametrize(("where", "value"), NEGATIVE_STRINGS, ids=[f"{'.'.join(p)}={v}" for p, v in NEGATIVE_STRINGS])
def test_non_positive_number_as_string_is_rejected(tmp_path: Path, where: PathT, value: str) -> None:
    """Regression (found here, fixed): the schema's positiveNumber accepts any numeric *string* (its
    pattern allows a sign and zero) and nothing later checked > 0, so e.g. a negative peak LR validated."""
    def edit(d: dict[str, Any]) -> None:
        d.setdefault("training", {}).setdefault("optimizer", {})
        put(d, where, value)
    path = _spec_with(tmp_path, "tiny.yaml", edit)
    outcome = validate_both_ways(path, path.read_text(encoding="utf-8"))
    assert outcome.exit_code == 1
    assert any(parse_json_path(d.path) == where for d in outcome.diagnostics)
