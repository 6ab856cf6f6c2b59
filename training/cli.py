"""``whyslow train`` / ``python -m training``: dataset, plan, LoRA, GGUF, evaluation.

The shipped model is rebuilt with (see the README's "Training" section):
    whyslow train data build && whyslow train data check training/data/training-data-combined.jsonl
    whyslow train train --config training/configs/axolotl-config.yaml
    whyslow train export-adapter --adapter training/output/whyslow-smollm2 --ship
    whyslow train calibrate
    whyslow train eval
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

DEFAULT_CONFIG = Path("training/configs/axolotl-config.yaml")
HF_CACHE = Path(os.environ.get("WHYSLOW_CACHE", Path.home() / ".cache" / "whyslow")) / "hf"


def _base_gguf(value: str | None) -> Path:
    from service.model.embedded import shipped_gguf

    return shipped_gguf() if value in (None, "embedded") else Path(value)


def cmd_data(args: argparse.Namespace) -> int:
    from training.config import TrainConfig
    from training.dataset import samples
    from training.dataset.check import TrainingSide, check
    from training.dataset.generator import generate
    from training.dataset.texts import HELDOUT

    if args.data_command == "generate":
        rows = [samples.to_sample(s, "generated") for s in generate(args.n, args.seed)]
        samples.write_jsonl(args.out, rows)
        print(f"wrote {len(rows)} samples to {args.out}")
        return 0
    if args.data_command == "build":
        written = {
            samples.COMBINED: samples.combined(),
            samples.EXTRA: samples.extra(),
            samples.HELDOUT: [
                samples.to_sample(s, "generated")
                for s in generate(args.heldout, samples.HELDOUT_SEED, wording=HELDOUT)
            ],
            samples.HANDWRITTEN_HELDOUT_CHAT: [
                samples.to_sample(s, "handwritten")
                for s in samples.handwritten(samples.HANDWRITTEN_HELDOUT)
            ],
            samples.HANDWRITTEN_PUBLIC_CHAT: [
                samples.to_sample(s, "handwritten")
                for s in samples.handwritten(samples.HANDWRITTEN_PUBLIC)
            ],
        }
        for path, rows in written.items():
            samples.write_jsonl(path, rows)
            print(f"wrote {len(rows)} samples to {path}")
        return 0
    training = TrainingSide.read([Path(d.path) for d in TrainConfig.load(args.config).datasets])
    results = [check(path, [p for p in args.files if p != path], training) for path in args.files]
    for result in results:
        print(result.render())
    return 0 if all(r.ok for r in results) else 1


def cmd_plan(args: argparse.Namespace) -> int:
    from training.config import TrainConfig
    from training.plan import architecture_of, plan, render

    config = TrainConfig.load(args.config) if args.config else TrainConfig()
    overrides = {"lora_r": args.r, "lora_target_modules": args.targets, "base_model": args.base}
    given = {key: value for key, value in overrides.items() if value is not None}
    config = TrainConfig.from_dict({**config.model_dump(), **given}, "plan")
    print(render(plan(architecture_of(config.base_model), config), config))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from service.model.gguf_files import base_identity
    from training.base import hf_folder, hf_identity
    from training.config import TrainConfig
    from training.train import train

    config = TrainConfig.load(args.config)
    if args.output_dir:
        config.output_dir = str(args.output_dir)
    base = config.base_model
    if base == "embedded" or base.endswith(".gguf"):
        gguf_path = _base_gguf(base)
        folder, identity = hf_folder(gguf_path, HF_CACHE), base_identity(gguf_path)
    else:
        folder = _hub_folder(base)
        identity = hf_identity(folder)
    started = time.monotonic()
    out = train(config, folder, identity, max_steps=args.max_steps)
    print(f"adapter written to {out} in {time.monotonic() - started:.0f} s")
    return 0


def _hub_folder(base: str) -> Path:
    """A transformers folder: given as a path, or a hub name already in the local cache."""
    if Path(base, "config.json").is_file():
        return Path(base)
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(base, local_files_only=True))
    except Exception as exc:  # the hub is unreachable here: say what is missing
        raise SystemExit(
            f"base_model {base!r} is not a folder and not in the local Hugging Face cache "
            f"(nothing is downloaded): {exc}"
        ) from exc


def cmd_export_adapter(args: argparse.Namespace) -> int:
    from service.model import tuned
    from service.model.gguf_files import read_manifest, write_manifest
    from training.export import peft_to_gguf_adapter

    base = _base_gguf(args.base)
    out = tuned.ADAPTER if args.ship else args.out
    if out is None:
        raise SystemExit("export-adapter: give --out PATH.gguf or --ship")
    peft_to_gguf_adapter(args.adapter, base, out, args.type)
    manifest = read_manifest(args.adapter / "manifest.json")
    write_manifest(manifest.model_copy(update={"name": out.stem}), out.with_suffix(".json"))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) and {out.with_suffix('.json')}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    import tempfile

    from service.model.gguf_files import merge_lora
    from service.prompt import SYSTEM_PROMPT
    from training.export import peft_to_gguf_adapter, write_modelfile

    base = _base_gguf(args.base)
    with tempfile.TemporaryDirectory() as work:
        adapter = Path(work) / "adapter.gguf"
        peft_to_gguf_adapter(args.adapter, base, adapter, "F32")
        merge_lora(base, adapter, args.out, args.type, progress=True)
    write_modelfile(args.out, SYSTEM_PROMPT)
    print(f"wrote {args.out} and its Modelfile")
    return 0


def cmd_quantize(args: argparse.Namespace) -> int:
    from service.model.gguf_files import quantize_gguf
    from service.prompt import SYSTEM_PROMPT
    from training.export import write_modelfile

    quantize_gguf(args.input, args.out, args.type)
    write_modelfile(args.out, SYSTEM_PROMPT)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.0f} MB) and its Modelfile")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from service.contract import ProbableCause
    from service.model import tuned
    from service.model.gguf_files import read_manifest, write_manifest
    from service.model.runtime import ModelRuntime
    from service.prompt import build_messages
    from service.settings import Settings
    from training import calibrate, evaluate
    from training.dataset import samples
    from training.dataset.generator import generate

    settings = Settings()
    adapter = args.adapter or tuned.ADAPTER
    seed = samples.CALIBRATION_SEED if args.seed is None else args.seed
    manifest_path = adapter.with_suffix(".json")
    manifest = read_manifest(manifest_path)
    runtime = ModelRuntime(
        tuned.prepare_tuned(settings.data_dir, adapter),
        settings.n_ctx,
        settings.n_threads,
        settings.seed,
        settings.repeat_penalty,
        flash_attn=settings.flash_attn,
    )

    def scored(cases: list[evaluate.Case], label: str) -> tuple[np.ndarray, np.ndarray]:
        rows = [
            runtime.cause_scores(build_messages(c.report, c.note))
            for c in tqdm(cases, desc=label, unit="case")
        ]
        return (
            np.array([[row[cause] for cause in calibrate.CAUSES] for row in rows]),
            np.array([calibrate.CAUSES.index(c.expected.probable_cause) for c in cases]),
        )

    fitting = [
        evaluate.Case(s.id, s.pattern, s.report, s.answer, s.note) for s in generate(args.n, seed)
    ]
    fit = calibrate.fit_bias(*scored(fitting, f"generated seed {seed}"), args.l2)
    print(
        f"fitted on {len(fitting)} generated cases (seed {seed}): cause "
        f"{fit.accuracy_before:.1%} -> {fit.accuracy_after:.1%}, "
        f"loss {fit.loss_before:.4f} -> {fit.loss_after:.4f}"
    )
    print("bias: " + ", ".join(f"{cause} {b:+.3f}" for cause, b in fit.bias.items()))
    bias = np.array(list(fit.bias.values()))
    for path in args.data or [samples.HELDOUT, samples.HANDWRITTEN_HELDOUT_CHAT]:
        scores, labels = scored(evaluate.load_cases(path), path.stem)
        before, after = calibrate.accuracy(scores, labels), calibrate.accuracy(scores, labels, bias)
        print(f"{path.stem} ({len(labels)} cases): cause {before:.1%} -> {after:.1%}")
    runtime.close()
    if args.dry_run:
        print(f"--dry-run: {manifest_path} left as it was")
    else:
        bias_by_cause = {ProbableCause(cause): b for cause, b in fit.bias.items()}
        write_manifest(manifest.model_copy(update={"cause_bias": bias_by_cause}), manifest_path)
        print(f"wrote cause_bias to {manifest_path}")
    return 0


def _named_model(spec: str) -> tuple[str, str]:
    name, sep, path = spec.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"--model {spec!r}: expected NAME=PATH.gguf")
    return name, path


def cmd_eval(args: argparse.Namespace) -> int:
    from service.model.embedded import prepare_embedded
    from service.model.runtime import ModelRuntime
    from service.model.tuned import cause_bias, prepare_tuned
    from service.settings import Settings
    from training import evaluate
    from training.dataset import samples

    settings = Settings()
    models = (
        {name: (path, {}) for name, path in map(_named_model, args.model)}
        if args.model
        else {
            "base Q8_0": (str(prepare_embedded(settings.data_dir)), {}),
            "tuned Q8_0": (str(prepare_tuned(settings.data_dir)), cause_bias()),
        }
    )
    datasets = args.data or [samples.HELDOUT, samples.HANDWRITTEN_HELDOUT_CHAT]
    cases = {path.stem: evaluate.load_cases(path) for path in datasets}
    results: dict = {name: {} for name in cases}
    details: dict = {name: {} for name in cases}
    for name, (path, bias) in models.items():
        runtime = ModelRuntime(
            Path(path),
            settings.n_ctx,
            settings.n_threads,
            settings.seed,
            settings.repeat_penalty,
            flash_attn=settings.flash_attn,
            cause_bias=bias,
        )
        for dataset, items in cases.items():
            outcomes = evaluate.run_model(runtime, items, settings.max_tokens, f"{name} {dataset}")
            details[dataset][name] = outcomes
            results[dataset][name] = evaluate.summarise(outcomes)
        runtime.close()
    for dataset, items in cases.items():
        details[dataset][evaluate.RULES] = evaluate.run_rules(items)
        results[dataset][evaluate.RULES] = evaluate.summarise(details[dataset][evaluate.RULES])
    markdown, raw = evaluate.write_report(results, details, args.out)
    print(markdown.read_text())
    print(f"wrote {markdown} and {raw}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="whyslow train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    data = sub.add_parser("data", help="generate, build and check the chat-format dataset")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    gen = data_sub.add_parser("generate", help="write N generated samples")
    gen.add_argument("--n", type=int, default=100)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--out", type=Path, required=True)
    build = data_sub.add_parser("build", help="rebuild the committed training and held-out files")
    build.add_argument("--heldout", type=int, default=240, help="generated held-out samples")
    chk = data_sub.add_parser(
        "check", help="validate files; each is checked for leakage into the others"
    )
    chk.add_argument("files", type=Path, nargs="+")
    chk.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="the training config whose datasets are the training side (the other files "
        "must share no evidence template with them)",
    )
    data.set_defaults(func=cmd_data)

    p = sub.add_parser("plan", help="trainable parameters, adapter size, memory of a LoRA run")
    p.add_argument("--config", type=Path, help="a training YAML (default: built-in defaults)")
    p.add_argument("--base", help="GGUF file, transformers folder or known name")
    p.add_argument("--r", type=int, help="LoRA rank")
    p.add_argument("--targets", nargs="+", help="target modules, e.g. q_proj k_proj v_proj o_proj")
    p.set_defaults(func=cmd_plan)

    t = sub.add_parser("train", help="LoRA fine-tune (peft + transformers)")
    t.add_argument("--config", type=Path, default=DEFAULT_CONFIG)
    t.add_argument("--output-dir", type=Path)
    t.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("export-adapter", help="PEFT adapter -> GGUF LoRA for runtime swap")
    e.add_argument("--adapter", type=Path, required=True, help="the PEFT output folder")
    e.add_argument("--base", help="base GGUF (default: the embedded model)")
    e.add_argument("--out", type=Path, help="NAME.gguf (a NAME.json manifest goes beside it)")
    e.add_argument("--ship", action="store_true", help="write it as the service's default")
    e.add_argument("--type", choices=["F16", "F32"], default="F16")
    e.set_defaults(func=cmd_export_adapter)

    m = sub.add_parser("merge", help="merge W + scale*B*A into a GGUF of the base")
    m.add_argument("--adapter", type=Path, required=True)
    m.add_argument("--base", help="base GGUF (default: the embedded model)")
    m.add_argument("--out", type=Path, required=True)
    m.add_argument("--type", choices=["F16", "F32"], default="F16")
    m.set_defaults(func=cmd_merge)

    q = sub.add_parser("quantize", help="quantise a GGUF (Q8_0, Q4_K_M, ...)")
    q.add_argument("--in", dest="input", type=Path, required=True)
    q.add_argument("--out", type=Path, required=True)
    q.add_argument("--type", default="Q8_0")
    q.set_defaults(func=cmd_quantize)

    c = sub.add_parser(
        "calibrate",
        help="fit the adapter's per-cause bias on generated cases (training/calibrate.py)",
    )
    c.add_argument("--adapter", type=Path, help="NAME.gguf (default: the shipped adapter)")
    c.add_argument("--n", type=int, default=1440, help="generated cases to fit on")
    c.add_argument(
        "--seed", type=int, help="generator seed (default: 3, which no data file is drawn from)"
    )
    c.add_argument("--l2", type=float, default=1e-3, help="L2 penalty on the bias")
    c.add_argument("--data", action="append", type=Path, help="chat JSONL to report cause on")
    c.add_argument("--dry-run", action="store_true", help="report only; leave the manifest")
    c.set_defaults(func=cmd_calibrate)

    v = sub.add_parser("eval", help="score models and the rule engine on held-out cases")
    v.add_argument(
        "--model",
        action="append",
        metavar="NAME=GGUF",
        help="a model to score (repeatable; default: embedded base and tuned Q8_0)",
    )
    v.add_argument("--data", action="append", type=Path, help="chat JSONL with meta.report")
    v.add_argument("--out", type=Path, default=Path("training/eval"))
    v.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    from training.config import ConfigError
    from training.dataset.samples import DataError

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("always", category=UserWarning, module="training")
            return args.func(args)
    except (ConfigError, DataError, ValueError, FileNotFoundError) as exc:
        print(f"whyslow train {args.command}: {exc}", file=sys.stderr)
        return 2
