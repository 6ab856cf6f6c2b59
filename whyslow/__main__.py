from whyslow.cli import whyslow

raise SystemExit(whyslow())
