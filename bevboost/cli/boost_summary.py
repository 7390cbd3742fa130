"""``bevboost boost``'s short account of what each boost changed in the config.

Each boost's share of the changes is the difference between the config boosted with
the boosts before it (card order, as ``apply_boosts`` applies them) and with it too;
every step is ``apply_boosts`` itself. A component whose ``type`` changed (a transform,
the optimizer wrapper, the data preprocessor) is one line ``old -> new`` however many of
its options moved; added hooks are listed by type; the other keys by name and new
value. The full key diff stays available (``--diff`` or ``-v``).
"""
from __future__ import annotations

from typing import Any

#: keys the kit writes for its own bookkeeping (shown in the full diff only)
BOOKKEEPING = ('bevboost_applied', 'custom_imports')
#: lines of set keys shown per boost before "... and N more"
MAX_KEYS = 8
_WIDTH = 60


def short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _WIDTH else text[:_WIDTH - 3] + '...'


def per_boost_configs(cfg, specs: list[str]) -> list[tuple[str, Any, Any]]:
    """``(spec, config before it, config with it)`` per requested boost, in the order
    ``apply_boosts`` applies them; every config is ``apply_boosts``' own result."""
    from bevboost.boosts import apply_boosts, available_boosts, parse_variant
    from bevboost.cli.checks import quiet_info
    order = list(available_boosts())
    ordered = sorted(specs, key=lambda s: order.index(parse_variant(s)[0]))
    out = []
    with quiet_info():  # trial applications: the real one logs
        before = apply_boosts(cfg, [])
        for i, spec in enumerate(ordered):
            after = apply_boosts(cfg, ordered[:i + 1])
            out.append((spec, before.to_dict(), after.to_dict()))
            before = after
    return out


def _types(items: Any) -> list[str] | None:
    """The ``type`` names of a list of component dicts (a pipeline, custom_hooks), else None."""
    if isinstance(items, (list, tuple)) and items and all(
            isinstance(x, dict) and 'type' in x for x in items):
        return [x['type'] if isinstance(x['type'], str) else getattr(
            x['type'], '__name__', str(x['type'])) for x in items]
    return None


def _component_lists(d: Any, prefix: str = '') -> dict[str, list[str]]:
    """Every list of component dicts under a ``*_dataloader`` key, by dotted path."""
    found = {}
    if isinstance(d, dict):
        for key, value in d.items():
            path = f'{prefix}{key}'
            types = _types(value)
            if types is not None and path.split('.')[0].endswith('_dataloader'):
                found[path] = types
            elif isinstance(value, dict):
                found.update(_component_lists(value, path + '.'))
    return found


def _list_changes(old: list[str], new: list[str]) -> list[str]:
    import difflib
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=old, b=new).get_opcodes():
        if op == 'replace':
            out.append(f"{', '.join(old[i1:i2])} -> {', '.join(new[j1:j2])}")
        elif op == 'delete':
            out.append(f"removed {', '.join(old[i1:i2])}")
        elif op == 'insert':
            out.append(f"added {', '.join(new[j1:j2])}")
    return out


def summarise(before: dict, after: dict) -> list[str]:
    """Readable lines for what one boost changed between two config dicts."""
    from bevboost.planning import _flatten
    lines = []
    # transforms: per loader, as a sequence of types (an inserted or folded one shifts no key)
    transforms: dict[str, list[str]] = {}
    old_lists, new_lists = _component_lists(before), _component_lists(after)
    for path in sorted(set(old_lists) | set(new_lists)):
        loader = path.split('.')[0][:-len('_dataloader')]
        for change in _list_changes(old_lists.get(path, []), new_lists.get(path, [])):
            transforms.setdefault(change, []).append(loader)
    lines += [f'transforms {change} ({", ".join(loaders)})'
              for change, loaders in transforms.items()]
    hooks_old = _types(before.get('custom_hooks')) or []
    hooks_new = _types(after.get('custom_hooks')) or []
    added = [h for h in hooks_new if h not in hooks_old and h != 'BoostReportHook']
    removed = [h for h in hooks_old if h not in hooks_new]
    if added:
        lines.append('hooks added: ' + ', '.join(added))
    if removed:
        lines.append('hooks removed: ' + ', '.join(removed))
    # everything else, key by key; a component whose type changed is one line
    skip = set(BOOKKEEPING) | {'custom_hooks'} | {k for k in set(before) | set(after)
                                                  if k.endswith('_pipeline')}

    def flat(d: dict) -> dict[str, Any]:
        rest = {k: v for k, v in d.items() if k not in skip}
        out = _flatten(rest)
        return {k: v for k, v in out.items()
                if not any(k.startswith(p + '.') for p in (*old_lists, *new_lists))}

    a, b = flat(before), flat(after)
    changed = [(k, a.get(k, '<unset>'), b.get(k, '<unset>')) for k in sorted(set(a) | set(b))
               if a.get(k, '<unset>') != b.get(k, '<unset>')]
    replaced = {k[:-len('.type')]: (o, n) for k, o, n in changed
                if k.endswith('.type') and '<unset>' not in (o, n)}
    keys = []
    for key, old, new in changed:
        owner = next((r for r in replaced if key.startswith(r + '.')), None)
        if owner is not None:
            if key == owner + '.type':
                lines.append(f'replaced {owner}: {old} -> {new}')
        elif new == '<unset>':
            keys.append(f'{key} removed (was {short(old)})')
        else:
            was = f' (was {short(old)})' if old != '<unset>' else ''
            keys.append(f'{key} = {short(new)}{was}')
    lines += [f'set {k}' for k in keys[:MAX_KEYS]]
    if len(keys) > MAX_KEYS:
        lines.append(f'... and {len(keys) - MAX_KEYS} more keys (--diff)')
    return lines or ['no change to the config']


def boost_summary(cfg, specs: list[str]) -> list[str]:
    """The lines ``bevboost boost`` prints: each boost, then what it changed."""
    lines = []
    for i, (spec, before, after) in enumerate(per_boost_configs(cfg, specs)):
        lines.append(f'{spec}:')
        changes = summarise(before, after)
        if i and changes == ['no change to the config']:
            changes = ['no further change (the boosts before it already made it)']
        lines += [f'  {line}' for line in changes]
    return lines
