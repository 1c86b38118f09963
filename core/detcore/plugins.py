"""Plugin discovery: the ``detcore`` entry-point group, loaded lazily and once.

Modelled on pytest/llm: a pluggy ``PluginManager`` with core's defaults
registered first (as ``trylast`` implementations) and each installed plugin
module after. A plugin that fails to import, or declares another hook-API
version, is recorded as broken instead of breaking the CLI.

The registry knows which plugin declared each model, and :meth:`Registry.hooks_for`
calls a model's hooks on that plugin alone (then core's defaults): a plugin never
has to ask whether a model is its own.
"""
from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata

import pluggy

from . import API_VERSION, hookspecs
from .errors import UserError
from .spec import ModelSpec

ENTRY_POINT_GROUP = "detcore"
DEFAULTS = "detcore.defaults"
ALLOW_ENV = "DETCORE_PLUGINS"
#: Comma-separated importable modules loaded as plugins without an entry point
#: (like pytest's PYTEST_PLUGINS): for developing a plugin before packaging it.
MODULES_ENV = "DETCORE_PLUGIN_MODULES"


@dataclass
class PluginInfo:
    name: str  # entry-point name
    value: str  # "module:attr" the entry point names
    distribution: str = ""
    version: str = ""
    status: str = "ok"  # ok | broken | incompatible | disabled
    reason: str = ""
    models: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)
    upstream: list[dict] = field(default_factory=list)


class Registry:
    """The loaded plugins and the models they declare."""

    def __init__(self, extra_plugins: dict | None = None):
        self.pm = pluggy.PluginManager("detcore")
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.models: dict[str, ModelSpec] = {}
        from . import defaults

        self.pm.register(defaults, name=DEFAULTS)
        for ep in _entry_points():
            self._load_entry_point(ep)
        for name in _env_modules():
            self._load_module(name)
        for name, module in (extra_plugins or {}).items():
            self._register(PluginInfo(name=name, value=getattr(module, "__name__", name)), module)
        self._collect_models()

    # -- loading -----------------------------------------------------------
    def _load_entry_point(self, ep) -> None:
        info = PluginInfo(name=ep.name, value=ep.value)
        if ep.dist is not None:
            info.distribution, info.version = ep.dist.metadata["Name"], ep.dist.version
        self.plugins[ep.name] = info
        if not _allowed(info):
            return
        try:
            module = ep.load()
        except Exception as exc:  # a broken plugin must not break the CLI
            info.status, info.reason = "broken", f"import failed: {type(exc).__name__}: {exc}"
            return
        self._register(info, module)

    def _load_module(self, name: str) -> None:
        info = PluginInfo(name=name, value=name, distribution=f"({MODULES_ENV})")
        self.plugins[name] = info
        if not _allowed(info):
            return
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            info.status, info.reason = "broken", f"import failed: {type(exc).__name__}: {exc}"
            return
        self._register(info, module)

    def _register(self, info: PluginInfo, module) -> None:
        self.plugins[info.name] = info
        declared = getattr(module, "DETCORE_API_VERSION", None)
        if declared != API_VERSION:
            info.status = "incompatible"
            info.reason = (f"written for detcore hook API {declared!r}, this detcore has "
                           f"{API_VERSION}; upgrade the plugin or detcore")
            return
        try:
            self.pm.register(module, name=info.name)
        except Exception as exc:  # e.g. a hookimpl with an unknown name or argument
            info.status, info.reason = "broken", f"hook validation failed: {exc}"
            return
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or [])

    def _collect_models(self) -> None:
        for info in self.plugins.values():
            if info.status != "ok":
                continue
            module = self.pm.get_plugin(info.name)
            impl = getattr(module, "register_models", None)
            try:
                specs = list(impl() or []) if impl else []
            except Exception as exc:
                info.status, info.reason = "broken", f"register_models failed: {exc}"
                continue
            for spec in specs:
                spec = _with_plugin(spec, info.name)
                if spec.name in self.models:
                    other = self.models[spec.name].plugin
                    raise UserError(
                        f"model name clash: {spec.name!r} is declared by plugin {other!r} "
                        f"and by plugin {info.name!r}; uninstall one, or restrict "
                        f"loading with {ALLOW_ENV}=<names>")
                self.models[spec.name] = spec
                info.models.append(spec.name)
                info.upstream = [check_requirement(r) for r in spec.upstream]

    # -- lookup ------------------------------------------------------------
    def get_model(self, name: str) -> ModelSpec:
        if name in self.models:
            return self.models[name]
        known = sorted(self.models)
        hint = difflib.get_close_matches(name, known, n=1)
        msg = f"unknown model {name!r}."
        if hint:
            msg += f" Did you mean {hint[0]!r}?"
        msg += f" Installed models: {', '.join(known) if known else 'none'}"
        if not known:
            msg += " (install a plugin: pip install PACKAGE, or in a detcore checkout bash dev/install.sh NAME)"
        broken = [p.name for p in self.plugins.values() if p.status in ("broken", "incompatible")]
        if broken:
            msg += f"; plugins not loaded: {', '.join(broken)} (see detcore plugins)"
        raise UserError(msg)

    def hooks_for(self, spec: ModelSpec) -> "ModelHooks":
        """The hooks of ``spec``'s model: its plugin's implementations, then core's defaults."""
        return ModelHooks(self.pm, spec.plugin)


class ModelHooks:
    """Hook callers bound to one plugin: ``hooks.build_model(spec=..., ...)`` runs the owner's
    implementation (and core's ``trylast`` default), never another plugin's. The hooks in
    :data:`detcore.hookspecs.BROADCAST` (``log_metrics``) run on every plugin: a tracker plugin
    logs every model's runs."""

    def __init__(self, pm: pluggy.PluginManager, owner: str):
        self._pm = pm
        self._others = [plugin for name, plugin in pm.list_name_plugin()
                        if name not in (owner, DEFAULTS) and plugin is not None]

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name in hookspecs.BROADCAST:
            return getattr(self._pm.hook, name)
        return self._pm.subset_hook_caller(name, self._others)


def _with_plugin(spec: ModelSpec, plugin: str) -> ModelSpec:
    from dataclasses import replace

    return replace(spec, plugin=plugin)


def _entry_points():
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _env_modules() -> list[str]:
    return [m.strip() for m in os.environ.get(MODULES_ENV, "").split(",") if m.strip()]


def _allowed(info: PluginInfo) -> bool:
    """Apply the ``DETCORE_PLUGINS`` allow-list (unset or empty: everything loads)."""
    raw = os.environ.get(ALLOW_ENV, "")
    allowed = {name.strip() for name in raw.split(",") if name.strip()}
    if allowed and info.name not in allowed:
        info.status, info.reason = "disabled", f"not in {ALLOW_ENV}"
        return False
    return True


def check_requirement(requirement: str) -> dict:
    """Is a pinned upstream (``"effdet==0.4.1"``) satisfied? Reads metadata, imports nothing."""
    from packaging.requirements import Requirement

    req = Requirement(requirement)
    try:
        installed = metadata.version(req.name)
    except metadata.PackageNotFoundError:
        return {"requirement": requirement, "installed": None, "ok": False}
    ok = req.specifier.contains(installed, prereleases=True)
    return {"requirement": requirement, "installed": installed, "ok": ok}


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    return Registry()
