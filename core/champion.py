"""Which model is live: the registry's ``champion`` alias, its history, and the CURRENT bundle pointer.

The alias names the live version in MLflow; CURRENT names the serving bundle the service loads. Both move
together, alias first: the service follows CURRENT, so a move is complete once CURRENT is replaced (one
atomic rename). The registered model's ``champion_history`` tag lists every version that became
champion, oldest first, so that a rollback knows where to go back to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.bundle import MANIFEST
from core.config import PctrConfig
from core.io import write_text_atomic
from core.layout import Layout
from core.tracking import mlflow_client

CHAMPION = "champion"
HISTORY_TAG = "champion_history"


@dataclass(frozen=True)
class Champion:
    version: str
    ds: str  # the day (or the hour, for an hourly refresh) the version's run closed
    base_ds: str  # the day of the daily run it descends from (its own for a daily version)

    @property
    def recency(self) -> tuple[str, str]:
        """What orders versions in time: the daily run they descend from, then their own run (days sort before
        the hours after them). A daily run that closes a later day is newer than every refresh of an earlier one."""
        return self.base_ds, self.ds


def champion(client: Any, name: str) -> Champion | None:
    """The live version and its day, or None before the first promotion."""
    from mlflow.exceptions import MlflowException

    try:
        version = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None
    ds = version.tags.get("ds", "")
    return Champion(str(version.version), ds, version.tags.get("base_ds", ds))


def history(client: Any, name: str) -> list[str]:
    tag = client.get_registered_model(name).tags.get(HISTORY_TAG, "")
    return [v for v in tag.split(",") if v]


def crown(client: Any, name: str, version: str) -> None:
    """Make ``version`` the champion and append it to the history (a retry that repeats this changes nothing)."""
    past = history(client, name)
    if not past or past[-1] != version:
        client.set_registered_model_tag(name, HISTORY_TAG, ",".join([*past, version]))
    client.set_registered_model_alias(name, CHAMPION, version)


def bundle_of(layout: Layout, version: str) -> str:
    """The published bundle of a model version (``<ds>-v<version>``); raises if it was never published."""
    found = sorted(p.name for p in layout.bundles.glob(f"*-v{version}") if (p / MANIFEST).exists())
    if not found:
        raise FileNotFoundError(f"model version {version} has no published bundle under {layout.bundles}")
    return found[-1]


def point_current(layout: Layout, bundle: str) -> None:
    write_text_atomic(layout.current_pointer, bundle + "\n")


def promote(cfg: PctrConfig, version: str) -> dict[str, str]:
    """``pctr promote VERSION``: an explicit promotion, whatever the version's day (a deliberate override)."""
    client = mlflow_client(cfg)
    client.get_model_version(cfg.model_name, version)  # raises for a version that does not exist
    layout = Layout(cfg.home)
    bundle = bundle_of(layout, version)
    crown(client, cfg.model_name, version)
    point_current(layout, bundle)
    return {"champion": version, "current": bundle}


def rollback(cfg: PctrConfig) -> dict[str, str]:
    """``pctr rollback``: the previous champion becomes live again; the one rolled back leaves the history."""
    client = mlflow_client(cfg)
    past = history(client, cfg.model_name)
    if len(past) < 2:
        raise LookupError(f"{cfg.model_name} has no previous champion to roll back to (history: {past or 'empty'})")
    layout = Layout(cfg.home)
    previous, rolled_back = past[-2], past[-1]
    bundle = bundle_of(layout, previous)
    client.set_registered_model_alias(cfg.model_name, CHAMPION, previous)
    client.set_registered_model_tag(cfg.model_name, HISTORY_TAG, ",".join(past[:-1]))
    point_current(layout, bundle)
    return {"champion": previous, "current": bundle, "rolled_back": rolled_back}
