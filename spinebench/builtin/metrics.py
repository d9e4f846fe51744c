"""Built-in metrics: Dice, HD95 and ASSD (mm), computed with MONAI."""

from __future__ import annotations

from spinebench.engine.metrics import assd, dice, hd95
from spinebench.hookspecs import Register, hookimpl


@hookimpl
def spinebench_register_metrics(register: Register) -> None:
    register("dice", dice)
    register("hd95", hd95)
    register("assd", assd)
