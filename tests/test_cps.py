"""Cross Pseudo Supervision: the two cross losses are symmetric, each network learns only from
its own predictions (the other's arg-max is a detached target), and the weight ramps as
SSL4MIS's."""

from __future__ import annotations

import math

import torch
from spinebench_cps.method import CPS, cross_pseudo_losses

from spinebench.config import resolve
from spinebench.data.classmap import mrspineseg_class_map
from spinebench.method import Batch, MethodContext, StepInfo
from spinebench.semisupervised import consistency_weight


def _method() -> CPS:
    config = resolve(
        method="cps",
        method_options=CPS.options,
        method_defaults=CPS.default_config("quick"),
        overrides={"model.channels": [4, 8], "model.dropout": [0.0, 0.0]},
    )
    ctx = MethodContext(
        class_map=mrspineseg_class_map(), image_size=16, options=config["method"], config=config
    )
    return CPS(ctx)


def test_cross_losses_are_symmetric():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 4, 6, 6, generator=g), torch.randn(2, 4, 6, 6, generator=g)
    one, two = cross_pseudo_losses(a, b)
    two_swapped, one_swapped = cross_pseudo_losses(b, a)
    torch.testing.assert_close((one, two), (one_swapped, two_swapped))
    expected = torch.nn.functional.cross_entropy(a, b.argmax(1))
    torch.testing.assert_close(one, expected)


def test_each_cross_loss_reaches_only_its_own_network():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(2, 4, 6, 6, generator=g, requires_grad=True)
    b = torch.randn(2, 4, 6, 6, generator=g, requires_grad=True)
    one, _ = cross_pseudo_losses(a, b)
    one.backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    assert b.grad is None


def test_the_step_gives_each_network_the_gradient_of_its_own_loss_only():
    torch.manual_seed(2)
    method = _method()
    g = torch.Generator().manual_seed(3)
    batch = Batch(
        image=torch.randn(2, 1, 16, 16, generator=g),
        label=torch.randint(20, (2, 16, 16), generator=g),
        unlabeled_weak=torch.randn(2, 1, 16, 16, generator=g),
    )
    step = StepInfo(500, 1000)
    out = method.training_step(method.stages()[0], batch, step)
    grads = torch.autograd.grad(out.losses["loss"], list(method.net1.parameters()))
    # net 1's own loss, recomputed: supervised + weight x CE against net 2's arg-max
    n = batch.image.shape[0]
    logits1 = method.net1(torch.cat((batch.image, batch.unlabeled_weak)))
    with torch.no_grad():
        target2 = method.net2(torch.cat((batch.image, batch.unlabeled_weak)))[n:].argmax(1)
    weight = consistency_weight(0.1, 500, 1000, 1.0, 0.0)
    own = method.supervised(logits1[:n], batch.label) + weight * torch.nn.functional.cross_entropy(
        logits1[n:], target2
    )
    expected = torch.autograd.grad(own, list(method.net1.parameters()))
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_the_two_networks_start_from_different_weights():
    method = _method()
    first = next(method.net1.parameters())
    second = next(method.net2.parameters())
    assert not torch.equal(first, second)


def test_the_weight_ramps_over_the_whole_budget_as_ssl4mis():
    assert consistency_weight(0.1, 0, 30000, 1.0, 0.0) == 0.1 * math.exp(-5)
    assert consistency_weight(0.1, 30000, 30000, 1.0, 0.0) == 0.1
    mid = consistency_weight(0.1, 15000, 30000, 1.0, 0.0)
    assert mid == 0.1 * math.exp(-5 * 0.25)
