"""Pages generated at build time (mkdocs-gen-files): the CLI reference from the command
definitions and the benchmark tables from benchmarks/results/. Nothing here is written by hand,
so neither can drift from what it documents."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import mkdocs_gen_files
import typer

from vecdoctor.cli import app

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


# -- the CLI reference ------------------------------------------------------------------------
def _rows(params: list[Any], ctx: Any) -> list[str]:
    """A table row per parameter, from the help record the help screen prints."""
    rows = []
    for p in params:
        record = p.get_help_record(ctx)
        if record is None:
            continue
        names, text = record
        rows.append(f"| `{names}` | {text.replace('|', chr(92) + '|')} |")
    return rows


def _command_page(name: str, command: Any) -> list[str]:
    ctx = command.context_class(command, info_name=f"vecdoctor {name}")
    usage = command.get_usage(ctx).replace("Usage: ", "")
    lines = [f"## `vecdoctor {name}`", "", (command.help or "").strip(), "", "```", usage, "```", ""]
    rows = _rows([p for p in command.params if p.param_type_name == "argument"], ctx)
    rows += _rows([p for p in command.params if p.param_type_name == "option"], ctx)
    if rows:
        lines += ["| argument or option | help |", "|---|---|", *rows, ""]
    return lines


def cli_reference() -> str:
    group: Any = typer.main.get_command(app)  # typer's own click: read by duck typing
    ctx = group.context_class(group, info_name="vecdoctor")
    lines = ["# Command-line reference", "",
             "Generated from the command definitions at build time: every command, argument and "
             "option as `vecdoctor COMMAND --help` prints it.", "",
             "Global options (before the command): " + ", ".join(
                 f"`{'/'.join(p.opts)}` ({(p.help or '').rstrip('.')})"
                 for p in group.params if p.param_type_name == "option") + ".", ""]
    names = group.list_commands(ctx)
    lines += ["| command | what it does |", "|---|---|"]
    for name in names:
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        first = (cmd.help or "").strip().splitlines()[0] if cmd.help else ""
        lines.append(f"| [`{name}`](#vecdoctor-{name}) | {first} |")
    lines.append("")
    for name in names:
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        lines += _command_page(name, cmd)
    return "\n".join(lines) + "\n"


# -- the benchmark tables ---------------------------------------------------------------------
def _machine(result: dict[str, Any]) -> str:
    m = result.get("machine") or {}
    cpu = m.get("cpu") or "unknown CPU"
    family = f", family {m.get('cpu_family')} model {m.get('cpu_model')}" if m.get("cpu_family") else ""
    return f"{cpu}{family}, {m.get('cores', '?')} cores"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_cell(v)}" for k, v in value.items() if v is not None)
    return str(value).replace("|", "\\|")


def _decisions(result: dict[str, Any]) -> list[str]:
    """The table the README shows, made by the benchmark itself."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from decisions import table

    return table(result)


def _matrix(result: dict[str, Any]) -> list[str]:
    sets = list(result["results"])
    others = [*sets, "sts-b"]
    lines = ["Live out-of-domain share of one window and whether it raised the alarm "
             "(25% / 50% / 100% of the column's queries mixed into the row's own):", "",
             "| index \\ queries | own: windows alarmed | " + " | ".join(others) + " |",
             "|---|---|" + "---|" * len(others)]
    for name, part in result["results"].items():
        cells = []
        for other in others:
            rows = part["mixes"].get(other)
            if rows is None:
                cells.append("(own)")
                continue
            cells.append(" / ".join(f"{r['live_ood_share']:.0%}{'!' if r['alarm'] else ''}"
                                    for r in rows.values()))
        lines.append(f"| {name} | {part['in_domain_alarms']} | " + " | ".join(cells) + " |")
    lines += ["", "`!`: the alarm fired at the end of that window."]
    return lines


RENDER = {"decisions": _decisions, "monitor_matrix": _matrix}


def benchmarks_page() -> str:
    lines = ["# Benchmark results", "",
             "Generated at build time from `benchmarks/results/<benchmark>/<cpu>-<variant>.json`: "
             "each result with the machine it ran on and the command that made it. Machines "
             "differ in speed, so compare a speed ratio only within one result.", ""]
    shown = None
    for path in sorted(RESULTS.glob("*/*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        benchmark = path.parent.name
        if benchmark != shown:
            lines += [f"## {benchmark}", ""]
            shown = benchmark
        lines += [f"### {path.stem}", ""]
        if result.get("question"):
            lines += [f"*{result['question']}*", ""]
        lines += [f"Machine: {_machine(result)}. Command: `{result.get('command', '?')}`.", ""]
        render = RENDER.get(benchmark)
        if render is not None:
            lines += [*render(result), ""]
        elif isinstance(result.get("summary"), dict):
            lines += ["| measure | value |", "|---|---|"]
            lines += [f"| {k} | {_cell(v)} |" for k, v in result["summary"].items()]
            lines.append("")
    return "\n".join(lines) + "\n"


with mkdocs_gen_files.open("cli.md", "w") as fh:
    fh.write(cli_reference())
with mkdocs_gen_files.open("benchmarks.md", "w") as fh:
    fh.write(benchmarks_page())
