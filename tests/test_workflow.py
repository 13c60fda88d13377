"""The workflow module: saving, the fine-tuning schedule, tables, import structure."""

import ast
import io
from pathlib import Path

import pytest

from tfp_bcnn import cli, layers, pruning, workflow

PACKAGE = Path(workflow.__file__).resolve().parent


def _imports() -> dict[str, set[str]]:
    """``{module: {tfp_bcnn modules it imports}}``, lazy (in-function) imports included."""
    graph = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("tfp_bcnn", *path.relative_to(PACKAGE).with_suffix("").parts)
        is_init = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_init else parts)
        package = name.split(".") if is_init else name.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                if node.module:
                    deps.add(f"{base}.{node.module}")
                else:
                    deps.update(f"{base}.{a.name}" for a in node.names)
            elif node.module and node.module.startswith("tfp_bcnn."):
                deps.add(node.module)
        graph[name] = deps
    return graph


def test_no_import_cycle_and_one_caller_of_export():
    graph = _imports()
    # a package's own __init__ is not an edge out of its submodules
    state: dict[str, int] = {}

    def visit(node, trail):
        if state.get(node) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*trail, node]))
        if state.get(node) == 2 or node not in graph:
            return
        state[node] = 1
        for dep in graph[node]:
            if not node.startswith(dep + "."):
                visit(dep, [*trail, node])
        state[node] = 2

    for module in graph:
        if module != "tfp_bcnn":  # the package __init__ imports everything by design
            visit(module, [])
    importers = {m for m, deps in graph.items()
                 if any(d == "tfp_bcnn.export" or d.startswith("tfp_bcnn.export.") for d in deps)}
    assert importers == {"tfp_bcnn.workflow"}
    assert graph["tfp_bcnn.cli"] <= {"tfp_bcnn.workflow", "tfp_bcnn.demo"}


def test_cli_choices_match_the_library():
    assert cli.MODELS == workflow.MODELS
    assert set(cli.ESTIMATORS) == set(layers.ESTIMATORS)
    from tfp_bcnn import export, uncertainty

    assert cli.SAMPLINGS == export.SAMPLINGS and cli.METHODS == uncertainty.METHODS


def test_save_is_atomic_and_checks_suffix(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    target = tmp_path / "m.keras"
    workflow.save_model(model, target)
    before = target.read_bytes()

    class Boom(keras.Sequential):
        def save(self, *a, **k):
            Path(a[0]).write_bytes(b"partial")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        workflow.save_model(Boom([keras.Input((3,)), keras.layers.Dense(2)]), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.keras"]
    with pytest.raises(ValueError, match="output='m.h5'"):
        workflow.save_model(model, "m.h5")


def test_finetune_schedule_reaches_the_target_before_the_last_epoch():
    # 1000 images, batches of 64: 16 steps an epoch; 4 epochs -> target at step 48
    schedule = workflow.finetune_schedule(1000, 64, 4, 0.9)
    assert isinstance(schedule, pruning.PolynomialDecay)
    assert schedule.get_config() == {"initial_sparsity": 0.0, "final_sparsity": 0.9,
                                     "begin_step": 0, "end_step": 48, "power": 3,
                                     "frequency": 4}
    assert schedule(48) == (True, 0.9)
    # one epoch: the target is reached at the end of that epoch
    assert workflow.finetune_schedule(10, 64, 1, 0.5).end_step == 1


def test_print_table_pads_columns():
    out = io.StringIO()
    workflow.print_table([("a", 1.5), ("long name", "x")], ["metric", "v"], out=out)
    assert out.getvalue().splitlines() == [
        "| metric    | v   |",
        "|-----------|-----|",
        "| a         | 1.5 |",
        "| long name | x   |",
    ]
    assert workflow.fmt(0.123456) == "0.1235" and workflow.fmt(3) == "3"


# --------------------------------------------------------- issue 13 wiring
@pytest.fixture
def tiny_npz(tmp_path):
    """40 images 12x12 of two classes (a bright left or right half), as a .npz."""
    import numpy as np

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    x = rng.uniform(0.0, 0.2, (40, 12, 12)).astype("float32")
    x[y == 0, :, :6] += 0.7
    x[y == 1, :, 6:] += 0.7
    path = tmp_path / "tiny.npz"
    np.savez(path, x=x, y=y)
    return str(path)


@pytest.mark.slow  # trains 20 epochs (about 10 s)
def test_train_defaults_are_the_recipe(tiny_npz, tmp_path, capsys):
    from tfp_bcnn.models import RECIPE

    args = cli.build_parser().parse_args(["train"])
    assert (args.epochs, args.batch_size, args.learning_rate) == (None, None, None)
    workflow.run_train(frequentist=True, dataset=tiny_npz, output=str(tmp_path / "f.keras"),
                       verbose=2)
    out = capsys.readouterr().out
    assert f"Epoch {RECIPE['epochs']}/{RECIPE['epochs']}" in out
    assert f"Epoch {RECIPE['epochs'] + 1}/" not in out


@pytest.mark.slow  # trains two models and writes a full evaluation (about 20 s)
def test_train_mc_dropout_ensemble_and_evaluate_it(tiny_npz, tmp_path, capsys):
    import keras

    output = tmp_path / "ens.keras"
    code = cli.main(["train", "--frequentist", "--dropout", "0.25", "--members", "2",
                     "--epochs", "2", "--dataset", tiny_npz, "--output", str(output),
                     "--verbose", "0"])
    assert code == 0
    paths = workflow.member_paths(output, 2)
    assert [p.name for p in paths] == ["ens_0.keras", "ens_1.keras"]
    nets = [keras.saving.load_model(p) for p in paths]
    assert all(any(isinstance(la, layers.MCDropout) for la in n.layers) for n in nets)
    assert not all(
        (a == b).all() for a, b in zip(nets[0].get_weights(), nets[1].get_weights()))
    code = cli.main(["evaluate", *map(str, paths), "--dataset", tiny_npz, "--samples", "4",
                     "--out-dir", str(tmp_path / "ev")])
    assert code == 0
    assert "an ensemble of 2 models" in capsys.readouterr().out
    assert (tmp_path / "ev" / "ens_0_ensemble_report.json").exists()
