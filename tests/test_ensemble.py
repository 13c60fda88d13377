"""Deep ensembles: predict on a list of models, and train_ensemble."""

import keras
import numpy as np
import pytest

import tfp_bcnn
from tfp_bcnn import ensemble, layers, models


def _net(units=3, seed=0, bayesian=False, softmax=True):
    dense = (layers.DenseFlipout(units, activation="softmax" if softmax else None,
                                 kl_weight=0.0, posterior_std_init=0.5, seed=seed)
             if bayesian else
             keras.layers.Dense(units, activation="softmax" if softmax else None,
                                kernel_initializer=keras.initializers.GlorotUniform(seed)))
    return keras.Sequential([keras.Input((4,)), dense])


X = np.random.default_rng(0).standard_normal((7, 4)).astype("float32")


def test_deterministic_members_are_one_sample_each():
    members = [_net(seed=s) for s in range(3)]
    p = tfp_bcnn.predict(members, X, num_samples=16, return_samples=True)
    assert p.samples.shape == (3, 7, 3)
    for m, member in enumerate(members):
        np.testing.assert_allclose(p.samples[m], member.predict(X, verbose=0), rtol=1e-6)
    ref = tfp_bcnn.decompose(np.stack([m.predict(X, verbose=0) for m in members]))
    np.testing.assert_allclose(p.mean, ref.mean, rtol=1e-6)
    np.testing.assert_allclose(p.epistemic, ref.epistemic, rtol=1e-5, atol=1e-7)
    assert np.all(p.epistemic > 0)  # different initialisations disagree


def test_identical_members_have_no_epistemic_uncertainty():
    net = _net(seed=1)
    p = tfp_bcnn.predict([net, net], X)
    np.testing.assert_allclose(p.epistemic, 0.0, atol=1e-7)
    np.testing.assert_allclose(p.mean, net.predict(X, verbose=0), rtol=1e-6)


def test_bayesian_members_give_num_samples_each_member_major():
    bayes = _net(seed=2, bayesian=True)
    det = _net(seed=3)
    p = tfp_bcnn.predict([bayes, det], X, num_samples=5, return_samples=True)
    assert p.samples.shape == (10, 7, 3)
    # member-major: rows 0-4 are the Bayesian member's draws (they differ),
    # rows 5-9 the deterministic member's one output repeated (equal weights)
    assert not np.allclose(p.samples[0], p.samples[1])
    for row in p.samples[5:]:
        np.testing.assert_allclose(row, det.predict(X, verbose=0), rtol=1e-6)
    np.testing.assert_allclose(p.mean, p.samples.mean(axis=0), rtol=1e-6)


def test_from_logits_and_tuple_input():
    members = (_net(seed=0, softmax=False), _net(seed=1, softmax=False))
    p = tfp_bcnn.predict(members, X, from_logits=True)
    np.testing.assert_allclose(p.mean.sum(axis=1), 1.0, rtol=1e-6)


def test_rejects_mismatched_and_bad_members():
    with pytest.raises(ValueError, match=r"same output shape.*\(None, 3\).*\(None, 4\)"):
        tfp_bcnn.predict([_net(3), _net(4)], X)
    with pytest.raises(ValueError, match="model=\\[\\]"):
        tfp_bcnn.predict([], X)
    with pytest.raises(ValueError, match=r"model\[1\] of type str"):
        tfp_bcnn.predict([_net(), "b"], X)


def test_train_ensemble_seeds_members_differently():
    x = np.random.default_rng(0).standard_normal((40, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64") + (x[:, 1] > 0)
    built = []

    def build(seed):
        built.append(seed)
        return _net(seed=seed)

    members = ensemble.train_ensemble(build, x, y, num_members=3, seed=10, epochs=2,
                                      batch_size=8, verbose=0)
    assert built == [10, 11, 12]
    assert len(members) == 3 and all(m.compiled for m in members)
    # uncompiled members are compiled with the one recipe's learning rate
    lr = [float(m.optimizer.learning_rate) for m in members]
    assert lr == pytest.approx([models.RECIPE["learning_rate"]] * 3)
    kernels = [np.asarray(m.layers[0].kernel) for m in members]
    assert not np.allclose(kernels[0], kernels[1])
    p = tfp_bcnn.predict(members, x)
    assert p.mean.shape == (40, 3)
    # the same seeds give the same members
    again = ensemble.train_ensemble(build, x, y, num_members=1, seed=10, epochs=2,
                                    batch_size=8, verbose=0)
    np.testing.assert_allclose(np.asarray(again[0].layers[0].kernel), kernels[0], rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_members": 0}, "num_members=0"),
        ({"num_members": 2.0}, "num_members=2.0"),
        ({"seed": "a"}, "seed='a'"),
        ({"build_fn": lambda seed: "model"}, "returned str"),
    ],
)
def test_train_ensemble_bad_arguments(kwargs, match):
    args = {"build_fn": lambda seed: _net(seed=seed), "x": X, "y": np.zeros(7, "int64"),
            "epochs": 1, "verbose": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        ensemble.train_ensemble(**args)
