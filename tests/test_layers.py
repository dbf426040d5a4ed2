"""The package's shape: no import cycle, and imports that only point down the layers of docs/architecture.md."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rlseg"

# bottom to top; a module may import from its own layer and the layers below it (docs/architecture.md)
LAYERS = [
    ["settings"],
    ["io", "imageio", "metrics", "runtime", "checkpoint", "cpu_slots"],
    ["voc", "ingest", "architectures", "synthetic", "crawl", "crf"],
    ["models", "models.encoders", "models.lite", "models.light_decoder", "models.cpu_kernels", "models.unet",
     "models.deeplab", "positional", "losses", "regularized_loss"],
    ["data", "multiclass_data", "baselines", "evaluate", "cam"],
    ["schedule", "feature_cache", "multiclass", "inference", "packaged"],
    ["train", "study"],
    ["sources", "config"],
    ["pipeline", "eval_steps", "report"],
    ["cli_train", "cli_predict", "gallery"],
    ["cli"],
]



def modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = p.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def imports(path: Path, known: set[str]) -> set[str]:
    """The rlseg modules a file imports, anywhere in it (a function-level import counts as much as a top one)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rlseg"):
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.startswith("rlseg")]
        for n in names:
            mod = n.removeprefix("rlseg").lstrip(".")
            if mod in known:
                found.add(mod)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {m: imports(p, set(mods)) - {m, ""} for m, p in mods.items()}


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join([*stack[stack.index(d):], d]))
            if d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m, [m])


def test_imports_point_down_the_layers():
    g = graph()
    layer = {m: i for i, names in enumerate(LAYERS) for m in names}
    assert set(g) - {""} <= set(layer), f"modules without a layer: {sorted(set(g) - {''} - set(layer))}"
    upward = [f"{m} (layer {layer[m]}) imports {d} (layer {layer[d]})" for m, deps in g.items() if m
              for d in deps if layer[d] > layer[m]]
    assert not upward, "\n".join(upward)


def test_settings_import_nothing_from_rlseg():
    code = "import sys, rlseg.settings; print(sorted(m for m in sys.modules if m.startswith('rlseg')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['rlseg', 'rlseg.settings']"




def test_no_module_over_300_lines():
    long = {m: n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > 300}
    assert not long, long


def _reasoned(lines: list[str], lineno: int) -> bool:
    """An import at ``lineno`` (1-based) has a reason: a comment on its line, on another import of its group, or on
    the line above the group."""
    i = lineno - 1
    while i >= 0:
        line = lines[i].strip()
        if "#" in line:
            return True
        if line and not line.startswith(("import ", "from ")):
            return False
        i -= 1
    return False


def test_every_function_level_import_says_why():
    """Module-level imports only, except where a comment says why (an optional or heavy dependency, torch after
    the job's OpenMP policy is set)."""
    missing = []
    for name, path in modules().items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                missing += [f"{name}:{sub.lineno}" for sub in ast.walk(node)
                            if isinstance(sub, (ast.Import, ast.ImportFrom)) and not _reasoned(lines, sub.lineno)]
    assert not missing, f"function-level imports without a reason: {missing}"
