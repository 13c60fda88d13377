"""The PyTorch backend (``KERAS_BACKEND=torch``, CPU): layers, training, inference, pruning.

A process has one Keras backend, so the checks run in one torch subprocess
(``tests/_backend.py``) as three scripts, each reporting a dict of results that
the tests below read:

* ``torch_layers``: Keras' own ``run_layer_test`` (config round trip, symbolic
  and eager calls, weight / seed-generator / loss counts, a training step,
  its mixed-precision check) on every layer class: the twelve
  {Conv1D,2D,3D,Dense} x estimator classes, the fifteen edge classes
  (depthwise, transposed), the four rank-1 classes, `GaussianHead` and
  `MCDropout`; the noise of every estimator differs between calls and
  between rows; mixed-precision training keeps float32 variables and KL; and
  the moment rule of a Bayesian linear layer (every rank) against Monte
  Carlo samples of the same layer drawn by torch (tolerance: 5 / 6 standard
  errors of the sample mean / variance, as in ``test_moments.py``: a correct
  rule fails with probability below 1e-6 per element).
* ``torch_workflow``: a Flipout LeNet-5 on the scikit-learn digits trained
  with the ``kl`` metric (loss falls; the KL is counted once); ``predict``
  with ``method="mc"`` and ``"moments"``; rank-1 and MC-dropout LeNet-5s;
  ``prune`` / ``UpdatePruning`` / ``strip`` / ``prune_now`` / ``shrink``;
  ``to_bayesian``; ``.keras`` save and load.
* ``torch_extras``: what needs TensorFlow (``tfp.distributions`` priors,
  export) raises an error that says so; ``KLAnnealing`` (per epoch and per
  step) reaches the torch training loop; a `GaussianHead` regressor's moments
  against Monte Carlo; a deep ensemble and a ``GroupL1`` regularizer.

The subprocess runs torch with one OpenMP thread (``tests/_backend.py``):
on the shared 2-core machine, torch's spinning worker threads made an
epoch ~30x slower under load (measured 17 s against 0.56 s for a
frequentist LeNet-5 epoch on the digits).
"""

from __future__ import annotations

import importlib.util
import textwrap

import pytest
from _backend import register, result

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                       reason="torch is not installed (the dev extra)"),
]

LAYERS = register("torch_layers", textwrap.dedent(
    """
    import traceback
    import keras, numpy as np
    from keras.src.testing import TestCase
    import tfp_bcnn
    from tfp_bcnn import layers, moments
    assert keras.backend.backend() == "torch"
    out = {"harness": {}}
    SHAPES = {0: (2, 5), 1: (2, 6, 3), 2: (2, 5, 5, 3), 3: (2, 4, 4, 4, 3)}

    def harness(cls, **kwargs):
        try:
            TestCase().run_layer_test(cls, **kwargs)
            out["harness"][cls.__name__] = "ok"
        except Exception:
            out["harness"][cls.__name__] = traceback.format_exc()[-1500:]

    for (rank, _), cls in layers.LAYER_CLASSES.items():
        kw = {"units": 4} if rank == 0 else {"filters": 4, "kernel_size": 2}
        harness(cls, init_kwargs={**kw, "seed": 1}, input_shape=SHAPES[rank],
                expected_num_trainable_weights=3, expected_num_non_trainable_weights=2,
                expected_num_losses=1, expected_num_seed_generators=1,
                supports_masking=False, run_mixed_precision_check=True)
    for (rank, _), cls in layers.DEPTHWISE_CLASSES.items():
        harness(cls, init_kwargs={"kernel_size": 2, "seed": 1}, input_shape=SHAPES[rank],
                expected_num_losses=1, expected_num_seed_generators=1, supports_masking=False)
    for (rank, _), cls in layers.TRANSPOSE_CLASSES.items():
        harness(cls, init_kwargs={"filters": 4, "kernel_size": 2, "seed": 1},
                input_shape=SHAPES[rank], expected_num_losses=1,
                expected_num_seed_generators=1, supports_masking=False)
    for rank in range(4):
        kw = {"units": 3} if rank == 0 else {"filters": 2, "kernel_size": 2}
        harness(layers.rank1_class(rank),
                init_kwargs={**kw, "num_components": 2, "seed": 1, "kl_weight": 0.01},
                input_shape=(4, *SHAPES[rank][1:]), expected_num_trainable_weights=6,
                expected_num_non_trainable_weights=2, expected_num_seed_generators=1,
                expected_num_losses=1, supports_masking=False, run_mixed_precision_check=True)
    harness(layers.GaussianHead, init_kwargs={"units": 2}, input_shape=(3, 5),
            expected_output_shape=(3, 4), expected_num_trainable_weights=2,
            supports_masking=False)
    harness(layers.MCDropout, init_kwargs={"rate": 0.3, "seed": 1}, input_shape=(3, 5),
            expected_output_shape=(3, 5), expected_num_seed_generators=1)

    # Noise: two calls differ, and two equal rows of one call differ.
    x = np.repeat(np.random.default_rng(0).random((1, 6, 6, 2), dtype=np.float32), 4, 0)
    out["noise"] = {}
    for est in layers.ESTIMATORS:
        layer = layers.layer_class(2, est)(3, 3, posterior_std_init=0.1, seed=3)
        a, b = (keras.ops.convert_to_numpy(layer(x)) for _ in range(2))
        out["noise"][est] = [float(np.abs(a - b).max()), float(np.abs(a[0] - a[1]).max())]

    # Mixed precision: float32 variables and KL, finite losses.
    out["mixed"] = {}
    for policy in ("mixed_float16", "mixed_bfloat16"):
        keras.mixed_precision.set_global_policy(policy)
        for est in layers.ESTIMATORS:
            model = keras.Sequential([
                keras.Input((8, 8, 1)),
                layers.layer_class(2, est)(4, 3, activation="relu", kl_weight=1 / 64, seed=1),
                keras.layers.Flatten(),
                layers.layer_class(0, est)(3, kl_weight=1 / 64, seed=2),
                keras.layers.Activation("softmax", dtype="float32"),
            ])
            xm = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
            model.compile("adam", "sparse_categorical_crossentropy")
            loss = model.fit(xm, np.arange(16) % 3, epochs=2, verbose=0).history["loss"]
            out["mixed"][policy + "/" + est] = [
                bool(np.all(np.isfinite(loss))), sorted({v.dtype for v in model.weights}),
                str(tfp_bcnn.kl_divergence(model).dtype)]
    keras.mixed_precision.set_global_policy("float32")

    # Moments of a Bayesian linear layer (local reparameterization: every
    # output row is an exact joint sample) against 20,000 torch draws.
    SH = {0: ((5,), {}), 1: ((8, 3), {"kernel_size": 3}), 2: ((6, 6, 2), {"kernel_size": 3}),
          3: ((4, 4, 4, 2), {"kernel_size": 2})}
    out["moments"] = {}
    rng = np.random.default_rng(0)
    for rank, (shape, kw) in SH.items():
        layer = layers.layer_class(rank, "local_reparameterization")(
            3, posterior_std_init=0.3, seed=rank, bayesian_bias=True,
            bias_initializer="random_normal", **kw)
        layer.build((None, *shape))
        layer.kernel_mask.assign((rng.random(layer.kernel_mask.shape) > 0.3).astype("f4"))
        mu, var = rng.normal(size=(1, *shape)), rng.uniform(0.05, 0.5, size=(1, *shape))
        prop = moments._Propagator("separate", moments.default_kernel_moments)
        g = moments._Gaussian(keras.ops.convert_to_tensor(mu, "float32"),
                              keras.ops.convert_to_tensor(var, "float32"), positive=True)
        res = prop._apply_pending(prop.layer(layer, [g], final=False))
        m_rule = np.asarray(keras.ops.convert_to_numpy(res.mean), np.float64)[0]
        v_rule = np.asarray(keras.ops.convert_to_numpy(res.var), np.float64)[0]
        n = 20000
        xs = (mu + np.sqrt(var) * rng.standard_normal((n, *shape))).astype("float32")
        y = np.asarray(keras.ops.convert_to_numpy(layer(xs, training=False)), np.float64)
        m = y.mean(0); c = y - m; v = (c ** 2).mean(0); m4 = (c ** 4).mean(0)
        se_m, se_v = np.sqrt(v / n), np.sqrt(np.maximum(m4 - v ** 2, 0) / n)
        out["moments"][rank] = [float(np.max(np.abs(m_rule - m) / (5 * se_m + 1e-5))),
                                float(np.max(np.abs(v_rule - v) / (6 * se_v + 1e-7)))]
    report(out)
    """
), backend="torch")


WORKFLOW = register("torch_workflow", textwrap.dedent(
    """
    import tempfile
    import keras, numpy as np
    import tfp_bcnn
    from tfp_bcnn import datasets, models, pruning
    assert keras.backend.backend() == "torch"
    np_ = keras.ops.convert_to_numpy
    out = {}
    keras.utils.set_random_seed(0)
    (x, y), (xt, yt) = datasets.digits()
    x, y, xt, yt = x[:512], y[:512], xt[:120], yt[:120]

    # fit with the KL metric; the KL counted once in the loss
    model = models.lenet5(num_train_examples=len(x), estimator="flipout")
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy",
                  metrics=["accuracy", tfp_bcnn.KLDivergence(model)])
    hist = model.fit(x, y, batch_size=64, epochs=4, verbose=0).history
    ev = model.evaluate(xt, yt, verbose=0, return_dict=True)
    kl_direct = float(np_(tfp_bcnn.kl_divergence(model)))
    probs = model.predict(xt, verbose=0)
    nll = float(np.mean(-np.log(probs[np.arange(len(yt)), yt] + 1e-12)))
    out["fit"] = {"loss": hist["loss"], "kl": hist["kl"], "accuracy": hist["accuracy"],
                  "eval_loss": ev["loss"], "eval_kl": ev["kl"], "kl_direct": kl_direct,
                  "nll": nll}

    # predict: Monte Carlo and moments
    out["predict"] = {}
    for method in ("mc", "moments"):
        a = tfp_bcnn.predict(model, xt, num_samples=16, batch_size=50, method=method,
                             return_samples=True)
        b = tfp_bcnn.predict(model, xt, num_samples=16, batch_size=50, method=method)
        out["predict"][method] = {
            "shapes": [list(a.mean.shape), list(a.std.shape), list(a.samples.shape),
                       list(a.predictive_entropy.shape), list(a.aleatoric.shape),
                       list(a.epistemic.shape)],
            "sum_to_one": float(np.abs(a.mean.sum(-1) - 1).max()),
            "decomposition": float(np.abs(a.predictive_entropy - a.aleatoric
                                          - a.epistemic).max()),
            "epistemic_min": float(a.epistemic.min()),
            "accuracy": float(np.mean(a.mean.argmax(-1) == yt)),
            "two_calls_differ": float(np.abs(a.mean - b.mean).max()),
        }
    out["moments_vs_mc_argmax"] = float(np.mean(
        tfp_bcnn.predict(model, xt, num_samples=64).mean.argmax(-1)
        == tfp_bcnn.predict(model, xt, method="moments").mean.argmax(-1)))

    # rank-1 mixtures and MC dropout
    out["other_posteriors"] = {}
    for name, m in {
        "rank1": models.lenet5(num_train_examples=len(x), posterior="rank1", num_components=2),
        "mc_dropout": models.lenet5(bayesian=False, dropout=0.25),
    }.items():
        # compile_bayesian: the rank-1 model tiles its training batch K times and
        # needs the MixtureLoss that averages the K copies
        models.compile_bayesian(m, learning_rate=3e-3)
        h = m.fit(x, y, batch_size=64, epochs=2, verbose=0).history["loss"]
        p = tfp_bcnn.predict(m, xt, num_samples=8)
        q = tfp_bcnn.predict(m, xt, method="moments")
        out["other_posteriors"][name] = [h[0], h[-1], float(p.epistemic.mean()),
                                         float(q.epistemic.mean()), list(q.mean.shape)]

    # pruning during training, strip, one-shot filter pruning and shrink
    pm = models.lenet5(num_train_examples=len(x), estimator="flipout")
    pruning.prune(pm, pruning.PolynomialDecay(0.0, 0.6, 0, 6, frequency=1), criterion="snr")
    pm.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    pm.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[pruning.UpdatePruning()])
    sparsity = pruning.sparsity(pm)["total"]
    pruning.strip(pm)
    conv = pm.get_layer("conv2")
    dead = np_(conv.kernel_mask) == 0
    loc, sigma = (np_(v) for v in conv.kernel_posterior())
    p = tfp_bcnn.predict(pm, xt, num_samples=4)
    sm = models.lenet5(num_train_examples=len(x), estimator="flipout")
    sm(xt[:1])
    pruning.prune_now(sm, 0.5, criterion="l1", structure="filter")
    small = pruning.shrink(sm)
    big_m = tfp_bcnn.predict(sm, xt, method="moments", num_samples=256)
    small_m = tfp_bcnn.predict(small, xt, method="moments", num_samples=256)
    out["pruning"] = {
        "sparsity": sparsity, "dead_fraction": float(dead.mean()),
        "dead_loc_sigma": float(max(np.abs(loc[dead]).max(), np.abs(sigma[dead]).max())),
        "finite": bool(np.all(np.isfinite(p.mean))),
        "params": [sm.count_params(), small.count_params()],
        "shrink_same_moments": [float(np.abs(
            np_(getattr(tfp_bcnn.moments.propagate(sm, xt), f))
            - np_(getattr(tfp_bcnn.moments.propagate(small, xt), f))).max())
            for f in ("mean", "variance")],
        "shrink_mean_close": float(np.abs(big_m.mean - small_m.mean).max()),
    }

    # to_bayesian: the posterior means start at the trained weights
    freq = models.lenet5(bayesian=False)
    freq.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    freq.fit(x, y, batch_size=64, epochs=1, verbose=0)
    base = freq.predict(xt, verbose=0).argmax(-1)
    out["to_bayesian"] = {}
    for est in ("flipout", "reparameterization", "local_reparameterization"):
        bm = models.to_bayesian(freq, estimator=est, num_train_examples=len(x), moped_delta=0.01)
        same = float(np.abs(np_(bm.get_layer("conv1").kernel_loc)
                            - np_(freq.get_layer("conv1").kernel)).max())
        agree = float(np.mean(tfp_bcnn.predict(bm, xt, num_samples=8).mean.argmax(-1) == base))
        out["to_bayesian"][est] = [same, agree]

    # .keras save and load: the same weights, the same moments, training goes on
    path = tempfile.mkdtemp() + "/model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    out["save_load"] = {
        "weights_equal": all(np.array_equal(np_(a), np_(b))
                             for a, b in zip(model.weights, loaded.weights)),
        "moments_diff": float(np.abs(
            np_(tfp_bcnn.moments.propagate(model, xt).mean)
            - np_(tfp_bcnn.moments.propagate(loaded, xt).mean)).max()),
        "classes": sorted({type(layer).__name__ for layer in loaded.layers}),
    }
    loaded.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy",
                   metrics=[tfp_bcnn.KLDivergence(loaded)])
    out["save_load"]["refit_finite"] = bool(np.isfinite(
        loaded.fit(x, y, batch_size=64, epochs=1, verbose=0).history["loss"][0]))
    report(out)
    """
), backend="torch")


EXTRAS = register("torch_extras", textwrap.dedent(
    """
    import keras, numpy as np
    import tfp_bcnn
    from tfp_bcnn import export, layers, models, priors, regularizers
    assert keras.backend.backend() == "torch"
    out = {}
    rng = np.random.default_rng(0)

    def error(fn):
        try:
            fn()
        except ValueError as e:
            return str(e)
        return None

    # What needs TensorFlow says so.
    import tensorflow_probability as tfp
    out["tfp_prior_error"] = error(lambda: priors.TFPPrior(tfp.distributions.Laplace(0.0, 1.0)))
    small = keras.Sequential([keras.Input((6,)), layers.DenseFlipout(3, activation="softmax")])
    out["export_error"] = error(lambda: export.to_tflite(small, "/nonexistent/m.tflite"))

    # KL annealing reaches the torch training loop (linear: per epoch; blundell: per step).
    x = rng.random((64, 6)).astype("float32"); y = np.arange(64) % 3
    out["annealing"] = {}
    for schedule in ("linear", "blundell"):
        m = keras.Sequential([keras.Input((6,)), layers.DenseFlipout(3, activation="softmax",
                                                                     kl_weight=1 / 64)])
        m.compile("adam", "sparse_categorical_crossentropy")
        seen = []
        log = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda b, logs: seen.append(tfp_bcnn.get_kl_weight(m)))
        m.fit(x, y, batch_size=32, epochs=2, verbose=0,
              callbacks=[tfp_bcnn.KLAnnealing(schedule=schedule, warmup_epochs=2), log])
        out["annealing"][schedule] = [float(v) for v in seen]

    # Regression head: Monte Carlo and moments give the same variances.
    keras.utils.set_random_seed(2)
    reg = keras.Sequential([keras.Input((4,)),
                            layers.DenseLocalReparameterization(16, activation="relu",
                                                                posterior_std_init=0.3),
                            layers.GaussianHead(1)])
    reg.compile("adam", tfp_bcnn.gaussian_nll)
    xr = rng.normal(size=(6, 4)).astype("float32")
    reg.fit(xr, xr[:, :1], epochs=1, verbose=0)
    mc = tfp_bcnn.predict(reg, xr, num_samples=4000)
    mom = tfp_bcnn.predict(reg, xr, num_samples=4000, method="moments")
    out["head"] = {"kind": type(mom).__name__,
                   "mean_diff_in_sd": float(np.max(np.abs(mom.mean - mc.mean)
                                                   / np.sqrt(mc.epistemic_variance / 2000))),
                   "ratio": (mom.epistemic_variance / mc.epistemic_variance).ravel().tolist(),
                   "aleatoric_ratio": (mom.aleatoric_variance
                                       / mc.aleatoric_variance).ravel().tolist()}

    # Deep ensemble of two frequentist models; a GroupL1 regularizer trains.
    xi = rng.random((32, 8, 8, 1)).astype("float32"); yi = np.arange(32) % 10
    members = []
    for seed in (0, 1):
        keras.utils.set_random_seed(seed)
        mm = keras.Sequential([
            keras.Input((8, 8, 1)),
            layers.Conv2DFlipout(4, 3, kernel_regularizer=regularizers.GroupL1(1e-2)),
            keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
        mm.compile("adam", "sparse_categorical_crossentropy")
        h = mm.fit(xi, yi, epochs=2, verbose=0).history["loss"]
        members.append(mm)
    ens = tfp_bcnn.predict(members, xi)
    out["ensemble"] = [list(ens.mean.shape), float(ens.epistemic.mean()), len(members[0].losses),
                       bool(np.all(np.isfinite(h)))]
    report(out)
    """
), backend="torch")


@pytest.fixture(scope="module")
def torch_extras():
    return result(EXTRAS, backend="torch", timeout=400)


@pytest.fixture(scope="module")
def torch_workflow():
    return result(WORKFLOW, backend="torch", timeout=400)


@pytest.fixture(scope="module")
def torch_layers():
    return result(LAYERS, backend="torch", timeout=400)


def test_keras_layer_harness_on_every_class(torch_layers):
    harness = torch_layers["harness"]
    failed = {name: err for name, err in harness.items() if err != "ok"}
    assert not failed, failed
    # 12 mean-field + 6 depthwise + 9 transposed + 4 rank-1 + head + dropout
    assert len(harness) == 33, sorted(harness)


def test_noise_differs_between_calls_and_rows(torch_layers):
    for est, (between_calls, between_rows) in torch_layers["noise"].items():
        assert between_calls > 1e-4, est
        if est != "reparameterization":  # one kernel per call: equal rows agree
            assert between_rows > 1e-4, est


def test_mixed_precision_keeps_float32_variables_and_kl(torch_layers):
    assert len(torch_layers["mixed"]) == 6
    for key, (finite, dtypes, kl_dtype) in torch_layers["mixed"].items():
        assert finite, key
        assert dtypes == ["float32"], key
        assert kl_dtype == "torch.float32", key


def test_layer_moments_match_torch_samples(torch_layers):
    # Each figure is the largest |rule - MC| over the allowed deviation (5 SE
    # for the mean, 6 SE for the variance): <= 1 passes.
    assert len(torch_layers["moments"]) == 4
    for rank, (mean_ratio, var_ratio) in torch_layers["moments"].items():
        assert mean_ratio <= 1.0, (rank, mean_ratio)
        assert var_ratio <= 1.0, (rank, var_ratio)


def test_fit_lowers_the_loss_and_counts_the_kl_once(torch_workflow):
    fit = torch_workflow["fit"]
    assert fit["loss"][-1] < fit["loss"][0], fit
    assert fit["accuracy"][-1] > 0.5, fit   # chance is 0.1
    # The logged kl is the model's KL (the metric sees the torch weights).
    assert fit["eval_kl"] == pytest.approx(fit["kl_direct"], rel=1e-5), fit
    # loss = NLL + KL: a second KL would add ~100 % of the KL (which is ~98 %
    # of the loss here); the NLL of predict() is another Monte Carlo draw,
    # so it agrees with loss - kl only up to sampling noise (0.3 nats).
    assert fit["eval_loss"] - fit["eval_kl"] == pytest.approx(fit["nll"], abs=0.3), fit
    assert fit["eval_loss"] - fit["eval_kl"] < 0.5 * fit["eval_kl"], fit


@pytest.mark.parametrize("method", ["mc", "moments"])
def test_predict_fields(torch_workflow, method):
    p = torch_workflow["predict"][method]
    assert p["shapes"] == [[120, 10], [120, 10], [16, 120, 10], [120], [120], [120]]
    assert p["sum_to_one"] < 1e-5
    assert p["decomposition"] < 1e-4          # entropy = aleatoric + epistemic
    assert p["epistemic_min"] >= -1e-6
    assert p["accuracy"] > 0.5, p
    assert p["two_calls_differ"] > 0          # fresh draws on every call


def test_moments_agree_with_monte_carlo(torch_workflow):
    # 64 MC samples against moments on 120 digits of a 4-epoch model: only
    # images with their top two classes within MC error can differ.
    assert torch_workflow["moments_vs_mc_argmax"] >= 0.9


def test_rank1_and_mc_dropout_models(torch_workflow):
    for name, (first, last, mc_epi, mom_epi, shape) in torch_workflow[
            "other_posteriors"].items():
        assert last < first, name
        assert mc_epi > 0 and mom_epi > 0, name
        assert shape == [120, 10], name


def test_pruning_strip_and_shrink(torch_workflow):
    p = torch_workflow["pruning"]
    assert p["sparsity"] == pytest.approx(0.6, abs=0.01), p
    assert p["dead_fraction"] == pytest.approx(0.6, abs=0.01), p
    assert p["dead_loc_sigma"] == 0.0                  # pruned: exactly 0 in mu and sigma
    assert p["finite"]
    assert p["params"][1] < 0.6 * p["params"][0], p    # filters removed physically
    assert max(p["shrink_same_moments"]) < 1e-4, p     # shrinking changes nothing else
    assert p["shrink_mean_close"] < 0.05, p            # 256 draws from the same Gaussian


def test_to_bayesian(torch_workflow):
    for est, (loc_diff, agree) in torch_workflow["to_bayesian"].items():
        assert loc_diff == 0.0, est          # posterior mean = the trained kernel
        assert agree >= 0.9, (est, agree)    # sigma = 0.01 |w|: predictions barely move


def test_keras_save_and_load(torch_workflow):
    s = torch_workflow["save_load"]
    assert s["weights_equal"]
    assert s["moments_diff"] == 0.0
    assert "Conv2DFlipout" in s["classes"] and "DenseFlipout" in s["classes"]
    assert s["refit_finite"]


def test_what_needs_tensorflow_says_so(torch_extras):
    assert "needs the TensorFlow backend" in torch_extras["tfp_prior_error"]
    assert "backend='torch'" in torch_extras["tfp_prior_error"]
    assert "KERAS_BACKEND=tensorflow" in torch_extras["export_error"]
    assert "backend='torch'" in torch_extras["export_error"]


def test_kl_annealing_in_the_torch_loop(torch_extras):
    linear, blundell = torch_extras["annealing"]["linear"], torch_extras["annealing"]["blundell"]
    base = 1 / 64
    # linear, warm-up 2 epochs: beta 1/2 in epoch 1, 1 in epoch 2 (2 steps each)
    assert linear == pytest.approx([base / 2] * 2 + [base] * 2, rel=1e-5), linear
    # blundell: 2^(M-i) / (2^M - 1) times M steps, per minibatch i of M = 2
    assert blundell == pytest.approx([base * 2 * 2 / 3, base * 2 * 1 / 3] * 2, rel=1e-5), blundell


def test_gaussian_head_moments_match_monte_carlo(torch_extras):
    # As tests/test_moments.py: one Bayesian hidden layer on a fixed input is
    # exact up to MC error (4000 + 4000 draws: 6 sd of the mean; variance
    # ratio within 20 %).
    head = torch_extras["head"]
    assert head["kind"] == "RegressionPrediction"
    assert head["mean_diff_in_sd"] < 6
    assert all(0.8 < r < 1.25 for r in head["ratio"]), head
    assert all(0.8 < r < 1.25 for r in head["aleatoric_ratio"]), head


def test_ensemble_and_group_l1(torch_extras):
    shape, epistemic, n_losses, finite = torch_extras["ensemble"]
    assert shape == [32, 10]
    assert epistemic > 0          # two members disagree
    assert n_losses == 2          # the KL and the GroupL1 penalty
    assert finite
