"""Static spend budgets per scope and calendar period (UTC).

"Tenant acme may spend $100 an hour": spend is summed per budget (and per
group, e.g. per tenant) over the current period, and the budget alerts

- once when the spend reaches the limit (``reason`` starts with "spent"), and
- once, earlier, when the linear projection of the spend to the end of the
  period reaches it (``reason`` starts with "projected"), after a minimum
  fraction of the period has elapsed: a projection from the first minutes
  of an hour is mostly noise.

Each alert fires at most once per budget, group and period; a new period
starts from zero.
"""

from __future__ import annotations

import calendar
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from observatory.detectors.base import Verdict

__all__ = ["Budget", "BudgetLimit", "Period", "Spend", "period_bounds"]

Period = Literal["minute", "hour", "day", "week", "month"]
DIMENSIONS = ("tenant", "service", "provider", "model")

_FIXED = {"minute": 60.0, "hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}
#: 1970-01-05, the first Monday of the epoch: weeks start on Mondays (ISO).
_FIRST_MONDAY = 4 * 86400.0


def period_bounds(t: float, period: Period) -> tuple[float, float]:
    """Start and end (epoch seconds, UTC) of the period containing ``t``.

    >>> period_bounds(3700.0, "hour")
    (3600.0, 7200.0)
    >>> [datetime.fromtimestamp(b, tz=UTC).date().isoformat()
    ...  for b in period_bounds(datetime(2026, 2, 14, tzinfo=UTC).timestamp(), "month")]
    ['2026-02-01', '2026-03-01']
    """
    if period == "month":
        day = datetime.fromtimestamp(t, tz=UTC)
        start = datetime(day.year, day.month, 1, tzinfo=UTC)
        days = calendar.monthrange(day.year, day.month)[1]
        return start.timestamp(), start.timestamp() + days * 86400.0
    length = _FIXED[period]
    origin = _FIRST_MONDAY if period == "week" else 0.0
    start = t - (t - origin) % length
    return start, start + length


@dataclass(frozen=True, slots=True)
class Spend:
    """Spend of one window (e.g. one ``StatsRow``): its start, its length and its key."""

    t: float
    cost_usd: float
    tenant: str = ""
    service: str = ""
    provider: str = ""
    model: str = ""
    window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """One budget: a scope (empty = everything), a period and a limit.

    With ``group_by`` the limit applies to each group separately, e.g.
    ``group_by=("tenant",)`` is "every tenant at most $limit_usd".
    """

    name: str
    limit_usd: float
    period: Period = "hour"
    tenants: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    group_by: tuple[str, ...] = ()

    def matches(self, spend: Spend) -> bool:
        return (
            (not self.tenants or spend.tenant in self.tenants)
            and (not self.services or spend.service in self.services)
            and (not self.providers or spend.provider in self.providers)
            and (not self.models or spend.model in self.models)
        )

    def group(self, spend: Spend) -> tuple[str, ...]:
        return tuple(getattr(spend, dimension) for dimension in self.group_by)

    def describe(self, group: tuple[str, ...]) -> str:
        where = ", ".join(f"{d}={v}" for d, v in zip(self.group_by, group, strict=True))
        return f"budget {self.name!r}" + (f" ({where})" if where else "")


class _Account:
    __slots__ = ("end", "projected_alerted", "spent", "spent_alerted", "start")

    def __init__(self, start: float, end: float):
        self.start = start
        self.end = end
        self.spent = 0.0
        self.projected_alerted = False
        self.spent_alerted = False

    def __getstate__(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state):
        for name, value in zip(self.__slots__, state, strict=True):
            setattr(self, name, value)


class Budget:
    """Spend accumulated per budget, group and period; alerts on reaching or projecting the limit.

    Parameters
    ----------
    limits
        The budgets.
    project
        Also alert when the projection to the end of the period reaches the limit.
    min_elapsed_fraction
        Fraction of the period that must have elapsed before projecting.
    projection_margin
        The projection alerts when it reaches ``projection_margin`` x the
        limit: a linear projection extrapolates whatever burst is going on,
        so a little headroom keeps it from crying wolf.
    max_groups
        (budget, group) accounts kept; the least recently updated goes first.

    Examples
    --------

    Tenant acme, $100 an hour, spending $2.50 a minute: the projection ($150)
    fires at a quarter of the hour, the limit itself after 40 minutes.

    >>> budget = Budget([BudgetLimit("acme-hourly", 100.0, "hour", tenants=("acme",))])
    >>> alerts = []
    >>> for minute in range(60):
    ...     for v in budget.update(Spend(60.0 * minute, 2.5, tenant="acme")):
    ...         alerts.append((minute, v.reason))
    >>> for minute, reason in alerts:
    ...     print(minute, reason)
    14 projected $150.00 by the end of the hour >= $100.00: budget 'acme-hourly'
    39 spent $100.00 >= $100.00 this hour: budget 'acme-hourly'
    >>> budget.update(Spend(3600.0, 2.5, tenant="acme"))  # a new hour starts from zero
    []
    """

    def __init__(
        self,
        limits: Sequence[BudgetLimit],
        *,
        project: bool = True,
        min_elapsed_fraction: float = 0.25,
        projection_margin: float = 1.0,
        max_groups: int = 100_000,
    ):
        for limit in limits:
            unknown = set(limit.group_by) - set(DIMENSIONS)
            if unknown:
                raise ValueError(f"{limit.name}: cannot group by {sorted(unknown)}")
        self.limits = tuple(limits)
        self.project = project
        self.min_elapsed_fraction = min_elapsed_fraction
        self.projection_margin = projection_margin
        self.max_groups = max_groups
        self.accounts: OrderedDict[tuple[int, tuple[str, ...]], _Account] = OrderedDict()
        #: Spend that arrived for a period already closed (too late to count).
        self.late_usd = 0.0

    def _account(self, index: int, group: tuple[str, ...], t: float) -> _Account | None:
        key = (index, group)
        account = self.accounts.get(key)
        start, end = period_bounds(t, self.limits[index].period)
        if account is None or start > account.start:
            account = self.accounts[key] = _Account(start, end)
        elif start < account.start:
            return None
        self.accounts.move_to_end(key)
        while len(self.accounts) > self.max_groups:
            self.accounts.popitem(last=False)
        return account

    def spent(self, name: str, group: tuple[str, ...] = ()) -> float:
        """Spend so far in the current period of budget ``name`` (and group)."""
        for index, limit in enumerate(self.limits):
            if limit.name == name:
                account = self.accounts.get((index, group))
                return account.spent if account is not None else 0.0
        raise KeyError(name)

    def update(self, spend: Spend) -> list[Verdict]:
        """Add one window's spend; returns the alerts it triggers (usually none)."""
        cost = spend.cost_usd
        if cost is None or not math.isfinite(cost):
            return []
        verdicts = []
        for index, limit in enumerate(self.limits):
            if not limit.matches(spend):
                continue
            group = limit.group(spend)
            account = self._account(index, group, spend.t)
            if account is None:
                self.late_usd += cost
                continue
            account.spent += cost
            verdict = self._check(limit, group, account, spend.t + spend.window_s)
            if verdict is not None:
                verdicts.append(verdict)
        return verdicts

    def _check(
        self, limit: BudgetLimit, group: tuple[str, ...], account: _Account, now: float
    ) -> Verdict | None:
        who = limit.describe(group)
        spent, cap = account.spent, limit.limit_usd
        if spent >= cap:
            if account.spent_alerted:
                return None
            account.spent_alerted = account.projected_alerted = True
            reason = f"spent ${spent:.2f} >= ${cap:.2f} this {limit.period}: {who}"
            return Verdict(True, spent / cap, spent, cap, reason)
        if not self.project or account.projected_alerted:
            return None
        fraction = (now - account.start) / (account.end - account.start)
        if fraction < self.min_elapsed_fraction or fraction >= 1.0:
            return None
        projected = spent / fraction
        if projected < cap * self.projection_margin:
            return None
        account.projected_alerted = True
        reason = f"projected ${projected:.2f} by the end of the {limit.period} >= ${cap:.2f}: {who}"
        return Verdict(True, projected / cap, projected, cap, reason)
