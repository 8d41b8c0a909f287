"""Train a LoRA adapter configured by `.env` and the environment: `python training/train_lora.py`.

The project's original entry point, kept working: every setting comes from the environment or `.env`
(see .env.example and docs/training.md); `twinbot train` is the same thing with command-line options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

try:
    import twinbot  # noqa: F401
except ImportError:  # run as a plain script from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT / "src"))

from twinbot.errors import TwinbotError  # noqa: E402
from twinbot.finetune.config import resolve_train_config  # noqa: E402


def _default_env_file() -> Path:
    """`.env` in the current folder, else the one at the repository root (where the seed kept it)."""
    here = Path(".env")
    return here if here.is_file() else REPO_ROOT / ".env"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train_lora.py",
        description="LoRA fine-tune the base model; settings come from the environment and .env.",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const="yes",
        choices=("yes", "auto", "no"),
        help="A run already in OUTPUT_DIR: yes (--resume alone) = continue from its last checkpoint; auto = "
        "continue it when unfinished, leave it when finished, start one where there is none; no = refuse "
        "it. Default: RESUME, else no.",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing OUTPUT_DIR.")
    parser.add_argument(
        "--print-config", action="store_true", help="Show the resolved settings and where each came from."
    )
    parser.add_argument(
        "--env-file", type=Path, default=None, help="Settings file (default: ./.env, else the repo's .env)."
    )
    return parser.parse_args(argv)


def run(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    env_file = args.env_file if args.env_file is not None else _default_env_file()
    if args.env_file is not None and not env_file.is_file():
        raise TwinbotError("no such settings file; check the --env-file path", env_file)
    resolved = resolve_train_config(cli={}, dotenv_path=env_file)
    if args.print_config:
        print(resolved.describe())
        return 0
    from twinbot.finetune.overnight import resolve_overnight
    from twinbot.finetune.recipe import main as train_main

    overnight = resolve_overnight(dotenv_path=env_file)  # ALLOW_SLEEP, NOTIFY_URL, DESKTOP_NOTIFY
    train_main(
        resolved.config,
        resume=args.resume,
        overwrite=args.overwrite,
        sources=resolved.sources,
        overnight=overnight,
    )
    return 0


def main() -> None:
    try:
        code = run()
    except TwinbotError as exc:
        print(f"error: {exc.render()}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
