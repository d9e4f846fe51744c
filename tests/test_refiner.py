"""The pseudo-label refiner contract: CPS4's VLM refiner passes the conformance kit on every
base; a refiner that reads the hidden truth is caught; with ``cps4.refiner=none`` a run on a base
is bit-identical to the base's own run (every logged metric)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
from conftest import TINY
from spinebench_bcp.method import BCP
from spinebench_cps4.method import CPS4
from spinebench_unimatch.method import UniMatch

from spinebench import semisupervised
from spinebench.method import Batch, Stage, StepInfo, StepOutput
from spinebench.runinfo import RunRequest
from spinebench.testing import ConformanceError, check_method


@pytest.mark.parametrize("base", ["cps4", "unimatch", "bcp", "abd"])
def test_the_vlm_refiner_conforms_on_every_base(base: str) -> None:
    report = check_method(CPS4, overrides={"method.base": base})
    assert "hidden_truth" in report.rules


class TruthRefiner:
    """Cheats: refines pseudo labels with the hidden truth its method hands it."""

    truth: torch.Tensor | None = None

    def prepare(self, images: torch.Tensor) -> Any:
        return self.truth

    def refine(self, logits: torch.Tensor, prepared: Any) -> semisupervised.Refined:
        onehot = torch.nn.functional.one_hot(prepared, logits.shape[1]).permute(0, 3, 1, 2)
        return semisupervised.Refined(onehot.float())


class SharpeningRefiner:
    """Honest: a temperature on the base's own logits."""

    def prepare(self, images: torch.Tensor) -> Any:
        return None

    def refine(self, logits: torch.Tensor, prepared: Any) -> semisupervised.Refined:
        return semisupervised.Refined((2 * logits.float()).softmax(1))


class UniMatchWithTruthRefiner(UniMatch):
    options: ClassVar[dict[str, Any]] = dict(UniMatch.options)

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        refiner = TruthRefiner()
        refiner.truth = batch.unlabeled_truth
        return self.step(self.net, batch, refiner)


class UniMatchWithSharpening(UniMatch):
    options: ClassVar[dict[str, Any]] = dict(UniMatch.options)

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        return self.step(self.net, batch, SharpeningRefiner())


class BCPWithTruthRefiner(BCP):
    options: ClassVar[dict[str, Any]] = dict(BCP.options)

    def training_step(self, stage: Stage, batch: Batch, step: StepInfo) -> StepOutput:
        if stage.name == semisupervised.PRETRAIN:
            return super().training_step(stage, batch, step)
        refiner = TruthRefiner()
        refiner.truth = batch.unlabeled_truth
        return self.step.selftrain(self.pair.student, self.pair.teacher, batch, refiner)


@pytest.mark.parametrize("cheat", [UniMatchWithTruthRefiner, BCPWithTruthRefiner])
def test_a_refiner_that_reads_the_hidden_truth_is_caught(cheat: type) -> None:
    with pytest.raises(ConformanceError, match="hidden_truth"):
        check_method(cheat)


def test_an_honest_refiner_passes() -> None:
    check_method(UniMatchWithSharpening)


def _metrics(uri: str) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient  # not at module level: the kit checks the module

    client = MlflowClient(uri)
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return {
        key: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        for key in run.data.metrics
        if not key.startswith(("perf/", "data/"))
    }


@pytest.mark.parametrize("base", ["unimatch", "bcp"])
def test_refiner_none_is_exactly_the_bases_own_run(isolated_env, base: str) -> None:
    from spinebench.engine.run import execute

    overrides = [v for k, v in zip(TINY[::2], TINY[1::2], strict=True) if k == "--set"]
    overrides += ["train.threads=1"]
    runs = {}
    for name, method, extra in (
        ("own", base, []),
        ("cps4", "cps4", ["cps4.base=" + base, "cps4.refiner=none"]),
    ):
        uri = f"sqlite:///{isolated_env}/{name}.db"
        execute(
            RunRequest(method=method, labeled=0.5, overrides=[*overrides, *extra], tracking_uri=uri)
        )
        runs[name] = _metrics(uri)
    assert runs["own"].keys() == runs["cps4"].keys()
    assert runs["own"] == runs["cps4"]
    assert "test/dice" in runs["own"] and "test_last/dice" in runs["own"]


PRETRAIN_10 = "cps4.pretrain_iterations=10"  # the VLM trains, briefly


@pytest.mark.parametrize(
    ("base", "rule"),
    [
        ("unimatch", ["cps4.pseudo_label=teacher"]),
        ("bcp", ["cps4.pseudo_label=teacher"]),
        # the default rule with a VLM trusted on no class (no VLM reaches Dice 1.0)
        ("unimatch", ["cps4.vlm_min_reliability=1.0"]),
    ],
    ids=["unimatch-teacher", "bcp-teacher", "unimatch-reliable-untrusted"],
)
def test_a_refiner_that_changes_no_label_leaves_the_bases_run_as_it_is(
    isolated_env, base: str, rule: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the VLM built and trained but its labels unused (rule ``teacher``, or ``reliable``
    with weight 0 on every class), every metric the base logs is that of the base's own run, at
    steps shifted by the VLM's stage: its initial weights, batches, augmentations and dropout
    masks are the base's own, so a comparison with the VLM on differs only by the labels the
    VLM changed."""
    from spinebench.engine.run import execute

    # a cache of its own: a stage another test cached would make one run skip it
    monkeypatch.setenv("SPINEBENCH_CACHE", str(isolated_env / "cache"))
    overrides = [v for k, v in zip(TINY[::2], TINY[1::2], strict=True) if k == "--set"]
    overrides += ["train.threads=1"]
    runs = {}
    for name, method, extra in (
        ("own", base, []),
        ("cps4", "cps4", [f"cps4.base={base}", *rule, PRETRAIN_10]),
    ):
        uri = f"sqlite:///{isolated_env}/{name}.db"
        execute(
            RunRequest(method=method, labeled=0.5, overrides=[*overrides, *extra], tracking_uri=uri)
        )
        runs[name] = _metrics(uri)
    own, cps4 = runs["own"], runs["cps4"]
    assert own.keys() < cps4.keys()  # the VLM's stage and the refinement diagnostics
    assert "pseudo/changed_fraction" in cps4
    offset = cps4["val/dice"][0][0] - own["val/dice"][0][0]
    assert offset == 10  # the VLM's stage came first
    for key, history in own.items():
        assert [v for _, v in cps4[key]] == [v for _, v in history], key
        assert [s - offset for s, _ in cps4[key]] == [s for s, _ in history], key
    assert all(v == 0 for _, v in cps4["pseudo/changed_fraction"])


def test_cps4_on_bcp_gives_the_same_run_with_its_stages_cached(isolated_env) -> None:
    """Both cached stages (the VLM and BCP's pre-training, with the network's reliabilities
    its validations measured) make the second run exactly the first; the pre-training cached
    without the VLM is not taken for one with it."""
    from spinebench.engine.run import execute

    overrides = [v for k, v in zip(TINY[::2], TINY[1::2], strict=True) if k == "--set"]
    overrides += ["train.threads=1", "cps4.base=bcp", "cps4.pretrain_iterations=2"]
    results = []
    for name in ("none", "first", "second"):
        extra = ["cps4.refiner=none"] if name == "none" else []
        uri = f"sqlite:///{isolated_env}/{name}.db"
        execute(RunRequest("cps4", 0.5, overrides=[*overrides, *extra], tracking_uri=uri))
        results.append(_metrics(uri))
    _, first, second = results
    assert "pretrain/loss" in first and "vlm/loss" in first  # both trained, not cached
    assert "pretrain/loss" not in second and "vlm/loss" not in second  # both from the cache
    compared = [k for k in first if k.startswith(("test", "selftrain/", "pseudo/"))]
    assert compared and all(first[k] == second[k] for k in compared)
