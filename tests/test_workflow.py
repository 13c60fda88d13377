"""The workflow module: saving, the fine-tuning schedule, tables, import structure."""

import ast
import io
import re
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


def _tiny_classifier(bayesian: bool):
    import keras

    from tfp_bcnn import layers as bl

    head = (bl.DenseFlipout(10, activation="softmax", seed=0) if bayesian
            else keras.layers.Dense(10, activation="softmax"))
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), head])


@pytest.mark.slow  # about 13 s: seven rotations, letters, noise and four plots, twice
def test_deterministic_model_gets_na_not_rounding_noise(tmp_path, capsys):
    """A deterministic model's epistemic figures are None (JSON null, "n/a"); a
    Bayesian one's are numbers > 0."""
    import json

    import numpy as np

    from tfp_bcnn import datasets

    (_, _), (x, y) = datasets.mnist_5k()
    x, y = x[:40], y[:40]
    reports = {}
    for name, bayesian in (("det", False), ("bayes", True)):
        reports[name] = workflow.evaluate_and_report(
            _tiny_classifier(bayesian), x, y, tmp_path, num_samples=4, name=name, verbose=0)
    det, bayes = reports["det"], reports["bayes"]
    assert det["deterministic"] is True and bayes["deterministic"] is False
    assert det["epistemic"] is None
    assert {r["auroc_epistemic"] for r in det["ood"].values()} == {None}
    assert {r["epistemic"] for r in det["rotation"]} == {None}
    assert det["aleatoric"] > 0 and det["ood"]["letters"]["auroc_entropy"] is not None
    # the Bayesian head samples: its mutual information is a real figure
    assert bayes["epistemic"] > 0
    assert np.isfinite(bayes["ood"]["letters"]["auroc_epistemic"])
    on_disk = json.loads((tmp_path / "det_report.json").read_text())
    assert on_disk["epistemic"] is None and on_disk["ood"]["noise"]["auroc_epistemic"] is None
    for kind in ("reliability", "ood_histograms", "rotation", "samples"):
        assert Path(det["files"][kind]).stat().st_size > 1000
    workflow.print_report(det, "det")
    table = capsys.readouterr().out
    assert re.search(r"\| mean epistemic \(mutual information\), nats +\| n/a", table)
    assert re.search(r"\| OOD AUROC letters, epistemic \(mutual information\) +\| n/a", table)
    assert "e-1" not in table  # no rounding noise printed anywhere


def test_accuracy_change_in_words():
    assert workflow.accuracy_change(0.94, 0.863, "pruning to 90%").startswith(
        "pruning to 90% lowered the test accuracy by 7.7 points (0.9400 -> 0.8630); "
        "fine-tune longer")
    assert workflow.accuracy_change(0.90, 0.905, "x") == (
        "x raised the test accuracy by 0.5 points (0.9000 -> 0.9050)")
    assert "unchanged" in workflow.accuracy_change(0.9, 0.9, "x")
    assert "fine-tune" not in workflow.accuracy_change(0.90, 0.895, "x")  # half a point
    assert workflow.fmt(None) == "n/a"


def test_console_script_module_imports_the_package_only_inside_commands():
    """``_tfp_bcnn_cli`` (the console script's parser, outside the package) imports
    tfp_bcnn only inside functions, and only workflow and demo: parsing and
    argument errors never run tfp_bcnn/__init__ (TensorFlow)."""
    source = PACKAGE.parent / "_tfp_bcnn_cli.py"
    tree = ast.parse(source.read_text())
    top_level = {alias.name for node in tree.body if isinstance(node, ast.Import)
                 for alias in node.names}
    top_level |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert not any(m and m.split(".")[0] in ("tfp_bcnn", "keras", "tensorflow")
                   for m in top_level), top_level
    inner = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "tfp_bcnn"):
            inner |= {f"{node.module}.{a.name}" for a in node.names}
    assert inner == {"tfp_bcnn.workflow", "tfp_bcnn.demo.run_demo"}


# --------------------------------------------------------- issue 13 wiring
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


def test_prune_defaults_are_the_finetune_recipe(tmp_path):
    """`tfp-bcnn prune` (parsed before TensorFlow, so it cannot import the
    constant) and `workflow.run_prune` fine-tune with `workflow.FINETUNE`."""
    import inspect
    import zipfile

    with zipfile.ZipFile(tmp_path / "m.keras", "w") as archive:  # the parser checks a zip
        archive.writestr("config.json", "{}")
    args = cli.build_parser().parse_args(["prune", str(tmp_path / "m.keras")])
    defaults = inspect.signature(workflow.run_prune).parameters
    for key in ("learning_rate", "epochs", "batch_size"):
        assert getattr(args, key) == workflow.FINETUNE[key] == defaults[key].default, key


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
