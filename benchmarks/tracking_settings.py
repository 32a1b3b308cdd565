"""benchmarks/tracking.py's ``--set NAME=VALUE``: a TemporalConfig with numeric settings over its
defaults (several numbers comma-separated, e.g. rescue_turns=15,-15), nested ones (the online
filter's, the first frame's views') by dotted name; a bad one is one line (SystemExit with a
message), never a traceback."""

from __future__ import annotations


SIZES = "tuple[float, ...]"  # a TemporalConfig field of several numbers (rescue_sizes=1.3,0.8)


def temporal_config(settings: list[str]):
    """A TemporalConfig with ``name=value`` settings (numbers) over its defaults; a bad one exits
    with one line."""
    from dataclasses import fields

    from pipelines.first_views import ViewsConfig
    from pipelines.online_filter import FilterConfig
    from pipelines.temporal_config import TemporalConfig

    numeric = {f.name: f.type for f in fields(TemporalConfig) if f.type in ("int", "float", "bool", SIZES)}
    # Nested settings by dotted name: the first frame's views (pipelines/first_views.py), e.g.
    # first_views.count=8, and the online filter (pipelines/online_filter.py), e.g.
    # online_filter.learning_rate=0.04.
    nested = {"first_views": ViewsConfig, "online_filter": FilterConfig}
    for prefix, kind in nested.items():
        numeric.update({f"{prefix}.{f.name}": f.type for f in fields(kind)})
    values: dict = {}
    inner: dict[str, dict] = {prefix: {} for prefix in nested}
    for setting in settings:
        name, _, text = setting.partition("=")
        if name not in numeric:
            raise SystemExit(f"--set {setting}: not a numeric TemporalConfig field ({', '.join(sorted(numeric))})")
        prefix, dot, key = name.partition(".")
        into, key = (inner[prefix], key) if dot else (values, name)
        if numeric[name] == SIZES:  # comma-separated numbers; empty: ()
            try:
                into[key] = tuple(float(part) for part in text.split(",") if part.strip())
            except ValueError:
                raise SystemExit(f"--set {setting}: {text!r} is not comma-separated numbers") from None
            continue
        if numeric[name] == "bool":  # 0 / 1
            if text not in ("0", "1"):
                raise SystemExit(f"--set {setting}: {text!r} is not 0 or 1")
            into[key] = text == "1"
            continue
        try:
            into[key] = int(text) if numeric[name] == "int" else float(text)
        except ValueError:
            raise SystemExit(f"--set {setting}: {text!r} is not a number") from None
    try:
        for prefix, kind in nested.items():
            if inner[prefix]:
                values[prefix] = kind(**inner[prefix])
        return TemporalConfig(**values)
    except ValueError as error:
        raise SystemExit(f"--set: {error}") from None
