"""The few settings of a recorded study config that a reader needs to place its numbers (the
full YAML travels with the report as a file): what model, trained how far, on what data, how
many tuning trials and seeds, evaluated under which shifts."""

from __future__ import annotations

MISSING = "–"


def _join(values) -> str:
    return ", ".join(str(v) for v in values) if values else "none"


def _count(n, noun: str) -> str:
    return f"{n if n is not None else '?'} {noun}{'' if n == 1 else 's'}"


def _model(model: dict) -> str:
    text = f"{model.get('preset', MISSING)}, trainable: {model.get('trainable', MISSING)}"
    if model.get("trainable") == "lora" and model.get("lora"):
        text += f" (rank {model['lora'].get('rank', MISSING)})"
    return text


def _start(model: dict) -> str:
    base = model.get("base")
    if base:
        return (f"base pretrained on {base.get('domain', MISSING)} ({base.get('train_size', '?')} "
                f"images, {base.get('epochs', '?')} epochs)")
    if model.get("checkpoint"):
        return f"checkpoint {model['checkpoint']}"
    return "the preset's own weights (pretrained where the preset has them)"


def _data(data: dict) -> str:
    source = data.get("source", MISSING)
    where = data.get("path") or data.get("domain") or MISSING
    text = f"{source}: {where}, {data.get('image_size', '?')} px"
    if data.get("box_margin"):
        text += (f", box prompts loosened by {data['box_margin']:.0%}"
                 f" ± {data.get('box_margin_noise', 0):.0%}")
    return text


def _methods(config: dict) -> str:
    out = []
    for name, spec in (config.get("methods") or {}).items():
        tuned = list((spec or {}).get("search") or {})
        out.append(f"{name} (tunes {_join(tuned)})" if tuned else name)
    out += [f"{name} (ensemble)" for name in config.get("ensembles") or {}]
    return _join(out)


def key_settings(config: dict) -> list[tuple[str, str]]:
    """(setting, value) rows; [] for an empty config (none was recorded)."""
    if not config:
        return []
    model, data = config.get("model") or {}, config.get("data") or {}
    train, tuning = config.get("train") or {}, config.get("tuning") or {}
    evaluate, probes = config.get("evaluate") or {}, config.get("probes") or {}
    rows = [
        ("model", _model(model)),
        ("starting weights", _start(model)),
        ("data", _data(data)),
        ("images train / val / test", " / ".join(str(data.get(k, "?")) for k in
                                               ("train_size", "val_size", "test_size"))),
        ("training", f"{_count(train.get('epochs'), 'epoch')}, batch "
                     f"{train.get('batch_size', '?')}"
                     + (f", layer decay {train['layer_decay']}" if train.get("layer_decay")
                        else "")),
        ("methods", _methods(config)),
        ("tuning", f"{_count(tuning.get('trials_per_method'), 'trial')} per method "
                   f"({tuning.get('sampler', 'tpe')}, sampler seed "
                   f"{tuning.get('sampler_seed', '?')})"),
        ("final seeds", _join(config.get("final_seeds"))),
        ("shifts", f"{_join(evaluate.get('shifts'))}; severities "
                   f"{_join(evaluate.get('severities'))}; "
                   f"{evaluate.get('shift_images') or 'all'} images per shift"),
        ("sharpness probes", "on" if probes.get("enabled") else "off"),
    ]
    return rows
