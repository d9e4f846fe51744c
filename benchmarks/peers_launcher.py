"""Run one of SSL4MIS's 2D training scripts unchanged on disk, adapting from outside only what
stops it running here. Started by ``benchmarks/peers.py`` as ``python peers_launcher.py``
(by path, standard library and torch only, so the peer's own packages import as it expects).

The script is read, parsed and executed in this process as ``__main__``; none of its files is
written. Adaptations (the line numbers are those of ``code/train_mean_teacher_2D.py`` at
SSL4MIS commit 06df604; ``train_cross_pseudo_supervision_2D.py`` has the same statements):

1. ``.cuda()`` (l.151; ``networks/net_factory.py`` l.77; ``val_2D.py`` l.27) is a no-op on a
   machine without CUDA: ``Tensor.cuda`` and ``Module.cuda`` return their object unchanged.
2. The training loader's hard-coded ``num_workers=4`` (l.127-128) becomes ``--workers``: the
   script's global ``DataLoader`` is replaced by one that sets it for the loader built with a
   ``batch_sampler`` (the validation loader, l.132-133, is left as it is).
3. ``--patch_size`` is ``type=list`` (l.45): on the command line ``64`` would become
   ``['6', '4']``, so ``args.patch_size`` is set to ``[S, S]`` after the script parsed its
   arguments and before it trains.
4. ``patients_to_slices`` (l.67-77) knows only ACDC's and Prostate's patient counts: it is
   replaced by one returning ``--labeled-slices``, the phantom's labeled slice count (the
   labeled slices come first in ``train_slices.list``, l.119-123).
5. With ``--consistency-from-start``, the one ``iter_num < 1000`` test in ``train`` (l.170,
   no consistency term before iteration 1000) compares with 0, so a short run times the phase
   with the consistency term on; the launcher refuses a script where it finds no such test.
6. torch uses ``--threads`` intra-op threads (the script sets none) and data-loader workers are
   forked, as on Linux by default (the script's ``worker_init_fn`` is a closure, l.110-111,
   which the other start methods cannot send to a worker).

Steps 3 and 4 work because the script's last statement is its ``if __name__ == "__main__":``
block (l.257-283): everything before it runs first, then the globals are adapted, then it runs.
"""

from __future__ import annotations

import argparse
import ast
import builtins
import multiprocessing
import sys
from pathlib import Path
from typing import Any

import torch

#: The loop variable and constant of the consistency start test (l.170).
ITERATION_NAME = "iter_num"


class AdaptationError(RuntimeError):
    """The script no longer has the statement an adaptation expects (another SSL4MIS commit)."""


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    return (
        isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and len(test.comparators) == 1
        and isinstance(test.comparators[0], ast.Constant)
        and test.comparators[0].value == "__main__"
    )


class _ConsistencyFromStart(ast.NodeTransformer):
    """``iter_num < N`` inside ``train`` becomes ``iter_num < 0``; counts what it changed."""

    def __init__(self) -> None:
        self.changed = 0
        self._in_train = False

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        outer, self._in_train = self._in_train, self._in_train or node.name == "train"
        self.generic_visit(node)
        self._in_train = outer
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        if (
            self._in_train
            and isinstance(node.left, ast.Name)
            and node.left.id == ITERATION_NAME
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.Lt)
            and isinstance(node.comparators[0], ast.Constant)
            and isinstance(node.comparators[0].value, int)
        ):
            self.changed += 1
            node.comparators[0] = ast.copy_location(ast.Constant(0), node.comparators[0])
        return node


def split_script(source: str, filename: str, consistency_from_start: bool) -> tuple[Any, Any]:
    """(code before the ``__main__`` block, code of the block), adapted per the options."""
    tree = ast.parse(source, filename)
    if not tree.body or not _is_main_guard(tree.body[-1]):
        raise AdaptationError(f"{filename}: its last statement is not `if __name__ == '__main__'`")
    if consistency_from_start:
        start = _ConsistencyFromStart()
        tree = start.visit(tree)
        if start.changed != 1:
            raise AdaptationError(
                f"{filename}: expected one `{ITERATION_NAME} < N` test in train() (the "
                f"consistency start), found {start.changed}"
            )
    body = ast.fix_missing_locations(ast.Module(body=tree.body[:-1], type_ignores=[]))
    guard = ast.fix_missing_locations(ast.Module(body=[tree.body[-1]], type_ignores=[]))
    return compile(body, filename, "exec"), compile(guard, filename, "exec")


def _no_cuda() -> None:
    def stay(self: Any, *args: Any, **kwargs: Any) -> Any:
        return self

    torch.Tensor.cuda = stay  # type: ignore[method-assign]
    torch.nn.Module.cuda = stay  # type: ignore[method-assign]


def _loader_with_workers(workers: int) -> Any:
    from torch.utils.data import DataLoader

    def loader(*args: Any, **kwargs: Any) -> DataLoader:
        if "batch_sampler" in kwargs:  # the training loader (l.127-128)
            kwargs["num_workers"] = workers
        return DataLoader(*args, **kwargs)

    return loader


def adapt_globals(
    namespace: dict[str, Any], image_size: int, labeled_slices: int, workers: int
) -> None:
    """Adaptations 2-4 on the globals the script defined before its ``__main__`` block."""
    for name in ("args", "patients_to_slices", "DataLoader"):
        if name not in namespace:
            raise AdaptationError(f"the script defines no global {name!r} to adapt")
    if not hasattr(namespace["args"], "patch_size"):
        raise AdaptationError("the script's args have no patch_size")
    namespace["args"].patch_size = [image_size, image_size]
    namespace["patients_to_slices"] = lambda dataset, patients: labeled_slices
    namespace["DataLoader"] = _loader_with_workers(workers)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", type=Path, required=True)
    parser.add_argument("--workers", type=int, required=True)
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--labeled-slices", type=int, required=True)
    parser.add_argument("--consistency-from-start", action="store_true")
    parser.add_argument("--profile", type=Path, default=None, help="write a profiler table here")
    parser.add_argument("--profile-top", type=int, default=12)
    parser.add_argument("peer_args", nargs=argparse.REMAINDER, help="after --: the script's")
    args = parser.parse_args(argv)
    peer_args = args.peer_args[1:] if args.peer_args[:1] == ["--"] else args.peer_args
    script = args.script.resolve()

    torch.set_num_threads(args.threads)
    if "fork" in multiprocessing.get_all_start_methods():
        multiprocessing.set_start_method("fork", force=True)
    if not torch.cuda.is_available():
        _no_cuda()
    body, guard = split_script(script.read_text(), str(script), args.consistency_from_start)
    # the script imports its packages (dataloaders, networks, utils) from its own folder
    sys.path[0] = str(script.parent)
    sys.argv = [str(script), *peer_args]
    namespace: dict[str, Any] = {
        "__name__": "__main__",
        "__file__": str(script),
        "__builtins__": builtins,
    }
    exec(body, namespace)
    adapt_globals(namespace, args.image_size, args.labeled_slices, args.workers)
    if args.profile is None:
        exec(guard, namespace)
        return
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        exec(guard, namespace)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.profile_top)
    args.profile.write_text(table + "\n")


if __name__ == "__main__":
    main()
